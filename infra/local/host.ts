import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { inspect } from 'node:util';
import { Cron } from 'croner';
import type { HttpResponseInit } from '@azure/functions';
import { ALL_METHODS, httpHandler, type HttpRegistration, type Registration, type ServicesProvider, type TimerRegistration } from '../../functions/http.js';
import { BrokerError } from '../../shared/errors.js';
import { problemResponse, type PlainResponse } from '../../shared/http/problem.js';
import { errorPage } from '../../shared/http/result-pages.js';
import { LocalInvocationContext } from './local-context.js';
import { LocalHeaders } from './local-headers.js';
import { LocalHttpRequest } from './local-request.js';
import { compileRoute, parseTarget, routeTable, type CompiledRoute } from './routes.js';

/*
 * A small stand-in for the Functions host (Core Tools cannot be installed everywhere): it
 * serves the same registration table over node:http with the host's behaviour — the /api
 * prefix, route templates with parameters and a catch-all, and the admin API's
 * `POST /admin/functions/{name}` to run a timer now.
 */

/** The host reads bodies up to this; the 64 KB API limit is enforced above it, with a problem answer. */
const HARD_BODY_LIMIT = 1024 * 1024;

export interface LocalHostOptions {
  registrations: Registration[];
  services: ServicesProvider;
  log?: (line: string) => void;
  /** Run timer functions on their NCRONTAB schedules (UTC), as the Functions host does; stopped with the server. */
  runSchedules?: boolean;
}

function decodeParts(path: string): string[] | null {
  try {
    return path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return null;
  }
}

function readBody(request: IncomingMessage): Promise<Uint8Array | 'too-large'> {
  // Events rather than an async iterator: this runs for every request.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > HARD_BODY_LIMIT) {
        request.off('data', onData);
        request.off('end', onEnd);
        resolve('too-large');
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    request.on('data', onData);
    request.once('end', onEnd);
    request.once('error', reject);
  });
}

function setHeaders(response: ServerResponse, headers: HttpResponseInit['headers']): void {
  if (headers === undefined || headers === null) return;
  // The handlers' own answers carry a plain record; anything else goes through `Headers`, as the worker would.
  if (headers instanceof Headers || Array.isArray(headers) || Object.getPrototypeOf(headers) !== Object.prototype) {
    for (const [name, value] of new Headers(headers as ConstructorParameters<typeof Headers>[0])) response.setHeader(name, value);
    return;
  }
  const record = headers as Record<string, string>;
  for (const name in record) response.setHeader(name, record[name]!);
}

/*
 * Answers finished during one turn of the event loop are written together at its end
 * (`setImmediate`), not each as its handler settles. Under load one turn reads dozens of
 * requests; writing each answer between two handlers interleaves the write path with the
 * handlers' work and wakes the client once per answer. bench:token measured the broker at
 * 34 µs of CPU per request this way against 38–46 µs writing at once (bench/RESULTS.md). A
 * lone request waits only for the rest of its own turn.
 */
let finishing: Array<{ response: ServerResponse; body: string | Uint8Array }> = [];

function finishAll(): void {
  const answers = finishing;
  finishing = [];
  for (const { response, body } of answers) {
    try {
      // With the whole body given to `end`, Node sends Content-Length and one write.
      response.end(body);
    } catch {
      // One answer that cannot be written (its client gone) must not stop the others.
      response.destroy();
    }
  }
}

function write(response: ServerResponse, status: number | undefined, headers: HttpResponseInit['headers'], body: string | Uint8Array): void {
  // Status and headers now, so an invalid one fails here, in the request's own handling (and
  // is answered with a 500) rather than in `end` at the turn's end. Node's own check: it
  // refuses a status outside 100–999 only when the head is written.
  const code = status ?? 200;
  if (!Number.isInteger(code) || code < 100 || code > 999) throw new RangeError(`Invalid status code: ${code}`);
  response.statusCode = code;
  setHeaders(response, headers);
  if (finishing.push({ response, body }) === 1) setImmediate(finishAll);
}

/** Synchronous for the answers handlers give (text, bytes or none); a stream or blob body is read first. */
function send(response: ServerResponse, init: HttpResponseInit | PlainResponse): void | Promise<void> {
  const { body } = init;
  if (typeof body === 'string' || body instanceof Uint8Array) return write(response, init.status, init.headers, body);
  if (body === undefined || body === null) return write(response, init.status, init.headers, '');
  return new Response(body as ConstructorParameters<typeof Response>[0])
    .arrayBuffer()
    .then((bytes) => write(response, init.status, init.headers, new Uint8Array(bytes)));
}

