import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { issueTestServerCertificate } from './test-ca.js';

/**
 * An HTTPS fake of the Key Vault secrets REST surface, strict where the real service is
 * (challenge auth, api-version, names, sizes, soft delete), so the real SecretClient can be
 * tested against it. Values are kept in memory and never written to the request log.
 */

export interface KeyVaultFakeOptions {
  /** Named in the 401 challenge's authorization URL. */
  tenantId?: string;
  /** Page size of `GET /secrets` when the client asks for none (the service's is 25). */
  pageSize?: number;
  /** How long a DELETE stays in progress: meanwhile PUT answers 409 ObjectIsBeingDeleted. */
  deleteDelayMs?: number;
}

export interface Fault {
  /** 429 unless given. */
  status?: number;
  /** Seconds; sent as Retry-After. Defaults to 1 for 429 and 503. */
  retryAfterSeconds?: number;
  code?: string;
  /** Only requests with this method fail (e.g. 'PUT': writes fail, reads work). */
  method?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  apiVersion: string | null;
  /** Whether the request carried a bearer token. */
  authorized: boolean;
  hasBody: boolean;
  status: number;
  fault: boolean;
  /** Date.now() when the request arrived: what the vault's throttling counts. */
  at: number;
}

export interface KeyVaultFake {
  /** `https://127.0.0.1:<port>`, served with a certificate from the test CA. */
  url: string;
  tenantId: string;
  /** The next `count` requests, whatever they are, answer with `fault`. */
  failNext(count: number, fault?: Fault): void;
  clearFaults(): void;
  requests(): readonly RecordedRequest[];
  clearRequests(): void;
  liveSecretNames(): string[];
  deletedSecretNames(): string[];
  /** For assertions on what reached the vault; tests only. */
  latest(name: string): { value: string; contentType?: string; tags?: Record<string, string>; exp?: number } | undefined;
  versionCount(name: string): number;
  close(): Promise<void>;
}

interface Version {
  id: string;
  value: string;
  contentType?: string;
  tags?: Record<string, string>;
  exp?: number;
  nbf?: number;
  enabled: boolean;
  created: number;
}
interface Entry { name: string; versions: Version[] }
interface Deleted { entry: Entry; deletedDate: number; readyAt: number }

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly inner?: string,
  ) {
    super(message);
  }
}

const NAME = /^[0-9a-zA-Z-]{1,127}$/;
const MAX_VALUE_BYTES = 25 * 1024;
const now = () => Math.floor(Date.now() / 1000);

