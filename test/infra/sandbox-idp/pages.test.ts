import { CryptoProvider } from '@azure/msal-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import {
  APP_ONLY_SCOPE,
  CLIENT_ID,
  CUSTOMER_TENANT,
  msalClient,
  openPage,
  OTHER_TENANT,
  parseForm,
  REDIRECT_URI,
  registerBrokerApp,
  signInThroughPages,
  SMTP_SEND,
  startTestSandbox,
  submit,
} from './support.js';

/* What a browser meets: the authorize, sign-in, consent and admin consent pages. */

describe('sandbox sign-in pages', () => {
  let idp: SandboxIdentityProvider;
  const pkce = new CryptoProvider();
  let users = 0;

  beforeAll(async () => {
    idp = await startTestSandbox();
    registerBrokerApp(idp);
    idp.addUser({ upn: 'someone@customer.example', tid: OTHER_TENANT });
  });
  afterAll(async () => {
    await idp?.close();
  });

  const newUser = () => idp.addUser({ upn: `person${(users += 1)}@contoso.example`, tid: CUSTOMER_TENANT });

  async function authorizeUrl(overrides: { redirectUri?: string; tenant?: string; loginHint?: string; codeChallengeMethod?: string; withoutPkce?: boolean; prompt?: string } = {}) {
    const { challenge } = await pkce.generatePkceCodes();
    return msalClient(idp, { tenant: overrides.tenant ?? 'organizations' }).getAuthCodeUrl({
      scopes: [SMTP_SEND],
      redirectUri: overrides.redirectUri ?? REDIRECT_URI,
      state: 'state-123',
      ...(overrides.withoutPkce ? {} : { codeChallenge: challenge, codeChallengeMethod: overrides.codeChallengeMethod ?? 'S256' }),
      ...(overrides.loginHint ? { loginHint: overrides.loginHint } : {}),
      ...(overrides.prompt ? { prompt: overrides.prompt } : {}),
    });
  }

  it('shows AADSTS50011 for an unregistered redirect URI and never redirects there', async () => {
    const page = await openPage(await authorizeUrl({ redirectUri: 'https://evil.example/callback' }));
    expect(page.status).toBe(400);
    expect(page.location).toBeNull();
    expect(page.html).toContain('AADSTS50011: The redirect URI &#39;https://evil.example/callback&#39; specified in the request does not match');
    expect(page.html).not.toContain('<form');
  });

  it('shows AADSTS700016 for an unknown client', async () => {
    const url = new URL(await authorizeUrl());
    url.searchParams.set('client_id', '0badc0de-0000-4000-8000-000000000000');
    const page = await openPage(url.toString());
    expect([page.status, page.location]).toEqual([400, null]);
    expect(page.html).toContain('AADSTS700016');
  });

  it('requires PKCE: missing code_challenge goes back as invalid_request AADSTS900144', async () => {
    const page = await openPage(await authorizeUrl({ withoutPkce: true }));
    expect(page.status).toBe(302);
    expect(page.location!.searchParams.get('error')).toBe('invalid_request');
    expect(page.location!.searchParams.get('error_description')).toMatch(/^AADSTS900144: The request body must contain the following parameter: 'code_challenge'\.\r\nTrace ID: /);
    expect(page.location!.searchParams.get('state')).toBe('state-123');
  });

  it('requires PKCE with S256: plain goes back as AADSTS50149', async () => {
    const page = await openPage(await authorizeUrl({ codeChallengeMethod: 'plain' }));
    expect(page.location!.searchParams.get('error_description')).toMatch(/^AADSTS50149: /);
  });

  it('pre-fills the user from login_hint, escaped, under a strict CSP', async () => {
    const hint = '"><script>alert(1)</script>@contoso.example';
    const page = await openPage(await authorizeUrl({ loginHint: hint }));
    expect(page.status).toBe(200);
    expect(page.html).not.toContain('<script>');
    expect(parseForm(page.html).login).toBe(hint);
    const csp = page.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain(`form-action 'self' ${new URL(REDIRECT_URI).origin}`);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.html).toContain('value="signin"');
    expect(page.html).toContain('value="cancel"');
  });

  it('keeps an unknown user on the sign-in page with AADSTS50034, then lets the right one in', async () => {
    const user = newUser();
    const first = await openPage(await authorizeUrl({ loginHint: 'nobody@contoso.example' }));
    const retry = await submit(idp.signInHost, parseForm(first.html), { login: 'nobody@contoso.example', action: 'signin' });
    expect([retry.status, retry.location]).toEqual([400, null]);
    expect(retry.html).toContain('AADSTS50034: The user account nobody@contoso.example does not exist');
    const consent = await submit(idp.signInHost, parseForm(retry.html), { login: user.upn, action: 'signin' });
    expect(consent.html).toContain('Permissions requested');
    expect(consent.html).toContain(SMTP_SEND);
  });

  it('refuses a user of another tenant at a tenant authority: AADSTS50020', async () => {
    const page = await signInThroughPages(idp, await authorizeUrl({ tenant: CUSTOMER_TENANT, loginHint: 'someone@customer.example' }));
    expect(page.status).toBe(400);
    expect(page.html).toContain('AADSTS50020');
  });

  it('sends Cancel on the sign-in page back as access_denied with error_subcode=cancel', async () => {
    const page = await signInThroughPages(idp, await authorizeUrl({ loginHint: newUser().upn }), { signIn: 'cancel' });
    expect(Object.fromEntries(page.location!.searchParams)).toEqual({ error: 'access_denied', error_subcode: 'cancel', state: 'state-123' });
  });

  it('sends a declined consent back as access_denied AADSTS65004', async () => {
    const page = await signInThroughPages(idp, await authorizeUrl({ loginHint: newUser().upn }), { consent: 'cancel' });
    const back = page.location!;
    expect(`${back.origin}${back.pathname}`).toBe(REDIRECT_URI);
    expect(back.searchParams.get('error')).toBe('access_denied');
    expect(back.searchParams.get('error_description')).toMatch(/^AADSTS65004: User declined to consent to access the app\.\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    expect(back.searchParams.get('error_uri')).toBe('https://login.microsoftonline.com/error?code=65004');
    expect(back.searchParams.get('state')).toBe('state-123');
    expect(back.searchParams.has('code')).toBe(false);
  });

  it('answers prompt=none with login_required AADSTS50058: the sandbox keeps no session', async () => {
    const page = await openPage(await authorizeUrl({ prompt: 'none' }));
    expect(page.location!.searchParams.get('error')).toBe('login_required');
  });

  it('refuses a page posted twice: the sign-in context is single-use', async () => {
    const user = newUser();
    const first = await openPage(await authorizeUrl({ loginHint: user.upn }));
    const form = parseForm(first.html);
    const consent = await submit(idp.signInHost, form, { login: user.upn, action: 'signin' });
    const consentForm = parseForm(consent.html);
    expect((await submit(idp.signInHost, consentForm, { action: 'accept' })).status).toBe(302);
    const replay = await submit(idp.signInHost, consentForm, { action: 'accept' });
    expect([replay.status, replay.location]).toEqual([400, null]);
    expect(replay.html).toContain('expired or was already used');
  });

  it('keeps a single-tenant app off the shared endpoints: AADSTS50194', async () => {
    const single = 'f00dcafe-0000-4000-8000-00000000000a';
    idp.registerApp({ clientId: single, clientSecret: 's', secretExpiresOn: new Date(Date.now() + 86_400_000), redirectUris: [REDIRECT_URI], signInAudience: 'single', homeTenantId: CUSTOMER_TENANT });
    const { challenge } = await pkce.generatePkceCodes();
    const url = await msalClient(idp, { clientId: single, clientSecret: 's', tenant: 'organizations' }).getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeChallenge: challenge, codeChallengeMethod: 'S256' });
    const page = await openPage(url);
    expect([page.status, page.location]).toEqual([400, null]);
    expect(page.html).toContain('AADSTS50194');
  });

  describe('admin consent', () => {
    const consentUrl = (tenant: string, loginHint: string) =>
      `${idp.signInHost}/${tenant}/v2.0/adminconsent?${new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, state: 'admin-state', scope: APP_ONLY_SCOPE, login_hint: loginHint })}`;

    it('asks "Grant admin consent for <app>?" and returns the admin\'s tenant', async () => {
      const tenant = '0e1d2c3b-4a59-4687-9a6b-5c4d3e2f1a0b';
      idp.addUser({ upn: 'admin@northwind.example', tid: tenant, admin: true });
      const signIn = await openPage(consentUrl('common', 'admin@northwind.example'));
      expect(signIn.html).toContain('Sign in as an administrator');
      const consent = await submit(idp.signInHost, parseForm(signIn.html), { login: 'admin@northwind.example', action: 'signin' });
      expect(consent.html).toContain('Grant admin consent for Mail OAuth Broker (sandbox)?');
      expect(consent.html).toContain('https://outlook.office365.com/SMTP.SendAsApp');
      const back = (await submit(idp.signInHost, parseForm(consent.html), { action: 'accept' })).location!;
      expect(back.search).toBe(`?admin_consent=True&tenant=${tenant}&state=admin-state&scope=${encodeURIComponent(APP_ONLY_SCOPE)}`);
    });

    it('keeps a non-admin on the sign-in page: AADSTS90094', async () => {
      const page = await signInThroughPages(idp, consentUrl('organizations', newUser().upn));
      expect([page.status, page.location]).toEqual([400, null]);
      expect(page.html).toContain('AADSTS90094');
    });

    it('sends Cancel back as access_denied AADSTS65004', async () => {
      idp.addUser({ upn: 'boss@contoso.example', tid: CUSTOMER_TENANT, admin: true });
      const back = (await signInThroughPages(idp, consentUrl(CUSTOMER_TENANT, 'boss@contoso.example'), { consent: 'cancel' })).location!;
      expect(back.searchParams.get('error')).toBe('access_denied');
      expect(back.searchParams.get('error_description')).toMatch(/^AADSTS65004: User declined to consent to access the app\./);
      expect(back.searchParams.get('state')).toBe('admin-state');
      expect(back.searchParams.has('admin_consent')).toBe(false);
    });

    it('reaches the pages from a link built on the HTTPS authority host', async () => {
      const page = await openPage(`${idp.authorityHost}/organizations/v2.0/adminconsent?client_id=${CLIENT_ID}`);
      expect(page.status).toBe(302);
      expect(page.location!.toString()).toBe(`${idp.signInHost}/organizations/v2.0/adminconsent?client_id=${CLIENT_ID}`);
    });
  });
});
