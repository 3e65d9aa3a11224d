import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { delegatedScopes } from '../../shared/identity/msal-identity.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { openPage, signInThroughPages, type PageResult } from '../infra/sandbox-idp/support.js';
import { connectionWithLink, newLink, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * The connect flow end to end over HTTP: operator API → Authorize link → the sandbox's
 * sign-in pages → Microsoft's redirect → the broker's callback → a stored refresh token
 * that really refreshes. Every security rule has its negative case.
 */

let fixture: ConnectFixture;

beforeAll(async () => {
  fixture = await startConnectFixture();
});

afterAll(async () => {
  await fixture?.close();
});

/** Opens the broker's link and follows it to Microsoft's (the sandbox's) authorize URL. */
async function authorizeUrlFor(link: string): Promise<URL> {
  const opened = await openPage(link);
  expect(opened.status).toBe(302);
  expect(opened.headers.get('cache-control')).toBe('no-store');
  return opened.location!;
}

/** Signs in on the sandbox pages and returns where Microsoft sent the browser back to. */
async function signIn(link: string, steps: Parameters<typeof signInThroughPages>[2] = {}): Promise<URL> {
  const authorize = await authorizeUrlFor(link);
  const result = await signInThroughPages(fixture.idp, authorize.toString(), steps);
  expect(result.status).toBe(302);
  return result.location!;
}

async function callback(url: URL | string): Promise<PageResult> {
  return openPage(url.toString());
}

function expectPage(page: PageResult, status: number, ...texts: string[]): void {
  expect(page.status).toBe(status);
  expect(page.headers.get('content-type')).toContain('text/html');
  const csp = page.headers.get('content-security-policy') ?? '';
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain('unsafe-inline');
  expect(page.headers.get('cache-control')).toBe('no-store');
  for (const text of texts) expect(page.html).toContain(text);
}

async function connection(id: string): Promise<Record<string, unknown>> {
  return (await (await fixture.broker.call('GET', `/api/manage/connections/${id}`)).json()) as Record<string, unknown>;
}

describe('connecting a mailbox', () => {
  it('signs in, stores the refresh token in Key Vault and uses it for a real refresh', async () => {
    const { connectionId, link, expiresAt } = await connectionWithLink(fixture, 'alice@contoso.example');
    expect(link).toMatch(new RegExp(`^${fixture.broker.baseUrl}/api/connect/lnk_[a-z2-7]{26}$`));
    expect(new Date(expiresAt).getTime() - fixture.clock.now().getTime()).toBeGreaterThan(167 * 3_600_000);

    const authorize = await authorizeUrlFor(link);
    expect(authorize.origin).toBe(fixture.idp.signInHost);
    expect(authorize.searchParams.get('client_id')).toBe(fixture.app.clientId);
    expect(authorize.searchParams.get('redirect_uri')).toBe(`${fixture.broker.baseUrl}/api/oauth/callback`);
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorize.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(authorize.searchParams.get('login_hint')).toBe('alice@contoso.example');
    expect(authorize.searchParams.get('state')!.length).toBeGreaterThanOrEqual(43);
    const scopes = authorize.searchParams.get('scope')!.split(' ');
    expect(scopes).toEqual(expect.arrayContaining(['offline_access', 'https://outlook.office.com/SMTP.Send', 'https://outlook.office.com/IMAP.AccessAsUser.All']));

    const back = new URL((await signInThroughPages(fixture.idp, authorize.toString())).location!);
    expect(back.pathname).toBe('/api/oauth/callback');
    const page = await callback(back);
    expectPage(page, 200, 'alice@contoso.example is connected');
    expect(page.html).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);

    expect(await connection(connectionId)).toMatchObject({ status: 'connected', statusReason: null, connectedAt: expect.any(String) });
    const stored = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));
    expect(stored?.value.length).toBeGreaterThan(20);
    expect(fixture.vault.liveSecretNames()).toContain(secretNames.connectionRefreshToken(connectionId));

    const refreshed = await fixture.broker.services.identity.refresh({
      app: { clientId: fixture.app.clientId, tenant: 'organizations', clientSecret: fixture.app.clientSecret },
      scopes: delegatedScopes(['smtp', 'imap'], fixture.broker.services.config.mailResource),
      refreshToken: stored!.value,
    });
    expect(refreshed.accessToken.length).toBeGreaterThan(20);
    expect(refreshed.refreshToken).not.toBe(stored!.value);
    expect(refreshed.identity.usernames).toContain('alice@contoso.example');

    // The link is dead once it succeeded.
    expectPage(await openPage(link), 410, 'already used');
  });

  it('keeps a link usable while nobody finishes: an email scanner opening it first breaks nothing', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'scanned@contoso.example');
    fixture.idp.addUser({ upn: 'scanned@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    const scanner = await authorizeUrlFor(link);
    expect((await openPage(scanner.toString())).status).toBe(200);
    const page = await callback(await signIn(link));
    expectPage(page, 200, 'scanned@contoso.example is connected');
    expect(await connection(connectionId)).toMatchObject({ status: 'connected' });
  });
});

