import { Buffer } from 'node:buffer';
import type { AddressInfo, Server } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { CryptoProvider } from '@azure/msal-node';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { SMTPServer, type SMTPServerDataStream } from 'smtp-server';
import type { Clock } from '../../shared/clock.js';
import type { HostHint } from '../../shared/config.js';
import type { MailProtocol } from '../../shared/storage/records.js';
import type { SandboxIdentityProvider } from '../../infra/local/sandbox-idp/index.js';
import { APP_ONLY_SCOPE, codePayload, msalClient, REDIRECT_URI, signInThroughPages } from '../infra/sandbox-idp/support.js';

/*
 * Local SMTP, IMAP and POP servers that answer XOAUTH2 the way Exchange Online does, and are as
 * strict: TLS before any login, a login only with a token `verifyToken` accepts, Exchange's own
 * refusal lines (535 5.7.3, 535 5.7.139, "NO AUTHENTICATE failed.", "-ERR Authentication
 * failure…"), mail only from an authenticated session and only as the signed-in mailbox.
 * Every server listens on 127.0.0.1 on a free port. Tokens are never recorded.
 */

/** `true` logs in; `false` gets the protocol's standard refusal; an object is a custom SMTP refusal (`code` like `535 5.7.139`). */
export type TokenVerdict = boolean | { code: string; message: string };
export type TokenVerifier = (username: string, token: string, protocol: MailProtocol) => Promise<TokenVerdict>;

export interface MailServersOptions {
  tls: { certPem: string; keyPem: string };
  verifyToken: TokenVerifier;
  /** Mailboxes whose valid logins get `535 5.7.139` (Authenticated SMTP disabled). */
  smtpAuthDisabled?: readonly string[];
  /** Mailboxes with IMAP / POP turned off: Exchange refuses them exactly like a bad token. */
  imapDisabled?: readonly string[];
  popDisabled?: readonly string[];
  /** Mailboxes whose IMAP login succeeds but whose session is "authenticated but not connected" (app-only without Add-MailboxPermission). */
  imapNotConnected?: readonly string[];
}

export interface ReceivedMail {
  /** The XOAUTH2 user of the session that sent it. */
  user: string;
  from: string;
  to: string[];
  subject: string;
  text: string;
  raw: string;
}

export interface LoginAttempt {
  protocol: MailProtocol;
  username: string;
  ok: boolean;
}

export interface MailServers {
  smtp: HostHint;
  imap: HostHint;
  pop: HostHint;
  received: ReceivedMail[];
  logins: LoginAttempt[];
  close(): Promise<void>;
}

export const SMTP_AUTH_DISABLED = { code: '535 5.7.139', message: 'Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.' };
const SMTP_BAD_TOKEN = { code: '535 5.7.3', message: 'Authentication unsuccessful' };
const IMAP_CAPABILITIES = 'IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+';
const POP_BAD_LOGIN = '-ERR Authentication failure: unknown user name or bad password.';
const MAX_LINE = 64 * 1024;

const lowerSet = (values: readonly string[] | undefined) => new Set((values ?? []).map((value) => value.toLowerCase()));

