import { odata } from '@azure/data-tables';
import { DataKey } from '../shared/tokens/data-key.js';
import { connectMailbox, refreshGrants, tenantKey } from '../test/support/connect-fixture.js';
import { heapAfterGc, memoryMiB, runMain, spawnBroker } from './support/procs.js';
import { machine, numberFlag, parseArgs, printMachine, printTable, saveJson, sleep } from './support/report.js';
import { connectedRow, inPool, postToken, progress, startStack } from './support/stack.js';

/*
 * bench:memory — resident set size of one broker process (`node dist/infra/local/start.js`)
 * holding 10,000 connections' access tokens in AccessTokens' memory cache. Target ≤ 200 MB.
 *
 * The cache is filled through the real path: 10,000 connection rows are seeded with a shared
 * access token (encrypted with the data key and bound to each row, as a lease holder leaves
 * it), then POST /api/token is called once per connection; each request finds no token in
 * memory, decrypts the row's copy and keeps it. The token is a real one from the sandbox
 * (RS256 JWT); --token-bytes pads it for a heavier Entra-sized token. A second pass over
 * all connections must then be answered from memory, which the audit log confirms.
 *
 * The process runs with --inspect=127.0.0.1:0 (no session is attached while it serves): at
 * the end a DevTools client forces a full GC and reads the heap, to tell what is retained
 * from what V8 simply has not given back yet.
 *
 * Flags: --connections 10000 --concurrency 32 --token-bytes 0
 */

const MB = 1_000_000;
const toMB = (mib: number) => (mib * 1024 * 1024) / MB;

