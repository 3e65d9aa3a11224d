import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPage, signInThroughPages } from '../infra/sandbox-idp/support.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';
import { startConnectFixtureWithMail } from '../support/mail-fixture.js';
import type { MailServers } from '../support/mail-servers.js';

/*
 * Alerts as the deployed broker sends them: raised by the token path and the sweep, sent by
 * the rotate-tokens timer from BROKER_ALERT_SENDER's mailbox with a token the broker itself
 * holds, to a local SMTP server that checks that token as Exchange would.
 */

const SENDER = 'alerts@contoso.example';
const CONTACT = 'it@contoso.example';
const OPERATOR = 'ops@broker.example';

let fixture: ConnectFixture;
let mail: MailServers;
let close: (() => Promise<void>) | undefined;

beforeAll(async () => {
  ({ fixture, mail, close } = await startConnectFixtureWithMail({ env: { BROKER_ALERT_SENDER: SENDER, BROKER_OPERATOR_EMAIL: OPERATOR } }));
  await connectMailbox(fixture, SENDER);
  expect((await fixture.broker.call('PATCH', `/api/manage/tenants/${fixture.tenantId}`, { body: { alertEmails: [CONTACT] } })).status).toBe(200);
});

afterAll(async () => {
  await close?.();
});

async function runTimer(): Promise<void> {
  const response = await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
  expect(response.status).toBe(202);
}

const subjectsTo = (address: string) => mail.received.filter((message) => message.to.includes(address)).map((message) => message.subject);

describe('alerts through the broker', () => {
  it('emails a Re-authorize link when a grant is revoked, and a recovery notice once reconnected', async () => {
    const mailbox = 'ivan@contoso.example';
    const connectionId = await connectMailbox(fixture, mailbox);
    fixture.idp.revokeRefreshTokens(mailbox);
    const refused = await fetch(`${fixture.broker.baseUrl}/api/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await tenantKey(fixture)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ connection: connectionId }),
    });
    expect(refused.status).toBe(409);

    await runTimer();
    await runTimer();
    expect(subjectsTo(CONTACT)).toEqual([`Action needed: re-authorize the mailbox ${mailbox}`]);
    const email = mail.received.find((message) => message.to.includes(CONTACT))!;
    expect(email.user).toBe(SENDER);
    const link = new RegExp(`${fixture.broker.baseUrl}/api/connect/lnk_[a-z2-7]{26}`).exec(email.text)?.[0];
    expect(link).toBeDefined();

    const opened = await openPage(link!);
    const back = await signInThroughPages(fixture.idp, opened.location!.toString());
    expect((await openPage(back.location!.toString())).status).toBe(200);
    await runTimer();
    await runTimer();
    expect(subjectsTo(CONTACT)).toEqual([`Action needed: re-authorize the mailbox ${mailbox}`, `Resolved: the mailbox ${mailbox} is connected again`]);
  });

  it('warns about a client secret expiring in ten days, once, to the app\'s contacts and the operator', async () => {
    const created = await fixture.broker.call('POST', '/api/manage/apps', {
      body: {
        name: 'Expiring app',
        clientId: randomUUID(),
        tenant: 'organizations',
        clientSecret: 'about-to-expire',
        clientSecretExpiresOn: new Date(fixture.clock.now().getTime() + 10 * 86_400_000).toISOString(),
        alertEmails: ['owner@broker.example'],
      },
    });
    expect(created.status).toBe(201);
    await runTimer();
    await runTimer();
    const warnings = mail.received.filter((message) => message.subject.includes('Expiring app'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.to).toEqual(expect.arrayContaining(['owner@broker.example', OPERATOR]));
    expect(warnings[0]!.subject).toContain('expires in 10 days');
    expect(warnings[0]!.text).not.toContain('about-to-expire');

    const alerts = (await (await fixture.broker.call('GET', '/api/manage/alerts?status=sent')).json()) as { items: { kind: string }[] };
    expect(alerts.items.map((alert) => alert.kind)).toEqual(expect.arrayContaining(['secret_expiry', 'needs_reauth', 'reconnected']));
    const readiness = (await (await fixture.broker.call('GET', '/api/manage/health')).json()) as { checks: { alertSender: { configured: boolean; ok: boolean } } };
    expect(readiness.checks.alertSender).toMatchObject({ configured: true, ok: true });
  });
});
