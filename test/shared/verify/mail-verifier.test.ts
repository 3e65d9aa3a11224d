import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import type { HostHint } from '../../../shared/config.js';
import { BrokerError } from '../../../shared/errors.js';
import { verifyMailLogin, type ProtocolVerification, type VerifyReport } from '../../../shared/verify/mail-verifier.js';
import { xoauth2 } from '../../../shared/verify/xoauth2.js';
import { CLIENT_ID, CUSTOMER_TENANT, decodeJwt, registerBrokerApp, startTestSandbox } from '../../infra/sandbox-idp/support.js';
import { appOnlyMailToken, delegatedMailToken, sandboxTokenVerifier, startMailServers, type MailServers } from '../../support/mail-servers.js';
import { issueTestServerCertificate } from '../../support/test-ca.js';

/* verifyMailLogin with the real nodemailer, imapflow and POP client against the Exchange-like servers and real sandbox tokens. */

const ALICE = 'alice@contoso.example';
const BOB = 'bob@contoso.example';
const CAROL = 'carol@contoso.example';
const SHARED = 'shared@contoso.example';
const NOT_CONNECTED = 'archive@contoso.example';
const ALL = ['smtp', 'imap', 'pop'] as const;

const byProtocol = (report: VerifyReport) => Object.fromEntries(report.results.map((result) => [result.protocol, result])) as Record<(typeof ALL)[number], ProtocolVerification>;

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Accepts connections and never says a word. */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('verifyMailLogin', () => {
  let idp: SandboxIdentityProvider;
  let servers: MailServers;
  let hosts: { smtp: HostHint; imap: HostHint; pop: HostHint };
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    idp = await startTestSandbox();
    registerBrokerApp(idp);
    for (const upn of [ALICE, BOB, CAROL]) idp.addUser({ upn, tid: CUSTOMER_TENANT });
    for (const upn of [ALICE, BOB, CAROL]) tokens[upn] = await delegatedMailToken(idp, upn);
    idp.grantAdminConsent(CUSTOMER_TENANT, CLIENT_ID, ['https://outlook.office365.com']);
    tokens.app = await appOnlyMailToken(idp, CUSTOMER_TENANT);
    servers = await startMailServers({
      tls: await issueTestServerCertificate(['localhost', '127.0.0.1']),
      verifyToken: sandboxTokenVerifier(idp, CUSTOMER_TENANT, { appOnlyMailboxes: [SHARED, NOT_CONNECTED] }),
      smtpAuthDisabled: [CAROL],
      imapNotConnected: [NOT_CONNECTED],
    });
    hosts = { smtp: servers.smtp, imap: servers.imap, pop: servers.pop };
  });
  afterAll(async () => {
    await servers?.close();
    await idp?.close();
  });

  it('logs in with every protocol for a valid delegated token, and sends nothing', async () => {
    const sent = servers.received.length;
    const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: tokens[ALICE]!, hosts });
    expect(report.ok).toBe(true);
    expect(report.results.map((result) => result.protocol)).toEqual(['smtp', 'imap', 'pop']);
    for (const result of report.results) {
      expect(result).toMatchObject({ ok: true, host: '127.0.0.1', port: hosts[result.protocol].port });
      expect(result.code).toBeUndefined();
      expect(result.fix).toBeUndefined();
      expect(result.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(servers.received).toHaveLength(sent);
    expect(servers.logins.slice(-3)).toEqual(expect.arrayContaining(ALL.map((protocol) => ({ protocol, username: ALICE, ok: true }))));
  });

  it('checks only the protocols asked for', async () => {
    const report = await verifyMailLogin({ protocols: ['imap', 'imap'], username: ALICE, accessToken: tokens[ALICE]!, hosts });
    expect(report.results.map((result) => result.protocol)).toEqual(['imap']);
    await expect(verifyMailLogin({ protocols: [], username: ALICE, accessToken: tokens[ALICE]!, hosts })).rejects.toBeInstanceOf(BrokerError);
  });

  it('maps a token of another mailbox to 535 5.7.3 and the IMAP / POP refusals, each with its fix', async () => {
    const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: tokens[BOB]!, hosts });
    expect(report.ok).toBe(false);
    const { smtp, imap, pop } = byProtocol(report);
    expect(smtp).toMatchObject({ ok: false, code: '535 5.7.3' });
    expect(smtp.message).toContain('535 5.7.3 Authentication unsuccessful');
    expect(smtp.fix).toContain('Add-MailboxPermission');
    expect(smtp.fix).toContain('SMTP.Send');
    expect(imap).toMatchObject({ ok: false, code: 'IMAP AUTHENTICATE failed' });
    expect(imap.fix).toContain('Set-CASMailbox -Identity <mailbox> -ImapEnabled $true');
    expect(pop).toMatchObject({ ok: false, code: 'POP Authentication failure' });
    expect(pop.message).toContain('-ERR Authentication failure: unknown user name or bad password.');
    expect(pop.fix).toContain('-PopEnabled $true');
  });

  it('maps 535 5.7.139 to enabling Authenticated SMTP; IMAP and POP still pass', async () => {
    const { smtp, imap, pop } = byProtocol(await verifyMailLogin({ protocols: [...ALL], username: CAROL, accessToken: tokens[CAROL]!, hosts }));
    expect(smtp).toMatchObject({ ok: false, code: '535 5.7.139' });
    expect(smtp.message).toContain('SmtpClientAuthentication is disabled');
    expect(smtp.fix).toContain('Authenticated SMTP');
    expect(smtp.fix).toContain('-SmtpClientAuthenticationDisabled $false');
    expect(smtp.fix).toContain('security defaults');
    expect([imap.ok, pop.ok]).toEqual([true, true]);
  });

  it('refuses a forged token in every protocol', async () => {
    const real = tokens[ALICE]!;
    const { privateKey } = await generateKeyPair('RS256');
    const forged = await new SignJWT(decodeJwt(real)).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: decodeProtectedHeader(real).kid! }).sign(privateKey);
    const { smtp, imap, pop } = byProtocol(await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: forged, hosts }));
    expect([smtp.code, imap.code, pop.code]).toEqual(['535 5.7.3', 'IMAP AUTHENTICATE failed', 'POP Authentication failure']);
  });

  it('verifies an app-only token for a mailbox the app was given, and explains "authenticated but not connected"', async () => {
    expect((await verifyMailLogin({ protocols: [...ALL], username: SHARED, accessToken: tokens.app!, hosts })).ok).toBe(true);
    const { smtp, imap } = byProtocol(await verifyMailLogin({ protocols: ['smtp', 'imap'], username: NOT_CONNECTED, accessToken: tokens.app!, hosts }));
    expect(smtp.ok).toBe(true);
    expect(imap).toMatchObject({ ok: false, code: 'IMAP not connected' });
    expect(imap.fix).toContain('Add-MailboxPermission');
    const other = byProtocol(await verifyMailLogin({ protocols: ['smtp'], username: ALICE, accessToken: tokens.app!, hosts }));
    expect(other.smtp.code).toBe('535 5.7.3');
  });

  it('says which host:port it cannot reach when nothing listens there', async () => {
    const port = await closedPort();
    const closed = { host: '127.0.0.1', port };
    const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: tokens[ALICE]!, hosts: { smtp: closed, imap: closed, pop: closed } });
    for (const result of report.results) {
      expect(result).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
      expect(result.message).toBe(`Cannot reach 127.0.0.1:${port} from the broker: the connection was refused.`);
      expect(result.fix).toContain(`outbound connections to 127.0.0.1:${port}`);
    }
    expect(byProtocol(report).smtp.fix).toContain('BROKER_SMTP_HOST');
    expect(byProtocol(report).pop.fix).toContain('BROKER_POP_HOST');
  });

  it('gives up on a server that never answers, within the timeout', async () => {
    const silent = await silentServer();
    try {
      const target = { host: '127.0.0.1', port: silent.port };
      const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: tokens[ALICE]!, hosts: { smtp: target, imap: target, pop: target }, timeoutMs: 300 });
      for (const result of report.results) {
        expect(result.ok).toBe(false);
        expect(result.message).toContain(`Cannot reach 127.0.0.1:${silent.port} from the broker`);
        expect(result.durationMs).toBeLessThan(5_000);
      }
      // A TLS client waits for the handshake, a plain SMTP client for the greeting: both time out.
      expect(report.results.map((result) => result.code)).toEqual(['ETIMEDOUT', 'ETIMEDOUT', 'ETIMEDOUT']);
    } finally {
      await silent.close();
    }
  });

  it('refuses a server whose certificate does not name the host, and never turns checks off', async () => {
    const impostor = await startMailServers({
      tls: await issueTestServerCertificate(['mail.fabrikam.example']),
      verifyToken: async () => true,
    });
    try {
      const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: tokens[ALICE]!, hosts: { smtp: impostor.smtp, imap: impostor.imap, pop: impostor.pop } });
      for (const result of report.results) {
        expect(result.ok).toBe(false);
        expect(result.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
        expect(result.message).toContain('securely');
      }
      // The token never reached the impostor.
      expect(impostor.logins).toEqual([]);
    } finally {
      await impostor.close();
    }
  });

  it('never puts the token in a report, even when a server echoes it', async () => {
    const token = tokens[ALICE]!;
    const echo = await startMailServers({
      tls: await issueTestServerCertificate(['127.0.0.1']),
      verifyToken: async (_user, presented) => ({ code: '535 5.7.3', message: `Authentication unsuccessful for ${presented} (${xoauth2(ALICE, presented)})` }),
    });
    try {
      const report = await verifyMailLogin({ protocols: [...ALL], username: ALICE, accessToken: token, hosts: { smtp: echo.smtp, imap: echo.imap, pop: echo.pop } });
      const text = JSON.stringify(report);
      expect(text).not.toContain(token);
      expect(text).not.toContain(xoauth2(ALICE, token));
      expect(byProtocol(report).smtp.message).toContain('[redacted]');
    } finally {
      await echo.close();
    }
  });
});