export async function startMailServers(options: MailServersOptions): Promise<MailServers> {
  const received: ReceivedMail[] = [];
  const logins: LoginAttempt[] = [];
  const disabled: Record<MailProtocol, Set<string>> = { smtp: lowerSet(options.smtpAuthDisabled), imap: lowerSet(options.imapDisabled), pop: lowerSet(options.popDisabled) };
  const notConnected = lowerSet(options.imapNotConnected);

  /** One login decision for every protocol; a verifier that throws is a temporary failure, as on Exchange. */
  const decide = async (protocol: MailProtocol, username: string, token: string): Promise<TokenVerdict | 'error'> => {
    let verdict: TokenVerdict | 'error';
    try {
      verdict = await options.verifyToken(username, token, protocol);
      if (verdict === true && disabled[protocol].has(username.toLowerCase())) verdict = protocol === 'smtp' ? SMTP_AUTH_DISABLED : false;
    } catch {
      verdict = 'error';
    }
    logins.push({ protocol, username, ok: verdict === true });
    return verdict;
  };

  const smtp = new SMTPServer({
    secure: false,
    key: options.tls.keyPem,
    cert: options.tls.certPem,
    name: 'sandbox.outlook.office365.com',
    banner: 'Microsoft ESMTP MAIL Service ready',
    authMethods: ['XOAUTH2'],
    allowInsecureAuth: false,
    // smtp-server would prefix its own enhanced code (5.7.8) to every 535; Exchange's codes are written out below.
    hideENHANCEDSTATUSCODES: true,
    logger: false,
    onAuth(auth, _session, callback) {
      const refuse = (answer: { code: string; message: string }) => {
        const [status, enhanced] = answer.code.split(' ');
        callback(Object.assign(new Error(`${enhanced ? `${enhanced} ` : ''}${answer.message}`), { responseCode: Number(status) }));
      };
      if (auth.method !== 'XOAUTH2' || !auth.accessToken) return refuse(SMTP_BAD_TOKEN);
      decide('smtp', auth.username ?? '', auth.accessToken).then(
        (verdict) => {
          if (verdict === true) callback(null, { user: auth.username });
          else if (verdict === 'error') refuse({ code: '454 4.7.0', message: 'Temporary authentication failure' });
          else refuse(verdict === false ? SMTP_BAD_TOKEN : verdict);
        },
        () => refuse(SMTP_BAD_TOKEN),
      );
    },
    onMailFrom(address, session, callback) {
      const user = typeof session.user === 'string' ? session.user : '';
      if (!user) return callback(Object.assign(new Error('5.7.57 Client not authenticated to send mail.'), { responseCode: 530 }));
      if (address.address.toLowerCase() !== user.toLowerCase()) {
        return callback(Object.assign(new Error('5.7.60 SMTP; Client does not have permissions to send as this sender'), { responseCode: 550 }));
      }
      callback();
    },
    onData(stream, session, callback) {
      readAll(stream).then(
        (raw) => {
          received.push({
            user: String(session.user),
            from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
            to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
            ...parseMessage(raw),
            raw,
          });
          callback();
        },
        (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
      );
    },
  });
  smtp.on('error', () => undefined);

  const imap = createTlsServer({ key: options.tls.keyPem, cert: options.tls.certPem, minVersion: 'TLSv1.2' }, (socket) => imapSession(socket, decide, notConnected));
  const pop = createTlsServer({ key: options.tls.keyPem, cert: options.tls.certPem, minVersion: 'TLSv1.2' }, (socket) => popSession(socket, decide));
  for (const server of [imap, pop]) server.on('tlsClientError', () => undefined);

  const [smtpPort, imapPort, popPort] = await Promise.all([listen(smtp.server), listen(imap), listen(pop)]);
  const host = '127.0.0.1';
  return {
    smtp: { host, port: smtpPort },
    imap: { host, port: imapPort },
    pop: { host, port: popPort },
    received,
    logins,
    close: async () => {
      await Promise.all([new Promise<void>((resolve) => smtp.close(() => resolve())), stop(imap), stop(pop)]);
    },
  };
}

type Decide = (protocol: MailProtocol, username: string, token: string) => Promise<TokenVerdict | 'error'>;

/** Splits an XOAUTH2 initial response; `null` when it is not one. */
export function parseXoauth2(encoded: string): { username: string; token: string } | null {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return null;
  const fields = Buffer.from(encoded, 'base64').toString('utf8').split('\x01');
  const user = fields.find((field) => field.startsWith('user='))?.slice('user='.length);
  const auth = fields.find((field) => field.startsWith('auth='))?.slice('auth='.length);
  const token = auth && /^Bearer /i.test(auth) ? auth.slice('Bearer '.length) : undefined;
  return user && token ? { username: user, token } : null;
}

/**
 * Feeds complete lines to `onLine`, one at a time. For IMAP, a line ending in a literal `{n}` /
 * `{n+}` is joined with its n bytes first (the synchronizing form is invited with `+`), so
 * the command parser never sees half a command.
 */
function lineReader(socket: TLSSocket, onLine: (line: string) => Promise<void>, literals: boolean): void {
  let buffer = Buffer.alloc(0);
  let pending = '';
  let literalBytes = 0;
  let busy = Promise.resolve();
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (literalBytes > 0) {
        if (buffer.length < literalBytes) break;
        pending += `"${buffer.subarray(0, literalBytes).toString('utf8').replace(/["\\\r\n]/g, ' ')}"`;
        buffer = buffer.subarray(literalBytes);
        literalBytes = 0;
        continue;
      }
      const end = buffer.indexOf('\n');
      if (end < 0) {
        if (buffer.length > MAX_LINE) socket.destroy();
        break;
      }
      const line = pending + buffer.subarray(0, end).toString('utf8').replace(/\r$/, '');
      buffer = buffer.subarray(end + 1);
      const literal = literals ? /\{(\d{1,6})(\+?)\}$/.exec(line) : null;
      if (literal) {
        pending = line.slice(0, literal.index);
        literalBytes = Number(literal[1]);
        if (literal[2] !== '+') socket.write('+ Ready for additional command text.\r\n');
        continue;
      }
      pending = '';
      busy = busy.then(() => onLine(line)).catch(() => {
        socket.destroy();
      });
    }
  });
  socket.on('error', () => undefined);
}

