import { Buffer } from 'node:buffer';
import { METHODS } from 'node:http';
import fc from 'fast-check';
import { ALL_METHODS, type HttpRegistration } from '../../functions/http.js';
import type { RawBody, RawRequest } from './raw-http.js';
import type { World } from './world.js';

/*
 * Arbitraries for malformed requests. Raw values (ids, mailboxes, states) are generated
 * first and encoded for the wire afterwards, in one of several ways, so the same hostile
 * value reaches the broker percent-encoded, over-encoded or as plain ASCII.
 */

/** Method tokens Node's parser accepts besides the eight the Functions host knows; CONNECT is a tunnel, not a request. */
export const ODD_METHODS = METHODS.filter((method) => !(ALL_METHODS as string[]).includes(method) && method !== 'CONNECT');

/** Methods for requests that are not about the method: TRACE has its own property (see the report). */
export const PLAIN_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

/** Marker of an unescaped tag: a page that shows it as markup echoed input without escaping. */
export const XSS_MARKER = '<x-fuzz';

const NASTY = [
  '', ' ', '.', '..', '../..', '..%2f..', '%2e%2e', '%252e%252e', '....//', '..\\..\\windows', '/etc/passwd', 'C:\\boot.ini',
  '\u0000', '\u0001', '\t', '\r\n', '\u007f', '\u0085', '\u2028', '\u202e', '\ufeff', '\u200b', '\uffff',
  '<x-fuzz onload=alert(1)>', '"\'><x-fuzz>', '<script>alert(1)</script>', '${jndi:ldap://127.0.0.1/a}', '{{7*7}}', "' OR '1'='1", '"; DROP TABLE apps; --',
  "PartitionKey eq 'x'", "x' or PartitionKey ne '", '💥', '𝕏', 'İ', 'ǅ', 'ß', 'ﬃ', 'Ω', 'e\u0301', 'ﾟ', '中文', 'العربية',
  'null', 'undefined', 'true', '[]', '{}', '__proto__', 'constructor', 'prototype', 'NaN', 'Infinity', '-1', '0', '1e309', '0x10', ' 5', '9'.repeat(40),
  '%', '%%', '%zz', '%E0%A4', '%C0%AE%C0%AE', '%ED%A0%80', '%FF', '*', '?', '#', '&', '=', ';', ',', '+', '@', ':', '~', '!', '$',
  'app_', 'con_', 'tnt_', 'lnk_', 'key_', 'mob_', 'mob_AAAA',
];

const CONTROL = Array.from({ length: 32 }, (_, code) => String.fromCharCode(code)).concat(['\u007f', '\u0080', '\u009f']);
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'.split('');
const PREFIXES = ['app', 'tnt', 'con', 'key', 'lnk', 'run', 'usr', 'APP', 'Con'];

export const nasty: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom(...NASTY), weight: 4 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 24 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }), weight: 2 },
  { arbitrary: fc.string({ unit: fc.constantFrom(...CONTROL), minLength: 1, maxLength: 6 }), weight: 1 },
  { arbitrary: fc.tuple(fc.constantFrom(...NASTY), fc.constantFrom(...NASTY), fc.string({ maxLength: 6 })).map((parts) => parts.join('')), weight: 2 },
  { arbitrary: fc.integer({ min: 100, max: 2500 }).chain((n) => fc.constantFrom('a', '%', '.', '/', 'é', '💥').map((c) => c.repeat(n))), weight: 1 },
);

export const forgedId: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...PREFIXES), fc.string({ unit: fc.constantFrom(...BASE32), minLength: 26, maxLength: 26 }))
  .map(([prefix, body]) => `${prefix}_${body}`);

/** An id that is almost a real one: one change away, which must be enough to miss. */
export function mutated(value: string): fc.Arbitrary<string> {
  const variants = fc.oneof(
    fc.constant(value.toUpperCase()),
    fc.constant(value.slice(0, -1)),
    fc.constant(`${value}a`),
    fc.constant(`${value}\u0000`),
    fc.constant(` ${value}`),
    fc.constant(`${value}%00`),
    fc.constant(value.replace(/^[a-z]+_/, 'con_')),
    fc.constant(value.replace(/^[a-z]+_/, 'lnk_')),
    fc.constant(`${value}/..`),
    fc.constant(`${value}/../${value}`),
    fc.nat({ max: Math.max(0, value.length - 1) }).chain((index) =>
      fc.constantFrom(...BASE32, 'A', '-', '_', 'é').filter((c) => c !== value[index]).map((c) => `${value.slice(0, index)}${c}${value.slice(index + 1)}`),
    ),
  );
  return variants.filter((variant) => variant !== value);
}

