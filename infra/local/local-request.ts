import functionsLibrary, { type HttpRequest, type HttpRequestParams, type HttpRequestUser } from '@azure/functions';
import type { ReadableStream } from 'node:stream/web';
import { BODY_BYTES, type BodyBytesSource } from '../../functions/http.js';
import { LocalHeaders } from './local-headers.js';

const { HttpRequest: FunctionsHttpRequest } = functionsLibrary;

/** fetch's "UTF-8 decode": a leading BOM dropped, invalid sequences replaced. Stateless between calls. */
const utf8 = new TextDecoder();

/** The methods fetch upper-cases whatever their case (PATCH is not among them). */
const NORMALISED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);

export interface LocalRequestInit {
  method: string;
  /** Absolute and already normalised (the host builds it from a parsed URL). */
  url: string;
  /** A `LocalHeaders` is adopted (the host builds one per request); anything else is copied, as fetch copies. */
  headers: Record<string, string> | Headers;
  params: Record<string, string>;
  /** Already read in full by the host; empty means no body. */
  body: Uint8Array;
}

/*
 * The request the local host hands to handlers: the same members and semantics as the
 * Functions library's `HttpRequest` (test/infra/local-request.test.ts compares the two on
 * generated requests), without its per-call price. The library wraps every call in a fetch
 * `Request` whose body is a web stream; building and draining that costs more CPU than the
 * broker's whole cached token path (about 22 µs per call on an idle core, three times that
 * under load). The host has the body in memory already, so the common reads — headers,
 * `arrayBuffer`, `text`, `json` — come straight from it. Anything rarer is answered as the
 * library answers it, built on first use: `body` as a stream, `blob` and `formData` by a
 * fetch `Request`, `user` by the library's own class.
 */
export class LocalHttpRequest implements HttpRequest, BodyBytesSource {
  readonly method: string;
  readonly url: string;
  readonly headers: Headers;
  readonly params: HttpRequestParams;
  readonly #bytes: Uint8Array | null;
  #query: URLSearchParams | undefined;
  /** `undefined` until asked for; `null` (no principal) is an answer and kept, as the library keeps it. */
  #user: HttpRequestUser | null | undefined;
  /** Built only when a caller wants the body as a stream, a blob or form data; from then on it owns the body. */
  #fetchRequest: Request | undefined;
  #read = false;

  constructor(init: LocalRequestInit) {
    const upper = init.method.toUpperCase();
    this.method = NORMALISED_METHODS.has(upper) ? upper : init.method;
    this.url = init.url;
    this.headers = init.headers instanceof LocalHeaders ? init.headers : new Headers(init.headers);
    this.params = init.params;
    // As the library does: GET and HEAD never carry a body.
    this.#bytes = init.body.byteLength > 0 && upper !== 'GET' && upper !== 'HEAD' ? init.body : null;
  }

  get query(): URLSearchParams {
    this.#query ??= new URL(this.url).searchParams;
    return this.#query;
  }

  get user(): HttpRequestUser | null {
    // The library derives it from the App Service authentication headers; let it.
    if (this.#user === undefined) this.#user = new FunctionsHttpRequest({ method: 'GET', url: this.url, headers: Object.fromEntries(this.headers) }).user;
    return this.#user;
  }

  get body(): ReadableStream | null {
    return this.#asFetchRequest().body as ReadableStream | null;
  }

  get bodyUsed(): boolean {
    return this.#fetchRequest ? this.#fetchRequest.bodyUsed : this.#read;
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    if (this.#fetchRequest) return this.#fetchRequest.arrayBuffer();
    const bytes = this.#take();
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  }

  /** The body as the host read it, not copied, for a reader that only looks (`readJson`); a read like `arrayBuffer()`. */
  [BODY_BYTES](): Uint8Array | undefined {
    return this.#fetchRequest ? undefined : this.#take();
  }

  async text(): Promise<string> {
    if (this.#fetchRequest) return this.#fetchRequest.text();
    return utf8.decode(this.#take());
  }

  async json(): Promise<unknown> {
    if (this.#fetchRequest) return this.#fetchRequest.json();
    return JSON.parse(utf8.decode(this.#take())) as unknown;
  }

  async blob(): Promise<Blob> {
    return this.#asFetchRequest({ withCurrentContentType: true }).blob();
  }

  async formData(): Promise<FormData> {
    return this.#asFetchRequest({ withCurrentContentType: true }).formData();
  }

  clone(): HttpRequest {
    if (this.bodyUsed) throw new TypeError('Request.clone: Body has already been consumed.');
    const copy = new LocalHttpRequest({
      method: this.method,
      url: this.url,
      headers: new Headers(this.headers),
      params: { ...this.params },
      body: this.#fetchRequest ? new Uint8Array(0) : (this.#bytes ?? new Uint8Array(0)),
    });
    if (this.#fetchRequest) copy.#fetchRequest = this.#fetchRequest.clone();
    return copy;
  }

  /** The body for one read, as fetch allows: a second read of a non-empty body fails. */
  #take(): Uint8Array {
    if (this.#bytes === null) return new Uint8Array(0);
    if (this.#read) throw new TypeError('Body is unusable: Body has already been read');
    this.#read = true;
    return this.#bytes;
  }

  /**
   * The fetch `Request` that owns the body from now on. It copied the headers when it was
   * built; the library's request shares one `Headers` with its fetch `Request`, so the readers
   * that depend on a header (`blob`, `formData`: the content type) get the current one.
   */
  #asFetchRequest(options: { withCurrentContentType?: boolean } = {}): Request {
    if (!this.#fetchRequest) {
      const request = new Request(this.url, { method: this.method, headers: this.headers, body: this.#bytes });
      // A body already read here must look read there too, as fetch leaves it: the stream
      // disturbed (so `bodyUsed`) and still locked by the reader that drained it.
      if (this.#read) void request.body?.getReader().cancel();
      this.#fetchRequest = request;
    } else if (options.withCurrentContentType) {
      const type = this.headers.get('content-type');
      if (type === null) this.#fetchRequest.headers.delete('content-type');
      else this.#fetchRequest.headers.set('content-type', type);
    }
    return this.#fetchRequest;
  }
}
