import { isIP } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { xoauth2 } from './xoauth2.js';

/**
 * Just enough POP3 for a login check: implicit TLS, `AUTH XOAUTH2`, the XOAUTH2 string after
 * the server's `+`, then `QUIT`. No mail is read. There is no POP library worth a dependency.
 *
 * @see https://www.rfc-editor.org/rfc/rfc1939 POP3
 * @see https://www.rfc-editor.org/rfc/rfc5034 POP3 SASL (AUTH, `+` continuations)
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth#pop-protocol-exchange
 */

/** The server answered something other than `+OK` / `+`; `answer` is its line (never containing our token). */
export class PopAnswerError extends Error {
  override readonly name = 'PopAnswerError';
  constructor(
    readonly answer: string,
    step: string,
  ) {
    super(`POP server refused ${step}: ${answer}`);
  }
}

export interface PopLoginOptions {
  host: string;
  port: number;
  username: string;
  accessToken: string;
  timeoutMs: number;
}

const MAX_LINE = 4096;

class LineReader {
  private buffer = '';
  private waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(socket: TLSSocket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      if (this.buffer.length > MAX_LINE && !this.buffer.includes('\n')) this.fail(new Error('POP server sent an over-long line'));
      this.deliver();
    });
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(Object.assign(new Error('POP server closed the connection'), { code: 'ECONNRESET' })));
  }

  next(): Promise<string> {
    if (this.waiting) throw new Error('one line at a time');
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.deliver();
    });
  }

  private deliver(): void {
    if (!this.waiting) return;
    const end = this.buffer.indexOf('\n');
    if (end >= 0) {
      const line = this.buffer.slice(0, end).replace(/\r$/, '');
      this.buffer = this.buffer.slice(end + 1);
      const { resolve } = this.waiting;
      this.waiting = null;
      resolve(line);
    } else if (this.failure) {
      const { reject } = this.waiting;
      this.waiting = null;
      reject(this.failure);
    }
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.deliver();
  }
}

/** Logs in with XOAUTH2 and quits. Resolves on `+OK`; rejects with `PopAnswerError` or the socket's error. */
export async function popXoauth2Login(options: PopLoginOptions): Promise<void> {
  const payload = xoauth2(options.username, options.accessToken);
  const socket = connect({
    host: options.host,
    port: options.port,
    // SNI must be a host name (RFC 6066); for an IP literal the certificate is checked against the IP.
    ...(isIP(options.host) ? {} : { servername: options.host }),
    minVersion: 'TLSv1.2',
  });
  socket.setTimeout(options.timeoutMs, () => {
    socket.destroy(Object.assign(new Error(`No answer from the POP server within ${options.timeoutMs} ms`), { code: 'ETIMEDOUT' }));
  });
  const lines = new LineReader(socket);
  const send = (line: string) => socket.write(`${line}\r\n`);
  try {
    const greeting = await lines.next();
    if (!greeting.startsWith('+OK')) throw new PopAnswerError(greeting, 'the connection');
    send('AUTH XOAUTH2');
    const challenge = await lines.next();
    if (!challenge.startsWith('+') || challenge.startsWith('+OK')) throw new PopAnswerError(challenge, 'AUTH XOAUTH2');
    send(payload);
    let result = await lines.next();
    if (result.startsWith('+') && !result.startsWith('+OK')) {
      // A server may describe the failure in a further challenge (RFC 7628 section 3.2.2); an empty answer ends it.
      send('');
      result = await lines.next();
    }
    if (!result.startsWith('+OK')) throw new PopAnswerError(result, 'the XOAUTH2 login');
    send('QUIT');
    // A missing goodbye is not a failed login.
    await lines.next().catch(() => undefined);
  } finally {
    socket.destroy();
  }
}
