import { BrokerError, problemType } from '../errors.js';

/** A framework-free HTTP answer; functions/ turns it into the host's response type. */
export interface PlainResponse {
  status: number;
  /** Shared between answers (the token path answers with one object): read it, copy it to change it. */
  headers: Readonly<Record<string, string>>;
  body: string;
}

export interface ProblemDetails {
  type: string;
  code: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: { field: string; message: string }[];
  fix?: string;
  [extension: string]: unknown;
}

/** Retry-After of a 503 whose failure names no wait of its own (storage or the vault unavailable, say). */
const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

export const API_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

/**
 * The one place an error becomes an API answer (RFC 9457). Anything that is not a
 * `BrokerError` is a bug or an outage: the caller gets a generic 500 and the details go
 * to `log`, never into the response.
 */
export function problemResponse(error: unknown, instance: string | undefined, log: (message: string, error: unknown) => void): PlainResponse {
  const known = error instanceof BrokerError ? error : null;
  if (!known || known.status >= 500) log(known ? `${known.code}: ${known.message}` : 'unexpected error', error);
  const failure = known ?? new BrokerError('INTERNAL', 'Something went wrong on our side; the error was logged.');
  const problem: ProblemDetails = {
    // Extensions first: they can never overwrite the standard members.
    ...failure.extensions,
    type: problemType(failure.code),
    code: failure.code,
    title: failure.title,
    status: failure.status,
    detail: failure.message,
    ...(instance ? { instance } : {}),
    ...(failure.fields ? { errors: failure.fields } : {}),
    ...(failure.fix ? { fix: failure.fix } : {}),
  };
  const headers: Record<string, string> = { ...API_HEADERS, 'content-type': 'application/problem+json' };
  // A 503 always says when to come back: the failure's own wait when it knows one.
  const retryAfter = failure.retryAfterSeconds ?? (failure.status === 503 ? UNAVAILABLE_RETRY_AFTER_SECONDS : undefined);
  if (retryAfter !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfter)));
  if (failure.allow) headers.allow = failure.allow.join(', ');
  if (failure.status === 401) headers['www-authenticate'] = 'Bearer realm="mail-oauth-broker"';
  return { status: failure.status, headers, body: JSON.stringify(problem) };
}

export function jsonResponse(status: number, value: unknown): PlainResponse {
  return jsonTextResponse(status, JSON.stringify(value));
}

const JSON_HEADERS: Readonly<Record<string, string>> = Object.freeze({ ...API_HEADERS, 'content-type': 'application/json' });

/** For a body already rendered as JSON text. */
export function jsonTextResponse(status: number, json: string): PlainResponse {
  return { status, headers: JSON_HEADERS, body: json };
}
