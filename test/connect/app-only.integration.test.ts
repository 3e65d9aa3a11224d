import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPage, signInThroughPages, type PageResult } from '../infra/sandbox-idp/support.js';
import { connectionWithLink, CUSTOMER_TENANT, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * app_only connections: the customer's admin grants admin consent through the one-click
 * link, the broker learns the customer's directory from the redirect, and tokens come from
 * client credentials there.
 */

let fixture: ConnectFixture;

beforeAll(async () => {
  fixture = await startConnectFixture();
  fixture.idp.addUser({ upn: 'admin@contoso.example', tid: CUSTOMER_TENANT, admin: true });
});

afterAll(async () => {
  await fixture?.close();
});

async function consent(link: string, steps: Parameters<typeof signInThroughPages>[2]): Promise<PageResult> {
  const opened = await openPage(link);
  expect(opened.status).toBe(302);
  const consentUrl = opened.location!;
  expect(consentUrl.origin).toBe(fixture.idp.signInHost);
  expect(consentUrl.pathname).toBe('/organizations/v2.0/adminconsent');
  expect(consentUrl.searchParams.get('client_id')).toBe(fixture.app.clientId);
  expect(consentUrl.searchParams.get('redirect_uri')).toBe(`${fixture.broker.baseUrl}/api/oauth/callback`);
  expect(consentUrl.searchParams.get('scope')).toBe('https://outlook.office365.com/.default');
  const back = await signInThroughPages(fixture.idp, consentUrl.toString(), steps);
  expect(back.status).toBe(302);
  return openPage(back.location!.toString());
}

describe('app-only connections', () => {
  it('are connected by admin consent and then served client-credentials tokens', async () => {
    const created = await fixture.broker.call('POST', '/api/manage/connections', {
      body: { tenantId: fixture.tenantId, appId: fixture.app.id, mailbox: 'shared@contoso.example', mode: 'app_only', protocols: ['imap'] },
    });
    const { id } = (await created.json()) as { id: string };
    const linkResponse = await fixture.broker.call('POST', `/api/manage/connections/${id}/authorize-link`);
    const link = (await linkResponse.json()) as { url: string; adminConsentUrl: string };
    expect(link.adminConsentUrl).toBe(link.url);

    const page = await consent(link.url, { login: 'admin@contoso.example' });
    expect(page.status).toBe(200);
    expect(page.html).toContain('Admin consent granted for shared@contoso.example');
    expect(page.html).toContain(`New-ServicePrincipal -AppId ${fixture.app.clientId}`);
    expect(page.html).toContain('Add-MailboxPermission -Identity shared@contoso.example');

    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${id}`)).json()) as Record<string, unknown>;
    expect(connection.status).toBe('connected');

    const key = await tenantKey(fixture);
    const response = await fetch(`${fixture.broker.baseUrl}/api/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ connection: 'shared@contoso.example' }),
    });
    expect(response.status).toBe(200);
    const token = (await response.json()) as { access_token: string; username: string; xoauth2: string; imap: unknown; smtp?: unknown };
    expect(token.username).toBe('shared@contoso.example');
    expect(token.imap).toMatchObject({ host: 'outlook.office365.com', port: 993 });
    expect(token).not.toHaveProperty('smtp');
    const claims = JSON.parse(Buffer.from(token.access_token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims.tid).toBe(CUSTOMER_TENANT);
    expect(Buffer.from(token.xoauth2, 'base64').toString()).toBe(`user=shared@contoso.example\x01auth=Bearer ${token.access_token}\x01\x01`);
    const grants = fixture.idp.requests().filter((request) => request.grantType === 'client_credentials');
    expect(grants.at(-1)).toMatchObject({ tenant: CUSTOMER_TENANT, status: 200 });
  });

  it('explain a declined admin consent and stay pending', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'declined@contoso.example', { mode: 'app_only' });
    const page = await consent(link, { login: 'admin@contoso.example', consent: 'cancel' });
    expect(page.status).toBe(400);
    expect(page.html).toContain('AADSTS65004');
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(connection.status).toBe('pending');
  });

  it('refuse a consent redirect without a directory', async () => {
    const { link } = await connectionWithLink(fixture, 'forged@contoso.example', { mode: 'app_only' });
    const opened = await openPage(link);
    const state = opened.location!.searchParams.get('state')!;
    const page = await openPage(`${fixture.broker.baseUrl}/api/oauth/callback?admin_consent=True&state=${encodeURIComponent(state)}`);
    expect(page.status).toBe(400);
    expect(page.html).toContain('SIGN_IN_INCOMPLETE');
  });
});
