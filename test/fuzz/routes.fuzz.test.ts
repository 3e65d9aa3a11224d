import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_METHODS, type HttpRegistration } from '../../functions/http.js';
import { registrations } from '../../functions/registrations.js';
import { startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';
import { Campaigns } from './campaign.js';
import {
  ODD_METHODS,
  PLAIN_METHODS,
  callbackQuery,
  contentType,
  encode,
  encoding,
  headerSafe,
  hugeBody,
  idValue,
  jsonishBody,
  linkIdValue,
  nasty,
  noiseHeaders,
  notOperatorAuth,
  operatorAuth,
  queryString,
  request,
  routePath,
  tokenAuth,
  validBody,
  type Header,
} from './generators.js';
import { compileRoutes } from './oracle.js';
import { seedWorld, snapshotStorage, storageDiff, type StorageSnapshot, type World } from './world.js';

/*
 * Issue 7, "Bad input": every HTTP route of the registration table (new ones included, as
 * the list comes from registrations()) plus unknown paths, driven through the real local
 * host over HTTP with generated malformed requests. Every request sent must be refused
 * with a 4xx problem+json (or the HTML page of a browser route), echo no secret and no
 * stack trace, call no identity provider, and leave Table Storage and Key Vault exactly as
 * they were. Requests that could legitimately succeed are not sent (see oracle.ts), except
 * reads, which are checked for shape and leaks only.
 *
 * About 11,000 cases per run. FUZZ_SEED repeats a run; FUZZ_SCALE multiplies the cases.
 */

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);

const httpRoutes = registrations({ rotationSchedule: '0 */30 * * * *' }).filter((r): r is HttpRegistration => r.kind === 'http');
const manageRoutes = httpRoutes.filter((r) => r.route.startsWith('manage/'));
const pageRoutes = httpRoutes.filter((r) => r.errors === 'page');
const tokenRoutes = httpRoutes.filter((r) => r.name === 'token');

let fixture: ConnectFixture;
let world: World;
let baseline: StorageSnapshot;
let campaigns: Campaigns;

// The Functions library warns on every GET or HEAD with a body; thousands of those say nothing.
const quiet = (write: (...args: unknown[]) => void) => (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].startsWith('Discarding the body of the incoming')) return;
  write(...args);
};
const { warn, error } = console;

beforeAll(async () => {
  console.warn = quiet(warn);
  console.error = quiet(error);
  const started = Date.now();
  fixture = await startConnectFixture();
  world = await seedWorld(fixture);
  baseline = await snapshotStorage(fixture);
  campaigns = new Campaigns({ fixture, world, port: Number(new URL(fixture.broker.baseUrl).port), routes: compileRoutes(httpRoutes), seed: SEED, scale: SCALE });
  console.log(`fuzz: FUZZ_SEED=${SEED}, scale ${SCALE}, ${httpRoutes.length} HTTP routes; set up in ${Date.now() - started} ms`);
}, 120_000);

afterAll(async () => {
  if (campaigns) {
    const { cases, refused, ms, perRoute } = campaigns.totals;
    const routes = [...perRoute].sort(([a], [b]) => a.localeCompare(b)).map(([route, n]) => `${route} ${n}`).join(', ');
    console.log(`fuzz: ${cases} cases in total (${refused} must be refused), ${(ms / 1000).toFixed(1)} s, FUZZ_SEED=${SEED}; cases per route: ${routes}`);
  }
  await fixture?.close();
  console.warn = warn;
  console.error = error;
});

// ---------------------------------------------------------------- the properties

const anyAuth = () => fc.oneof(operatorAuth(world), notOperatorAuth(world), tokenAuth(world));
const anyRoute = () => fc.constantFrom(...httpRoutes);
/** Ids that exist: with the right key these requests would succeed, so only the key stands in the way. */
const realIds = () => fc.constantFrom(world.apps.inUse, world.apps.unused, world.tenants.a, world.tenants.b, world.connections.a.id, world.connections.pending.id, ...world.keyIds.get(world.tenants.a)!);
const wrongMethods = (registration: HttpRegistration) => [...ALL_METHODS, ...ODD_METHODS].filter((method) => !Object.hasOwn(registration.methods, method));