function imapSession(socket: TLSSocket, decide: Decide, notConnected: ReadonlySet<string>): void {
  let state: 'unauthenticated' | 'authenticated' | 'logout' = 'unauthenticated';
  let user = '';
  let awaitingResponse: string | null = null;
  const send = (...lines: string[]): void => {
    socket.write(lines.map((line) => `${line}\r\n`).join(''));
  };

  const authenticate = async (tag: string, encoded: string) => {
    if (encoded === '*') return send(`${tag} BAD AUTHENTICATE aborted.`);
    const login = parseXoauth2(encoded);
    const verdict = login ? await decide('imap', login.username, login.token) : false;
    if (verdict !== true || !login) return send(`${tag} NO AUTHENTICATE failed.`);
    state = 'authenticated';
    user = login.username;
    send(`${tag} OK AUTHENTICATE completed.`);
  };

  lineReader(
    socket,
    async (line) => {
      if (awaitingResponse !== null) {
        const tag = awaitingResponse;
        awaitingResponse = null;
        return authenticate(tag, line.trim());
      }
      const [tag = '', rawCommand = '', ...args] = line.trim().split(/\s+/);
      const command = rawCommand.toUpperCase();
      if (!tag || !command) return send(`${tag || '*'} BAD Command Error. 10`);
      const needsAuth = ['NAMESPACE', 'LIST', 'LSUB', 'SELECT', 'EXAMINE', 'STATUS', 'IDLE', 'APPEND'].includes(command);
      if (needsAuth && state !== 'authenticated') return send(`${tag} BAD Command received in Invalid state.`);
      if (needsAuth && notConnected.has(user.toLowerCase())) return send(`${tag} BAD User is authenticated but not connected.`);
      switch (command) {
        case 'CAPABILITY':
          return send(`* CAPABILITY ${IMAP_CAPABILITIES}`, `${tag} OK CAPABILITY completed.`);
        case 'NOOP':
          return send(`${tag} OK NOOP completed.`);
        case 'ID':
          return send('* ID NIL', `${tag} OK ID completed.`);
        case 'LOGIN':
          // Basic authentication is off in Exchange Online.
          return send(`${tag} NO LOGIN failed.`);
        case 'AUTHENTICATE': {
          if (state !== 'unauthenticated') return send(`${tag} BAD Command received in Invalid state.`);
          if (args[0]?.toUpperCase() !== 'XOAUTH2') return send(`${tag} NO AUTHENTICATE failed.`);
          if (args[1] !== undefined) return authenticate(tag, args[1]);
          awaitingResponse = tag;
          return send('+ ');
        }
        case 'NAMESPACE':
          return send('* NAMESPACE (("" "/")) NIL NIL', `${tag} OK NAMESPACE completed.`);
        case 'LIST':
          return send('* LIST (\\HasNoChildren) "/" INBOX', `${tag} OK LIST completed.`);
        case 'LOGOUT':
          state = 'logout';
          send('* BYE Microsoft Exchange Server IMAP4 server signing off.', `${tag} OK LOGOUT completed.`);
          socket.end();
          return;
        default:
          // ENABLE, COMPRESS, STARTTLS and the rest: Exchange does not advertise them.
          return send(`${tag} BAD Command Error. 10`);
      }
    },
    true,
  );
  send('* OK The Microsoft Exchange IMAP4 service is ready.');
}

