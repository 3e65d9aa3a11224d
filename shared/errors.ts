/**
 * The broker's one error family. Every failure that reaches a caller is a `BrokerError`
 * with a stable `code`; HTTP status, title and problem `type` derive from that code here,
 * in one place, so handlers never pick status numbers themselves.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9457 Problem Details for HTTP APIs
 */

const catalogue = {
  INVALID_REQUEST: { status: 400, title: 'The request is not valid' },
  INVALID_JSON: { status: 400, title: 'The request body is not valid JSON' },
  INVALID_CURSOR: { status: 400, title: 'The paging cursor is not valid' },
  UNAUTHORIZED: { status: 401, title: 'Missing or wrong API key' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  APP_NOT_FOUND: { status: 404, title: 'App not found' },
  TENANT_NOT_FOUND: { status: 404, title: 'Tenant not found' },
  KEY_NOT_FOUND: { status: 404, title: 'API key not found' },
  CONNECTION_NOT_FOUND: { status: 404, title: 'Connection not found' },
  FUNCTION_NOT_FOUND: { status: 404, title: 'Function not found' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  MAILBOX_ALREADY_CONNECTED: { status: 409, title: 'This mailbox already has a connection' },
  APP_IN_USE: { status: 409, title: 'The app is still used by connections' },
  CONFLICT: { status: 409, title: 'The resource was changed by another request' },
  LINK_NOT_FOUND: { status: 404, title: 'This link does not work' },
  LINK_EXPIRED: { status: 410, title: 'This link has expired' },
  LINK_USED: { status: 410, title: 'This mailbox is already connected' },
  SIGN_IN_INCOMPLETE: { status: 400, title: 'The sign-in did not come back complete' },
  SIGN_IN_EXPIRED: { status: 400, title: 'The sign-in took too long or was already used' },
  WRONG_ACCOUNT: { status: 403, title: 'You signed in with a different account' },
  DIFFERENT_PERSON: { status: 403, title: 'This mailbox was connected by someone else' },
  SIGN_IN_FAILED: { status: 400, title: 'Microsoft did not complete the sign-in' },
  APP_MISCONFIGURED: { status: 502, title: 'The broker\'s Microsoft app needs attention' },
  MICROSOFT_UNAVAILABLE: { status: 503, title: 'Microsoft is not answering right now' },
  REFRESH_IN_PROGRESS: { status: 503, title: 'The token is being refreshed elsewhere' },
  NEEDS_REAUTH: { status: 409, title: 'The mailbox must be authorized again' },
  NOT_CONNECTED: { status: 409, title: 'The mailbox is not connected yet' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'The request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'The request body must be JSON' },
  HEADERS_TOO_LARGE: { status: 431, title: 'The request headers are too large' },
  RATE_LIMITED: { status: 429, title: 'Too many requests' },
  INTERNAL: { status: 500, title: 'Internal error' },
  STORAGE_UNAVAILABLE: { status: 503, title: 'Storage is unavailable' },
  SECRET_STORE_UNAVAILABLE: { status: 503, title: 'The secret store is unavailable' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof catalogue;

export interface InvalidField {
  /** Dotted path of the offending field, e.g. `alertEmails.0`. */
  field: string;
  message: string;
}

export interface BrokerErrorOptions {
  cause?: unknown;
  /** Fields named in a 400 answer. */
  fields?: InvalidField[];
  /** Seconds, for 429/503 answers. */
  retryAfterSeconds?: number;
  /** Methods a route does accept, for 405 answers. */
  allow?: string[];
  /** The exact action that resolves it, for people (result pages, statusReason). */
  fix?: string;
  /** Extra problem members (RFC 9457 §3.2), e.g. where to get a new link. */
  extensions?: Record<string, string>;
}

export class BrokerError extends Error {
  override readonly name = 'BrokerError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly title: string;
  readonly fields: InvalidField[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly allow: string[] | undefined;
  readonly fix: string | undefined;
  readonly extensions: Record<string, string> | undefined;

  constructor(code: ErrorCode, detail: string, options: BrokerErrorOptions = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = catalogue[code].status;
    this.title = catalogue[code].title;
    this.fields = options.fields;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.allow = options.allow;
    this.fix = options.fix;
    this.extensions = options.extensions;
  }
}

export function isBrokerError(value: unknown): value is BrokerError {
  return value instanceof BrokerError;
}

/** The problem `type` URI of a code; stable, documented in the OpenAPI document. */
export function problemType(code: ErrorCode): string {
  return `urn:mail-oauth-broker:${code.toLowerCase().replaceAll('_', '-')}`;
}

export function errorCodes(): ErrorCode[] {
  return Object.keys(catalogue) as ErrorCode[];
}
