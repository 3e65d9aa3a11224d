import { AuthError, CryptoProvider, InteractionRequiredAuthError, ServerError, type ConfidentialClientApplication } from '@azure/msal-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import {
  APP_ONLY_SCOPE,
  CLIENT_ID,
  CLIENT_SECRET,
  codePayload,
  CUSTOMER_TENANT,
  decodeJwt,
  fakeClock,
  msalClient,
  OTHER_REDIRECT_URI,
  OTHER_TENANT,
  REDIRECT_URI,
  registerBrokerApp,
  signInThroughPages,
  SMTP_SEND,
  startTestSandbox,
  type FakeClock,
} from './support.js';

/* Each refusal Entra makes at the token endpoint, as msal-node surfaces it. */

const DAY_MS = 86_400_000;

/** The AADSTS number in msal's message ("Error(s): 54005 - … Description: AADSTS54005: …"). */
function aadsts(error: AuthError): number | undefined {
  const match = /AADSTS(\d+)/.exec(error.errorMessage);
  return match ? Number(match[1]) : undefined;
}

/** What the server said, as msal throws it: ServerError, or InteractionRequiredAuthError (not a subclass). */
async function failure(promise: Promise<unknown>): Promise<ServerError | InteractionRequiredAuthError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof ServerError) && !(error instanceof InteractionRequiredAuthError)) throw new Error(`expected a server error, got ${String(error)}`);
  return error;
}