function popSession(socket: TLSSocket, decide: Decide): void {
  let state: 'authorization' | 'transaction' = 'authorization';
  let awaitingResponse = false;
  const send = (...lines: string[]): void => {
    socket.write(lines.map((line) => `${line}\r\n`).join(''));
  };

  const authenticate = async (encoded: string) => {
    if (encoded === '*') return send('-ERR Authentication canceled.');
    const login = parseXoauth2(encoded);
    const verdict = login ? await decide('pop', login.username, login.token) : false;
    if (verdict !== true) return send(POP_BAD_LOGIN);
    state = 'transaction';
    send('+OK User successfully authenticated.');
  };

  lineReader(
    socket,
    async (line) => {
      if (awaitingResponse) {
        awaitingResponse = false;
        return authenticate(line.trim());
      }
      const [rawCommand = '', ...args] = line.trim().split(/\s+/);
      const command = rawCommand.toUpperCase();
      const inTransaction = ['STAT', 'LIST', 'UIDL', 'RETR', 'DELE', 'TOP', 'RSET'].includes(command);
      if (inTransaction && state !== 'transaction') return send('-ERR Command is not valid in this state.');
      switch (command) {
        case 'CAPA':
          return send('+OK', 'TOP', 'UIDL', 'SASL PLAIN XOAUTH2', 'USER', '.');
        case 'NOOP':
          return send('+OK');
        case 'USER':
          return send(state === 'authorization' ? '+OK' : '-ERR Command is not valid in this state.');
        case 'PASS':
          return send('-ERR Logon failure: unknown user name or bad password.');
        case 'AUTH': {
          if (state !== 'authorization') return send('-ERR Command is not valid in this state.');
          if (args[0]?.toUpperCase() !== 'XOAUTH2') return send(POP_BAD_LOGIN);
          if (args[1] !== undefined) return authenticate(args[1]);
          awaitingResponse = true;
          return send('+ ');
        }
        case 'STAT':
          return send('+OK 0 0');
        case 'LIST':
        case 'UIDL':
          return send('+OK', '.');
        case 'RSET':
          return send('+OK');
        case 'QUIT':
          send('+OK Microsoft Exchange Server POP3 server signing off.');
          socket.end();
          return;
        default:
          return send('-ERR Protocol error. 14');
      }
    },
    false,
  );
  send('+OK The Microsoft Exchange POP3 service is ready.');
}

// --- token checks as Exchange Online makes them -------------------------------------------

/** Exchange Online answers to both resource names; delegated tokens use the first, app-only the second. */
export const MAIL_AUDIENCES = ['https://outlook.office.com', 'https://outlook.office365.com'] as const;
const DELEGATED_SCOPE: Record<MailProtocol, string> = { smtp: 'SMTP.Send', imap: 'IMAP.AccessAsUser.All', pop: 'POP.AccessAsUser.All' };
const APP_ROLE: Record<MailProtocol, string> = { smtp: 'SMTP.SendAsApp', imap: 'IMAP.AccessAsApp', pop: 'POP.AccessAsApp' };

export interface SandboxTokenVerifierOptions {
  /** Mailboxes an app-only token may open: Exchange's New-ServicePrincipal + Add-MailboxPermission. Default: none. */
  appOnlyMailboxes?: readonly string[];
  /** The time tokens are checked at; default now. */
  clock?: Clock;
}

/**
 * Verifies an access token as Exchange Online does: an RS256 signature by a key the sandbox
 * publishes for `tenant`, the v1 issuer of that tenant, a mail audience, not expired, the
 * protocol's permission (`scp` for delegated, `roles` for app-only), and a mailbox the token
 * may open (its `upn` for delegated, case-insensitively). A token it cannot read is a `false`;
 * only an unreachable key set throws (the servers answer that as a temporary failure).
 */