export function allIds(world: World): string[] {
  return [
    world.apps.inUse, world.apps.unused, world.apps.deleted,
    world.tenants.a, world.tenants.b, world.tenants.deleted,
    world.connections.a.id, world.connections.b.id, world.connections.pending.id, world.connections.deleted,
    ...[...world.keyIds.values()].flat(), world.keys.revokedId,
    world.links.live, world.links.expired, world.links.orphaned, ...world.links.used,
  ];
}

export function idValue(world: World): fc.Arbitrary<string> {
  const ids = allIds(world);
  return fc.oneof(
    { arbitrary: fc.constantFrom(...ids), weight: 3 },
    { arbitrary: forgedId, weight: 2 },
    { arbitrary: fc.constantFrom(...ids).chain(mutated), weight: 3 },
    { arbitrary: nasty, weight: 3 },
  );
}

// ---------------------------------------------------------------- encoding for the wire

function utf8Bytes(value: string): Buffer {
  // Lone surrogates become their WTF-8 bytes: a sequence no UTF-8 decoder accepts.
  return Buffer.from(value.replace(/[\ud800-\udfff]/g, (unit) => Buffer.from([0xed, 0xa0 | ((unit.charCodeAt(0) >> 6) & 0x1f), 0x80 | (unit.charCodeAt(0) & 0x3f)]).toString('latin1')), 'utf8');
}

function percentAll(value: string, lower: boolean): string {
  return [...utf8Bytes(value)].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).map((p) => (lower ? p : p.toUpperCase())).join('');
}

function safeComponent(value: string): string {
  try {
    return encodeURIComponent(value);
  } catch {
    return percentAll(value, false);
  }
}

/** Printable ASCII stays as it is (the request line allows it); anything else is escaped. */
function asciiOrEscaped(value: string): string {
  return [...value].map((c) => (/^[\x21-\x7e]$/.test(c) ? c : percentAll(c, false))).join('');
}

export type Encoding = 'component' | 'all' | 'all-lower' | 'ascii';
export const encoding: fc.Arbitrary<Encoding> = fc.constantFrom('component', 'component', 'all', 'all-lower', 'ascii');

export function encode(value: string, how: Encoding): string {
  switch (how) {
    case 'component':
      return safeComponent(value);
    case 'all':
      return percentAll(value, false);
    case 'all-lower':
      return percentAll(value, true);
    case 'ascii':
      return asciiOrEscaped(value);
  }
}

/** A path for a route template, with the given raw parameter values encoded one way or another. */
export function routePath(registration: HttpRegistration, param: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const segments = registration.route.split('/').filter(Boolean);
  const parts = segments.map((segment) => {
    if (segment.startsWith('{*')) return fc.array(fc.tuple(nasty, encoding).map(([raw, how]) => encode(raw, how) || 'x'), { minLength: 0, maxLength: 4 }).map((list) => list.join('/'));
    if (segment.startsWith('{')) return fc.tuple(param, encoding).map(([raw, how]) => encode(raw, how));
    return fc.oneof({ arbitrary: fc.constant(segment), weight: 4 }, { arbitrary: fc.mixedCase(fc.constant(segment)), weight: 1 });
  });
  return fc
    .tuple(fc.tuple(...parts), fc.constantFrom('', '', '', '/'), fc.constantFrom('/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api/', '/api//', '/api//', '/API/'))
    .map(([values, trailing, prefix]) => `${prefix}${values.join('/')}${trailing}`);
}

// ---------------------------------------------------------------- query strings

const QUERY_KEYS = ['limit', 'cursor', 'tenantId', 'status', 'state', 'code', 'error', 'error_description', 'error_subcode', 'admin_consent', 'tenant', 'session_state', 'redirect_uri', 'client_info', 'connection', 'api-version', '__proto__', 'constructor'];

