import { performance } from 'node:perf_hooks';
import type { HostHint } from '../config.js';
import { BrokerError } from '../errors.js';
import type { MailProtocol } from '../storage/records.js';
import { describeMailFailure, type MailFailure } from './mail-answers.js';
import { PopAnswerError, popXoauth2Login } from './pop3-login.js';
import { xoauth2 } from './xoauth2.js';

/**
 * A real XOAUTH2 login per protocol against the configured hosts, then a clean logout: SMTP
 * (nodemailer: EHLO, STARTTLS, AUTH XOAUTH2, QUIT; no mail is sent), IMAP (imapflow:
 * AUTHENTICATE XOAUTH2, NAMESPACE, LOGOUT) and POP (AUTH XOAUTH2, QUIT). Each refusal is
 * mapped to a fix by `describeMailFailure`. The token never appears in a report.
 *
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
 */

export interface VerifyMailLoginInput {
  protocols: readonly MailProtocol[];
  username: string;
  accessToken: string;
  hosts: Record<MailProtocol, HostHint>;
  /** Per protocol, for connecting and for each answer; default 15 s. */
  timeoutMs?: number;
}

export interface ProtocolVerification {
  protocol: MailProtocol;
  host: string;
  port: number;
  ok: boolean;
  /** Microsoft's answer code (`535 5.7.139`, `IMAP AUTHENTICATE failed`) or the network error (`ECONNREFUSED`). */
  code?: string;
  message: string;
  fix?: string;
  durationMs: number;
}

export interface VerifyReport {
  /** True when every requested protocol logged in. */
  ok: boolean;
  results: ProtocolVerification[];
}

export const DEFAULT_VERIFY_TIMEOUT_MS = 15_000;

interface Login {
  host: string;
  port: number;
  username: string;
  accessToken: string;
  timeoutMs: number;
  signal: AbortSignal;
}

async function smtpLogin(login: Login): Promise<void> {
  // 465 is implicit TLS; anything else (587) must upgrade with STARTTLS before AUTH, or the token would travel in clear.
  const implicitTls = login.port === 465;
  // Loaded on first use: only verify and alerts send mail, and the libraries weigh tens of MB.
  const { createTransport } = await import('nodemailer');
  const transporter = createTransport({
    host: login.host,
    port: login.port,
    secure: implicitTls,
    requireTLS: !implicitTls,
    auth: { type: 'OAuth2', user: login.username, accessToken: login.accessToken },
    connectionTimeout: login.timeoutMs,
    greetingTimeout: login.timeoutMs,
    socketTimeout: login.timeoutMs,
    tls: { minVersion: 'TLSv1.2' },
    logger: false,
    debug: false,
  });
  const abort = () => transporter.close();
  login.signal.addEventListener('abort', abort, { once: true });
  try {
    await transporter.verify();
  } finally {
    login.signal.removeEventListener('abort', abort);
    transporter.close();
  }
}

async function imapLogin(login: Login): Promise<void> {
  const startTls = login.port === 143;
  const { ImapFlow } = await import('imapflow');
  const client = new ImapFlow({
    host: login.host,
    port: login.port,
    secure: !startTls,
    ...(startTls ? { doSTARTTLS: true } : {}),
    auth: { user: login.username, accessToken: login.accessToken },
    // Log in, ask NAMESPACE (where Exchange reveals "authenticated but not connected"), log out.
    verifyOnly: true,
    logger: false,
    connectionTimeout: login.timeoutMs,
    greetingTimeout: login.timeoutMs,
    socketTimeout: login.timeoutMs,
    tls: { minVersion: 'TLSv1.2' },
  });
  // Failures reach connect()'s promise; an unheard 'error' event would crash the process.
  client.on('error', () => undefined);
  const abort = () => client.close();
  login.signal.addEventListener('abort', abort, { once: true });
  try {
    await client.connect();
  } finally {
    login.signal.removeEventListener('abort', abort);
    client.close();
  }
}

const popLogin = (login: Login) => popXoauth2Login(login);

