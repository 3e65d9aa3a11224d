import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import { delegatedScopes, MsalIdentityClient, newPkcePair, type AppCredentials } from '../../../shared/identity/msal-identity.js';
import {
  APP_ONLY_SCOPE,
  CLIENT_ID,
  CLIENT_SECRET,
  codePayload,
  CUSTOMER_TENANT,
  REDIRECT_URI,
  registerBrokerApp,
  signInThroughPages,
  startTestSandbox,
} from '../../infra/sandbox-idp/support.js';

/*
 * The real msal-node against the strict sandbox identity provider, which writes down every
 * request: the authority's OpenID configuration is fetched once per tenant and reused by the
 * short-lived MSAL clients, until it is a day old.
 */

const DAY = 86_400_000;
const app: AppCredentials = { clientId: CLIENT_ID, tenant: 'organizations', clientSecret: CLIENT_SECRET };
const scopes = delegatedScopes(['smtp'], 'https://outlook.office.com');
let idp: SandboxIdentityProvider;

beforeAll(async () => {
  idp = await startTestSandbox();
  registerBrokerApp(idp);
  idp.addUser({ upn: 'meta@contoso.example', tid: CUSTOMER_TENANT, name: 'Meta' });
  idp.grantAdminConsent(CUSTOMER_TENANT, CLIENT_ID, ['https://outlook.office365.com']);
});

afterAll(async () => {
  await idp?.close();
});

const metadataGets = (tenant?: string) =>
  idp.requests().filter((request) => request.endpoint === 'openid-configuration' && (tenant === undefined || request.tenant === tenant)).length;

/** A refresh token for the sandbox user, through the pages as a person would get it. */
async function signIn(identity: MsalIdentityClient): Promise<string> {
  const pkce = await newPkcePair();
  const url = await identity.authorizeUrl({ app, redirectUri: REDIRECT_URI, scopes, state: 'st-meta', codeChallenge: pkce.challenge, loginHint: 'meta@contoso.example' });
  const back = await signInThroughPages(idp, url);
  const tokens = await identity.redeemCode({ app, redirectUri: REDIRECT_URI, scopes, code: codePayload(back.location).code, codeVerifier: pkce.verifier });
  return tokens.refreshToken;
}