runMain(async () => {
  const flags = parseArgs();
  const connections = numberFlag(flags, 'connections', 10_000);
  const concurrency = numberFlag(flags, 'concurrency', 32);
  const tokenBytes = numberFlag(flags, 'token-bytes', 0);
  const info = machine();

  progress('starting Azurite, the Key Vault fake and the sandbox identity provider');
  const stack = await startStack();
  const key = await tenantKey(stack);
  const seed = await connectMailbox(stack, 'memory-seed@contoso.example');
  const issued = await postToken(stack.broker.baseUrl, key, seed);
  if (issued.status !== 200) throw new Error(`the seed token request answered ${issued.status}: ${issued.body}`);
  const body = JSON.parse(issued.body) as { access_token: string; expires_at: string; scope: string };
  let accessToken = body.access_token;
  if (tokenBytes > accessToken.length) accessToken += `.${'x'.repeat(tokenBytes - accessToken.length - 1)}`;

  progress(`seeding ${connections} connection rows with an encrypted shared access token of ${accessToken.length} bytes`);
  const dataKey = new DataKey(stack.broker.services.secrets);
  const at = new Date().toISOString();
  const ids: string[] = new Array<string>(connections);
  await inPool(ids, 32, async (_, index) => {
    const row = connectedRow({ tenantId: stack.tenantId, appId: stack.app.id, mailbox: `memory-${index}@contoso.example`, at });
    const sealed = JSON.stringify({ accessToken, expiresOn: body.expires_at, scopes: body.scope.split(' ') });
    row.accessTokenCipher = await dataKey.encrypt(sealed, row.id);
    row.accessTokenExpiresAt = body.expires_at;
    await stack.broker.services.tables.connections.insert(row);
    ids[index] = row.id;
  });

  progress('starting the broker process');
  const broker = await spawnBroker(stack.brokerEnv(), ['--inspect=127.0.0.1:0']);
  const phases: Array<{ phase: string; rss: number; peak: number; seconds?: number; statuses?: string; heapUsed?: number; heapTotal?: number }> = [];
  const measure = (phase: string, extra: { seconds?: number; statuses?: string; heapUsed?: number; heapTotal?: number } = {}) => {
    const { rss, peak } = memoryMiB(broker.pid);
    phases.push({ phase, rss, peak, ...extra });
  };
  const measureAfterGc = async (phase: string) => {
    const heap = await heapAfterGc(broker);
    measure(phase, { heapUsed: heap.usedMiB, heapTotal: heap.totalMiB });
  };
  measure('started, no request yet');
  const warm = await postToken(broker.baseUrl, key, seed);
  if (warm.status !== 200) throw new Error(`warm-up answered ${warm.status}: ${warm.body}`);
  await sleep(3000);
  measure('1 connection cached (after 3 s idle)');
  await measureAfterGc('1 connection cached, after a full GC');

  const refreshesBefore = refreshGrants(stack);
  const pass = async (name: string) => {
    const statuses: Record<number, number> = {};
    const started = performance.now();
    await inPool(ids, concurrency, async (id) => {
      const answer = await postToken(broker.baseUrl, key, id);
      statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
    });
    const seconds = (performance.now() - started) / 1000;
    measure(name, { seconds, statuses: Object.entries(statuses).map(([status, count]) => `${status}×${count}`).join(' ') });
  };
  progress(`first pass: ${connections} token requests (each decrypts its row's token and caches it)`);
  await pass(`${connections} cached: right after the first pass`);
  await sleep(5000);
  measure(`${connections} cached: after 5 s idle`);
  progress('second pass: the same requests, now answered from memory');
  await pass(`${connections} cached: after a second pass (memory hits)`);
  await sleep(5000);
  measure(`${connections} cached: after 5 s idle`);
  // V8's memory reducer starts collecting on its own only after 8 s without allocation
  // (--gc-memory-reducer-start-delay-ms): this is the process at rest, before anyone forces a GC.
  await sleep(10_000);
  measure(`${connections} cached: after 15 s idle`);
  await measureAfterGc(`${connections} cached, after a full GC`);
  const refreshes = refreshGrants(stack) - refreshesBefore;

  // The audit trail says where each token came from (written in batches about every second).
  await sleep(2500);
  const sources: Record<string, number> = {};
  for await (const entity of stack.broker.services.tables.auditClient.listEntities<{ source?: string; count?: number }>({
    queryOptions: { filter: odata`tenantId eq ${stack.tenantId} and outcome eq ${'issued'}`, select: ['source', 'count'] },
  })) {
    const source = entity.source ?? 'none';
    // A row counts the identical events of a minute.
    sources[source] = (sources[source] ?? 0) + (entity.count ?? 1);
  }
  await broker.stop();

  printMachine('bench:memory — resident set size with cached connections', info);
  console.log(
    `One broker process (node dist/infra/local/start.js); ${connections} connections seeded with an encrypted ${accessToken.length}-byte access token; token requests ${concurrency} at a time. Refresh calls to the identity provider during the passes: ${refreshes}. Issued tokens by source, from the audit rows: ${Object.entries(sources).map(([source, count]) => `${source} ${count}`).join(', ')}.\n`,
  );
  printTable(
    ['phase', 'RSS MB', 'peak RSS MB', 'V8 heap used MB', 'V8 heap total MB', 'pass seconds', 'answers'],
    phases.map((row) => [
      row.phase,
      toMB(row.rss),
      toMB(row.peak),
      row.heapUsed === undefined ? undefined : toMB(row.heapUsed),
      row.heapTotal === undefined ? undefined : toMB(row.heapTotal),
      row.seconds,
      row.statuses,
    ]),
  );
  const idle = phases.find((row) => row.phase === '1 connection cached, after a full GC')!;
  const full = phases.at(-1)!;
  const atRest = phases.at(-2)!;
  const afterPasses = phases.find((row) => row.phase === `${connections} cached: after a second pass (memory hits)`)!;
  const worst = Math.max(...phases.map((row) => row.peak));
  printTable(
    ['RSS after the passes, MB', 'at rest (15 s idle), MB', 'after a full GC, MB', 'peak RSS, MB', 'retained heap per cached connection, KB', 'target ≤ 200 MB (peak)'],
    [[toMB(afterPasses.rss), toMB(atRest.rss), toMB(full.rss), toMB(worst), ((full.heapUsed! - idle.heapUsed!) * 2 ** 20) / 1000 / connections, toMB(worst) <= 200 ? 'met' : 'NOT met']],
  );
  console.log(`Raw figures: ${saveJson('memory', { machine: info, connections, tokenBytes: accessToken.length, phases, refreshes, sources })}`);
});