const LOGINS: Record<MailProtocol, (login: Login) => Promise<void>> = { smtp: smtpLogin, imap: imapLogin, pop: popLogin };
const OK_MESSAGES: Record<MailProtocol, string> = {
  smtp: 'SMTP accepted the XOAUTH2 login (STARTTLS, AUTH XOAUTH2, QUIT; nothing was sent).',
  imap: 'IMAP accepted the XOAUTH2 login (AUTHENTICATE XOAUTH2, NAMESPACE, LOGOUT).',
  pop: 'POP accepted the XOAUTH2 login (AUTH XOAUTH2, QUIT).',
};

export async function verifyMailLogin(input: VerifyMailLoginInput): Promise<VerifyReport> {
  const protocols = [...new Set(input.protocols)];
  if (protocols.length === 0) throw new BrokerError('INVALID_REQUEST', 'Name at least one protocol to verify.');
  const timeoutMs = input.timeoutMs ?? DEFAULT_VERIFY_TIMEOUT_MS;
  // Built once up front: it validates the mailbox and token, and is one of the strings to scrub.
  const secrets = [input.accessToken, xoauth2(input.username, input.accessToken)];
  const results = await Promise.all(protocols.map((protocol) => verifyOne(protocol, input, timeoutMs, secrets)));
  return { ok: results.every((result) => result.ok), results };
}

async function verifyOne(protocol: MailProtocol, input: VerifyMailLoginInput, timeoutMs: number, secrets: readonly string[]): Promise<ProtocolVerification> {
  const target = input.hosts[protocol];
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  try {
    // The libraries time out each step; the deadline also bounds a server that trickles answers.
    await withDeadline(timeoutMs * 2, (signal) =>
      LOGINS[protocol]({ host: target.host, port: target.port, username: input.username, accessToken: input.accessToken, timeoutMs, signal }),
    );
    return { protocol, host: target.host, port: target.port, ok: true, message: OK_MESSAGES[protocol], durationMs: elapsed() };
  } catch (error) {
    const described = describeMailFailure(protocol, target, failureOf(error, secrets));
    return {
      protocol,
      host: target.host,
      port: target.port,
      ok: false,
      code: described.code,
      message: redact(described.message, secrets),
      fix: described.fix,
      durationMs: elapsed(),
    };
  }
}

async function withDeadline(ms: number, run: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const error = Object.assign(new Error(`No complete answer within ${ms} ms`), { code: 'ETIMEDOUT' });
      controller.abort(error);
      reject(error);
    }, ms);
  });
  try {
    await Promise.race([run(controller.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const record = (value: unknown): Record<string, unknown> | null => (typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null);

/**
 * What nodemailer, imapflow and the POP client leave on their errors: nodemailer puts the
 * server's line in `response` (with `responseCode`) and the socket's code in `originalCode`;
 * imapflow puts the tagged NO/BAD text in `response`; both keep Node's `code`.
 */
function failureOf(error: unknown, secrets: readonly string[]): MailFailure {
  const codes: string[] = [];
  let answer: string | undefined;
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined; depth += 1) {
    const fields = record(current);
    if (!fields) break;
    for (const key of ['code', 'originalCode']) {
      const value = fields[key];
      if (typeof value === 'string' && !codes.includes(value)) codes.push(value);
    }
    if (answer === undefined) {
      if (current instanceof PopAnswerError) answer = current.answer;
      else if (typeof fields.response === 'string' && fields.response.trim() !== '') answer = fields.response;
    }
    current = fields.cause;
  }
  const message = error instanceof Error ? error.message : String(error);
  return {
    ...(answer === undefined ? {} : { answer: redact(answer, secrets).slice(0, 500) }),
    errorCodes: codes,
    errorMessage: redact(message, secrets).slice(0, 500),
  };
}

function redact(text: string, secrets: readonly string[]): string {
  let result = text;
  for (const secret of secrets) if (secret !== '') result = result.replaceAll(secret, '[redacted]');
  return result;
}