export function cursor(): fc.Arbitrary<string> {
  const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
  return fc.oneof(
    fc.string({ maxLength: 30 }),
    fc.string({ unit: 'binary', maxLength: 30 }).map(b64),
    fc.record({ nextPartitionKey: nasty, nextRowKey: fc.option(nasty, { nil: undefined }) }).map((value) => b64(JSON.stringify(value))),
    fc.record({ nextPartitionKey: nasty, extra: nasty }).map((value) => b64(JSON.stringify(value))),
    fc.jsonValue().map((value) => b64(JSON.stringify(value))),
  );
}

export function queryValue(world: World): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: nasty, weight: 4 },
    { arbitrary: fc.constantFrom('0', '1', '50', '100', '101', '-5', '1.5', '1e2', '', 'pending', 'connected', 'revoked', 'bogus'), weight: 2 },
    { arbitrary: cursor(), weight: 1 },
    { arbitrary: idValue(world), weight: 2 },
    { arbitrary: fc.constantFrom(...world.secrets.map((secret) => secret.value)), weight: 1 },
  );
}

/** `?…` with repeated, unknown, empty and half-written parameters; sometimes nothing at all. */
export function queryString(world: World, keys: string[] = QUERY_KEYS): fc.Arbitrary<string> {
  const pair = fc.oneof(
    { arbitrary: fc.tuple(fc.constantFrom(...keys), queryValue(world), encoding).map(([key, value, how]) => `${encode(key, how === 'all' ? 'component' : how)}=${encode(value, how)}`), weight: 6 },
    { arbitrary: fc.tuple(nasty, queryValue(world), encoding).map(([key, value, how]) => `${encode(key, how)}=${encode(value, how)}`), weight: 2 },
    { arbitrary: fc.constantFrom('', '=', '==', '&', 'limit', 'limit=', '=5', 'a=b=c', '%', '%zz=1', '+=+', 'limit=1&limit=1'), weight: 1 },
  );
  return fc.option(fc.array(pair, { minLength: 1, maxLength: 6 }).map((pairs) => `?${pairs.join('&')}`), { nil: '', freq: 4 });
}

// ---------------------------------------------------------------- headers

/** Header values travel as latin1 bytes; CR, LF, NUL and other controls would be a different (protocol) test. */
export function headerSafe(value: string): string {
  return utf8Bytes(value).toString('latin1').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '');
}

export type Header = [string, string];

/** Authorization headers that must not let anyone in as the operator (tenant keys included). */
export function notOperatorAuth(world: World): fc.Arbitrary<Header[]> {
  const op = world.operatorKey;
  const bearer = (value: string): Header[] => [['authorization', headerSafe(value)]];
  return fc.oneof(
    fc.constant<Header[]>([]),
    fc.constantFrom(world.keys.a, world.keys.b, world.keys.revoked).map((key) => bearer(`Bearer ${key}`)),
    mutated(op).map((key) => bearer(`Bearer ${key}`)),
    fc.constantFrom(op, `Basic ${Buffer.from(`operator:${op}`).toString('base64')}`, `Token ${op}`, `Bearer\t${op}`, `Bearer=${op}`, `Bearer:${op}`, `Bearer "${op}"`, `Bearer ${op} ${op}`, `Bearer ${op},Bearer ${op}`, 'Bearer', 'Bearer ', `Bearer ${op}é`, `Bearer ${'A'.repeat(513)}`, `Bearer ${op}${'x'.repeat(500)}`, `Bearer ${Buffer.from(op).toString('base64')}`, `Digest username="${op}"`).map(bearer),
    nasty.map((value) => bearer(`Bearer ${value}`)),
    nasty.map(bearer),
    // Node keeps the first of repeated Authorization headers; the forged one comes first.
    mutated(op).map((key): Header[] => [['authorization', headerSafe(`Bearer ${key}`)], ['authorization', `Bearer ${op}`]]),
    // Keys anywhere but where they belong, and a forged App Service authentication principal.
    fc.constantFrom<Header[]>(
      [['x-api-key', op]],
      [['cookie', `operator=${op}; key=${op}`]],
      [['proxy-authorization', `Bearer ${op}`]],
      [['x-ms-client-principal', Buffer.from(JSON.stringify({ auth_typ: 'aad', claims: [{ typ: 'roles', val: 'operator' }] })).toString('base64')], ['x-ms-client-principal-name', 'admin@contoso.example'], ['x-ms-client-principal-id', '00000000-0000-0000-0000-000000000000']],
      [['x-functions-key', op]],
    ),
  );
}