export function sandboxTokenVerifier(idp: { authorityHost: string }, tenant: string, options: SandboxTokenVerifierOptions = {}): TokenVerifier {
  const jwks = createRemoteJWKSet(new URL(`${idp.authorityHost}/${tenant}/discovery/v2.0/keys`));
  const appMailboxes = lowerSet(options.appOnlyMailboxes);
  return async (username, token, protocol) => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        algorithms: ['RS256'],
        issuer: `${idp.authorityHost}/${tenant}/`,
        audience: [...MAIL_AUDIENCES],
        requiredClaims: ['exp', 'iat', 'tid'],
        ...(options.clock ? { currentDate: options.clock.now() } : {}),
      }));
    } catch (error) {
      if (error instanceof joseErrors.JOSEError && !(error instanceof joseErrors.JWKSTimeout)) return false;
      throw error;
    }
    if (payload.tid !== tenant) return false;
    const mailbox = username.toLowerCase();
    if (payload.idtyp === 'app') {
      const roles = Array.isArray(payload.roles) ? payload.roles : [];
      return roles.includes(APP_ROLE[protocol]) && appMailboxes.has(mailbox);
    }
    const scopes = typeof payload.scp === 'string' ? payload.scp.split(' ') : [];
    return scopes.includes(DELEGATED_SCOPE[protocol]) && typeof payload.upn === 'string' && payload.upn.toLowerCase() === mailbox;
  };
}

// --- real tokens from the sandbox identity provider ----------------------------------------

export const MAIL_SCOPES = ['https://outlook.office.com/SMTP.Send', 'https://outlook.office.com/IMAP.AccessAsUser.All', 'https://outlook.office.com/POP.AccessAsUser.All'];

/** A delegated access token for `upn`, through the sign-in pages and msal's code redemption (the app of `registerBrokerApp`). */
export async function delegatedMailToken(idp: SandboxIdentityProvider, upn: string, scopes: readonly string[] = MAIL_SCOPES): Promise<string> {
  const client = msalClient(idp);
  const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
  const url = await client.getAuthCodeUrl({ scopes: [...scopes], redirectUri: REDIRECT_URI, codeChallenge: challenge, codeChallengeMethod: 'S256', loginHint: upn });
  const payload = codePayload((await signInThroughPages(idp, url)).location);
  const result = await client.acquireTokenByCode({ code: payload.code, scopes: [...scopes], redirectUri: REDIRECT_URI, codeVerifier: verifier }, payload);
  return result.accessToken;
}

/** An app-only access token for `tenant` (client credentials; grant admin consent first). */
export async function appOnlyMailToken(idp: SandboxIdentityProvider, tenant: string): Promise<string> {
  const result = await msalClient(idp, { tenant }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] });
  if (!result) throw new Error('no app-only token');
  return result.accessToken;
}

// --- helpers --------------------------------------------------------------------------------

async function readAll(stream: SMTPServerDataStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  if (stream.sizeExceeded) throw Object.assign(new Error('5.3.4 Message size exceeds fixed maximum message size'), { responseCode: 552 });
  return Buffer.concat(chunks).toString('utf8');
}

/** Enough MIME for the single-part text messages tests send: Subject and the decoded text body. */
function parseMessage(raw: string): { subject: string; text: string } {
  const split = raw.search(/\r?\n\r?\n/);
  const head = split < 0 ? raw : raw.slice(0, split);
  const body = split < 0 ? '' : raw.slice(split).replace(/^\r?\n\r?\n/, '');
  const headers = new Map<string, string>();
  for (const field of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = field.indexOf(':');
    if (colon > 0) headers.set(field.slice(0, colon).trim().toLowerCase(), field.slice(colon + 1).trim());
  }
  const encoding = (headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  let text = body;
  if (encoding === 'base64') text = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  else if (encoding === 'quoted-printable') text = decodeQuotedPrintable(body.replace(/=\r?\n/g, ''));
  return { subject: decodeEncodedWords(headers.get('subject') ?? ''), text: text.replace(/\r\n/g, '\n').replace(/\n$/, '') };
}

function decodeQuotedPrintable(value: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i += 1) {
    const hex = value[i] === '=' ? /^[0-9A-F]{2}$/i.exec(value.slice(i + 1, i + 3)) : null;
    if (hex) {
      bytes.push(parseInt(hex[0], 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(value[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function decodeEncodedWords(value: string): string {
  return value.replace(/=\?([^?]+)\?([BQ])\?([^?]*)\?=\s*/gi, (_match, _charset: string, kind: string, data: string) =>
    kind.toUpperCase() === 'B' ? Buffer.from(data, 'base64').toString('utf8') : decodeQuotedPrintable(data.replace(/_/g, ' ')),
  );
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function stop(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => server.close(() => resolve()));
}
