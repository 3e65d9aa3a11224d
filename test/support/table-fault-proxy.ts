import { randomUUID } from 'node:crypto';
import { Agent, createServer, request as forward, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { azuriteConnectionString } from '../../infra/local/azurite.js';

/*
 * A plain HTTP proxy in front of Azurite's Table endpoint that forwards every request
 * unchanged and lets a test make chosen ones fail the way Azure Table Storage fails.
 *
 * Shared Key (SharedKeyLite for tables) signs the date and the canonical resource
 * `/<account>/<path>`, never the host or port, so a request signed for the proxy's port is
 * still valid when Azurite receives it with the same path and headers.
 *
 * @see https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key#shared-key-lite-and-table-service-format-for-2009-09-19-and-later
 * @see https://learn.microsoft.com/rest/api/storageservices/table-service-error-codes
 */

export interface RequestMatch {
  /** `GET`, `POST` (insert, batch), `PUT` (replace), `MERGE` or `PATCH`, `DELETE`. */
  method?: string;
  /**
   * Compared with the decoded path and query, e.g. `brokerconnections(PartitionKey='con_…'`.
   * Note `brokertenants` is a prefix of `brokertenantkeys`: add the `(` for one table.
   */
  pathIncludes?: string;
}

export interface TableFault {
  status: 503 | 500 | 412;
  match?: RequestMatch;
  /** Let this many matching requests through before the fault applies (e.g. the lease write before the release write). */
  skip?: number;
  /**
   * Forward the request first and answer the fault instead of Azurite's answer: the write
   * happened, the caller never heard (a timeout or reset after the service committed).
   */
  afterForward?: boolean;
}

export interface ProxiedRequest {
  method: string;
  /** Decoded path and query, as matched. */
  path: string;
  status: number;
  faulted: boolean;
  /** Whether Azurite saw the request (false for faults answered in its place and while down). */
  forwarded: boolean;
  delayedMs: number;
}

export interface TableFaultProxy {
  port: number;
  /** Azurite's development account and key, pointing at the proxy. */
  connectionString: string;
  /** The next `count` matching requests fail with `fault`. */
  failNext(count: number, fault: TableFault): void;
  /** The next `count` matching requests reach Azurite `ms` later. */
  delayNext(count: number, ms: number, options?: { match?: RequestMatch; skip?: number }): void;
  /** `503` (the default): every request answers ServerBusy; `refuse`: the port stops accepting connections. */
  down(mode?: '503' | 'refuse'): Promise<void>;
  up(): Promise<void>;
  clearFaults(): void;
  requests(): readonly ProxiedRequest[];
  clearRequests(): void;
  close(): Promise<void>;
}

interface Rule {
  remaining: number;
  skip: number;
  match: RequestMatch;
  fault?: TableFault;
  delayMs?: number;
}

const ERROR_CODES: Record<TableFault['status'], { code: string; message: string }> = {
  503: { code: 'ServerBusy', message: 'The server is currently unable to receive requests. Please retry your request.' },
  500: { code: 'InternalError', message: 'The server encountered an internal error. Please retry the request.' },
  412: { code: 'UpdateConditionNotSatisfied', message: 'The update condition specified in the request was not satisfied.' },
};

function decodedPath(url: string): string {
  try {
    return decodeURIComponent(url);
  } catch {
    return url;
  }
}

function matches(match: RequestMatch, method: string, path: string): boolean {
  return (match.method === undefined || match.method.toUpperCase() === method) && (match.pathIncludes === undefined || path.includes(match.pathIncludes));
}

/** Takes the first rule that applies to this request, counting down its skips and uses. */
function take(rules: Rule[], method: string, path: string): Rule | undefined {
  for (const [index, rule] of rules.entries()) {
    if (!matches(rule.match, method, path)) continue;
    if (rule.skip > 0) {
      rule.skip -= 1;
      return undefined;
    }
    rule.remaining -= 1;
    if (rule.remaining <= 0) rules.splice(index, 1);
    return rule;
  }
  return undefined;
}

function sendStorageError(res: ServerResponse, status: TableFault['status']): void {
  const { code, message } = ERROR_CODES[status];
  const requestId = randomUUID();
  const body = JSON.stringify({
    'odata.error': { code, message: { lang: 'en-US', value: `${message}\nRequestId:${requestId}\nTime:${new Date().toISOString()}` } },
  });
  res.writeHead(status, {
    'content-type': 'application/json;odata=minimalmetadata;streaming=true;charset=utf-8',
    'x-ms-error-code': code,
    'x-ms-request-id': requestId,
    'x-ms-version': '2019-02-02',
    date: new Date().toUTCString(),
  });
  res.end(body);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startTableFaultProxy(options: { targetPort: number; targetHost?: string }): Promise<TableFaultProxy> {
  const targetHost = options.targetHost ?? '127.0.0.1';
  const agent = new Agent({ keepAlive: true });
  const faults: Rule[] = [];
  const delays: Rule[] = [];
  const log: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  let mode: 'up' | '503' | 'refuse' = 'up';

  /** Azurite's answer, buffered so it can be either relayed or dropped for a fault. */
  function upstream(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const outgoing = forward(
        { host: targetHost, port: options.targetPort, method: req.method, path: req.url, headers: req.headers, agent },
        (response) => {
          readBody(response).then((data) => resolve({ status: response.statusCode ?? 502, headers: response.headers, body: data }), reject);
        },
      );
      outgoing.once('error', reject);
      outgoing.end(body);
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = decodedPath(req.url ?? '/');
    const record: ProxiedRequest = { method, path, status: 0, faulted: false, forwarded: false, delayedMs: 0 };
    log.push(record);
    const body = await readBody(req);

    if (mode === '503') {
      record.faulted = true;
      record.status = 503;
      sendStorageError(res, 503);
      return;
    }
    const delay = take(delays, method, path);
    if (delay?.delayMs) {
      record.delayedMs = delay.delayMs;
      await new Promise((resolve) => setTimeout(resolve, delay.delayMs));
    }
    const fault = take(faults, method, path)?.fault;
    if (fault && !fault.afterForward) {
      record.faulted = true;
      record.status = fault.status;
      sendStorageError(res, fault.status);
      return;
    }
    const answer = await upstream(req, body);
    record.forwarded = true;
    if (fault) {
      record.faulted = true;
      record.status = fault.status;
      sendStorageError(res, fault.status);
      return;
    }
    record.status = answer.status;
    // Transfer-Encoding no longer describes the buffered body; Content-Length does.
    const { 'transfer-encoding': _chunked, connection: _connection, ...headers } = answer.headers;
    res.writeHead(answer.status, { ...headers, 'content-length': String(answer.body.length) });
    res.end(answer.body);
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // Azurite itself unreachable: the client sees a reset, as it would from a dead front end.
      if (!res.headersSent) res.destroy(error instanceof Error ? error : undefined);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });

  await listen(0);
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    connectionString: azuriteConnectionString(port),
    failNext(count, fault) {
      faults.push({ remaining: count, skip: fault.skip ?? 0, match: fault.match ?? {}, fault });
    },
    delayNext(count, ms, delayOptions = {}) {
      delays.push({ remaining: count, skip: delayOptions.skip ?? 0, match: delayOptions.match ?? {}, delayMs: ms });
    },
    async down(next = '503') {
      if (next === 'refuse' && mode !== 'refuse') await stopListening();
      if (next === '503' && mode === 'refuse') await listen(port);
      mode = next;
    },
    async up() {
      // The same port again, so clients built with the connection string find it.
      if (mode === 'refuse') await listen(port);
      mode = 'up';
    },
    clearFaults() {
      faults.splice(0);
      delays.splice(0);
    },
    requests: () => log.map((entry) => ({ ...entry })),
    clearRequests: () => void log.splice(0),
    async close() {
      if (mode !== 'refuse') await stopListening();
      agent.destroy();
    },
  };
}