describe('the callback refuses', () => {
  it('a replayed state', async () => {
    const { link } = await connectionWithLink(fixture, 'replay@contoso.example');
    fixture.idp.addUser({ upn: 'replay@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    const back = await signIn(link);
    expectPage(await callback(back), 200, 'is connected');
    expectPage(await callback(back), 400, 'SIGN_IN_EXPIRED', 'Open the Authorize link again');
  });

  it('an expired state', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'slow@contoso.example');
    fixture.idp.addUser({ upn: 'slow@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    const back = await signIn(link);
    fixture.clock.advance(11 * 60_000);
    try {
      expectPage(await callback(back), 400, 'SIGN_IN_EXPIRED', '10 minutes');
    } finally {
      fixture.clock.advance(-11 * 60_000);
    }
    expect(await connection(connectionId)).toMatchObject({ status: 'pending' });
  });

  it('a forged or missing state', async () => {
    const forged = new URL('/api/oauth/callback?code=abc&state=forged-state-value', fixture.broker.baseUrl);
    expectPage(await callback(forged), 400, 'SIGN_IN_EXPIRED');
    expectPage(await callback(new URL('/api/oauth/callback?code=abc', fixture.broker.baseUrl)), 400, 'SIGN_IN_INCOMPLETE');
  });

  it('a code redeemed with another sign-in\'s PKCE verifier', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'pkce@contoso.example');
    fixture.idp.addUser({ upn: 'pkce@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    const first = await signIn(link);
    const second = await authorizeUrlFor(link);
    const crossed = new URL(first);
    crossed.searchParams.set('state', second.searchParams.get('state')!);
    expectPage(await callback(crossed), 400, 'SIGN_IN_FAILED', 'AADSTS501481');
    expect(await connection(connectionId)).toMatchObject({ status: 'pending' });
    expect(await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId))).toBeNull();
  });

  it('the wrong user, saying who signed in and who was expected', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'carol@contoso.example');
    fixture.idp.addUser({ upn: 'carol@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    const page = await callback(await signIn(link, { login: 'bob@contoso.example' }));
    expectPage(page, 403, 'You signed in as bob@contoso.example but this link connects carol@contoso.example', 'private window');
    expect(await connection(connectionId)).toMatchObject({ status: 'pending' });
    expect(await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId))).toBeNull();
    // The link still works for the right person.
    expectPage(await callback(await signIn(link)), 200, 'carol@contoso.example is connected');
  });

  it('a re-authorization by a different person than the one who connected first', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'dave@contoso.example');
    fixture.idp.addUser({ upn: 'dave@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    expectPage(await callback(await signIn(link)), 200, 'is connected');
    const stored = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));

    // As if the mailbox had been recreated in the directory: same name, another object id.
    const row = await fixture.broker.services.tables.connections.get(connectionId, '');
    await fixture.broker.services.tables.connections.replace({ ...row!.value, boundObjectId: '00000000-0000-4000-8000-000000000001' });
    const again = await newLink(fixture, connectionId);
    expectPage(await callback(await signIn(again.link)), 403, 'DIFFERENT_PERSON');
    expect((await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId)))?.version).toBe(stored?.version);
  });

  it('a declined consent and a cancelled sign-in, explaining each', async () => {
    const { connectionId, link } = await connectionWithLink(fixture, 'erin@contoso.example');
    fixture.idp.addUser({ upn: 'erin@contoso.example', tid: '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35' });
    expectPage(await callback(await signIn(link, { consent: 'cancel' })), 400, 'SIGN_IN_FAILED', 'AADSTS65004');
    expectPage(await callback(await signIn(link, { signIn: 'cancel' })), 400, 'SIGN_IN_FAILED');
    expect(await connection(connectionId)).toMatchObject({ status: 'pending' });
  });
});

describe('links', () => {
  it('expire after BROKER_LINK_TTL_HOURS, and unknown ones are refused', async () => {
    const { link } = await connectionWithLink(fixture, 'late@contoso.example');
    fixture.clock.advance(169 * 3_600_000);
    try {
      expectPage(await openPage(link), 410, 'LINK_EXPIRED', 'new Authorize link');
    } finally {
      fixture.clock.advance(-169 * 3_600_000);
    }
    expectPage(await openPage(`${fixture.broker.baseUrl}/api/connect/lnk_aaaaaaaaaaaaaaaaaaaaaaaaaa`), 404, 'LINK_NOT_FOUND');
    expectPage(await openPage(`${fixture.broker.baseUrl}/api/connect/%3Cscript%3E`), 404, 'LINK_NOT_FOUND');
  });

  it('need the operator key to be created', async () => {
    const { connectionId } = await connectionWithLink(fixture, 'keyless@contoso.example');
    const response = await fixture.broker.call('POST', `/api/manage/connections/${connectionId}/authorize-link`, { operator: false });
    expect(response.status).toBe(401);
    expect((await fixture.broker.call('POST', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/authorize-link')).status).toBe(404);
  });
});
