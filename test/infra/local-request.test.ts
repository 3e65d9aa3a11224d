import { Buffer } from 'node:buffer';
import functionsLibrary, { type HttpRequest } from '@azure/functions';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ALL_METHODS, bodyBytes as readBodyBytes } from '../../functions/http.js';
import { LocalHeaders } from '../../infra/local/local-headers.js';
import { LocalHttpRequest, type LocalRequestInit } from '../../infra/local/local-request.js';

/*
 * The local host hands handlers its own request object instead of the library's. Whatever a
 * handler can observe must be the same on both, or tests through the local host would pass
 * where Azure fails: the two are built from the same generated requests, the way the worker
 * builds the library's (`body.bytes`, no body when empty) and driven the same way.
 */

const { HttpRequest: FunctionsHttpRequest } = functionsLibrary;

/** As the host builds it: the headers as a plain record. */
type HostInit = LocalRequestInit & { headers: Record<string, string> };

function libraryRequest(init: HostInit): HttpRequest {
  return new FunctionsHttpRequest({
    method: init.method,
    url: init.url,
    headers: init.headers,
    params: init.params,
    ...(init.body.byteLength > 0 ? { body: { bytes: init.body } } : {}),
  });
}

/** As the host builds ours: the parsed record (no prototype, like Node's) behind `LocalHeaders`. */
function hostRequest(init: HostInit): LocalHttpRequest {
  return new LocalHttpRequest({ ...init, headers: new LocalHeaders(Object.assign(Object.create(null) as Record<string, string>, init.headers)) });
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: string };

/** What a caller sees of a promise: its value in comparable form, or the class of its error. */
async function outcome(read: () => Promise<unknown>): Promise<Outcome> {
  try {
    const value = await read();
    if (value instanceof ArrayBuffer) return { ok: true, value: Buffer.from(value).toString('hex') };
    if (value instanceof Blob) return { ok: true, value: { type: value.type, hex: Buffer.from(await value.arrayBuffer()).toString('hex') } };
    if (value instanceof FormData) return { ok: true, value: [...value.entries()].map(([name, entry]) => [name, typeof entry === 'string' ? entry : entry.name]) };
    return { ok: true, value };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.constructor.name : typeof error };
  }
}

async function drain(stream: ReadableStream<Uint8Array> | null): Promise<string | null> {
  if (stream === null) return null;
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('hex');
}

const readers = {
  arrayBuffer: (request: HttpRequest) => request.arrayBuffer(),
  // How readJson reads: ours hands over its bytes, the library's copies them through arrayBuffer().
  bytes: async (request: HttpRequest) => Buffer.from(await readBodyBytes(request)).toString('hex'),
  text: (request: HttpRequest) => request.text(),
  json: (request: HttpRequest) => request.json(),
  blob: (request: HttpRequest) => request.blob(),
  formData: (request: HttpRequest) => request.formData(),
  stream: (request: HttpRequest) => drain(request.body as ReadableStream<Uint8Array> | null),
  clone: async (request: HttpRequest) => {
    const copy = request.clone();
    return { method: copy.method, url: copy.url, headers: [...copy.headers], params: copy.params, text: await copy.text() };
  },
} as const;
type Reader = keyof typeof readers;

/** A value, or the class of what was thrown instead (the library throws for half-sent principal headers). */
function attempt(read: () => unknown): unknown {
  try {
    return read();
  } catch (error) {
    return { threw: error instanceof Error ? error.constructor.name : typeof error };
  }
}

/** Everything a handler can see without touching the body. */
function surface(request: HttpRequest) {
  return {
    method: request.method,
    url: request.url,
    params: request.params,
    headers: [...request.headers],
    query: [...request.query],
    user: attempt(() => request.user),
    bodyUsed: request.bodyUsed,
  };
}

const tokenChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&*+^`|~'.split(''));
const headerName = fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 });
// What Node's parser lets through: visible ASCII, spaces and tabs inside, bytes 0x80–0xff as latin1.
const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((code) => code !== 0x7f).map((code) => String.fromCharCode(code)), maxLength: 40 });
const principal = fc
  .oneof(
    fc.constant(Buffer.from(JSON.stringify({ identityProvider: 'aad', userId: 'u1', userDetails: 'ada@contoso.example', userRoles: ['anonymous'] })).toString('base64')),
    fc.constant(Buffer.from(JSON.stringify({ auth_typ: 'aad', claims: [] })).toString('base64')),
    fc.constant('not base64 json'),
  )
  .map((value) => ({ 'x-ms-client-principal': value, 'x-ms-client-principal-id': 'p1', 'x-ms-client-principal-name': 'ada' }));
const contentType = fc.constantFrom('application/json', 'text/plain;charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream');

const utf8 = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));
const bodyBytes = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.uint8Array({ maxLength: 64 }),
  fc.json().map(utf8),
  fc.json().map((json) => utf8(`\ufeff${json}`)),
  fc.string({ unit: 'binary', maxLength: 32 }).map(utf8),
  fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }).map((form) => utf8(new URLSearchParams(form).toString())),
  fc.constant(utf8('--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n')),
);
// The host hands over slices of the socket's buffers: a view with other bytes around it.
const body = fc
  .tuple(bodyBytes, fc.uint8Array({ maxLength: 16 }), fc.uint8Array({ maxLength: 16 }))
  .map(([bytes, before, after]) => new Uint8Array(Buffer.concat([before, bytes, after])).subarray(before.length, before.length + bytes.length));

/** What a handler may do to the headers before it reads the body. */
const headerChange = fc.oneof(
  fc.constant(undefined),
  contentType.map((type) => (headers: Headers) => headers.set('content-type', type)),
  fc.constant((headers: Headers) => headers.delete('content-type')),
  fc.constant((headers: Headers) => ['a=1', 'b=2'].forEach((cookie) => headers.append('set-cookie', cookie))),
  fc.constant((headers: Headers) => headers.set('x-ms-client-principal', Buffer.from(JSON.stringify({ identityProvider: 'aad', userId: 'late', userDetails: 'late@contoso.example' })).toString('base64'))),
);

const request: fc.Arbitrary<HostInit> = fc.record({
  // The host upper-cases methods; fetch's own rules are checked with other cases too.
  method: fc.constantFrom(...ALL_METHODS, 'get', 'head', 'post', 'patch', 'Delete'),
  path: fc.array(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 3 }),
  query: fc.array(fc.tuple(fc.constantFrom('a', 'b', 'connection', 'ä'), fc.string({ unit: 'grapheme', maxLength: 8 })), { maxLength: 4 }),
  headers: fc.dictionary(headerName, headerValue, { maxKeys: 5 }),
  extra: fc.option(principal, { nil: undefined }),
  contentType: fc.option(contentType, { nil: undefined }),
  params: fc.dictionary(fc.constantFrom('id', 'keyId', 'rest'), fc.string({ maxLength: 10 }), { maxKeys: 2 }),
  body,
}).map(({ method, path, query, headers, extra, contentType: type, params, body: bytes }) => {
  // The host builds the URL from a parsed one, so it arrives normalised; do the same here.
  const url = new URL(`http://localhost/api/${path.map(encodeURIComponent).join('/')}`);
  for (const [name, value] of query) url.searchParams.append(name, value);
  return {
    method,
    url: url.href,
    headers: { host: 'localhost', ...headers, ...extra, ...(type ? { 'content-type': type } : {}) },
    params,
    body: bytes,
  };
});

const readerName = fc.constantFrom(...(Object.keys(readers) as Reader[]));

describe('the local host\'s request', () => {
  it('shows handlers what the Functions library\'s HttpRequest shows, read once, twice or as a stream', async () => {
    await fc.assert(
      fc.asyncProperty(request, fc.boolean(), headerChange, fc.boolean(), readerName, readerName, async (init, peek, change, together, first, second) => {
        const theirs = libraryRequest(init);
        const ours = hostRequest(init);
        // What the token path asks first, before anything fills the headers.
        for (const name of ['authorization', 'Content-Type', 'content-length']) expect(ours.headers.get(name)).toBe(theirs.headers.get(name));
        expect(surface(ours)).toEqual(surface(theirs));
        // Looking at `body` before reading takes the other way through ours: both must hold.
        if (peek) expect(ours.body === null).toBe(theirs.body === null);
        if (change) {
          change(ours.headers);
          change(theirs.headers);
          // The user was worked out above, before the change: both keep that answer.
          expect(surface(ours)).toEqual(surface(theirs));
        }

        if (together) {
          // Both reads started at once: the second finds the body taken, or both read an empty one.
          const [a, b] = await Promise.all([outcome(() => readers[first](ours)), outcome(() => readers[second](ours))]);
          const [c, d] = await Promise.all([outcome(() => readers[first](theirs)), outcome(() => readers[second](theirs))]);
          expect([a, b]).toEqual([c, d]);
        } else {
          expect(await outcome(() => readers[first](ours))).toEqual(await outcome(() => readers[first](theirs)));
          expect(ours.bodyUsed).toBe(theirs.bodyUsed);
          // A second read: the same value for an empty body, the same refusal for a used one.
          expect(await outcome(() => readers[second](ours))).toEqual(await outcome(() => readers[second](theirs)));
        }
        expect(ours.bodyUsed).toBe(theirs.bodyUsed);
        expect(ours.body === null).toBe(theirs.body === null);
      }),
      { numRuns: 600 },
    );
  });

  it('reads a body of every size the host accepts, and keeps none for GET or HEAD', async () => {
    for (const size of [1, 4_096, 65_536, 1_048_576]) {
      const bytes = new Uint8Array(size).map((_, index) => index % 251);
      for (const method of ['POST', 'GET', 'HEAD']) {
        const init = { method, url: 'http://localhost/api/token', headers: {}, params: {}, body: bytes };
        const ours = Buffer.from(await new LocalHttpRequest(init).arrayBuffer());
        expect(ours.equals(Buffer.from(await libraryRequest(init).arrayBuffer())), `${method} ${size}`).toBe(true);
        expect(ours.length).toBe(method === 'POST' ? size : 0);
      }
    }
  });

  it('gives each reader its own copy: changing what one read returned changes nothing else', async () => {
    const init = { method: 'POST', url: 'http://localhost/api/token', headers: {}, params: {}, body: utf8('{"connection":"x"}') };
    const ours = new LocalHttpRequest(init);
    const copy = ours.clone();
    new Uint8Array(await ours.arrayBuffer()).fill(0);
    expect(await copy.json()).toEqual({ connection: 'x' });
    expect(Buffer.from(init.body).toString()).toBe('{"connection":"x"}');
  });
});
