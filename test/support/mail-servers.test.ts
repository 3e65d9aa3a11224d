import { Buffer } from 'node:buffer';
import { connect as connectTcp } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { ImapFlow } from 'imapflow';
import { decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { createTransport } from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../infra/local/sandbox-idp/index.js';
import { xoauth2 } from '../../shared/verify/xoauth2.js';
import { CLIENT_ID, CUSTOMER_TENANT, decodeJwt, fakeClock, OTHER_TENANT, registerBrokerApp, startTestSandbox } from '../infra/sandbox-idp/support.js';
import {
  appOnlyMailToken,
  delegatedMailToken,
  sandboxTokenVerifier,
  startMailServers,
  type MailServers,
} from './mail-servers.js';
import { issueTestServerCertificate } from './test-ca.js';

/* The Exchange-like mail servers, driven by the real nodemailer and imapflow and by raw sockets. */

const ALICE = 'alice@contoso.example';
const BOB = 'bob@contoso.example';
const CAROL = 'carol@contoso.example';
const SHARED = 'shared@contoso.example';

/** A line-at-a-time conversation over a socket. */
class Conversation {
  private buffer = '';
  private waiters: ((line: string) => void)[] = [];

  constructor(readonly socket: Socket | TLSSocket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.flush();
    });
  }

  static tls(port: number): Promise<Conversation> {
    return new Promise((resolve, reject) => {
      const socket = connectTls({ host: '127.0.0.1', port }, () => resolve(new Conversation(socket)));
      socket.once('error', reject);
    });
  }

  static tcp(port: number): Promise<Conversation> {
    return new Promise((resolve, reject) => {
      const socket = connectTcp({ host: '127.0.0.1', port }, () => resolve(new Conversation(socket)));
      socket.once('error', reject);
    });
  }

  line(): Promise<string> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.flush();
    });
  }

  /** Sends a line and collects answer lines until one matches `until`. */
  async ask(command: string | null, until: RegExp = /^/): Promise<string[]> {
    if (command !== null) this.socket.write(`${command}\r\n`);
    const lines: string[] = [];
    for (;;) {
      const line = await this.line();
      lines.push(line);
      if (until.test(line)) return lines;
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private flush(): void {
    for (;;) {
      const end = this.buffer.indexOf('\r\n');
      if (end < 0 || this.waiters.length === 0) return;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      this.waiters.shift()!(line);
    }
  }
}

/** The same claims, signed with a key the identity provider never published (kid copied, so the JWKS lookup succeeds). */
async function forge(token: string): Promise<string> {
  const { privateKey } = await generateKeyPair('RS256');
  const { kid } = decodeProtectedHeader(token);
  return new SignJWT(decodeJwt(token)).setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(kid ? { kid } : {}) }).sign(privateKey);
}

