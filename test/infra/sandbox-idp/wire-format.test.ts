import { CryptoProvider } from '@azure/msal-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import {
  CLIENT_ID,
  CLIENT_SECRET,
  codePayload,
  CUSTOMER_TENANT,
  decodeJwt,
  REDIRECT_URI,
  registerBrokerApp,
  signInThroughPages,
  SMTP_SEND,
  startTestSandbox,
} from './support.js';

/* The HTTP surface itself, without msal: what any OAuth client would see. */

const UNKNOWN_TENANT = '00000000-1111-4222-8333-444444444444';

describe('sandbox wire format', () => {
  let idp: SandboxIdentityProvider;
  const pkce = new CryptoProvider();

  beforeAll(async () => {
    idp = await startTestSandbox({ accessTokenLifetimeSeconds: 4000 });
    registerBrokerApp(idp);
    idp.addUser({ upn: 'raw@contoso.example', tid: CUSTOMER_TENANT, email: 'raw.mail@contoso.example' });
  });
  afterAll(async () => {
    await idp?.close();
  });

  const token = (body: Record<string, string>, init: { tenant?: string; headers?: Record<string, string>; query?: string } = {}) =>
    fetch(`${idp.authorityHost}/${init.tenant ?? 'organizations'}/oauth2/v2.0/token${init.query ?? ''}`, {
      method: 'POST',
      body: new URLSearchParams(body),
      headers: init.headers ?? {},
    });

  /** A code obtained by hand: plain OAuth client, no msal. */
  async function rawCode(scope: string, nonce?: string) {
    const { verifier, challenge } = await pkce.generatePkceCodes();
    const query = new URLSearchParams({
      client_id: CLIENT_ID,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      login_hint: 'raw@contoso.example',
      ...(nonce ? { nonce } : {}),
    });
    const { code } = codePayload((await signInThroughPages(idp, `${idp.signInHost}/organizations/oauth2/v2.0/authorize?${query}`)).location);
    return { code, verifier };
  }

  it('publishes openid-configuration with the tenant in every endpoint and the pages on http', async () => {
    const response = await fetch(`${idp.authorityHost}/${CUSTOMER_TENANT}/v2.0/.well-known/openid-configuration`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      issuer: `${idp.authorityHost}/${CUSTOMER_TENANT}/v2.0`,
      authorization_endpoint: `${idp.signInHost}/${CUSTOMER_TENANT}/oauth2/v2.0/authorize`,
      token_endpoint: `${idp.authorityHost}/${CUSTOMER_TENANT}/oauth2/v2.0/token`,
      jwks_uri: `${idp.authorityHost}/${CUSTOMER_TENANT}/discovery/v2.0/keys`,
      end_session_endpoint: `${idp.signInHost}/${CUSTOMER_TENANT}/oauth2/v2.0/logout`,
      id_token_signing_alg_values_supported: ['RS256'],
    });
    const common = (await (await fetch(`${idp.authorityHost}/common/v2.0/.well-known/openid-configuration`)).json()) as Record<string, string>;
    expect(common.issuer).toBe(`${idp.authorityHost}/{tenantid}/v2.0`);
    expect(common.token_endpoint).toBe(`${idp.authorityHost}/common/oauth2/v2.0/token`);
  });

  it('answers an unknown tenant with invalid_tenant AADSTS90002, a non-GUID with AADSTS900023', async () => {
    const unknown = await fetch(`${idp.authorityHost}/${UNKNOWN_TENANT}/v2.0/.well-known/openid-configuration`);
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({ error: 'invalid_tenant', error_codes: [90002] });
    const garbage = await fetch(`${idp.authorityHost}/not_a_tenant/discovery/v2.0/keys`);
    expect(await garbage.json()).toMatchObject({ error_codes: [900023] });
  });

  it('serves an RS256 JWKS', async () => {
    const jwks = (await (await fetch(`${idp.authorityHost}/common/discovery/v2.0/keys`)).json()) as { keys: Record<string, string>[] };
    expect(jwks.keys).toEqual([{ kty: 'RSA', use: 'sig', kid: expect.any(String), n: expect.any(String), e: 'AQAB' }]);
  });

  it('answers unknown paths 404 and wrong methods 405, in Entra JSON', async () => {
    const missing = await fetch(`${idp.authorityHost}/common/oauth2/v2.0/nothing`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'invalid_request', error_codes: [], trace_id: expect.any(String) });
    const get = await fetch(`${idp.authorityHost}/common/oauth2/v2.0/token`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect(await get.json()).toMatchObject({ error_codes: [900561] });
    // The token endpoint and metadata do not exist on plain http.
    expect((await fetch(`${idp.signInHost}/common/oauth2/v2.0/token`, { method: 'POST' })).status).toBe(404);
    expect((await fetch(`${idp.signInHost}/common/v2.0/.well-known/openid-configuration`)).status).toBe(404);
  });

  it('words errors as Entra does, echoing client-request-id as the correlation id', async () => {
    const correlation = '8f8bf4a9-3b8b-4f57-9d0a-2b3d0c5f6e7a';
    const response = await token({ grant_type: 'refresh_token', client_id: CLIENT_ID, client_secret: 'wrong', refresh_token: 'x', scope: SMTP_SEND }, { query: `?client-request-id=${correlation}` });
    expect(response.status).toBe(401);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toEqual({
      error: 'invalid_client',
      error_description: expect.stringMatching(/^AADSTS7000215: Invalid client secret provided\. .*\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: 8f8bf4a9-3b8b-4f57-9d0a-2b3d0c5f6e7a\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
      error_codes: [7000215],
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/),
      trace_id: expect.any(String),
      correlation_id: correlation,
      error_uri: 'https://login.microsoftonline.com/error?code=7000215',
    });
  });

  it('refuses a token request that is not a form post: AADSTS900144 grant_type', async () => {
    const response = await fetch(`${idp.authorityHost}/organizations/oauth2/v2.0/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials' }),
    });
    expect(await response.json()).toMatchObject({ error: 'invalid_request', error_codes: [900144] });
  });

  it('accepts client_secret_basic, and gives no refresh token without offline_access', async () => {
    const { code, verifier } = await rawCode(`openid email ${SMTP_SEND}`, 'raw-nonce');
    const basic = Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64');
    const response = await token(
      { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, scope: `openid email ${SMTP_SEND}` },
      { headers: { authorization: `Basic ${basic}` } },
    );
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual(['access_token', 'expires_in', 'ext_expires_in', 'id_token', 'scope', 'token_type']);
    expect(body).toMatchObject({ token_type: 'Bearer', scope: SMTP_SEND, expires_in: 4000, ext_expires_in: 4000 });
    expect(decodeJwt(body.id_token!)).toMatchObject({ nonce: 'raw-nonce', email: 'raw.mail@contoso.example', preferred_username: 'raw@contoso.example' });
  });

  it('refuses a secret sent both ways at once', async () => {
    const basic = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
    const response = await token({ grant_type: 'client_credentials', client_secret: CLIENT_SECRET, scope: 'https://outlook.office365.com/.default' }, { tenant: CUSTOMER_TENANT, headers: { authorization: `Basic ${basic}` } });
    expect(await response.json()).toMatchObject({ error_codes: [9002313] });
  });

  it('refuses scopes of two resources in one token request: AADSTS28000', async () => {
    const { code, verifier } = await rawCode(`offline_access ${SMTP_SEND} https://graph.microsoft.com/User.Read`);
    const response = await token({ grant_type: 'authorization_code', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, code, redirect_uri: REDIRECT_URI, code_verifier: verifier, scope: `${SMTP_SEND} https://graph.microsoft.com/User.Read` });
    expect(await response.json()).toMatchObject({ error: 'invalid_scope', error_codes: [28000] });
  });

  it('logs requests without secrets, codes or tokens', async () => {
    const { code, verifier } = await rawCode(`offline_access ${SMTP_SEND}`);
    const response = (await (await token({ grant_type: 'authorization_code', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, code, redirect_uri: REDIRECT_URI, code_verifier: verifier, scope: SMTP_SEND })).json()) as Record<string, string>;
    const log = JSON.stringify(idp.requests());
    for (const secret of [CLIENT_SECRET, code, verifier, response.refresh_token!, response.access_token!]) expect(log).not.toContain(secret);
    expect(idp.requests().at(-1)).toEqual({ endpoint: 'token', method: 'POST', tenant: 'organizations', grantType: 'authorization_code', status: 200 });
  });
});
