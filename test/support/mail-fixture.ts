import { CUSTOMER_TENANT, startConnectFixture, type ConnectFixture } from './connect-fixture.js';
import { sandboxTokenVerifier, startMailServers, type MailServers, type MailServersOptions, type TokenVerifier } from './mail-servers.js';
import { issueTestServerCertificate } from './test-ca.js';

/**
 * The connect fixture with strict local SMTP/IMAP/POP servers that accept only tokens the
 * sandbox identity provider issued for that mailbox, and a broker whose host hints
 * (BROKER_SMTP_HOST, …) point at them.
 */
export async function startConnectFixtureWithMail(
  options: { env?: Record<string, string>; servers?: Omit<MailServersOptions, 'tls' | 'verifyToken'> } = {},
): Promise<{ fixture: ConnectFixture; mail: MailServers; close(): Promise<void> }> {
  let verifier: TokenVerifier | undefined;
  const mail = await startMailServers({
    ...options.servers,
    tls: await issueTestServerCertificate(['localhost', '127.0.0.1']),
    // The identity provider starts with the fixture below; the servers ask it lazily.
    verifyToken: (username, token, protocol) => verifier!(username, token, protocol),
  });
  const hint = (server: { port: number }) => `localhost:${server.port}`;
  const fixture = await startConnectFixture({
    env: { BROKER_SMTP_HOST: hint(mail.smtp), BROKER_IMAP_HOST: hint(mail.imap), BROKER_POP_HOST: hint(mail.pop), ...options.env },
  });
  verifier = sandboxTokenVerifier(fixture.idp, CUSTOMER_TENANT);
  return {
    fixture,
    mail,
    close: async () => {
      await fixture.close();
      await mail.close();
    },
  };
}