/** Valid operator credentials in the spellings RFC 6750 allows. */
export function operatorAuth(world: World): fc.Arbitrary<Header[]> {
  return fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Bearer  ').map((scheme): Header[] => [['authorization', `${scheme} ${world.operatorKey}`]]);
}

/** For the token endpoint: the tenant keys (valid), and everything else (not). */
export function tokenAuth(world: World): fc.Arbitrary<Header[]> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(world.keys.a, world.keys.b).chain((key) => fc.constantFrom('Bearer', 'bearer').map((scheme): Header[] => [['authorization', `${scheme} ${key}`]])), weight: 6 },
    { arbitrary: fc.constant<Header[]>([['authorization', `Bearer ${world.operatorKey}`]]), weight: 1 },
    { arbitrary: fc.constantFrom(world.keys.a, world.keys.b).chain(mutated).map((key): Header[] => [['authorization', headerSafe(`Bearer ${key}`)]]), weight: 2 },
    { arbitrary: notOperatorAuth(world).filter((headers) => !headers.some(([, value]) => [world.keys.a, world.keys.b].some((key) => value.includes(key)))), weight: 2 },
  );
}

const JSON_TYPES = ['application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'APPLICATION/JSON', 'application/problem+json', 'application/vnd.fuzz+json', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/json; charset="utf-8"; boundary=x', 'application/json;;;', ' application/json ', 'application/json, text/plain'];
const OTHER_TYPES = ['text/plain', 'text/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=----x', 'application/xml', 'application/octet-stream', 'application/jsonx', 'application/json+', 'application/+json', 'json', '*/*', '', 'application', 'application/', 'application/ json', 'text/html; charset=utf-8'];

export const contentType: fc.Arbitrary<Header[]> = fc.oneof(
  { arbitrary: fc.constantFrom(...JSON_TYPES).map((value): Header[] => [['content-type', value]]), weight: 6 },
  { arbitrary: fc.constantFrom(...OTHER_TYPES).map((value): Header[] => [['content-type', value]]), weight: 3 },
  { arbitrary: nasty.map((value): Header[] => [['content-type', headerSafe(value)]]), weight: 1 },
  { arbitrary: fc.constant<Header[]>([]), weight: 1 },
);

/** Headers a hostile client adds: overrides, forwarding, odd Accept, a claimed encoding. */
export const noiseHeaders: fc.Arbitrary<Header[]> = fc.array(
  fc.oneof(
    fc.constantFrom<Header>(
      ['x-http-method-override', 'DELETE'],
      ['x-http-method', 'POST'],
      ['x-original-url', '/api/manage/tenants'],
      ['x-rewrite-url', '/admin/functions/rotate-tokens'],
      ['x-forwarded-host', 'evil.example'],
      ['x-forwarded-proto', 'javascript'],
      ['x-forwarded-for', '127.0.0.1, ::1'],
      ['forwarded', 'for=127.0.0.1;host=evil.example'],
      ['accept', 'text/html'],
      ['accept', 'application/xml'],
      ['accept-charset', 'utf-16'],
      ['content-encoding', 'gzip'],
      ['expect', '100-continue'],
      ['origin', 'https://evil.example'],
      ['range', 'bytes=0-10'],
      ['if-none-match', '*'],
    ),
    fc.tuple(fc.constantFrom('x-fuzz', 'cookie', 'referer', 'user-agent', 'accept-language', 'x-ms-request-id'), nasty).map(([name, value]): Header => [name, headerSafe(value)]),
  ),
  { maxLength: 3 },
);

// ---------------------------------------------------------------- bodies

const bytes = (text: string | Uint8Array, framing: 'length' | 'chunked' = 'length'): RawBody => ({ kind: 'bytes', bytes: typeof text === 'string' ? Buffer.from(text, 'utf8') : text, framing });