describe('MsalIdentityClient and the authority metadata', () => {
  it('fetches the OpenID configuration once for any number of refreshes', async () => {
    idp.clearRequests();
    const identity = new MsalIdentityClient({ authorityHost: idp.authorityHost });
    let refreshToken = await signIn(identity);
    for (let index = 0; index < 6; index += 1) {
      const tokens = await identity.refresh({ app, scopes, refreshToken });
      expect(tokens.accessToken).not.toBe('');
      expect(tokens.refreshToken).not.toBe(refreshToken);
      refreshToken = tokens.refreshToken;
    }
    const grants = idp.requests().filter((request) => request.endpoint === 'token');
    expect(grants.map((request) => request.grantType)).toEqual(['authorization_code', ...Array<string>(6).fill('refresh_token')]);
    expect(grants.every((request) => request.status === 200)).toBe(true);
    // Sign-in URL, code redemption and six refreshes: one document, fetched for the first.
    expect(metadataGets()).toBe(1);
  });

  it('shares one fetch among concurrent refreshes, keeps one document per tenant, and fetches again after a day', async () => {
    let now = Date.now();
    const identity = new MsalIdentityClient({ authorityHost: idp.authorityHost, now: () => now });
    const refreshTokens = await Promise.all([signIn(identity), signIn(identity)]);
    idp.clearRequests();
    const fresh = new MsalIdentityClient({ authorityHost: idp.authorityHost, now: () => now });
    const results = await Promise.all(refreshTokens.map((refreshToken) => fresh.refresh({ app, scopes, refreshToken })));
    expect(results).toHaveLength(2);
    expect(metadataGets('organizations')).toBe(1);

    // Client credentials run in the customer's own directory: its own document, once.
    for (let index = 0; index < 3; index += 1) {
      const token = await fresh.clientCredentials({ app, tenant: CUSTOMER_TENANT, scope: APP_ONLY_SCOPE });
      expect(token.accessToken).not.toBe('');
    }
    expect(metadataGets(CUSTOMER_TENANT)).toBe(1);
    const consent = new URL(await fresh.adminConsentUrl({ app: { ...app, tenant: CUSTOMER_TENANT }, redirectUri: REDIRECT_URI, state: 'st', scope: APP_ONLY_SCOPE }));
    expect(consent.origin).toBe(idp.signInHost);
    expect(metadataGets(CUSTOMER_TENANT)).toBe(1);

    now += DAY + 1;
    await fresh.refresh({ app, scopes, refreshToken: results[0]!.refreshToken });
    expect(metadataGets('organizations')).toBe(2);
  });

  it('refreshes through MSAL\'s own discovery while the document cannot be fetched, and fetches it again a minute later', async () => {
    let now = Date.now();
    let refreshToken = await signIn(new MsalIdentityClient({ authorityHost: idp.authorityHost }));
    const identity = new MsalIdentityClient({ authorityHost: idp.authorityHost, now: () => now });
    const refresh = async () => {
      const tokens = await identity.refresh({ app, scopes, refreshToken });
      expect(tokens.accessToken).not.toBe('');
      refreshToken = tokens.refreshToken;
    };
    idp.clearRequests();
    idp.failNext(1, { endpoint: 'openid-configuration', status: 503 });
    await refresh();
    // Ours failed (503), then MSAL asked for itself and got it.
    expect(idp.requests().filter((request) => request.endpoint === 'openid-configuration').map((request) => request.status)).toEqual([503, 200]);
    // Within the minute the failure is remembered: MSAL keeps discovering, once per call.
    await refresh();
    expect(metadataGets('organizations')).toBe(3);
    now += 61_000;
    await refresh();
    await refresh();
    // One more fetch of ours, kept: the refresh after it needed none.
    expect(metadataGets('organizations')).toBe(4);
  });

  it('tries a remembered failure again for an admin consent link, which has no fallback', async () => {
    const identity = new MsalIdentityClient({ authorityHost: idp.authorityHost });
    idp.failNext(1, { endpoint: 'openid-configuration', status: 503 });
    // Client credentials get by without the document (MSAL discovers it); the failure is remembered.
    expect((await identity.clientCredentials({ app, tenant: CUSTOMER_TENANT, scope: APP_ONLY_SCOPE })).accessToken).not.toBe('');
    const consent = new URL(await identity.adminConsentUrl({ app: { ...app, tenant: CUSTOMER_TENANT }, redirectUri: REDIRECT_URI, state: 'st', scope: APP_ONLY_SCOPE }));
    expect(consent.origin).toBe(idp.signInHost);
  });

  it('still refreshes when the document cannot be had, letting MSAL discover the authority itself', async () => {
    // The sandbox refuses an unknown tenant's document (400 AADSTS90002), as Entra does.
    const identity = new MsalIdentityClient({ authorityHost: idp.authorityHost });
    const refreshToken = await signIn(identity);
    idp.clearRequests();
    const unknownTenant = '00000000-0000-4000-8000-00000000dead';
    await expect(identity.clientCredentials({ app, tenant: unknownTenant, scope: APP_ONLY_SCOPE })).rejects.toThrow();
    const attempts = metadataGets(unknownTenant);
    // Ours, then MSAL's own: a failed document is not given to MSAL.
    expect(attempts).toBe(2);
    // Within the next minute the failure is remembered: only MSAL asks.
    await expect(identity.clientCredentials({ app, tenant: unknownTenant, scope: APP_ONLY_SCOPE })).rejects.toThrow();
    expect(metadataGets(unknownTenant)).toBe(attempts + 1);
    // The tenant that works is not affected.
    expect((await identity.refresh({ app, scopes, refreshToken })).accessToken).not.toBe('');
  });
});

describe('loading msal-node', () => {
  const module = fileURLToPath(new URL('../../../dist/shared/identity/msal-identity.js', import.meta.url));

  it('happens on first use, not when the module is imported', () => {
    // npm test builds dist/ before vitest runs; a bare `vitest` without a build must say so, not skip.
    expect(existsSync(module), 'dist/ is missing: run npm run build').toBe(true);
    // Every file resolved, ESM and CommonJS alike, after the import and after the first use.
    const script =
      `import { registerHooks } from 'node:module'; const urls = []; ` +
      `registerHooks({ resolve(s, c, next) { const r = next(s, c); urls.push(r.url); return r; } }); ` +
      `const msal = () => urls.filter((url) => url.includes('/@azure/msal-node/')).length; ` +
      `const m = await import(${JSON.stringify(module)}); const atImport = msal(); ` +
      `await m.newPkcePair(); console.log(JSON.stringify({ atImport, afterUse: msal() }));`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(child.stderr).toBe('');
    const counts = JSON.parse(child.stdout) as { atImport: number; afterUse: number };
    expect(counts.atImport).toBe(0);
    expect(counts.afterUse).toBeGreaterThan(0);
  });
});