describe('sandbox token endpoint strictness through msal-node', () => {
  let idp: SandboxIdentityProvider;
  let clock: FakeClock;
  const pkce = new CryptoProvider();
  let users = 0;

  beforeAll(async () => {
    clock = fakeClock();
    idp = await startTestSandbox({ clock });
    registerBrokerApp(idp);
    // Tenants exist once someone lives there: an unknown tenant id is AADSTS90002, as on Entra.
    idp.addUser({ upn: 'admin@customer.example', tid: OTHER_TENANT, admin: true });
    idp.addUser({ upn: 'mailbox@contoso.example', tid: CUSTOMER_TENANT });
  });
  afterAll(async () => {
    await idp?.close();
  });

  /** A fresh user signed in and consented; the code is not redeemed yet. */
  async function codeFor(client: ConfidentialClientApplication = msalClient(idp)) {
    users += 1;
    const user = idp.addUser({ upn: `user${users}@contoso.example`, tid: CUSTOMER_TENANT });
    const { verifier, challenge } = await pkce.generatePkceCodes();
    const url = await client.getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeChallenge: challenge, codeChallengeMethod: 'S256', loginHint: user.upn });
    const payload = codePayload((await signInThroughPages(idp, url)).location);
    const redeem = (overrides: { redirectUri?: string; codeVerifier?: string; scopes?: string[] } = {}) =>
      client.acquireTokenByCode({ code: payload.code, scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeVerifier: verifier, ...overrides }, payload);
    return { user, client, payload, redeem };
  }

  async function refreshTokenFor() {
    const { user, client, redeem } = await codeFor();
    await redeem();
    const cache = JSON.parse(client.getTokenCache().serialize()) as { RefreshToken: Record<string, { secret: string }> };
    return { user, refreshToken: Object.values(cache.RefreshToken)[0]!.secret };
  }

  it('refuses a wrong client secret: invalid_client AADSTS7000215', async () => {
    const error = await failure(msalClient(idp, { tenant: CUSTOMER_TENANT, clientSecret: 'the-secret-id-not-its-value' }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }));
    expect(error.errorCode).toBe('invalid_client');
    expect(aadsts(error)).toBe(7000215);
    // Typed as a string in msal-common's ServerError, but it is error_codes[0] as parsed: a number.
    expect((error as ServerError).errorNo).toBe(7000215);
  });

  it('refuses an expired client secret: invalid_client AADSTS7000222, by the injected clock', async () => {
    const other = 'a1b2c3d4-0000-4000-8000-00000000e001';
    idp.registerApp({ clientId: other, clientSecret: 'old', secretExpiresOn: new Date(clock.now().getTime() + DAY_MS), redirectUris: [REDIRECT_URI] });
    idp.grantAdminConsent(OTHER_TENANT, other, ['https://outlook.office365.com']);
    const client = msalClient(idp, { tenant: OTHER_TENANT, clientId: other, clientSecret: 'old' });
    expect((await client.acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }))?.accessToken).toBeTruthy();
    clock.advance(2 * DAY_MS);
    const error = await failure(msalClient(idp, { tenant: OTHER_TENANT, clientId: other, clientSecret: 'old' }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }));
    expect(error.errorCode).toBe('invalid_client');
    expect(aadsts(error)).toBe(7000222);
    // A secret added beside it (rotation) works while the old one stays expired.
    idp.addSecret(other, 'new', new Date(clock.now().getTime() + 30 * DAY_MS));
    expect((await msalClient(idp, { tenant: OTHER_TENANT, clientId: other, clientSecret: 'new' }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }))?.accessToken).toBeTruthy();
  });

  it('refuses an unknown client: unauthorized_client AADSTS700016', async () => {
    const error = await failure(msalClient(idp, { tenant: CUSTOMER_TENANT, clientId: 'deadbeef-0000-4000-8000-000000000000' }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }));
    expect([error.errorCode, aadsts(error)]).toEqual(['unauthorized_client', 700016]);
  });

  it('binds a code to the redirect URI it was issued for: AADSTS50011 for another registered one', async () => {
    const { redeem } = await codeFor();
    const error = await failure(redeem({ redirectUri: OTHER_REDIRECT_URI }));
    expect(aadsts(error)).toBe(50011);
    expect(error.errorMessage).toContain(`The reply address '${OTHER_REDIRECT_URI}' does not match the reply address '${REDIRECT_URI}'`);
  });

  it('refuses an unregistered redirect URI at the token endpoint: AADSTS50011', async () => {
    const { redeem } = await codeFor();
    const error = await failure(redeem({ redirectUri: 'http://localhost:9999/elsewhere' }));
    expect(aadsts(error)).toBe(50011);
  });

  it('checks the PKCE verifier: invalid_grant AADSTS501481 on a mismatch', async () => {
    const { redeem } = await codeFor();
    const error = await failure(redeem({ codeVerifier: (await pkce.generatePkceCodes()).verifier }));
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_grant', 501481]);
  });

  it('checks the PKCE verifier: invalid_grant AADSTS501481 when it is missing', async () => {
    const { client, payload } = await codeFor();
    const error = await failure(client.acquireTokenByCode({ code: payload.code, scopes: [SMTP_SEND], redirectUri: REDIRECT_URI }, payload));
    expect(aadsts(error)).toBe(501481);
  });

  it('redeems a code once: invalid_grant AADSTS54005 on replay', async () => {
    const { redeem } = await codeFor();
    await redeem();
    const error = await failure(redeem());
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_grant', 54005]);
  });

  it('expires codes after ten minutes: invalid_grant AADSTS70008', async () => {
    const { redeem } = await codeFor();
    clock.advance(601_000);
    const error = await failure(redeem());
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_grant', 70008]);
  });

  it('fails the refresh of a revoked grant: invalid_grant AADSTS50173', async () => {
    const { user, refreshToken } = await refreshTokenFor();
    idp.revokeRefreshTokens(user.upn);
    const error = await failure(msalClient(idp).acquireTokenByRefreshToken({ refreshToken, scopes: [SMTP_SEND] }));
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_grant', 50173]);
  });

  it('fails the refresh of an expired grant: AADSTS700082 with suberror bad_token (InteractionRequiredAuthError)', async () => {
    const { user, refreshToken } = await refreshTokenFor();
    idp.expireRefreshTokens(user.upn);
    const error = await failure(msalClient(idp).acquireTokenByRefreshToken({ refreshToken, scopes: [SMTP_SEND] }));
    expect(error).toBeInstanceOf(InteractionRequiredAuthError);
    expect([error.errorCode, error.subError, aadsts(error)]).toEqual(['invalid_grant', 'bad_token', 700082]);
  });

  it('expires refresh tokens after 90 days unused, by the injected clock', async () => {
    const { refreshToken } = await refreshTokenFor();
    clock.advance(89 * DAY_MS);
    expect((await msalClient(idp).acquireTokenByRefreshToken({ refreshToken, scopes: [SMTP_SEND] }))?.accessToken).toBeTruthy();
    clock.advance(2 * DAY_MS);
    expect(aadsts(await failure(msalClient(idp).acquireTokenByRefreshToken({ refreshToken, scopes: [SMTP_SEND] })))).toBe(700082);
  });

  it('refuses a garbled refresh token: invalid_grant AADSTS9002313', async () => {
    const error = await failure(msalClient(idp).acquireTokenByRefreshToken({ refreshToken: 'not-a-refresh-token', scopes: [SMTP_SEND] }));
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_grant', 9002313]);
  });

  it('refreshes only within the consent: AADSTS65001 consent_required for a scope never granted', async () => {
    const { refreshToken } = await refreshTokenFor();
    const error = await failure(msalClient(idp).acquireTokenByRefreshToken({ refreshToken, scopes: ['https://outlook.office.com/IMAP.AccessAsUser.All'] }));
    expect(error).toBeInstanceOf(InteractionRequiredAuthError);
    expect([error.errorCode, error.subError, aadsts(error)]).toEqual(['invalid_grant', 'consent_required', 65001]);
  });

  it('refuses client credentials without /.default: invalid_scope AADSTS1002012', async () => {
    const error = await failure(msalClient(idp, { tenant: CUSTOMER_TENANT }).acquireTokenByClientCredential({ scopes: ['https://outlook.office365.com/SMTP.SendAsApp'] }));
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_scope', 1002012]);
  });

  it('refuses client credentials against organizations: AADSTS50059 (msal-node refuses before asking)', async () => {
    await expect(msalClient(idp, { tenant: 'organizations' }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] })).rejects.toMatchObject({
      errorCode: 'missing_tenant_id_error',
    });
    const raw = await fetch(`${idp.authorityHost}/organizations/oauth2/v2.0/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: APP_ONLY_SCOPE }),
    });
    expect(raw.status).toBe(400);
    expect(await raw.json()).toMatchObject({ error: 'invalid_request', error_codes: [50059] });
  });

  it('refuses client credentials in a tenant without admin consent: invalid_client AADSTS7000229, then works after consent', async () => {
    const customer = '5d6e7f80-91a2-4b3c-8d4e-5f60718293a4';
    const admin = idp.addUser({ upn: 'it@fabrikam.example', tid: customer, admin: true });
    const error = await failure(msalClient(idp, { tenant: customer }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] }));
    expect([error.errorCode, aadsts(error)]).toEqual(['invalid_client', 7000229]);

    const consentUrl = `${idp.signInHost}/organizations/v2.0/adminconsent?${new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, state: 's1', scope: APP_ONLY_SCOPE, login_hint: admin.upn })}`;
    const back = (await signInThroughPages(idp, consentUrl)).location!;
    expect(Object.fromEntries(back.searchParams)).toEqual({ admin_consent: 'True', tenant: customer, state: 's1', scope: APP_ONLY_SCOPE });

    const result = await msalClient(idp, { tenant: back.searchParams.get('tenant')! }).acquireTokenByClientCredential({ scopes: [APP_ONLY_SCOPE] });
    expect(result?.refreshOn).toBeUndefined();
    expect(decodeJwt(result!.accessToken)).toMatchObject({ aud: 'https://outlook.office365.com', tid: customer, idtyp: 'app', roles: expect.arrayContaining(['SMTP.SendAsApp', 'IMAP.AccessAsApp', 'POP.AccessAsApp']) });
  });

  it('gives client credentials neither a refresh token nor a scope', async () => {
    idp.grantAdminConsent(OTHER_TENANT, CLIENT_ID, ['https://outlook.office365.com']);
    const raw = await fetch(`${idp.authorityHost}/${OTHER_TENANT}/oauth2/v2.0/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: APP_ONLY_SCOPE }),
    });
    const body = (await raw.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['access_token', 'expires_in', 'ext_expires_in', 'token_type']);
  });
});
