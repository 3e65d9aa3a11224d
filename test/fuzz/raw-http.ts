import { Buffer } from 'node:buffer';
import { connect } from 'node:net';

/*
 * A deliberately dumb HTTP/1.1 client for the fuzz tests. fetch refuses TRACE and
 * CONNECT, normalises methods and forbids Content-Length and Transfer-Encoding; node:http
 * validates paths and header values. Both would hide exactly the requests a fuzzer is
 * meant to send, so this one writes the bytes it is given on a fresh socket
 * (`Connection: close`) and reads the answer until the server closes.
 */

export type BodyFraming = 'length' | 'chunked';

export type RawBody =
  | { kind: 'bytes'; bytes: Uint8Array; framing: BodyFraming }
  /** `size` bytes cycling through `pattern`: megabytes without generating them. */
  | { kind: 'fill'; size: number; pattern: Uint8Array; framing: BodyFraming };

export interface RawRequest {
  method: string;
  /** The request target exactly as sent (origin form, already percent-encoded as intended). */
  target: string;
  /** Header lines as sent; values are written as latin1, so callers encode UTF-8 themselves. */
  headers: [string, string][];
  body?: RawBody;
}

export interface RawResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
  /** Whether writing the request failed (the server may answer early and close, e.g. 413). */
  writeError: string | null;
}

const CHUNK = 64 * 1024;

function bodyLength(body: RawBody): number {
  return body.kind === 'bytes' ? body.bytes.byteLength : body.size;
}

/** The body in pieces of at most 64 KB; a fill body reuses one buffer, so 2 MB costs 64 KB. */
function* bodyPieces(body: RawBody): Generator<Uint8Array> {
  if (body.kind === 'bytes') {
    for (let offset = 0; offset < body.bytes.byteLength; offset += CHUNK) yield body.bytes.subarray(offset, offset + CHUNK);
    return;
  }
  const pattern = body.pattern.byteLength > 0 ? body.pattern : Uint8Array.of(0x20);
  // A whole number of patterns per block keeps the cycle seamless across blocks.
  const block = Buffer.alloc(Math.max(pattern.byteLength, CHUNK - (CHUNK % pattern.byteLength)), pattern);
  let left = body.size;
  while (left > 0) {
    const take = Math.min(left, block.byteLength);
    yield block.subarray(0, take);
    left -= take;
  }
}

function parseResponse(all: Buffer, method: string): Omit<RawResponse, 'writeError'> {
  // Interim answers (100 Continue to an Expect header) come first; the final one follows.
  let raw = all;
  while (/^HTTP\/1\.[01] 1\d\d /.test(raw.subarray(0, 16).toString('latin1')) && raw.indexOf('\r\n\r\n') >= 0) raw = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new Error(`incomplete response (${raw.byteLength} bytes): ${JSON.stringify(raw.subarray(0, 200).toString('latin1'))}`);
  const lines = raw.subarray(0, end).toString('latin1').split('\r\n');
  const statusLine = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
  if (!statusLine) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
  const status = Number(statusLine[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  let body = raw.subarray(end + 4);
  if (method === 'HEAD' || status === 204 || status === 304) body = Buffer.alloc(0);
  else if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
  else if (headers['content-length'] !== undefined) body = body.subarray(0, Number(headers['content-length']));
  return { status, headers, body: Buffer.from(body) };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', offset);
    if (lineEnd < 0) break;
    const size = parseInt(data.subarray(offset, lineEnd).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    offset = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Sends one request on its own connection and resolves with the parsed answer. */
export function sendRaw(port: number, request: RawRequest, options: { timeoutMs?: number; host?: string } = {}): Promise<RawResponse> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const received: Buffer[] = [];
    let writeError: string | null = null;
    let settled = false;
    const timer = setTimeout(() => {
      settle(new Error(`no complete answer within ${timeoutMs} ms to ${request.method} ${request.target.slice(0, 200)}`));
      socket.destroy();
    }, timeoutMs);

    function settle(error: Error | null): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) {
        reject(error);
        return;
      }
      try {
        resolve({ ...parseResponse(Buffer.concat(received), request.method), writeError });
      } catch (parseError) {
        reject(new Error(`${(parseError as Error).message}${writeError ? ` (write failed: ${writeError})` : ''}`));
      }
    }

    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A reset while we were still writing is the server refusing the rest of the body;
      // what it answered before that is what we judge.
      writeError ??= error.code ?? error.message;
    });
    socket.on('close', () => settle(null));

    socket.once('connect', () => {
      void (async () => {
        const lines = [`${request.method} ${request.target} HTTP/1.1`, `host: 127.0.0.1:${port}`, 'connection: close'];
        const body = request.body;
        if (body) lines.push(body.framing === 'chunked' ? 'transfer-encoding: chunked' : `content-length: ${bodyLength(body)}`);
        for (const [name, value] of request.headers) lines.push(`${name}: ${value}`);
        const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
        const write = (data: Uint8Array) =>
          new Promise<boolean>((done) => {
            if (socket.destroyed || writeError) return done(false);
            if (socket.write(data)) return done(true);
            const onDrain = () => {
              socket.off('close', onClose);
              done(true);
            };
            const onClose = () => {
              socket.off('drain', onDrain);
              done(false);
            };
            socket.once('drain', onDrain);
            socket.once('close', onClose);
          });
        if (!(await write(head))) return;
        if (body) {
          for (const piece of bodyPieces(body)) {
            if (piece.byteLength === 0) continue;
            const framed = body.framing === 'chunked' ? Buffer.concat([Buffer.from(`${piece.byteLength.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
            if (!(await write(framed))) return;
          }
          if (body.framing === 'chunked' && !(await write(Buffer.from('0\r\n\r\n')))) return;
        }
      })();
    });
  });
}
