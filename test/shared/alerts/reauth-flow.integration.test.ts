import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { TableClient } from '@azure/data-tables';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AlertMailer } from '../../../shared/alerts/alert-mailer.js';
import { alertCodec } from '../../../shared/alerts/alert-record.js';
import { alertSenderTokens } from '../../../shared/alerts/alert-sender.js';
import { AlertService } from '../../../shared/alerts/alert-service.js';
import { AlertStore } from '../../../shared/alerts/alert-store.js';
import { EntityTable } from '../../../shared/storage/entity-table.js';
import { connectionWithLink, connectMailbox, CUSTOMER_TENANT, startConnectFixture, type ConnectFixture } from '../../support/connect-fixture.js';
import { sandboxTokenVerifier, startMailServers, type MailServers } from '../../support/mail-servers.js';
import { issueTestServerCertificate } from '../../support/test-ca.js';
import { openPage, signInThroughPages } from '../../infra/sandbox-idp/support.js';

/*
 * The whole re-authorization story with real parts: the broker's own connection sends the
 * alerts with a token the broker got from the sandbox identity provider, the SMTP server
 * checks that token as Exchange would, a revoked grant makes a mailbox needs_reauth, and the
 * link in the email reconnects it.
 */

const SENDER = 'alerts@contoso.example';
const MAILBOX = 'frank@contoso.example';
const CONTACT = 'it@contoso.example';

let fixture: ConnectFixture;
let servers: MailServers;
let alerts: AlertService;
let senderId: string;

const senderDeps = () => ({
  connections: fixture.broker.services.tables.connections,
  mailboxIndex: fixture.broker.services.tables.mailboxIndex,
  accessTokens: fixture.broker.services.accessTokens,
});

beforeAll(async () => {
  fixture = await startConnectFixture();
  servers = await startMailServers({ tls: await issueTestServerCertificate(['localhost', '127.0.0.1']), verifyToken: sandboxTokenVerifier(fixture.idp, CUSTOMER_TENANT) });
  const { services } = fixture.broker;
  senderId = await connectMailbox(fixture, SENDER);
  const clock = fixture.clock;
  const table = new EntityTable(
    TableClient.fromConnectionString(fixture.azurite.connectionString, `alerts${randomBytes(6).toString('hex')}`, { allowInsecureConnection: true }),
    alertCodec,
  );
  const store = new AlertStore({ table, clock });
  const log = () => undefined;
  alerts = new AlertService({
    store,
    clock,
    publicUrl: services.config.publicUrl,
    operatorEmail: 'ops@broker.example',
    log,
    mailer: new AlertMailer({
      store,
      clock,
      smtp: servers.smtp,
      // As composition wires BROKER_ALERT_SENDER: the token comes from the broker itself.
      getSenderToken: alertSenderTokens(SENDER, senderDeps()),
      messageIdDomain: 'localhost',
      log,
    }),
  });
  const patched = await fixture.broker.call('PATCH', `/api/manage/tenants/${fixture.tenantId}`, { body: { alertEmails: [CONTACT] } });
  expect(patched.status).toBe(200);
});

afterAll(async () => {
  await servers?.close();
  await fixture?.close();
});

function textPart(raw: string): string {
  const boundary = /boundary="?([^";\r\n]+)"?/i.exec(raw)?.[1] ?? '\u0000';
  const chunk = raw.split(`--${boundary}`).find((part) => /content-type:\s*text\/plain/i.test(part)) ?? '';
  const body = chunk.slice(chunk.search(/\r?\n\r?\n/)).trim();
  if (!/content-transfer-encoding:\s*quoted-printable/i.test(chunk)) return body;
  const bytes = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

it('a revoked grant → needs_reauth → one email whose link reconnects the mailbox → one recovery notice', async () => {
  const { services } = fixture.broker;
  const connectionId = await connectMailbox(fixture, MAILBOX);
  const tenant = (await services.tables.tenants.get(fixture.tenantId, ''))!.value;

  fixture.idp.revokeRefreshTokens(MAILBOX);
  const before = (await services.tables.connections.get(connectionId, ''))!.value;
  await expect(services.accessTokens.get(before)).rejects.toMatchObject({ code: 'NEEDS_REAUTH' });
  const broken = (await services.tables.connections.get(connectionId, ''))!.value;
  expect(broken.status).toBe('needs_reauth');

  // The token path and the sweep both notice; one email goes out.
  for (let run = 0; run < 2; run += 1) {
    await alerts.needsReauth(broken, tenant, broken.statusReason!, () => services.connect.createLink(broken));
    await alerts.sendPending();
  }
  const problems = servers.received.filter((mail) => mail.to.includes(CONTACT));
  expect(problems.map((mail) => mail.subject)).toEqual([`Action needed: re-authorize the mailbox ${MAILBOX}`]);
  expect(problems[0]).toMatchObject({ user: SENDER, from: SENDER });
  const text = textPart(problems[0]!.raw);
  expect(text).toContain(broken.statusReason!.code);
  const link = new RegExp(`${fixture.broker.baseUrl}/api/connect/lnk_[a-z2-7]{26}`).exec(text)?.[0];
  expect(link).toBeDefined();

  // The contact follows the link and signs in as the mailbox.
  const opened = await openPage(link!);
  const back = await signInThroughPages(fixture.idp, opened.location!.toString());
  const page = await openPage(back.location!.toString());
  expect(page.status).toBe(200);
  const reconnected = (await services.tables.connections.get(connectionId, ''))!.value;
  expect(reconnected.status).toBe('connected');
  await expect(services.accessTokens.get(reconnected)).resolves.toMatchObject({ source: 'refresh' });

  expect(await alerts.reconnected(reconnected, tenant)).toMatchObject({ created: true });
  expect(await alerts.reconnected(reconnected, tenant)).toBeNull();
  await alerts.sendPending();
  await alerts.sendPending();
  expect(servers.received.filter((mail) => mail.to.includes(CONTACT)).map((mail) => mail.subject)).toEqual([
    `Action needed: re-authorize the mailbox ${MAILBOX}`,
    `Resolved: the mailbox ${MAILBOX} is connected again`,
  ]);
  expect(servers.logins.filter((login) => login.protocol === 'smtp').every((login) => login.ok && login.username === SENDER)).toBe(true);
});

it('BROKER_ALERT_SENDER may be the connection id or its mailbox, and a sender that cannot send says why', async () => {
  const byId = await alertSenderTokens(senderId, senderDeps())();
  const byMailbox = await alertSenderTokens(SENDER.toUpperCase(), senderDeps())();
  expect([byId.mailbox, byMailbox.mailbox]).toEqual([SENDER, SENDER]);
  expect(byId.accessToken).toBe(byMailbox.accessToken);

  await expect(alertSenderTokens('nobody@contoso.example', senderDeps())()).rejects.toMatchObject({ code: 'CONNECTION_NOT_FOUND' });
  await expect(alertSenderTokens('con_aaaaaaaaaaaaaaaaaaaaaaaaaa', senderDeps())()).rejects.toMatchObject({ code: 'CONNECTION_NOT_FOUND' });
  const { connectionId } = await connectionWithLink(fixture, 'reader@contoso.example', { protocols: ['imap'] });
  await expect(alertSenderTokens(connectionId, senderDeps())()).rejects.toMatchObject({ code: 'INVALID_REQUEST', fix: expect.stringContaining('"smtp"') });
});