export function createLocalHost(options: LocalHostOptions): Server {
  const log = options.log ?? ((line: string) => console.log(line));
  const routes = options.registrations
    .filter((registration): registration is HttpRegistration => registration.kind === 'http')
    .map(compileRoute);
  const timers = new Map(
    options.registrations
      .filter((registration): registration is TimerRegistration => registration.kind === 'timer')
      .map((timer) => [timer.name, timer]),
  );
  const handlers = new Map(routes.map((route) => [route, httpHandler(route.registration, options.services)]));
  const findRoute = routeTable(routes);

  const context = (functionName: string) =>
    new LocalInvocationContext({
      functionName,
      // Whole objects, as the Functions host sends them to Application Insights: what is logged here is what operators would see there.
      logHandler: (level, ...args) => log(`[${functionName}] ${level}: ${args.map((arg) => (typeof arg === 'string' ? arg : inspect(arg, { depth: 6 }))).join(' ')}`),
    });

  const problem = (error: BrokerError, path: string | undefined) => problemResponse(error, path, () => undefined);

  async function runTimer(name: string, request: IncomingMessage, path: string): Promise<PlainResponse> {
    if (request.method !== 'POST') {
      return problem(new BrokerError('METHOD_NOT_ALLOWED', 'Run a function with POST.', { allow: ['POST'] }), path);
    }
    const services = options.services();
    if (!services.operatorKeys.verify(request.headers.authorization)) {
      return problem(new BrokerError('UNAUTHORIZED', 'Send an operator key as "Authorization: Bearer <key>".'), path);
    }
    const timer = timers.get(name);
    if (!timer) return problem(new BrokerError('FUNCTION_NOT_FOUND', `No timer function is named "${name}".`), path);
    // Unlike the Functions host, answer after the run: locally, "done" is what callers want to know.
    await invoke(timer, null);
    return { status: 202, headers: { 'cache-control': 'no-store' }, body: '' };
  }

  function invoke(timer: TimerRegistration, job: Cron | null): Promise<void> {
    const now = new Date().toISOString();
    return timer.run(options.services(), context(timer.name), {
      isPastDue: false,
      schedule: { adjustForDST: false },
      scheduleStatus: { last: job?.previousRun()?.toISOString() ?? now, next: job?.nextRun()?.toISOString() ?? now, lastUpdated: now },
    });
  }

  /** A failure before any route's handler runs, answered in the style the route would use. */
  function early(error: BrokerError, path: string, route: CompiledRoute | undefined): PlainResponse {
    return route?.registration.errors === 'page' ? errorPage(error, () => undefined) : problem(error, path);
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const target = parseTarget(request.url ?? '/');
    if (target === null) {
      await send(response, problem(new BrokerError('NOT_FOUND', 'The request target is not a valid path.'), undefined));
      return;
    }
    const path = target.pathname;
    const admin = /^\/admin\/functions\/([^/]+)\/?$/.exec(path);
    if (admin) {
      let name: string;
      try {
        name = decodeURIComponent(admin[1]!);
      } catch {
        name = admin[1]!;
      }
      await send(response, await runTimer(name, request, path));
      return;
    }
    const parts = decodeParts(path);
    if (parts === null || parts[0] !== 'api') {
      await send(response, problem(new BrokerError('NOT_FOUND', `There is nothing at ${path}; the API is under /api.`), path));
      return;
    }
    const rest = parts.slice(1);
    const found = findRoute(rest);
    if (!found) {
      await send(response, problem(new BrokerError('NOT_FOUND', `There is nothing at ${path}.`), path));
      return;
    }
    const method = (request.method ?? 'GET').toUpperCase();
    // The Functions worker cannot represent methods outside this list (fetch's Request refuses TRACE), so neither do we.
    if (!(ALL_METHODS as string[]).includes(method)) {
      const allow = Object.keys(found.route.registration.methods);
      await send(response, early(new BrokerError('METHOD_NOT_ALLOWED', `${method} is not supported here; use ${allow.join(', ')}.`, { allow }), path, found.route));
      return;
    }
    const body = await readBody(request);
    if (body === 'too-large') {
      // The rest of the body is still on the wire: close the connection rather than read it.
      response.setHeader('connection', 'close');
      await send(response, early(new BrokerError('PAYLOAD_TOO_LARGE', 'The body is larger than 64 KB.'), path, found.route));
      return;
    }
    const httpRequest = new LocalHttpRequest({
      method,
      url: `http://localhost${path}${target.search}`,
      headers: new LocalHeaders(request.headers),
      params: found.params,
      body,
    });
    await send(response, await handlers.get(found.route)!(httpRequest, context(found.route.registration.name)));
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      log(`local host: unexpected error: ${error instanceof Error ? error.message : String(error)}`);
      if (!response.headersSent) {
        void send(response, problemResponse(error, undefined, () => undefined));
      } else {
        response.destroy();
      }
    });
  });
  // What Node's parser refuses (an unknown method, an oversized head) still gets a problem answer.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const failure =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? new BrokerError('HEADERS_TOO_LARGE', 'The request headers are larger than the host accepts.')
        : new BrokerError('INVALID_REQUEST', 'The request is not valid HTTP.');
    rawProblem(socket, problem(failure, undefined));
  });
  server.on('connect', (_request: IncomingMessage, socket: Duplex) => {
    rawProblem(socket, problem(new BrokerError('METHOD_NOT_ALLOWED', 'CONNECT is not supported.', { allow: ALL_METHODS }), undefined));
  });

  if (options.runSchedules) {
    const jobs = [...timers.values()].map((timer) => {
      const job: Cron = new Cron(
        timer.schedule,
        // `protect`: a run still going when the next is due is not started twice, like the host's singleton lock.
        { timezone: 'UTC', protect: true, catch: (error) => log(`[${timer.name}] error: ${inspect(error, { depth: 4 })}`) },
        () => invoke(timer, job),
      );
      return job;
    });
    server.on('close', () => jobs.forEach((job) => job.stop()));
  }
  return server;
}

function rawProblem(socket: Duplex, answer: PlainResponse): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const headers = Object.entries({ ...answer.headers, connection: 'close', 'content-length': String(Buffer.byteLength(answer.body)) })
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n${headers}\r\n${answer.body}`);
}
