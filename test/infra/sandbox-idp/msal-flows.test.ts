import { CryptoProvider, LogLevel, ConfidentialClientApplication, ServerError } from '@azure/msal-node';
import { randomUUID } from 'node:crypto';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import {
  CLIENT_ID,
  codePayload,
  CUSTOMER_TENANT,
  decodeJwt,
  msalClient,
  RecordingNetworkClient,
  REDIRECT_URI,
  registerBrokerApp,
  signInThroughPages,
  SMTP_SEND,
  startTestSandbox,
} from './support.js';

/* The real msal-node ConfidentialClientApplication against the sandbox, start to finish. */

interface SerializedCache {
  RefreshToken: Record<string, { secret: string; home_account_id: string }>;
}

const refreshTokensIn = (client: ConfidentialClientApplication) =>
  Object.values((JSON.parse(client.getTokenCache().serialize()) as SerializedCache).RefreshToken).map((entry) => entry.secret);

describe('sandbox identity provider with msal-node', () => {
  let idp: SandboxIdentityProvider;
  const pkce = new CryptoProvider();

  beforeAll(async () => {
    idp = await startTestSandbox();
    registerBrokerApp(idp);
  });
  afterAll(async () => {
    await idp?.close();
  });

  async function connect(client: ConfidentialClientApplication, upn: string) {
    const { verifier, challenge } = await pkce.generatePkceCodes();
    const state = randomUUID();
    const nonce = randomUUID();
    const url = await client.getAuthCodeUrl({
      scopes: [SMTP_SEND],
      redirectUri: REDIRECT_URI,
      codeChallenge: challenge,
      codeChallengeMethod: 'S256',
      state,
      nonce,
      loginHint: upn,
    });
    const page = await signInThroughPages(idp, url);
    const payload = codePayload(page.location);
    const result = await client.acquireTokenByCode(
      { code: payload.code, scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeVerifier: verifier, state, nonce },
      payload,
    );
    return { url, page, payload, result, state };
  }

  it('runs the connect flow: authorize pages, code, tokens, a rotating refresh token', async () => {
    const user = idp.addUser({ upn: 'ada@contoso.example', tid: CUSTOMER_TENANT, name: 'Ada Lovelace' });
    const client = msalClient(idp);
    const { url, page, payload, result, state } = await connect(client, user.upn);

    // The browser only ever saw http://localhost: no certificate warning for a newcomer.
    expect(new URL(url).origin).toBe(idp.signInHost);
    expect(new URL(url).searchParams.get('client_info')).toBe('1');
    expect(`${page.location!.origin}${page.location!.pathname}`).toBe(REDIRECT_URI);
    expect(payload.state).toBe(state);
    expect(JSON.parse(Buffer.from(payload.client_info!, 'base64url').toString())).toEqual({ uid: user.oid, utid: CUSTOMER_TENANT });

    expect(result.idTokenClaims).toMatchObject({ preferred_username: user.upn, oid: user.oid, tid: CUSTOMER_TENANT, name: 'Ada Lovelace', aud: CLIENT_ID, ver: '2.0' });
    expect(result.account?.homeAccountId).toBe(`${user.oid}.${CUSTOMER_TENANT}`);
    expect(result.scopes).toEqual([SMTP_SEND]);
    expect(decodeJwt(result.accessToken)).toMatchObject({ aud: 'https://outlook.office.com', scp: 'SMTP.Send', upn: user.upn, oid: user.oid, tid: CUSTOMER_TENANT });

    const jwks = createRemoteJWKSet(new URL(`${idp.authorityHost}/${CUSTOMER_TENANT}/discovery/v2.0/keys`));
    const verified = await jwtVerify(result.idToken, jwks, { issuer: `${idp.authorityHost}/${CUSTOMER_TENANT}/v2.0`, audience: CLIENT_ID });
    expect(verified.protectedHeader.alg).toBe('RS256');

    const [first] = refreshTokensIn(client);
    expect(first).toBeTruthy();
    const refreshed = await client.acquireTokenByRefreshToken({ refreshToken: first!, scopes: [SMTP_SEND] });
    expect(refreshed?.accessToken).toBeTruthy();
    const [second] = refreshTokensIn(client);
    expect(second).toBeTruthy();
    expect(second).not.toBe(first);

    // Redemption does not revoke the old refresh token (MICROSOFT-FACTS): a fresh client can still use it.
    const again = await msalClient(idp).acquireTokenByRefreshToken({ refreshToken: first!, scopes: [SMTP_SEND] });
    expect(again?.account?.username).toBe(user.upn);
  });

  it('skips the consent page once the user has consented, and binds the id token to the nonce', async () => {
    const user = idp.addUser({ upn: 'grace@contoso.example', tid: CUSTOMER_TENANT });
    await connect(msalClient(idp), user.upn);
    const client = msalClient(idp);
    const url = await client.getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeChallenge: (await pkce.generatePkceCodes()).challenge, codeChallengeMethod: 'S256', loginHint: user.upn });
    const page = await signInThroughPages(idp, url, { consent: 'cancel' });
    // Straight back with a code: there was no consent page to cancel.
    expect(page.location?.searchParams.get('code')).toBeTruthy();

    const { verifier, challenge } = await pkce.generatePkceCodes();
    const withNonce = await client.getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeChallenge: challenge, codeChallengeMethod: 'S256', nonce: 'n-0S6_WzA2Mj', loginHint: user.upn });
    const payload = codePayload((await signInThroughPages(idp, withNonce)).location);
    // msal-node 7.2 rejects an id token nonce it was not told to expect.
    await expect(client.acquireTokenByCode({ code: payload.code, scopes: [SMTP_SEND], redirectUri: REDIRECT_URI, codeVerifier: verifier }, payload)).rejects.toMatchObject({
      errorCode: 'nonce_mismatch',
    });
  });

  it('is the only host msal talks to: knownAuthorities stops instance discovery at login.microsoftonline.com', async () => {
    const user = idp.addUser({ upn: 'linus@contoso.example', tid: CUSTOMER_TENANT });
    const network = new RecordingNetworkClient();
    const logs: string[] = [];
    const client = new ConfidentialClientApplication({
      auth: { clientId: CLIENT_ID, clientSecret: 'sandbox~secret.value_0123456789', authority: `${idp.authorityHost}/${CUSTOMER_TENANT}`, knownAuthorities: [idp.knownAuthority] },
      system: { networkClient: network, loggerOptions: { logLevel: LogLevel.Verbose, piiLoggingEnabled: false, loggerCallback: (_level, message) => logs.push(message) } },
    });
    idp.clearRequests();
    await connect(client, user.upn);

    expect(network.urls.length).toBeGreaterThan(0);
    for (const url of network.urls) expect(new URL(url).host).toBe(idp.knownAuthority);
    expect(network.urls[0]).toBe(`${idp.authorityHost}/${CUSTOMER_TENANT}/v2.0/.well-known/openid-configuration`);
    expect(logs.some((message) => message.includes('The host is included in knownAuthorities'))).toBe(true);
    expect(logs.filter((message) => message.includes('login.microsoftonline.com'))).toEqual([]);
    expect(idp.requests().map((request) => request.endpoint)).toEqual(['openid-configuration', 'authorize', 'login', 'consent', 'token']);
  });

  it('shows why knownAuthorities matters: without it msal asks login.microsoftonline.com first', async () => {
    const network = new RecordingNetworkClient(idp.knownAuthority);
    const client = new ConfidentialClientApplication({
      auth: { clientId: CLIENT_ID, clientSecret: 'unused', authority: `${idp.authorityHost}/${CUSTOMER_TENANT}` },
      system: { networkClient: network },
    });
    await expect(client.getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri: REDIRECT_URI })).rejects.toMatchObject({ errorCode: 'endpoints_resolution_error' });
    expect(network.urls).toHaveLength(1);
    expect(network.urls[0]).toMatch(/^https:\/\/login\.microsoftonline\.com\/common\/discovery\/instance\?/);
  });

  it('keeps a rotated refresh token from acquireTokenByRefreshToken only for a known account, or with forceCache', async () => {
    const user = idp.addUser({ upn: 'margaret@contoso.example', tid: CUSTOMER_TENANT });
    const connected = msalClient(idp);
    await connect(connected, user.upn);
    const [refreshToken] = refreshTokensIn(connected);
    // A fresh client (one per connection, per DESIGN) has no account: msal returns tokens but caches nothing.
    const fresh = msalClient(idp);
    expect((await fresh.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND] }))?.accessToken).toBeTruthy();
    expect(refreshTokensIn(fresh)).toEqual([]);
    const forced = msalClient(idp);
    await forced.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND], forceCache: true });
    const [rotated] = refreshTokensIn(forced);
    expect(rotated).toBeTruthy();
    expect(rotated).not.toBe(refreshToken);
  });

  it('answers a throttled token request with 429 and Retry-After, which msal remembers and replays locally', async () => {
    const user = idp.addUser({ upn: 'tim@contoso.example', tid: CUSTOMER_TENANT });
    const client = msalClient(idp);
    await connect(client, user.upn);
    const [refreshToken] = refreshTokensIn(client);
    idp.failNext(1, { status: 429, retryAfterSeconds: 1 });
    idp.clearRequests();

    const throttled = await client.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND] }).catch((error: unknown) => error);
    expect(throttled).toBeInstanceOf(ServerError);
    expect(throttled).toMatchObject({ errorCode: 'temporarily_unavailable', errorMessage: expect.stringContaining('AADSTS90055') });

    // Within Retry-After msal fails on its own (ThrottlingUtils.preProcess): the sandbox sees nothing,
    // and the replayed error's errorCode is the AADSTS number, not the OAuth error.
    const replayed = await client.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND] }).catch((error: unknown) => error);
    expect(replayed).toBeInstanceOf(ServerError);
    expect(replayed).toMatchObject({ errorCode: '90055', errorMessage: expect.stringMatching(/^AADSTS90055: /) });
    expect(idp.requests().filter((request) => request.endpoint === 'token')).toEqual([
      { endpoint: 'token', method: 'POST', tenant: 'organizations', grantType: 'refresh_token', status: 429, aadsts: 90055 },
    ]);

    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await client.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND] }))?.accessToken).toBeTruthy();
  });

  it('answers 503 with temporarily_unavailable, 500 with server_error', async () => {
    const user = idp.addUser({ upn: 'barbara@contoso.example', tid: CUSTOMER_TENANT });
    const client = msalClient(idp);
    await connect(client, user.upn);
    const [refreshToken] = refreshTokensIn(client);
    idp.failNext(1, { status: 503, retryAfterSeconds: 1 });
    await expect(client.acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: [SMTP_SEND] })).rejects.toMatchObject({ errorCode: 'temporarily_unavailable' });
    idp.failNext(1, { status: 500 });
    // A different request (scopes) escapes msal's throttle entry for the first one.
    await expect(msalClient(idp).acquireTokenByRefreshToken({ refreshToken: refreshToken!, scopes: ['https://outlook.office.com/SMTP.Send', 'offline_access'] })).rejects.toMatchObject({
      errorCode: 'server_error',
    });
  });
});
