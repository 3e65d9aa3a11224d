import type { z } from 'zod';
import type { HttpRegistration } from '../../functions/http.js';
import { createAppInput, createConnectionInput, createTenantInput, listConnectionsQuery, listQuery, patchAppInput, patchConnectionInput, patchTenantInput } from '../../shared/manage/inputs.js';
import { tokenRequestInput } from '../../shared/tokens/inputs.js';
import type { RawRequest } from './raw-http.js';
import { existingIds, type World } from './world.js';
import { bySpecificity, compileRoute, findRoute as findHostRoute, type CompiledRoute } from '../../infra/local/routes.js';

/*
 * Which generated requests could succeed. The generators aim at requests that must be
 * refused, but a path can normalise into a real route ("/api/manage/x/../apps"), a PATCH
 * body can happen to be valid, a key can be the right one. This model of the broker's
 * routing and input checks says, for each request, whether it must be refused, whether it
 * is a read that may succeed (sent, but only checked for shape and leaks), or whether it
 * could change state (not sent). It errs towards "could succeed": a wrong guess costs a
 * case, never a false alarm.
 */

export type Verdict = 'reject' | 'safe-read' | 'skip';

export interface Judgement {
  verdict: Verdict;
  /** What a refusal must look like: problem+json, or the HTML page of a browser route. */
  kind: 'problem' | 'page';
  /** The registration that serves the request, or where the host answers itself. */
  route: string;
}

/** The local host's own router, so the oracle routes exactly as the host does. */
export function compileRoutes(registrations: HttpRegistration[]): CompiledRoute[] {
  return registrations.map(compileRoute).sort(bySpecificity);
}

export function findRoute(routes: CompiledRoute[], parts: string[]): { registration: HttpRegistration; params: Record<string, string> } | null {
  const found = findHostRoute(routes, parts);
  return found ? { registration: found.route.registration, params: found.params } : null;
}