export async function startKeyVaultFake(options: KeyVaultFakeOptions = {}): Promise<KeyVaultFake> {
  const tenantId = options.tenantId ?? '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const pageSize = options.pageSize ?? 25;
  const live = new Map<string, Entry>();
  const deleted = new Map<string, Deleted>();
  const faults: Fault[] = [];
  const log: RecordedRequest[] = [];
  let url = '';

  // JSON.stringify drops the undefined members, as the service omits unset ones.
  const bundle = (entry: Entry, v: Version, withValue: boolean) => ({
    value: withValue ? v.value : undefined,
    id: `${url}/secrets/${entry.name}/${v.id}`,
    contentType: v.contentType,
    attributes: { enabled: v.enabled, exp: v.exp, nbf: v.nbf, created: v.created, updated: v.created, recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 90 },
    tags: v.tags,
  });
  const deletedBundle = (d: Deleted) => ({
    ...bundle(d.entry, d.entry.versions.at(-1)!, false),
    recoveryId: `${url}/deletedsecrets/${d.entry.name}`,
    deletedDate: d.deletedDate,
    scheduledPurgeDate: d.deletedDate + 90 * 86_400,
  });
  const notFound = (name: string, version = '') =>
    new HttpError(404, 'SecretNotFound', `A secret with (name/id) ${name}${version ? `/${version}` : ''} was not found in this key vault.`);
  const ready = (d: Deleted) => Date.now() >= d.readyAt;

  function requireName(name: string): string {
    if (!NAME.test(name)) throw new HttpError(400, 'BadParameter', 'The request URI contains an invalid name: ' + name);
    return name.toLowerCase();
  }

  function putSecret(name: string, body: unknown) {
    const key = requireName(name);
    const gone = deleted.get(key);
    if (gone && !ready(gone)) throw new HttpError(409, 'Conflict', `Secret ${name} is currently being deleted.`, 'ObjectIsBeingDeleted');
    if (gone) {
      throw new HttpError(409, 'Conflict', `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`, 'ObjectIsDeletedButRecoverable');
    }
    if (typeof body !== 'object' || body === null) throw new HttpError(400, 'BadParameter', 'The request body must be a JSON object.');
    const { value, contentType, tags, attributes: attrs } = body as Record<string, unknown>;
    if (typeof value !== 'string') throw new HttpError(400, 'BadParameter', 'Property value is required and must be a string.');
    if (Buffer.byteLength(value, 'utf8') > MAX_VALUE_BYTES) throw new HttpError(400, 'BadParameter', 'Secret value is too large.');
    if (contentType !== undefined && typeof contentType !== 'string') throw new HttpError(400, 'BadParameter', 'contentType must be a string.');
    if (tags !== undefined && !isStringRecord(tags)) throw new HttpError(400, 'BadParameter', 'tags must map strings to strings.');
    if (tags !== undefined && Object.keys(tags).length > 15) throw new HttpError(400, 'BadParameter', 'At most 15 tags are allowed.');
    const { exp, nbf, enabled } = (attrs ?? {}) as Record<string, unknown>;
    for (const [field, date] of [['exp', exp], ['nbf', nbf]] as const) {
      if (date !== undefined && (!Number.isSafeInteger(date) || (date as number) <= 0)) {
        throw new HttpError(400, 'BadParameter', `attributes.${field} must be a positive Unix time in seconds.`);
      }
    }
    const version: Version = {
      id: randomBytes(16).toString('hex'),
      value,
      enabled: enabled !== false,
      created: now(),
      ...(contentType === undefined ? {} : { contentType: contentType as string }),
      ...(tags === undefined ? {} : { tags }),
      ...(exp === undefined ? {} : { exp: exp as number }),
      ...(nbf === undefined ? {} : { nbf: nbf as number }),
    };
    const entry = live.get(key) ?? { name, versions: [] };
    entry.versions.push(version);
    live.set(key, entry);
    return bundle(entry, version, true);
  }

  function route(method: string, segments: string[], query: URLSearchParams, body: unknown): [number, unknown] {
    const [collection, rawName, third, ...rest] = segments;
    if (rest.length > 0) throw new HttpError(400, 'BadParameter', 'Unknown operation.');
    if (collection === 'secrets' && rawName === undefined && method === 'GET') {
      const max = Number(query.get('maxresults') ?? pageSize);
      if (!Number.isInteger(max) || max < 1 || max > 25) throw new HttpError(400, 'BadParameter', 'maxresults must be between 1 and 25.');
      const skip = Number(query.get('$skiptoken') ?? 0);
      const entries = [...live.values()];
      const page = entries.slice(skip, skip + max).map((entry) => ({ ...bundle(entry, entry.versions.at(-1)!, false), id: `${url}/secrets/${entry.name}` }));
      const more = skip + max < entries.length;
      const nextLink = more ? `${url}/secrets?api-version=${query.get('api-version')}&$skiptoken=${skip + max}&maxresults=${max}` : null;
      return [200, { value: page, nextLink }];
    }
    if (rawName === undefined) throw new HttpError(400, 'BadParameter', 'Unknown operation.');
    const key = requireName(rawName);
    if (collection === 'secrets') {
      if (method === 'PUT' && third === undefined) return [200, putSecret(rawName, body)];
      if (method === 'GET') {
        const entry = live.get(key);
        const version = third ? entry?.versions.find((v) => v.id === third) : entry?.versions.at(-1);
        if (!entry || !version) throw notFound(rawName, third);
        if (!version.enabled) throw new HttpError(403, 'Forbidden', 'Operation get is not allowed on a disabled secret.', 'SecretDisabled');
        return [200, bundle(entry, version, true)];
      }
      if (method === 'DELETE' && third === undefined) {
        const entry = live.get(key);
        if (!entry) throw notFound(rawName);
        live.delete(key);
        const gone: Deleted = { entry, deletedDate: now(), readyAt: Date.now() + (options.deleteDelayMs ?? 0) };
        deleted.set(key, gone);
        return [200, deletedBundle(gone)];
      }
    }
    if (collection === 'deletedsecrets') {
      const gone = deleted.get(key);
      const missing = new HttpError(404, 'SecretNotFound', `Deleted Secret not found: ${rawName}`);
      if (method === 'GET' && third === undefined) {
        if (!gone || !ready(gone)) throw missing;
        return [200, deletedBundle(gone)];
      }
      if (method === 'DELETE' && third === undefined) {
        if (!gone || !ready(gone)) throw missing;
        deleted.delete(key);
        return [204, undefined];
      }
      if (method === 'POST' && third === 'recover') {
        if (!gone) throw missing;
        if (!ready(gone)) throw new HttpError(409, 'Conflict', `Secret ${rawName} is currently being deleted.`, 'ObjectIsBeingDeleted');
        deleted.delete(key);
        live.set(key, gone.entry);
        return [200, bundle(gone.entry, gone.entry.versions.at(-1)!, false)];
      }
    }
    throw new HttpError(405, 'BadRequest', `${method} is not supported on this resource.`);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = new URL(req.url ?? '/', url);
    const method = req.method ?? 'GET';
    const record: RecordedRequest = {
      method,
      path: target.pathname,
      apiVersion: target.searchParams.get('api-version'),
      authorized: /^Bearer \S+$/i.test(req.headers.authorization ?? ''),
      hasBody: false,
      status: 0,
      fault: false,
      at: Date.now(),
    };
    log.push(record);
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      const text = payload === undefined ? '' : JSON.stringify(payload);
      res.writeHead(status, { ...(text ? { 'content-type': 'application/json; charset=utf-8' } : {}), ...headers });
      res.end(text);
    };
    try {
      const raw = await readBody(req);
      record.hasBody = raw.length > 0;
      const index = faults.findIndex((candidate) => candidate.method === undefined || candidate.method === req.method);
      const fault = index === -1 ? undefined : faults.splice(index, 1)[0];
      if (fault) {
        record.fault = true;
        const status = fault.status ?? 429;
        const retryAfter = fault.retryAfterSeconds ?? (status === 429 || status === 503 ? 1 : undefined);
        const code = fault.code ?? (status === 429 ? 'Throttled' : 'Fault');
        send(status, { error: { code, message: `Injected fault ${status}.` } }, retryAfter === undefined ? {} : { 'retry-after': String(retryAfter) });
        return;
      }
      if (!record.apiVersion) throw new HttpError(400, 'BadParameter', 'The api-version query parameter (?api-version=) is required for all requests.');
      if (!record.authorized) {
        send(401, { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } }, {
          'www-authenticate': `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="https://vault.azure.net"`,
        });
        return;
      }
      let body: unknown;
      if (raw.length > 0) {
        if (!/^application\/json/i.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'BadParameter', 'Content-Type must be application/json.');
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new HttpError(400, 'BadParameter', 'The request body is not valid JSON.');
        }
      }
      const segments = target.pathname.split('/').filter((segment) => segment !== '');
      const [status, payload] = route(method, segments.map(decodeURIComponent), target.searchParams, body);
      send(status, payload);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      send(error.status, { error: { code: error.code, message: error.message, ...(error.inner ? { innererror: { code: error.inner } } : {}) } });
    }
  }

  const tls = await issueTestServerCertificate(['127.0.0.1', 'localhost']);
  const server: Server = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'InternalError', message: String(error) } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    tenantId,
    failNext(count, fault = {}) {
      for (let i = 0; i < count; i += 1) faults.push(fault);
    },
    clearFaults: () => void faults.splice(0),
    requests: () => log.map((entry) => ({ ...entry })),
    clearRequests: () => void log.splice(0),
    liveSecretNames: () => [...live.values()].map((entry) => entry.name),
    deletedSecretNames: () => [...deleted.values()].map((gone) => gone.entry.name),
    latest(name) {
      const version = live.get(name.toLowerCase())?.versions.at(-1);
      // Through JSON so unset members are absent, as they are on the wire.
      return version && JSON.parse(JSON.stringify({ value: version.value, contentType: version.contentType, tags: version.tags, exp: version.exp }));
    },
    versionCount: (name) => (live.get(name.toLowerCase()) ?? deleted.get(name.toLowerCase())?.entry)?.versions.length ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1024 * 1024) throw new HttpError(413, 'BadParameter', 'The request body is too large.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