/** Nesting thousands deep, built as text so it costs nothing to generate. */
export const deepJson: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 1, max: 30_000 }), fc.constantFrom('array', 'object', 'mixed', 'unclosed', 'in-field'))
  .map(([depth, shape]) => {
    switch (shape) {
      case 'array':
        return `${'['.repeat(depth)}${']'.repeat(depth)}`;
      case 'object':
        return `${'{"a":'.repeat(Math.min(depth, 12_000))}1${'}'.repeat(Math.min(depth, 12_000))}`;
      case 'mixed':
        return `${'[{"x":'.repeat(Math.min(depth, 8_000))}0${'}]'.repeat(Math.min(depth, 8_000))}`;
      case 'unclosed':
        return '['.repeat(depth);
      default:
        return `{"name":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    }
  });

const FIELDS = ['name', 'clientId', 'tenant', 'clientSecret', 'clientSecretExpiresOn', 'alertEmails', 'tenantId', 'appId', 'mailbox', 'mode', 'protocols', 'signInName', 'connection'];

function fieldValue(world: World): fc.Arbitrary<unknown> {
  return fc.oneof(
    nasty,
    fc.jsonValue({ maxDepth: 2 }),
    idValue(world),
    fc.constantFrom('organizations', 'common', '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0', '2020-01-01T00:00:00Z', 'delegated', 'app_only', 'x@contoso.example', ['smtp'], ['smtp', 'smtp'], [], ['ops@contoso.example']),
    fc.constantFrom(...world.secrets.map((secret) => secret.value)),
  );
}

/** JSON objects shaped like the API's bodies, nearly valid or not at all. */
export function shapedJson(world: World): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.dictionary(fc.constantFrom(...FIELDS), fieldValue(world), { maxKeys: 6 }),
      fc.option(fc.tuple(fc.oneof(nasty, fc.constantFrom('__proto__', 'constructor', 'extra', 'Name', 'id', 'status')), fieldValue(world)), { freq: 2 }),
    )
    .map(([object, extra]) => {
      const text = JSON.stringify(object);
      if (!extra) return text;
      const member = `${JSON.stringify(extra[0])}:${JSON.stringify(extra[1] ?? null)}`;
      return text === '{}' ? `{${member}}` : `${text.slice(0, -1)},${member}}`;
    });
}

export function brokenJson(world: World): fc.Arbitrary<string> {
  return fc.oneof(
    fc.tuple(shapedJson(world), fc.nat()).map(([text, cut]) => text.slice(0, cut % Math.max(1, text.length))),
    fc.tuple(shapedJson(world), fc.nat(), fc.constantFrom(',', '}', ']', '"', ':', '\\', '\u0000', "'", 'NaN')).map(([text, at, c]) => `${text.slice(0, at % (text.length + 1))}${c}${text.slice(at % (text.length + 1))}`),
    fc.constantFrom('{', '}', '{"name":}', '{"name":"a",}', "{'name':'a'}", '{name:"a"}', '{"name":"a"} {"name":"b"}', '{"name":"a"}garbage', '// c\n{}', '{"a":NaN}', '{"a":Infinity}', '{"a":01}', '{"a":"\\x41"}', '{"a":"\\ud800"}', '\u0000{}', 'nul', 'tru'),
    fc.string({ unit: 'binary', maxLength: 60 }),
  );
}

/** A request body for an endpoint that reads JSON: anything from nothing to deeply nested. */
export function jsonishBody(world: World): fc.Arbitrary<RawBody | undefined> {
  const framing = fc.constantFrom<'length' | 'chunked'>('length', 'length', 'chunked');
  return fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: fc.tuple(shapedJson(world), framing).map(([text, f]) => bytes(text, f)), weight: 4 },
    { arbitrary: fc.tuple(brokenJson(world), framing).map(([text, f]) => bytes(text, f)), weight: 3 },
    { arbitrary: fc.tuple(deepJson, framing).map(([text, f]) => bytes(text, f)), weight: 2 },
    { arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => bytes(JSON.stringify(value) ?? 'null')), weight: 2 },
    { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((data) => bytes(data)), weight: 1 },
    { arbitrary: shapedJson(world).map((text) => bytes(Buffer.from(`\ufeff${text}`, 'utf16le'))), weight: 1 },
    { arbitrary: shapedJson(world).map((text) => bytes(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), Buffer.from(text)]))), weight: 1 },
    { arbitrary: fc.constantFrom('name=x&tenant=common', '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--x--', '<a/>').map((text) => bytes(text)), weight: 1 },
  );
}

/** A body that is fine as far as its shape goes: the auth property must refuse it for the key alone. */
export function validBody(world: World, registration: HttpRegistration, method: string): RawBody | undefined {
  const future = new Date(Date.now() + 100 * 86_400_000).toISOString();
  const bodies: Record<string, unknown> = {
    'manage-apps POST': { name: 'Fuzz app', clientId: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0', tenant: 'common', clientSecret: 'fuzz-secret', clientSecretExpiresOn: future },
    'manage-tenants POST': { name: 'Fuzz tenant', alertEmails: ['fuzz@fabrikam.example'] },
    'manage-connections POST': { tenantId: world.tenants.a, appId: world.apps.inUse, mailbox: 'new.fuzz@contoso.example' },
    'manage-app PATCH': { name: 'Renamed by fuzz' },
    'manage-tenant PATCH': { name: 'Renamed by fuzz' },
    'manage-connection PATCH': { protocols: ['smtp', 'pop'] },
    'token POST': { connection: world.connections.a.id },
  };
  const body = bodies[`${registration.name} ${method}`];
  return body === undefined ? undefined : bytes(JSON.stringify(body));
}

/** Bodies over the 64 KB API limit, or over the host's 1 MB read limit, described rather than built. */
export const hugeBody: fc.Arbitrary<RawBody> = fc
  .tuple(
    fc.oneof(fc.integer({ min: 64 * 1024 + 1, max: 1024 * 1024 }), fc.integer({ min: 1024 * 1024 + 1, max: 3 * 1024 * 1024 })),
    fc.constantFrom('[', '{"name":"', ' ', 'a', '{"connection":"con_', '\u0000', 'é', '{"a":[', '\ud83d\udca5'),
    fc.constantFrom<'length' | 'chunked'>('length', 'chunked'),
  )
  .map(([size, pattern, framing]) => ({ kind: 'fill', size, pattern: Buffer.from(pattern, 'utf8'), framing }));

// ---------------------------------------------------------------- browser route values

export function linkIdValue(world: World): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(world.links.expired, world.links.orphaned, ...world.links.used), weight: 4 },
    { arbitrary: mutated(world.links.live), weight: 3 },
    { arbitrary: forgedId.map((id) => `lnk_${id.slice(-26)}`), weight: 2 },
    { arbitrary: idValue(world), weight: 2 },
  );
}

export function callbackQuery(world: World): fc.Arbitrary<string> {
  const state = fc.oneof(
    { arbitrary: fc.constantFrom(...world.usedStates), weight: 3 },
    { arbitrary: mutated(world.liveState), weight: 3 },
    { arbitrary: fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.split('')), minLength: 43, maxLength: 43 }), weight: 2 },
    { arbitrary: fc.constantFrom('', 'a'.repeat(513), 'a'.repeat(5000)), weight: 1 },
    { arbitrary: nasty, weight: 2 },
  );
  const value = fc.oneof(nasty, fc.constantFrom(...world.usedCodes), fc.constantFrom('access_denied', 'invalid_request', 'consent_required', 'temporarily_unavailable', 'True', 'true', 'False', 'AADSTS50105', '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35'));
  const param = fc.oneof(
    { arbitrary: fc.tuple(fc.constant('state'), state), weight: 3 },
    { arbitrary: fc.tuple(fc.constantFrom('code', 'error', 'error_description', 'error_subcode', 'admin_consent', 'tenant', 'session_state', 'client_info'), value), weight: 4 },
    { arbitrary: fc.tuple(nasty, value), weight: 1 },
  );
  return fc.oneof(
    { arbitrary: fc.constantFrom(...world.usedCallbacks).map((url) => url.slice(url.indexOf('?'))), weight: 1 },
    {
      arbitrary: fc.tuple(fc.array(fc.tuple(param, encoding), { maxLength: 7 }), fc.boolean()).map(([pairs, stateFirst]) => {
        const encoded = pairs.map(([[key, v], how]) => `${encode(key, 'component')}=${encode(v, how)}`);
        if (stateFirst && !pairs.some(([[key]]) => key === 'state')) encoded.unshift(`state=${encodeURIComponent(world.usedStates[0]!)}`);
        return encoded.length ? `?${encoded.join('&')}` : '';
      }),
      weight: 6,
    },
  );
}

/** The request itself, assembled. */
export function request(method: fc.Arbitrary<string>, target: fc.Arbitrary<string>, headers: fc.Arbitrary<Header[]>[], body: fc.Arbitrary<RawBody | undefined>): fc.Arbitrary<RawRequest> {
  return fc.tuple(method, target, fc.tuple(...headers), body).map(([m, t, hs, b]) => ({ method: m, target: t, headers: hs.flat(), ...(b ? { body: b } : {}) }));
}