describe('Exchange-like mail servers', () => {
  let idp: SandboxIdentityProvider;
  let servers: MailServers;
  let aliceToken: string;
  let bobToken: string;
  let carolToken: string;

  beforeAll(async () => {
    idp = await startTestSandbox();
    registerBrokerApp(idp);
    for (const upn of [ALICE, BOB, CAROL]) idp.addUser({ upn, tid: CUSTOMER_TENANT });
    [aliceToken, bobToken, carolToken] = await Promise.all([delegatedMailToken(idp, ALICE), delegatedMailToken(idp, BOB), delegatedMailToken(idp, CAROL)]);
    servers = await startMailServers({
      tls: await issueTestServerCertificate(['localhost', '127.0.0.1']),
      verifyToken: sandboxTokenVerifier(idp, CUSTOMER_TENANT, { appOnlyMailboxes: [SHARED] }),
      smtpAuthDisabled: [CAROL],
      imapNotConnected: [SHARED],
    });
  });
  afterAll(async () => {
    await servers?.close();
    await idp?.close();
  });

  const smtpTransport = (user: string, accessToken: string) =>
    createTransport({ host: servers.smtp.host, port: servers.smtp.port, secure: false, requireTLS: true, auth: { type: 'OAuth2', user, accessToken } });

  describe('SMTP', () => {
    it('takes a message from nodemailer with an OAuth2 access token and records it', async () => {
      const transport = smtpTransport(ALICE, aliceToken);
      const info = await transport.sendMail({ from: ALICE, to: ['ops@fabrikam.example', BOB], subject: 'Token check ✓', text: 'Hello from the broker.\nSecond line.' });
      transport.close();
      expect(info.accepted).toEqual(['ops@fabrikam.example', BOB]);
      const mail = servers.received.at(-1)!;
      expect(mail).toMatchObject({ user: ALICE, from: ALICE, to: ['ops@fabrikam.example', BOB], subject: 'Token check ✓', text: 'Hello from the broker.\nSecond line.' });
      expect(mail.raw).not.toContain(aliceToken);
    });

    it('answers 535 5.7.3 to a token of another mailbox, and records nothing', async () => {
      const before = servers.received.length;
      const attempts = servers.logins.length;
      const transport = smtpTransport(ALICE, bobToken);
      await expect(transport.sendMail({ from: ALICE, to: BOB, subject: 'x', text: 'x' })).rejects.toMatchObject({
        code: 'EAUTH',
        responseCode: 535,
        response: '535 5.7.3 Authentication unsuccessful',
      });
      transport.close();
      expect(servers.received).toHaveLength(before);
      // Exchange answers 535 at once (no 334 challenge), so nodemailer makes exactly one attempt.
      expect(servers.logins.slice(attempts)).toEqual([{ protocol: 'smtp', username: ALICE, ok: false }]);
    });

    it('answers 535 5.7.139 to a valid token of a mailbox with SMTP AUTH disabled', async () => {
      const transport = smtpTransport(CAROL, carolToken);
      await expect(transport.verify()).rejects.toMatchObject({ responseCode: 535, response: expect.stringMatching(/^535 5\.7\.139 Authentication unsuccessful, SmtpClientAuthentication is disabled/) });
      transport.close();
    });

    it('refuses to send as anyone but the signed-in mailbox (550 5.7.60)', async () => {
      const transport = smtpTransport(ALICE, aliceToken);
      await expect(transport.sendMail({ from: BOB, to: ALICE, subject: 'x', text: 'x' })).rejects.toMatchObject({ responseCode: 550, response: expect.stringContaining('5.7.60') });
      transport.close();
    });

    it('takes no mail without a login, and no login before STARTTLS', async () => {
      const before = { received: servers.received.length, logins: servers.logins.length };
      const anonymous = createTransport({ host: servers.smtp.host, port: servers.smtp.port, secure: false, requireTLS: true });
      await expect(anonymous.sendMail({ from: ALICE, to: BOB, subject: 'x', text: 'x' })).rejects.toMatchObject({ responseCode: 530 });
      anonymous.close();

      const plain = await Conversation.tcp(servers.smtp.port);
      await plain.ask(null, /^220 /);
      expect((await plain.ask('EHLO client.example', /^250 /)).join('\n')).toContain('STARTTLS');
      const [refusal] = await plain.ask(`AUTH XOAUTH2 ${xoauth2(ALICE, aliceToken)}`);
      expect(refusal).toMatch(/^538 .*STARTTLS/);
      plain.close();
      expect(servers.received).toHaveLength(before.received);
      expect(servers.logins).toHaveLength(before.logins);
    });
  });

  describe('IMAP', () => {
    const imapClient = (user: string, accessToken: string) =>
      new ImapFlow({ host: servers.imap.host, port: servers.imap.port, secure: true, auth: { user, accessToken }, logger: false });

    it('lets imapflow log in with XOAUTH2, list and log out', async () => {
      const client = imapClient(ALICE, aliceToken);
      await client.connect();
      expect(client.authenticated).toBeTruthy();
      expect((await client.list()).map((box) => box.path)).toEqual(['INBOX']);
      await client.logout();
      expect(servers.logins.at(-1)).toEqual({ protocol: 'imap', username: ALICE, ok: true });
    });

    it('answers NO AUTHENTICATE failed. to a token of another mailbox', async () => {
      const client = imapClient(ALICE, bobToken);
      client.on('error', () => undefined);
      await expect(client.connect()).rejects.toMatchObject({ authenticationFailed: true, response: expect.stringMatching(/^\d+ NO AUTHENTICATE failed\.$/) });
    });

    it('speaks the continuation form, keeps authenticated commands for authenticated sessions, and says goodbye', async () => {
      const imap = await Conversation.tls(servers.imap.port);
      expect(await imap.line()).toMatch(/^\* OK The Microsoft Exchange IMAP4 service is ready/);
      expect(await imap.ask('a1 CAPABILITY', /^a1 /)).toEqual([expect.stringContaining('AUTH=XOAUTH2 SASL-IR'), 'a1 OK CAPABILITY completed.']);
      expect(await imap.ask('a2 NAMESPACE', /^a2 /)).toEqual(['a2 BAD Command received in Invalid state.']);
      expect(await imap.ask('a3 LOGIN alice secret', /^a3 /)).toEqual(['a3 NO LOGIN failed.']);
      expect(await imap.ask('a4 AUTHENTICATE XOAUTH2')).toEqual(['+ ']);
      expect(await imap.ask('*', /^a4 /)).toEqual(['a4 BAD AUTHENTICATE aborted.']);
      expect(await imap.ask('a5 AUTHENTICATE XOAUTH2')).toEqual(['+ ']);
      expect(await imap.ask(xoauth2(ALICE, aliceToken), /^a5 /)).toEqual(['a5 OK AUTHENTICATE completed.']);
      expect(await imap.ask('a6 ID ("name" {8}', /^\+ /)).toEqual(['+ Ready for additional command text.']);
      expect(await imap.ask('imapflow)', /^a6 /)).toEqual(['* ID NIL', 'a6 OK ID completed.']);
      expect(await imap.ask('a7 NAMESPACE', /^a7 /)).toEqual(['* NAMESPACE (("" "/")) NIL NIL', 'a7 OK NAMESPACE completed.']);
      expect(await imap.ask('a8 ENABLE CONDSTORE', /^a8 /)).toEqual(['a8 BAD Command Error. 10']);
      expect(await imap.ask('a9 LOGOUT', /^a9 /)).toEqual(['* BYE Microsoft Exchange Server IMAP4 server signing off.', 'a9 OK LOGOUT completed.']);
      imap.close();
    });
  });

  describe('POP', () => {
    it('logs in with AUTH XOAUTH2 and the string after +, and quits', async () => {
      const pop = await Conversation.tls(servers.pop.port);
      expect(await pop.line()).toBe('+OK The Microsoft Exchange POP3 service is ready.');
      expect(await pop.ask('CAPA', /^\.$/)).toContain('SASL PLAIN XOAUTH2');
      expect(await pop.ask('STAT')).toEqual(['-ERR Command is not valid in this state.']);
      expect(await pop.ask('AUTH XOAUTH2')).toEqual(['+ ']);
      expect(await pop.ask(xoauth2(ALICE, bobToken))).toEqual(['-ERR Authentication failure: unknown user name or bad password.']);
      expect(await pop.ask('AUTH XOAUTH2')).toEqual(['+ ']);
      expect(await pop.ask(xoauth2(ALICE, aliceToken))).toEqual(['+OK User successfully authenticated.']);
      expect(await pop.ask('STAT')).toEqual(['+OK 0 0']);
      expect(await pop.ask('QUIT')).toEqual(['+OK Microsoft Exchange Server POP3 server signing off.']);
      pop.close();
    });
  });

  describe('token checks (sandboxTokenVerifier)', () => {
    const verifier = () => sandboxTokenVerifier(idp, CUSTOMER_TENANT, { appOnlyMailboxes: [SHARED] });

    it('accepts a delegated token for its own mailbox, case-insensitively, for every consented protocol', async () => {
      const verify = verifier();
      expect(decodeJwt(aliceToken)).toMatchObject({ aud: 'https://outlook.office.com', upn: ALICE, scp: 'SMTP.Send IMAP.AccessAsUser.All POP.AccessAsUser.All' });
      for (const protocol of ['smtp', 'imap', 'pop'] as const) expect(await verify(ALICE.toUpperCase(), aliceToken, protocol)).toBe(true);
      expect(await verify(BOB, aliceToken, 'smtp')).toBe(false);
    });

    it('refuses a forged token, an expired one, another tenant\'s, and one without the protocol\'s scope', async () => {
      const verify = verifier();
      expect(await verify(ALICE, await forge(aliceToken), 'smtp')).toBe(false);
      expect(await verify(ALICE, `${aliceToken.slice(0, -4)}AAAA`, 'smtp')).toBe(false);
      expect(await verify(ALICE, 'not-a-jwt', 'smtp')).toBe(false);

      const later = fakeClock(new Date(Date.now() + 2 * 3_600_000));
      expect(await sandboxTokenVerifier(idp, CUSTOMER_TENANT, { clock: later })(ALICE, aliceToken, 'smtp')).toBe(false);
      expect(await sandboxTokenVerifier(idp, OTHER_TENANT)(ALICE, aliceToken, 'smtp')).toBe(false);

      const dave = 'dave@contoso.example';
      idp.addUser({ upn: dave, tid: CUSTOMER_TENANT });
      const smtpOnly = await delegatedMailToken(idp, dave, ['https://outlook.office.com/SMTP.Send']);
      expect(await verify(dave, smtpOnly, 'smtp')).toBe(true);
      expect(await verify(dave, smtpOnly, 'imap')).toBe(false);

      const graph = await delegatedMailToken(idp, dave, ['User.Read']);
      expect(decodeJwt(graph).aud).toBe('https://graph.microsoft.com');
      expect(await verify(dave, graph, 'smtp')).toBe(false);
    });

    it('refuses a forged token on the wire, in every protocol', async () => {
      const forged = await forge(aliceToken);
      const transport = smtpTransport(ALICE, forged);
      await expect(transport.verify()).rejects.toMatchObject({ response: '535 5.7.3 Authentication unsuccessful' });
      transport.close();
      const client = new ImapFlow({ host: servers.imap.host, port: servers.imap.port, secure: true, auth: { user: ALICE, accessToken: forged }, logger: false });
      client.on('error', () => undefined);
      await expect(client.connect()).rejects.toMatchObject({ response: expect.stringMatching(/ NO AUTHENTICATE failed\.$/) });
      const pop = await Conversation.tls(servers.pop.port);
      await pop.line();
      expect(await pop.ask(`AUTH XOAUTH2 ${xoauth2(ALICE, forged)}`)).toEqual(['-ERR Authentication failure: unknown user name or bad password.']);
      pop.close();
    });

    it('accepts an app-only token (roles, audience outlook.office365.com) only for mailboxes the app was given', async () => {
      idp.grantAdminConsent(CUSTOMER_TENANT, CLIENT_ID, ['https://outlook.office365.com']);
      const appToken = await appOnlyMailToken(idp, CUSTOMER_TENANT);
      expect(decodeJwt(appToken)).toMatchObject({ aud: 'https://outlook.office365.com', idtyp: 'app', roles: expect.arrayContaining(['SMTP.SendAsApp', 'IMAP.AccessAsApp', 'POP.AccessAsApp']) });
      const verify = verifier();
      expect(await verify(SHARED, appToken, 'smtp')).toBe(true);
      expect(await verify(ALICE, appToken, 'smtp')).toBe(false);
      expect(await sandboxTokenVerifier(idp, CUSTOMER_TENANT)(SHARED, appToken, 'smtp')).toBe(false);

      const transport = smtpTransport(SHARED, appToken);
      await transport.sendMail({ from: SHARED, to: ALICE, subject: 'from the app', text: 'app-only' });
      transport.close();
      expect(servers.received.at(-1)).toMatchObject({ user: SHARED, subject: 'from the app', text: 'app-only' });
    });

    it('answers a verifier that cannot reach the key set as a temporary failure (454 4.7.0)', async () => {
      const offline = await startMailServers({
        tls: await issueTestServerCertificate(['127.0.0.1']),
        verifyToken: sandboxTokenVerifier({ authorityHost: 'https://127.0.0.1:1' }, CUSTOMER_TENANT),
      });
      try {
        const transport = createTransport({ host: offline.smtp.host, port: offline.smtp.port, requireTLS: true, auth: { type: 'OAuth2', user: ALICE, accessToken: aliceToken } });
        await expect(transport.verify()).rejects.toMatchObject({ response: '454 4.7.0 Temporary authentication failure' });
        transport.close();
      } finally {
        await offline.close();
      }
    });
  });

  it('never writes a token where a test could read it', () => {
    const everything = JSON.stringify({ received: servers.received, logins: servers.logins });
    for (const token of [aliceToken, bobToken, carolToken]) expect(everything).not.toContain(token);
    expect(Buffer.byteLength(everything)).toBeGreaterThan(0);
  });
});
