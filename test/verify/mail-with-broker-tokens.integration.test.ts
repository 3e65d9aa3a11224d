import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectMailbox, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';
import { startConnectFixtureWithMail } from '../support/mail-fixture.js';
import { SMTP_AUTH_DISABLED, type MailServers } from '../support/mail-servers.js';

/*
 * The point of the broker: a mail sender asks POST /api/token and logs in to SMTP/IMAP/POP
 * with it. The local servers accept only a token the identity provider issued for that
 * very mailbox, as Exchange Online does.
 */

let fixture: ConnectFixture;
let mail: MailServers;
let close: (() => Promise<void>) | undefined;

beforeAll(async () => {
  ({ fixture, mail, close } = await startConnectFixtureWithMail({ servers: { smtpAuthDisabled: ['noauth@contoso.example'] } }));
});

afterAll(async () => {
  await close?.();
});

async function token(connection: string): Promise<{ access_token: string; username: string; smtp: { host: string; port: number } }> {
  const response = await fetch(`${fixture.broker.baseUrl}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await tenantKey(fixture)}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { access_token: string; username: string; smtp: { host: string; port: number } };
}

describe('mail with a token from the broker', () => {
  it('sends through SMTP with nodemailer and XOAUTH2', async () => {
    await connectMailbox(fixture, 'sender@contoso.example');
    const issued = await token('sender@contoso.example');
    const transport = nodemailer.createTransport({
      host: issued.smtp.host,
      port: issued.smtp.port,
      secure: false,
      requireTLS: true,
      auth: { type: 'OAuth2', user: issued.username, accessToken: issued.access_token },
    });
    await transport.sendMail({ from: issued.username, to: 'customer@fabrikam.example', subject: 'Invoice 42', text: 'Sent with a brokered token.' });
    transport.close();
    expect(mail.received.at(-1)).toMatchObject({ user: 'sender@contoso.example', subject: 'Invoice 42' });
  });

  it('is refused for another mailbox: the token is bound to the one that signed in', async () => {
    await connectMailbox(fixture, 'other@contoso.example');
    const issued = await token('other@contoso.example');
    const transport = nodemailer.createTransport({
      host: issued.smtp.host,
      port: issued.smtp.port,
      secure: false,
      requireTLS: true,
      auth: { type: 'OAuth2', user: 'sender@contoso.example', accessToken: issued.access_token },
    });
    await expect(transport.sendMail({ from: 'sender@contoso.example', to: 'x@fabrikam.example', subject: 'x', text: 'x' })).rejects.toMatchObject({ responseCode: 535 });
    transport.close();
  });
});

describe('POST /api/manage/connections/{id}/verify', () => {
  it('logs in to every protocol of the connection and says so', async () => {
    const id = await connectMailbox(fixture, 'verified@contoso.example', { protocols: ['smtp', 'imap', 'pop'] });
    const response = await fixture.broker.call('POST', `/api/manage/connections/${id}/verify`);
    expect(response.status).toBe(200);
    const report = (await response.json()) as { ok: boolean; results: { protocol: string; ok: boolean }[] };
    expect(report.ok).toBe(true);
    expect(report.results.map((result) => [result.protocol, result.ok]).sort()).toEqual([['imap', true], ['pop', true], ['smtp', true]]);
  });

  it('maps Microsoft\'s 535 5.7.139 to the Exchange setting that fixes it, never echoing the token', async () => {
    const id = await connectMailbox(fixture, 'noauth@contoso.example');
    const response = await fixture.broker.call('POST', `/api/manage/connections/${id}/verify`);
    const report = (await response.json()) as { ok: boolean; results: { protocol: string; ok: boolean; code?: string; fix?: string }[] };
    expect(report.ok).toBe(false);
    const smtp = report.results.find((result) => result.protocol === 'smtp')!;
    expect(smtp.code).toBe(SMTP_AUTH_DISABLED.code);
    expect(smtp.fix).toMatch(/SMTP AUTH|Authenticated SMTP|SmtpClientAuthenticationDisabled/);
    const issued = await token('noauth@contoso.example');
    expect(JSON.stringify(report)).not.toContain(issued.access_token);
  });

  it('answers 409 for a connection that cannot get a token', async () => {
    const created = await fixture.broker.call('POST', '/api/manage/connections', { body: { tenantId: fixture.tenantId, appId: fixture.app.id, mailbox: 'new@contoso.example' } });
    const { id } = (await created.json()) as { id: string };
    const response = await fixture.broker.call('POST', `/api/manage/connections/${id}/verify`);
    expect(response.status).toBe(409);
    expect(await response.json()).toMatchObject({ code: 'NOT_CONNECTED' });
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${id}`)).json()) as { status: string };
    expect(connection.status).toBe('pending');
    expect((await fixture.broker.call('POST', `/api/manage/connections/${id}/verify`, { operator: false })).status).toBe(401);
  });
});
