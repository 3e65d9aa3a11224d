import { Buffer } from 'node:buffer';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** What every handler returns; the server writes it and records its status. */
export interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The AADSTS code the reply carries, for the request log. */
  aadsts?: number;
  /** Drop the connection instead of answering (a fault tests ask for). */
  reset?: true;
}

export class BodyTooLarge extends Error {}

const MAX_BODY_BYTES = 64 * 1024;

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new BodyTooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Form posts only: a JSON or multipart body yields no parameters, as Entra then finds none. */
export function formParameters(req: IncomingMessage, body: Buffer): URLSearchParams {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  return type === 'application/x-www-form-urlencoded' ? new URLSearchParams(body.toString('utf8')) : new URLSearchParams();
}

export function json(status: number, payload: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    // Token responses must not be cached (RFC 6749 §5.1); nothing else here should be either.
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', pragma: 'no-cache', ...headers },
    body: JSON.stringify(payload),
  };
}

export function redirect(location: string): Reply {
  return { status: 302, headers: { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' }, body: '' };
}

export function write(res: ServerResponse, reply: Reply): void {
  res.writeHead(reply.status, { ...reply.headers, 'content-length': String(Buffer.byteLength(reply.body)) });
  res.end(reply.body);
}

/** `client_secret` from HTTP Basic (RFC 6749 §2.3.1: both parts form-urlencoded) or undefined. */
export function basicCredentials(req: IncomingMessage): { clientId: string; secret: string } | undefined | 'malformed' {
  const header = req.headers.authorization;
  if (!header) return undefined;
  const match = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header);
  if (!match) return 'malformed';
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return 'malformed';
  try {
    const clientId = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
    const secret = decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' '));
    return { clientId, secret };
  } catch {
    return 'malformed';
  }
}