/** Node keeps the first of these when a request repeats them and joins the others. */
const SINGLE_HEADERS = new Set(['authorization', 'content-type', 'content-length', 'host', 'user-agent', 'referer', 'proxy-authorization', 'from', 'age', 'etag', 'expires', 'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'retry-after', 'server']);

export function headerMap(request: RawRequest): Map<string, string> {
  const headers = new Map<string, string>();
  for (const [rawName, value] of request.headers) {
    const name = rawName.toLowerCase();
    const trimmed = value.trim();
    if (!headers.has(name)) headers.set(name, trimmed);
    else if (!SINGLE_HEADERS.has(name)) headers.set(name, `${headers.get(name)}${name === 'cookie' ? '; ' : ', '}${trimmed}`);
  }
  if (request.body?.framing === 'length') headers.set('content-length', String(request.body.kind === 'bytes' ? request.body.bytes.byteLength : request.body.size));
  return headers;
}

/** RFC 6750's b64token after "Bearer", as the broker reads it. */
export function presentedKey(authorization: string | undefined): string | null {
  const found = /^Bearer[ ]+([\x21-\x7e]{1,512})\s*$/i.exec(authorization ?? '');
  return found ? found[1]! : null;
}

const MAX_JSON = 64 * 1024;
const HOST_LIMIT = 1024 * 1024;

function bodySize(request: RawRequest): number {
  const body = request.body;
  return body === undefined ? 0 : body.kind === 'bytes' ? body.bytes.byteLength : body.size;
}

/** What readJson would hand the endpoint, or null when it refuses the body. */
function jsonBody<T>(request: RawRequest, headers: Map<string, string>, schema: z.ZodType<T>): T | null {
  if (Number(headers.get('content-length') ?? '0') > MAX_JSON) return null;
  const mediaType = (headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType !== 'application/json' && !/^application\/[a-z0-9.+-]+\+json$/.test(mediaType)) return null;
  const body = request.body;
  if (body?.kind === 'fill' || bodySize(request) > MAX_JSON) return null;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body?.bytes ?? new Uint8Array()));
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/** What readQuery would hand the endpoint, or null when it refuses the query. */
function queryOf<T>(search: URLSearchParams, schema: z.ZodType<T>): T | null {
  const seen = new Map<string, string>();
  for (const [key, value] of search) {
    if (seen.has(key)) return null;
    seen.set(key, value);
  }
  const parsed = schema.safeParse(Object.fromEntries(seen));
  return parsed.success ? parsed.data : null;
}

/** A cursor the storage layer would pass on to Table Storage (which may then answer anything). */
function plausibleCursor(cursor: string | undefined): boolean {
  if (cursor === undefined) return true;
  try {
    const decoded = JSON.parse(Buffer.from(cursor, 'base64').toString('utf8')) as unknown;
    return typeof decoded === 'object' && decoded !== null && typeof (decoded as Record<string, unknown>).nextPartitionKey === 'string';
  } catch {
    return false;
  }
}

function listRead<T extends { cursor?: string | undefined }>(search: URLSearchParams, schema: z.ZodType<T>): Verdict {
  const query = queryOf(search, schema);
  return query !== null && plausibleCursor(query.cursor) ? 'safe-read' : 'reject';
}

interface Context {
  request: RawRequest;
  method: string;
  headers: Map<string, string>;
  params: Record<string, string>;
  search: URLSearchParams;
  world: World;
}

const either = (exists: boolean, verdict: Verdict): Verdict => (exists ? verdict : 'reject');

/** Per registration name: given an allowed method, may the request succeed? */
function manageVerdict(name: string, ctx: Context): Verdict {
  const { method, params, search, request, headers, world } = ctx;
  const ids = existingIds(world);
  const body = <T>(schema: z.ZodType<T>) => jsonBody(request, headers, schema) !== null;
  switch (name) {
    case 'manage-health':
      return 'safe-read';
    case 'manage-runs': {
      const query = queryOf(search, listQuery);
      return query !== null && query.cursor === undefined ? 'safe-read' : 'reject';
    }
    case 'manage-apps':
      return method === 'POST' ? (body(createAppInput) ? 'skip' : 'reject') : listRead(search, listQuery);
    case 'manage-tenants':
      return method === 'POST' ? (body(createTenantInput) ? 'skip' : 'reject') : listRead(search, listQuery);
    case 'manage-connections':
      return method === 'POST' ? (body(createConnectionInput) ? 'skip' : 'reject') : listRead(search, listConnectionsQuery);
    case 'manage-app': {
      const exists = ids.apps.has(params.id ?? '');
      return method === 'GET' ? either(exists, 'safe-read') : method === 'PATCH' ? either(exists && body(patchAppInput), 'skip') : either(exists, 'skip');
    }
    case 'manage-tenant': {
      const exists = ids.tenants.has(params.id ?? '');
      return method === 'GET' ? either(exists, 'safe-read') : method === 'PATCH' ? either(exists && body(patchTenantInput), 'skip') : either(exists, 'skip');
    }
    case 'manage-connection': {
      const exists = ids.connections.has(params.id ?? '');
      return method === 'GET' ? either(exists, 'safe-read') : method === 'PATCH' ? either(exists && body(patchConnectionInput), 'skip') : either(exists, 'skip');
    }
    case 'manage-tenant-keys': {
      const exists = ids.tenants.has(params.id ?? '');
      return method === 'POST' ? either(exists, 'skip') : either(exists, listRead(search, listQuery));
    }
    case 'manage-tenant-key':
      return either((world.keyIds.get(params.id ?? '') ?? []).includes(params.keyId ?? ''), 'skip');
    case 'manage-connection-authorize-link':
      return either(ids.connections.has(params.id ?? ''), 'skip');
    default: {
      // A route this model does not know yet: only a malformed id is sure to be refused.
      const known = [...ids.apps, ...ids.tenants, ...ids.connections, ...ids.links, ...[...world.keyIds.values()].flat()];
      const allKnown = Object.values(params).every((value) => known.includes(value));
      return allKnown ? 'skip' : 'reject';
    }
  }
}

function tokenVerdict(ctx: Context): Verdict {
  const { world, headers, request } = ctx;
  const key = presentedKey(headers.get('authorization'));
  const tenantId = key === null ? undefined : world.tenantKeys.get(key);
  if (tenantId === undefined) return 'reject';
  const input = jsonBody(request, headers, tokenRequestInput);
  if (input === null) return 'reject';
  const reference = input.connection;
  const served = world.connected.some(
    (connection) => connection.tenantId === tenantId && (connection.id === reference || connection.mailbox.toLowerCase() === reference.toLowerCase()),
  );
  return served ? 'skip' : 'reject';
}

function adminVerdict(ctx: { method: string; headers: Map<string, string>; world: World }, name: string): Verdict {
  let decoded: string;
  try {
    decoded = decodeURIComponent(name);
  } catch {
    return 'reject';
  }
  const operator = presentedKey(ctx.headers.get('authorization')) === ctx.world.operatorKey;
  return ctx.method === 'POST' && operator && decoded === 'rotate-tokens' ? 'skip' : 'reject';
}

export function judge(request: RawRequest, routes: CompiledRoute[], world: World): Judgement {
  let url: URL;
  try {
    url = new URL(request.target, 'http://localhost');
  } catch {
    return { verdict: 'reject', kind: 'problem', route: '(unparsable target)' };
  }
  const headers = headerMap(request);
  const admin = /^\/admin\/functions\/([^/]+)\/?$/.exec(url.pathname);
  if (admin) return { verdict: adminVerdict({ method: request.method, headers, world }, admin[1]!), kind: 'problem', route: '(admin)' };
  let parts: string[] | null;
  try {
    parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = null;
  }
  if (parts === null || parts[0] !== 'api') return { verdict: 'reject', kind: 'problem', route: '(outside /api)' };
  const found = findRoute(routes, parts.slice(1));
  if (!found) return { verdict: 'reject', kind: 'problem', route: '(no route)' };
  const { registration, params } = found;
  const kind = registration.errors === 'page' ? 'page' : 'problem';
  const judged = (verdict: Verdict): Judgement => ({ verdict, kind, route: registration.name });
  if (bodySize(request) > HOST_LIMIT) return judged('reject');
  const method = request.method;
  if (!Object.hasOwn(registration.methods, method)) return judged('reject');
  const ctx: Context = { request, method, headers, params, search: url.searchParams, world };
  if (registration.route.startsWith('manage/')) {
    if (presentedKey(headers.get('authorization')) !== world.operatorKey) return judged('reject');
    return judged(manageVerdict(registration.name, ctx));
  }
  switch (registration.name) {
    case 'health':
      return judged('safe-read');
    case 'token':
      return judged(tokenVerdict(ctx));
    case 'connect':
      return judged(params.linkId === world.links.live ? 'skip' : 'reject');
    case 'oauth-callback':
      return judged(url.searchParams.get('state') === world.liveState ? 'skip' : 'reject');
    case 'not-found':
      return judged('reject');
    default:
      return judged('skip');
  }
}
