import { CryptoProvider } from '@azure/msal-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSandboxDemo, type SandboxDemo } from '../../../infra/local/sandbox-idp/demo.js';
import type { SandboxIdentityProvider } from '../../../infra/local/sandbox-idp/index.js';
import { codePayload, msalClient, signInThroughPages, SMTP_SEND, startTestSandbox } from './support.js';

/* The directory `npm start` seeds must be enough to click through the connect flow. */

describe('sandbox demo directory', () => {
  let idp: SandboxIdentityProvider;
  let demo: SandboxDemo;
  const redirectUri = 'http://localhost:7071/api/oauth/callback';

  beforeAll(async () => {
    idp = await startTestSandbox();
    demo = addSandboxDemo(idp, { redirectUri });
  });
  afterAll(async () => {
    await idp?.close();
  });

  it('lets the demo mailbox connect and the demo admin consent', async () => {
    const client = msalClient(idp, { clientId: demo.clientId, clientSecret: demo.clientSecret });
    const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
    const url = await client.getAuthCodeUrl({ scopes: [SMTP_SEND], redirectUri, codeChallenge: challenge, codeChallengeMethod: 'S256', loginHint: demo.mailbox.upn });
    const payload = codePayload((await signInThroughPages(idp, url)).location);
    const result = await client.acquireTokenByCode({ code: payload.code, scopes: [SMTP_SEND], redirectUri, codeVerifier: verifier }, payload);
    expect(result.account?.username).toBe(demo.mailbox.upn);

    const consent = `${idp.signInHost}/organizations/v2.0/adminconsent?${new URLSearchParams({ client_id: demo.clientId, redirect_uri: redirectUri, state: 's', scope: 'https://outlook.office365.com/.default', login_hint: demo.admin.upn })}`;
    expect((await signInThroughPages(idp, consent)).location?.searchParams.get('tenant')).toBe(demo.tenantId);
  });
});
