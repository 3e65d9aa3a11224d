import type { HttpMethod, HttpRequest, HttpResponseInit, InvocationContext, Timer } from '@azure/functions';
import type { z } from 'zod';
import type { Services } from '../shared/composition.js';
import { BrokerError, type InvalidField } from '../shared/errors.js';
import { jsonResponse, problemResponse, type PlainResponse } from '../shared/http/problem.js';
import { errorPage } from '../shared/http/result-pages.js';

/*
 * The glue between the Functions programming model and the domain: one registration
 * table, method dispatch, input parsing and error mapping. Function files stay thin.
 */

export type ServicesProvider = () => Services;

export interface EndpointInput {
  request: HttpRequest;
  services: Services;
  context: InvocationContext;
}
export type Endpoint = (input: EndpointInput) => Promise<PlainResponse>;

export interface HttpRegistration {
  kind: 'http';
  name: string;
  route: string;
  methods: Partial<Record<HttpMethod, Endpoint>>;
  /** Browser routes answer failures with an HTML page instead of problem+json. */
  errors?: 'problem' | 'page';
}

export interface TimerRegistration {
  kind: 'timer';
  name: string;
  schedule: string;
  run(services: Services, context: InvocationContext, timer: Timer): Promise<void>;
}

export type Registration = HttpRegistration | TimerRegistration;

/**
 * Every route is registered for every method the host knows, so a wrong method gets our
 * 405 problem instead of the host's bare 404.
 */
// Not TRACE or CONNECT: the worker builds a fetch Request for each call, and fetch refuses them.
export const ALL_METHODS: HttpMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

export const MAX_BODY_BYTES = 64 * 1024;

/**
 * A request that can hand over its whole body without copying it, once, as `arrayBuffer()`
 * reads it (a second read fails the same way): the local host's. `undefined` when it cannot,
 * and for the library's `HttpRequest`, which has no such member: both are read through
 * `arrayBuffer()`, a fresh copy each time.
 */
export const BODY_BYTES = Symbol('body bytes');
export interface BodyBytesSource {
  [BODY_BYTES](): Uint8Array | undefined;
}

/** The body's bytes: at once from a request that holds them, else through `arrayBuffer()`. */
export function bodyBytes(request: HttpRequest | (HttpRequest & BodyBytesSource)): Uint8Array | Promise<Uint8Array> {
  const held = BODY_BYTES in request ? request[BODY_BYTES]() : undefined;
  return held ?? request.arrayBuffer().then((buffer) => new Uint8Array(buffer));
}

/** Stateless between calls (no `stream` option), so one serves every request. */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function toHttpResponse(response: PlainResponse): HttpResponseInit {
  return { status: response.status, headers: response.headers, body: response.body };
}

/** The host-facing handler of one route: dispatch by method, map every failure to problem+json. */
export function httpHandler(registration: HttpRegistration, services: ServicesProvider) {
  const allow = Object.keys(registration.methods);
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    try {
      const endpoint = registration.methods[request.method.toUpperCase() as HttpMethod];
      if (!endpoint) {
        throw new BrokerError('METHOD_NOT_ALLOWED', `${request.method} is not supported here; use ${allow.join(', ')}.`, { allow });
      }
      return toHttpResponse(await endpoint({ request, services: services(), context }));
    } catch (error) {
      const log = (message: string, cause: unknown) => context.error(message, cause);
      // The problem's `instance`; parsed only on this path, not for every answer.
      const instance = new URL(request.url).pathname;
      return toHttpResponse(registration.errors === 'page' ? errorPage(error, log) : problemResponse(error, instance, log));
    }
  };
}

export const ok = (value: unknown) => jsonResponse(200, value);
export const created = (value: unknown) => jsonResponse(201, value);
export const noContent = (): PlainResponse => ({ status: 204, headers: { 'cache-control': 'no-store' }, body: '' });

/** Operator routes: `Authorization: Bearer <operator key>`, checked before anything else. */
export function operatorOnly(endpoint: Endpoint): Endpoint {
  return async (input) => {
    if (!input.services.operatorKeys.verify(input.request.headers.get('authorization'))) {
      throw new BrokerError('UNAUTHORIZED', 'Send an operator key as "Authorization: Bearer <key>" (BROKER_OPERATOR_KEY).');
    }
    return endpoint(input);
  };
}

function invalid(issues: z.core.$ZodIssue[], what: string): BrokerError {
  const fields: InvalidField[] = issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    const keys = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : '';
    return { field: [path, keys].filter(Boolean).join('.') || '(root)', message: issue.message };
  });
  const named = fields.map((field) => field.field).join(', ');
  return new BrokerError('INVALID_REQUEST', `The ${what} has invalid fields: ${named}.`, { fields });
}

/** A JSON body, checked for size, media type, syntax and shape, in that order. */
export async function readJson<T>(request: HttpRequest, schema: z.ZodType<T>): Promise<T> {
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > MAX_BODY_BYTES) throw tooLarge();
  const contentType = request.headers.get('content-type');
  const mediaType = contentType === 'application/json' ? contentType : (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType !== 'application/json' && !/^application\/[a-z0-9.+-]+\+json$/.test(mediaType)) {
    throw new BrokerError('UNSUPPORTED_MEDIA_TYPE', 'Send the body as JSON with "Content-Type: application/json".');
  }
  const read = bodyBytes(request);
  const bytes = read instanceof Uint8Array ? read : await read;
  if (bytes.byteLength > MAX_BODY_BYTES) throw tooLarge();
  let value: unknown;
  try {
    value = JSON.parse(strictUtf8.decode(bytes));
  } catch {
    throw new BrokerError('INVALID_JSON', 'The body is not valid UTF-8 JSON.');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalid(parsed.error.issues, 'request body');
  return parsed.data;
}

function tooLarge(): BrokerError {
  return new BrokerError('PAYLOAD_TOO_LARGE', `The body is larger than ${MAX_BODY_BYTES / 1024} KB.`);
}

/** Query parameters; a repeated parameter is ambiguous and refused. */
export function readQuery<T>(request: HttpRequest, schema: z.ZodType<T>): T {
  const query = new Map<string, string>();
  for (const [key, value] of request.query.entries()) {
    if (query.has(key)) throw invalid([{ code: 'custom', path: [key], message: 'must not be repeated', input: value }], 'query');
    query.set(key, value);
  }
  const parsed = schema.safeParse(Object.fromEntries(query));
  if (!parsed.success) throw invalid(parsed.error.issues, 'query');
  return parsed.data;
}