describe('every route under malformed requests', () => {
  it('answers a method a route does not take (HEAD, OPTIONS, TRACE, PROPFIND, …) with 405, whatever else is sent', async () => {
    const arbitrary = anyRoute()
      .filter((registration) => wrongMethods(registration).length > 0)
      .chain((registration) =>
        request(fc.constantFrom(...wrongMethods(registration)), fc.tuple(routePath(registration, idValue(world)), queryString(world)).map(([p, q]) => p + q), [anyAuth(), contentType, noiseHeaders], jsonishBody(world)),
      );
    await campaigns.run('wrong methods', arbitrary, 1500);
  }, 180_000);

  it('refuses every operator route without the operator key: missing, garbled, forged, a tenant key, a forged principal', async () => {
    const arbitrary = fc.constantFrom(...manageRoutes).chain((registration) =>
      fc.constantFrom(...Object.keys(registration.methods)).chain((method) =>
        request(
          fc.constant(method),
          fc.tuple(routePath(registration, fc.oneof(realIds(), idValue(world))), queryString(world)).map(([p, q]) => p + q),
          [notOperatorAuth(world), fc.constant<Header[]>([['content-type', 'application/json']]), noiseHeaders],
          fc.oneof(fc.constant(validBody(world, registration, method)), jsonishBody(world)),
        ),
      ),
    );
    await campaigns.run('operator auth', arbitrary, 1500);
  }, 180_000);

  it('refuses malformed operator input with the right key: bodies, content types, ids, queries', async () => {
    const arbitrary = fc.constantFrom(...manageRoutes).chain((registration) =>
      request(
        fc.constantFrom(...Object.keys(registration.methods)),
        fc.tuple(routePath(registration, idValue(world)), queryString(world)).map(([p, q]) => p + q),
        [operatorAuth(world), contentType, noiseHeaders],
        jsonishBody(world),
      ),
    );
    await campaigns.run('operator input', arbitrary, 3000);
  }, 240_000);

  it('refuses the token endpoint anything but a tenant key asking for its own connected mailbox', async () => {
    const connections = world.connections;
    const others = [connections.a.id, connections.b.id, connections.a.mailbox, connections.b.mailbox, connections.pending.id, connections.pending.mailbox, connections.deleted];
    const reference = fc.oneof(
      { arbitrary: fc.constantFrom(...others), weight: 4 },
      { arbitrary: fc.constantFrom(connections.b.mailbox, connections.a.mailbox).chain((mailbox) => fc.mixedCase(fc.constant(mailbox))), weight: 1 },
      { arbitrary: fc.tuple(nasty, fc.constantFrom('@contoso.example', '@fabrikam.example', '@', '')).map(([local, domain]) => `${local}${domain}`), weight: 3 },
      { arbitrary: fc.constantFrom(...others).map((value) => `../${value}`), weight: 1 },
      { arbitrary: idValue(world), weight: 2 },
      { arbitrary: fc.integer({ min: 300, max: 2000 }).map((n) => `${'a'.repeat(n)}@contoso.example`), weight: 1 },
    );
    const tokenBody = fc.oneof(
      { arbitrary: fc.tuple(reference, fc.constantFrom<'length' | 'chunked'>('length', 'chunked')).map(([connection, framing]) => ({ kind: 'bytes' as const, bytes: Buffer.from(JSON.stringify({ connection })), framing })), weight: 5 },
      { arbitrary: fc.tuple(reference, nasty).map(([connection, extra]) => ({ kind: 'bytes' as const, bytes: Buffer.from(JSON.stringify({ connection, [extra || 'x']: 1 })), framing: 'length' as const })), weight: 1 },
      { arbitrary: jsonishBody(world), weight: 3 },
    );
    const arbitrary = fc.constantFrom(...tokenRoutes).chain((registration) =>
      request(
        fc.constantFrom(...Object.keys(registration.methods)),
        fc.tuple(routePath(registration, idValue(world)), queryString(world)).map(([p, q]) => p + q),
        [tokenAuth(world), contentType, noiseHeaders],
        tokenBody,
      ),
    );
    await campaigns.run('token endpoint', arbitrary, 2000);
  }, 180_000);

  it('answers forged, used, expired and replayed links and sign-in states on the browser routes with an error page', async () => {
    const arbitrary = fc.constantFrom(...pageRoutes).chain((registration) =>
      request(
        fc.oneof({ arbitrary: fc.constantFrom(...Object.keys(registration.methods)), weight: 6 }, { arbitrary: fc.constantFrom('POST', 'HEAD', 'OPTIONS', 'PUT'), weight: 1 }),
        fc.tuple(
          // Dead, forged and near-miss links only: the live one would start a sign-in (the
          // wrong-methods property sends it, with methods that cannot).
          routePath(registration, linkIdValue(world)),
          registration.route.includes('callback') ? callbackQuery(world) : queryString(world),
        ).map(([p, q]) => p + q),
        [fc.oneof(fc.constant<Header[]>([]), anyAuth()), noiseHeaders],
        fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: jsonishBody(world), weight: 1 }),
      ),
    );
    await campaigns.run('browser routes', arbitrary, 1500);
  }, 180_000);

  it('answers unknown paths, traversal and encoding tricks with a 404 problem', async () => {
    const segment = fc.tuple(fc.oneof(nasty, fc.constantFrom('manage', 'apps', 'tenants', 'connections', 'keys', 'connect', 'oauth', 'callback', 'token', 'health', 'admin', 'functions', 'rotate-tokens', 'runtime', '..', '.', '%2e%2e', '%2f', '%5c')), encoding).map(([raw, how]) => (raw === '..' || raw === '.' ? raw : raw.startsWith('%') ? encode(raw, 'ascii') : encode(raw, how)));
    const path = fc.oneof(
      { arbitrary: fc.array(segment, { minLength: 0, maxLength: 8 }).map((parts) => `/api/${parts.join('/')}`), weight: 5 },
      { arbitrary: fc.array(segment, { minLength: 0, maxLength: 5 }).map((parts) => `/${parts.join('/')}`), weight: 2 },
      { arbitrary: fc.tuple(fc.constantFrom('/admin/functions/', '/admin/functions/', '/admin/', '/runtime/webhooks/'), segment).map(([prefix, name]) => `${prefix}${name}`), weight: 2 },
      { arbitrary: fc.constantFrom('/api/manage/apps/../../admin/functions/rotate-tokens', '/api/connect/x/../../manage/tenants', '/api/%2e%2e/admin/functions/rotate-tokens', '/api/manage%2fapps', '/api/manage/apps%00', '/api;/manage/apps', '/api/manage/./apps/.', '/api/./../api/manage/runs/x', '//api/health', '/%61pi/manage/apps/x', '/api/manage/apps/%2e%2e%2f%2e%2e%2fadmin', '/API/manage/apps', '/api/health/', '/api', '/', '*', '/api/manage/tenants//keys', '/api/oauth/callback/x', '/api/connect', '/api/connect/', '/api/token/x'), weight: 2 },
      // Absolute form (RFC 9112 §3.2.2): servers must accept it, proxies send it.
      { arbitrary: fc.constantFrom('http://evil.example/api/health', 'http://127.0.0.1/api/manage/apps/x', 'https://localhost/api/token', 'http://[::1]/api/nowhere'), weight: 1 },
    );
    const arbitrary = request(
      fc.constantFrom(...PLAIN_METHODS, ...ODD_METHODS),
      fc.tuple(path, queryString(world)).map(([p, q]) => p + q),
      [anyAuth(), contentType, noiseHeaders],
      fc.oneof({ arbitrary: fc.constant(undefined), weight: 3 }, { arbitrary: jsonishBody(world), weight: 1 }),
    );
    await campaigns.run('unknown paths', arbitrary, 1500);
  }, 180_000);

  it('refuses bodies over 64 KB with 413 and survives bodies over the host\'s 1 MB read limit', async () => {
    const arbitrary = anyRoute().chain((registration) =>
      request(
        fc.oneof({ arbitrary: fc.constantFrom(...Object.keys(registration.methods).filter((m) => m !== 'TRACE')), weight: 3 }, { arbitrary: fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE'), weight: 1 }),
        routePath(registration, idValue(world)),
        [fc.oneof(operatorAuth(world), tokenAuth(world), notOperatorAuth(world)), contentType],
        hugeBody,
      ),
    );
    await campaigns.run('huge bodies', arbitrary, 300);
  }, 180_000);

  it('answers requests Node\'s HTTP parser refuses (unknown method tokens, oversized heads, raw bytes) with a problem too', async () => {
    const path = fc.constantFrom('/api/health', '/api/token', '/api/manage/apps', '/api/connect/lnk_x', '/api/nowhere');
    const arbitrary = fc.oneof(
      request(fc.constantFrom('FOO', 'get', 'Post', 'BREW', 'G3T', 'DELETE2', 'CONNECT'), path, [fc.constant<Header[]>([])], fc.constant(undefined)),
      request(fc.constant('GET'), fc.tuple(path, fc.integer({ min: 17_000, max: 40_000 })).map(([p, n]) => `${p}?q=${'a'.repeat(n)}`), [fc.constant<Header[]>([])], fc.constant(undefined)),
      request(fc.constant('GET'), path, [fc.integer({ min: 17_000, max: 40_000 }).map((n): Header[] => [['x-fuzz', 'b'.repeat(n)]])], fc.constant(undefined)),
      request(fc.constant('GET'), fc.tuple(path, nasty).map(([p, raw]) => `${p}/${headerSafe(raw)}é `), [fc.constant<Header[]>([])], fc.constant(undefined)),
    );
    // These never reach a route, so the answer is judged as the host's own problem, not by route.
    await campaigns.run('protocol level', arbitrary, 200, { raw: true, judge: () => ({ verdict: 'reject', kind: 'problem', route: '(HTTP parser)' }) });
  }, 120_000);

  it('leaves storage as it was and audits refused token requests without a secret', async () => {
    await fixture.broker.services.audit.flush();
    const now = await snapshotStorage(fixture);
    expect(storageDiff(baseline, now)).toEqual([]);
    const added = [...now.audit].filter(([key]) => !baseline.audit.has(key)).map(([, row]) => row);
    const issued = added.filter((row) => row.outcome !== 'refused');
    expect(issued.map((row) => `${String(row.outcome)} ${String(row.code)} ${String(row.connectionId)}`)).toEqual([]);
    const text = JSON.stringify(added);
    expect(world.secrets.filter((secret) => text.includes(secret.value)).map((secret) => secret.name)).toEqual([]);
    console.log(`fuzz: ${added.length} refused token requests audited`);
  });

  it('would have seen a change: the storage comparison notices one accepted request', async () => {
    const before = await snapshotStorage(fixture);
    const created = await fixture.broker.call('POST', '/api/manage/tenants', { body: { name: 'Canary' } });
    expect(created.status).toBe(201);
    const diff = storageDiff(before, await snapshotStorage(fixture));
    expect(diff).toEqual([expect.stringMatching(/^table row added: \w*tenants\//)]);
  });
});
