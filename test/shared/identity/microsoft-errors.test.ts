import { createServer } from 'node:net';
import {
  AuthError,
  ClientAuthError,
  ClientConfigurationError,
  ConfidentialClientApplication,
  InteractionRequiredAuthError,
  ServerError,
  type NetworkResponse,
} from '@azure/msal-node';
import { describe, expect, it } from 'vitest';
import {
  LOOP_PAUSE_SECONDS,
  MICROSOFT_ERROR_CLASSES,
  MICROSOFT_ERROR_TABLE,
  REDIRECT_URI_PLACEHOLDER,
  classifyMicrosoftError,
  classifyRedirectError,
  parseRetryAfter,
  type MicrosoftErrorClass,
  type MicrosoftFailure,
} from '../../../shared/identity/microsoft-errors.js';

/*
 * Errors are produced by msal-node itself wherever possible: a real ConfidentialClientApplication
 * whose injected network client answers like Microsoft's token endpoint. That way the tests
 * follow msal's real wrapping of the server answer (ServerError vs InteractionRequiredAuthError,
 * "Error(s): … - Description: …", errorNo, status, the local throttle replay).
 */

const HOST = 'login.example.test';
const TENANT = '8f3c2a71-5b0e-4d2c-9a57-0c6f4e2b1d90';
const REFRESH_TOKEN = 'rt-SECRET-0.AXEA1y2z3';
const CLIENT_SECRET = 'cs-SECRET~8Q~abcdef';
const AUTH_CODE = 'code-SECRET-1.AWEB';
const REDIRECT_URI = 'https://broker.example.com/api/oauth/callback';

const METADATA = JSON.stringify({
  token_endpoint: `https://${HOST}/${TENANT}/oauth2/v2.0/token`,
  authorization_endpoint: `https://${HOST}/${TENANT}/oauth2/v2.0/authorize`,
  issuer: `https://${HOST}/${TENANT}/v2.0`,
  jwks_uri: `https://${HOST}/${TENANT}/discovery/v2.0/keys`,
  end_session_endpoint: `https://${HOST}/${TENANT}/oauth2/v2.0/logout`,
});

type Answer = { status: number; body: Record<string, unknown>; headers?: Record<string, string> };

function makeApp(answer: (call: number) => Answer, authorityHost = HOST): ConfidentialClientApplication {
  let calls = 0;
  return new ConfidentialClientApplication({
    auth: {
      clientId: '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64',
      clientSecret: CLIENT_SECRET,
      authority: `https://${authorityHost}/${TENANT}`,
      knownAuthorities: [authorityHost],
      authorityMetadata: METADATA.replaceAll(HOST, authorityHost),
    },
    system: {
      networkClient: {
        async sendGetRequestAsync<T>(): Promise<NetworkResponse<T>> {
          throw new Error('no metadata requests expected');
        },
        async sendPostRequestAsync<T>(): Promise<NetworkResponse<T>> {
          calls += 1;
          const { status, body, headers = {} } = answer(calls);
          return { status, headers, body } as unknown as NetworkResponse<T>;
        },
      },
    },
  });
}

async function attempt(app: ConfidentialClientApplication, operation: 'code_exchange' | 'refresh' | 'client_credentials'): Promise<unknown> {
  try {
    if (operation === 'refresh') {
      await app.acquireTokenByRefreshToken({ refreshToken: REFRESH_TOKEN, scopes: ['https://outlook.office.com/SMTP.Send'] });
    } else if (operation === 'code_exchange') {
      await app.acquireTokenByCode({ code: AUTH_CODE, scopes: ['https://outlook.office.com/SMTP.Send'], redirectUri: REDIRECT_URI, codeVerifier: 'v'.repeat(43) });
    } else {
      await app.acquireTokenByClientCredential({ scopes: ['https://outlook.office365.com/.default'] });
    }
  } catch (error) {
    return error;
  }
  throw new Error('expected msal to throw');
}

/** A body the way Entra ID sends it, with the Trace/Correlation/Timestamp tail. */
function entraBody(error: string, aadsts: number, text: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    error,
    error_description: `AADSTS${aadsts}: ${text}\r\nTrace ID: 3f1e7c52-0b9a-4c1e-8d2f-6a5b4c3d2e01\r\nCorrelation ID: 9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a\r\nTimestamp: 2025-05-12 08:41:07Z`,
    error_codes: [aadsts],
    timestamp: '2025-05-12 08:41:07Z',
    trace_id: '3f1e7c52-0b9a-4c1e-8d2f-6a5b4c3d2e01',
    correlation_id: '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a',
    error_uri: `https://login.microsoftonline.com/error?code=${aadsts}`,
    ...extra,
  };
}

async function classifyServerAnswer(operation: 'code_exchange' | 'refresh' | 'client_credentials', answer: Answer): Promise<MicrosoftFailure> {
  const error = await attempt(makeApp(() => answer), operation);
  const failure = classifyMicrosoftError(error, operation, { redirectUri: REDIRECT_URI });
  // Whatever the input, the result carries no secret the request used.
  const serialised = JSON.stringify(failure);
  for (const secret of [REFRESH_TOKEN, CLIENT_SECRET, AUTH_CODE]) expect(serialised).not.toContain(secret);
  return failure;
}

// Texts as Entra ID returns them (Microsoft docs and public issue reports).
const TEXT = {
  700082: 'The refresh token has expired due to inactivity. The token was issued on 2025-01-06T09:12:44.8840000Z and was inactive for 90.00:00:00.',
  70008: 'The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.',
  50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '2025-02-01T10:00:00.0000000Z' and the TokensValidFrom date (before which tokens are not valid) for this user is '2025-03-01T08:00:00.0000000Z'.",
  70043: 'The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. The token was issued on 2025-03-01T08:00:00.0000000Z and the maximum allowed lifetime for this request is 43200.',
  70000: 'The provided value for the input parameter is not valid. The grant is invalid or malformed.',
  50076: "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'.",
  50078: "Presented multi-factor authentication has expired due to policies configured by your administrator, you must refresh your multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'.",
  50079: "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '00000002-0000-0ff1-ce00-000000000000'.",
  53003: 'Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.',
  65001: "The user or administrator has not consented to use the application with ID '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64' named 'Contoso Mail'. Send an interactive authorization request for this user and resource.",
  65004: 'User declined to consent to access the app.',
  50020: "User account 'someone@outlook.com' from identity provider 'live.com' does not exist in tenant 'Fabrikam' and cannot access the application '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64'(Contoso Mail) in that tenant. The account needs to be added as an external user in the tenant first.",
  54005: 'OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.',
  501481: 'The Code_Verifier does not match the code_challenge supplied in the authorization request.',
  9002313: 'Invalid request. Request is malformed or invalid.',
  7000222: "The provided client secret keys for app '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
  7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64'.",
  700016: "Application with identifier '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64' was not found in the directory 'Fabrikam'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
  90002: "Tenant 'contoso.onmicrosoft.cm' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
  50011: `The redirect URI '${REDIRECT_URI}' specified in the request does not match the redirect URIs configured for the application '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64'.`,
  500011: 'The resource principal named https://outlook.office365.com was not found in the tenant named Fabrikam. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.',
  70011: "The provided value for the input parameter 'scope' is not valid. The scope https://outlook.office.com/SMTP.Sendd is not valid.",
  1002012: 'The provided value for scope https://outlook.office365.com/SMTP.SendAsApp is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).',
  50196: 'The server terminated an operation because it encountered a client request loop. Please contact your app vendor.',
  50034: 'The user account {EmailHidden} does not exist in the fabrikam.com directory. To sign into this application, the account must be added to the directory.',
  50126: 'Error validating credentials due to invalid username or password.',
  90033: 'A transient error has occurred. Please try again.',
} as const;

type Case = {
  aadsts: keyof typeof TEXT;
  error: string;
  operation: 'code_exchange' | 'refresh' | 'client_credentials';
  status?: number;
  suberror?: string;
  expected: MicrosoftErrorClass;
  blamesMailbox: boolean;
  operatorAlert: boolean;
  fixIncludes?: string;
};

const cases: Case[] = [
  { aadsts: 700082, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: false, fixIncludes: 'new Authorize link' },
  { aadsts: 70008, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: false },
  { aadsts: 70008, error: 'invalid_grant', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 50173, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: false },
  { aadsts: 70043, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: false },
  { aadsts: 70000, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: false },
  { aadsts: 70000, error: 'invalid_grant', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 50076, error: 'invalid_grant', suberror: 'basic_action', operation: 'refresh', expected: 'interaction_required', blamesMailbox: true, operatorAlert: false },
  { aadsts: 50078, error: 'invalid_grant', suberror: 'basic_action', operation: 'refresh', expected: 'interaction_required', blamesMailbox: true, operatorAlert: false },
  { aadsts: 50079, error: 'invalid_grant', suberror: 'basic_action', operation: 'refresh', expected: 'interaction_required', blamesMailbox: true, operatorAlert: false, fixIncludes: 'aka.ms/mysecurityinfo' },
  { aadsts: 53003, error: 'invalid_grant', operation: 'refresh', expected: 'interaction_required', blamesMailbox: true, operatorAlert: false, fixIncludes: 'Conditional Access' },
  { aadsts: 53003, error: 'access_denied', operation: 'client_credentials', status: 400, expected: 'app_configuration', blamesMailbox: true, operatorAlert: true },
  { aadsts: 65001, error: 'invalid_grant', suberror: 'consent_required', operation: 'refresh', expected: 'consent_required', blamesMailbox: true, operatorAlert: false, fixIncludes: 'admin consent link' },
  { aadsts: 65004, error: 'invalid_grant', operation: 'code_exchange', expected: 'user_declined', blamesMailbox: false, operatorAlert: false },
  { aadsts: 50020, error: 'invalid_grant', operation: 'code_exchange', expected: 'wrong_account', blamesMailbox: false, operatorAlert: false, fixIncludes: 'private browser window' },
  { aadsts: 54005, error: 'invalid_grant', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 501481, error: 'invalid_grant', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 9002313, error: 'invalid_request', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 9002313, error: 'invalid_grant', operation: 'refresh', expected: 'reauthorize', blamesMailbox: true, operatorAlert: true },
  { aadsts: 7000222, error: 'invalid_client', operation: 'refresh', expected: 'app_credential', blamesMailbox: false, operatorAlert: true, fixIncludes: 'PATCH /api/manage/apps/{id}' },
  { aadsts: 7000222, error: 'invalid_client', operation: 'client_credentials', status: 401, expected: 'app_credential', blamesMailbox: false, operatorAlert: true },
  { aadsts: 7000215, error: 'invalid_client', operation: 'code_exchange', expected: 'app_credential', blamesMailbox: false, operatorAlert: true, fixIncludes: 'not its Secret ID' },
  { aadsts: 700016, error: 'unauthorized_client', operation: 'refresh', expected: 'app_configuration', blamesMailbox: false, operatorAlert: true, fixIncludes: 'clientId' },
  { aadsts: 700016, error: 'unauthorized_client', operation: 'client_credentials', status: 400, expected: 'consent_required', blamesMailbox: true, operatorAlert: false, fixIncludes: 'admin consent link' },
  { aadsts: 90002, error: 'invalid_request', operation: 'refresh', expected: 'app_configuration', blamesMailbox: false, operatorAlert: true },
  { aadsts: 50011, error: 'invalid_request', operation: 'code_exchange', expected: 'app_configuration', blamesMailbox: false, operatorAlert: true, fixIncludes: `add ${REDIRECT_URI} as a Web redirect URI` },
  { aadsts: 500011, error: 'invalid_resource', operation: 'client_credentials', status: 400, expected: 'app_configuration', blamesMailbox: false, operatorAlert: true },
  { aadsts: 70011, error: 'invalid_scope', operation: 'code_exchange', expected: 'app_configuration', blamesMailbox: false, operatorAlert: true },
  { aadsts: 1002012, error: 'invalid_scope', operation: 'client_credentials', status: 400, expected: 'app_configuration', blamesMailbox: false, operatorAlert: true, fixIncludes: 'BROKER_MAIL_APP_RESOURCE' },
  { aadsts: 50196, error: 'invalid_grant', operation: 'refresh', expected: 'loop_detected', blamesMailbox: true, operatorAlert: true },
  { aadsts: 50034, error: 'invalid_grant', operation: 'code_exchange', expected: 'wrong_account', blamesMailbox: false, operatorAlert: false },
  { aadsts: 50126, error: 'invalid_grant', operation: 'code_exchange', expected: 'restart_flow', blamesMailbox: false, operatorAlert: false },
  { aadsts: 90033, error: 'temporarily_unavailable', operation: 'refresh', status: 503, expected: 'transient', blamesMailbox: false, operatorAlert: false },
];

describe('classifyMicrosoftError with errors thrown by msal-node', () => {
  it.each(cases)('AADSTS$aadsts during $operation is $expected', async (c) => {
    const failure = await classifyServerAnswer(c.operation, {
      status: c.status ?? 400,
      body: entraBody(c.error, c.aadsts, TEXT[c.aadsts], c.suberror ? { suberror: c.suberror } : {}),
    });
    expect(failure).toMatchObject({
      class: c.expected,
      code: `AADSTS${c.aadsts}`,
      aadsts: c.aadsts,
      blamesMailbox: c.blamesMailbox,
      operatorAlert: c.operatorAlert,
    });
    expect(failure.message.length).toBeGreaterThan(10);
    expect(failure.message).not.toMatch(/Trace ID|Correlation ID/);
    if (c.fixIncludes) expect(failure.fix).toContain(c.fixIncludes);
  });

  it('covers every code of the MICROSOFT-FACTS table in the exported table', () => {
    const documented = new Set(MICROSOFT_ERROR_TABLE.flatMap((rule) => rule.codes));
    const required = [700082, 70008, 50173, 70043, 70000, 50076, 50078, 50079, 53003, 65001, 65004, 50020, 54005, 501481, 9002313, 7000222, 7000215, 700016, 90002, 50011, 500011, 70011, 1002012, 50196, 50034, 50126];
    for (const n of required) expect(documented, `AADSTS${n}`).toContain(`AADSTS${n}`);
    for (const code of ['invalid_grant', 'temporarily_unavailable', 'network_error', 'HTTP 429', 'HTTP 5xx', 'throttled', 'access_denied/cancel']) expect(documented).toContain(code);
    for (const rule of MICROSOFT_ERROR_TABLE) {
      expect(MICROSOFT_ERROR_CLASSES).toContain(rule.class);
      expect(rule.message).toMatch(/\.$/);
      expect(rule.fix).toMatch(/\.$/);
    }
  });

  it('reads the plain msal 7000215 message: the secret ID was pasted instead of the value', async () => {
    const failure = await classifyServerAnswer('client_credentials', { status: 401, body: entraBody('invalid_client', 7000215, TEXT[7000215]) });
    expect(failure.message).toContain("secret's ID");
    expect(failure.fix).toContain("secret's Value");
  });

  it('names the placeholder redirect URI when the caller does not pass one', () => {
    const error = new ServerError('invalid_request', '', `AADSTS50011: ${TEXT[50011]}`);
    expect(classifyMicrosoftError(error, 'code_exchange').fix).toContain(`add ${REDIRECT_URI_PLACEHOLDER} as a Web redirect URI`);
  });

  it('classifies a plain invalid_grant by what was being done', async () => {
    const body = { error: 'invalid_grant', error_description: 'The grant is no longer valid.' };
    expect(await classifyServerAnswer('code_exchange', { status: 400, body })).toMatchObject({ class: 'restart_flow', code: 'invalid_grant', aadsts: null });
    expect(await classifyServerAnswer('refresh', { status: 400, body })).toMatchObject({ class: 'reauthorize', code: 'invalid_grant', aadsts: null, blamesMailbox: true });
  });

  it('keeps Microsoft\'s first sentence when a generic rule answers an unlisted AADSTS number', async () => {
    const failure = await classifyServerAnswer('refresh', { status: 400, body: entraBody('invalid_grant', 50089, 'Flow token expired. Authentication failed. Have the user try signing-in again.') });
    expect(failure).toMatchObject({ class: 'reauthorize', code: 'AADSTS50089', aadsts: 50089 });
    expect(failure.message).toContain('Microsoft said: "Flow token expired."');
  });

  it('answers unknown codes with the AADSTS number and the first sentence, without trace ids', async () => {
    const failure = await classifyServerAnswer('refresh', {
      status: 400,
      body: entraBody('invalid_request', 50105, "Your administrator has configured the application Contoso Mail ('4a7e2c1d') to block users unless they are specifically granted ('assigned') access to the application. The signed in user is blocked."),
    });
    expect(failure).toEqual({
      class: 'unknown',
      code: 'AADSTS50105',
      aadsts: 50105,
      message: "Your administrator has configured the application Contoso Mail ('4a7e2c1d') to block users unless they are specifically granted ('assigned') access to the application.",
      fix: 'Look up AADSTS50105 at https://login.microsoftonline.com/error?code=50105 and check the Entra sign-in logs for this app.',
      blamesMailbox: false,
      operatorAlert: true,
      retryAfterSeconds: null,
      fromMicrosoft: true,
    });
  });

  it('stops retrying a connection for a while on loop detection', async () => {
    const failure = await classifyServerAnswer('refresh', { status: 400, body: entraBody('invalid_grant', 50196, TEXT[50196]) });
    expect(failure.retryAfterSeconds).toBe(LOOP_PAUSE_SECONDS);
    const inBrowser = classifyRedirectError({ error: 'invalid_request', error_description: `AADSTS50196: ${TEXT[50196]}` }, 'authorize');
    // A redirect's parameters can be forged by whoever sends the link: not taken as Microsoft's answer.
    expect(inBrowser).toMatchObject({ class: 'loop_detected', fix: expect.stringContaining('open the link again'), fromMicrosoft: false });
  });

  it('produces plain, serialisable data', async () => {
    const failure = await classifyServerAnswer('refresh', { status: 400, body: entraBody('invalid_grant', 700082, TEXT[700082]) });
    expect(JSON.parse(JSON.stringify(failure))).toEqual(failure);
    expect(Object.getPrototypeOf(failure)).toBe(Object.prototype);
  });
});

describe('classifyMicrosoftError with msal error classes built directly', () => {
  it('reads a ServerError whose message is the bare description', () => {
    const error = new ServerError('invalid_grant', 'corr-1', `AADSTS700082: ${TEXT[700082]}\r\nTrace ID: abc\r\nCorrelation ID: def`);
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'reauthorize', code: 'AADSTS700082', message: 'The refresh token expired after 90 days without use.' });
  });

  it('reads the AADSTS number from errorNo when the message has none', () => {
    const error = new ServerError('invalid_grant', 'corr-1', 'The grant expired.', undefined, '50173');
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'reauthorize', aadsts: 50173 });
  });

  it('treats an InteractionRequiredAuthError without a known number as interaction required', () => {
    const error = new InteractionRequiredAuthError('invalid_grant', 'corr-2', `AADSTS50158: External security challenge not satisfied. User will be redirected to another page.`, 'basic_action');
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'interaction_required', code: 'AADSTS50158', blamesMailbox: true });
  });

  it("treats msal's own no_tokens_found as a reauthorization", () => {
    const error = new InteractionRequiredAuthError('no_tokens_found', 'corr-3', 'No refresh token found in the cache.');
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'reauthorize', code: 'no_tokens_found' });
  });

  it('treats a ClientConfigurationError as the broker\'s configuration', () => {
    const error = new ClientConfigurationError('authority_uri_insecure', 'corr-4');
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'app_configuration', code: 'authority_uri_insecure', operatorAlert: true, blamesMailbox: false });
  });

  it('treats state mismatches as a flow to restart', () => {
    const error = new ClientAuthError('state_mismatch', 'corr-5');
    expect(classifyMicrosoftError(error, 'code_exchange')).toMatchObject({ class: 'restart_flow', code: 'state_mismatch' });
  });

  it('accepts a raw token endpoint error body', () => {
    expect(classifyMicrosoftError(entraBody('invalid_grant', 700082, TEXT[700082]), 'refresh')).toMatchObject({ class: 'reauthorize', code: 'AADSTS700082', fromMicrosoft: true });
    expect(classifyMicrosoftError({ error: 'temporarily_unavailable', status: 503 }, 'refresh')).toMatchObject({ class: 'transient', code: 'temporarily_unavailable' });
  });

  it('answers anything else as unknown without repeating its text', () => {
    const failure = classifyMicrosoftError(new TypeError(`cannot read ${REFRESH_TOKEN}`), 'refresh');
    // Not Microsoft's answer: a connection is never marked for it as if Microsoft had refused.
    expect(failure).toMatchObject({ class: 'unknown', code: 'unexpected_error', aadsts: null, operatorAlert: true, fromMicrosoft: false });
    expect(JSON.stringify(failure)).not.toContain(REFRESH_TOKEN);
    expect(classifyMicrosoftError(undefined, 'refresh').class).toBe('unknown');
    expect(classifyMicrosoftError('boom', 'refresh').class).toBe('unknown');
  });
});

describe('transient failures', () => {
  it('classifies a real network failure from msal-node\'s default fetch client', async () => {
    const port = await closedPort();
    const app = new ConfidentialClientApplication({
      auth: {
        clientId: '4a7e2c1d-93b8-4f6e-a0d2-5c1b7e9f3a64',
        clientSecret: CLIENT_SECRET,
        authority: `https://127.0.0.1:${port}/${TENANT}`,
        knownAuthorities: [`127.0.0.1:${port}`],
        authorityMetadata: METADATA.replaceAll(HOST, `127.0.0.1:${port}`),
      },
    });
    const error = await attempt(app, 'refresh');
    // msal-node 7 throws a plain AuthError (not ClientAuthError) for fetch failures.
    expect(error).toBeInstanceOf(AuthError);
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'transient', code: 'network_error', blamesMailbox: false, operatorAlert: false, retryAfterSeconds: null });
  });

  it('classifies a network client that throws something else', async () => {
    const app = makeApp(() => {
      throw new TypeError('socket hang up');
    });
    const error = await attempt(app, 'refresh');
    expect(error).toBeInstanceOf(ClientAuthError);
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'transient', code: 'network_error' });
  });

  it('gives a browser fix, not "the broker retries", during sign-in', () => {
    const error = new AuthError('network_error', '', 'Network request failed: fetch failed');
    expect(classifyMicrosoftError(error, 'code_exchange').fix).toBe('Wait a few minutes, then open the link again.');
    expect(classifyMicrosoftError(error, 'refresh').fix).toContain('retries');
  });

  it('classifies an unreadable (non-JSON) answer as transient', () => {
    const error = new AuthError('token_parsing_error', '', 'Failed to parse response: Unexpected token < in JSON');
    expect(classifyMicrosoftError(error, 'refresh')).toMatchObject({ class: 'transient', code: 'token_parsing_error' });
  });

  it('recognises msal\'s local throttle replay after a 503 with Retry-After', async () => {
    const app = makeApp(() => ({ status: 503, headers: { 'Retry-After': '120' }, body: entraBody('temporarily_unavailable', 90033, TEXT[90033]) }));
    const first = await attempt(app, 'refresh');
    const replay = await attempt(app, 'refresh');
    // The replay is a ServerError whose errorCode is the error_codes joined by spaces.
    expect(replay).toBeInstanceOf(ServerError);
    expect((replay as ServerError).errorCode).toBe('90033');
    expect(classifyMicrosoftError(first, 'refresh')).toMatchObject({ class: 'transient', code: 'AADSTS90033' });
    expect(classifyMicrosoftError(replay, 'refresh')).toMatchObject({ class: 'transient', code: 'AADSTS90033' });
    // msal keeps Retry-After in its own cache; a caller that saw it passes it on.
    expect(classifyMicrosoftError(replay, 'refresh', { retryAfterSeconds: 120 }).retryAfterSeconds).toBe(120);
  });

  it('recognises the replay of a 429 that carried no error body', async () => {
    const app = makeApp((call) => (call === 1 ? { status: 429, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '30' } } : { status: 200, body: {} }));
    const first = await attempt(app, 'refresh');
    expect(classifyMicrosoftError(first, 'refresh')).toMatchObject({ class: 'transient', code: 'temporarily_unavailable' });
    const replay = await attempt(app, 'refresh');
    expect((replay as ServerError).errorCode).toBe('');
    expect(classifyMicrosoftError(replay, 'refresh')).toMatchObject({ class: 'transient', code: 'throttled', aadsts: null });
  });

  it('keeps a non-transient meaning when msal replays it', () => {
    // As ThrottlingUtils.preProcess builds it: ServerError(error_codes.join(" "), correlationId, error_description).
    const replay = new ServerError('50196', 'corr-6', `AADSTS50196: ${TEXT[50196]}`);
    expect(classifyMicrosoftError(replay, 'refresh')).toMatchObject({ class: 'loop_detected', code: 'AADSTS50196' });
  });

  it('treats a 5xx or 429 status as transient whatever the body says', async () => {
    const failure = await classifyServerAnswer('client_credentials', { status: 500, body: entraBody('server_error', 50000, 'There was an error issuing a token.') });
    expect(failure).toMatchObject({ class: 'transient', code: 'AADSTS50000' });
    const limited = await classifyServerAnswer('client_credentials', { status: 429, body: { error: 'invalid_request', error_description: 'Too many requests' } });
    expect(limited).toMatchObject({ class: 'transient', code: 'invalid_request' });
  });

  it('takes Retry-After from a NetworkError-like error when a custom client keeps it', () => {
    const error = Object.assign(new AuthError('network_error', '', 'HTTP 503'), { httpStatus: 503, responseHeaders: { 'Retry-After': '45' } });
    expect(classifyMicrosoftError(error, 'refresh').retryAfterSeconds).toBe(45);
  });

  it('parses Retry-After in both of its forms', () => {
    const now = Date.parse('2025-05-12T08:00:00Z');
    expect(parseRetryAfter('120', now)).toBe(120);
    expect(parseRetryAfter('Mon, 12 May 2025 08:01:30 GMT', now)).toBe(90);
    expect(parseRetryAfter('soon', now)).toBeNull();
  });
});

describe('classifyRedirectError', () => {
  it('recognises a cancelled sign-in, and a cancelled consent by its AADSTS65004', () => {
    expect(classifyRedirectError({ error: 'access_denied', error_subcode: 'cancel', error_description: 'AADSTS65004: User declined to consent to access the app.' }, 'authorize')).toMatchObject({
      class: 'user_declined',
      code: 'AADSTS65004',
      message: 'The person signing in declined the requested permissions.',
      blamesMailbox: false,
    });
    expect(classifyRedirectError({ error: 'access_denied', error_subcode: 'cancel' }, 'authorize')).toMatchObject({ class: 'user_declined', code: 'access_denied', aadsts: null });
  });

  it('recognises declined consent, as Entra ID encodes it', () => {
    const params = new URLSearchParams(
      'error=access_denied&error_description=AADSTS65004%3a+User+declined+to+consent+to+access+the+app.%0d%0aTrace+ID%3a+7c839d05-4806-48f2-ba40-bf4128382500%0d%0aCorrelation+ID%3a+b94f5bce-b15e-48c6-a713-fc07c5c41a77%0d%0aTimestamp%3a+2023-08-28+11%3a25%3a19Z&error_uri=https%3a%2f%2flogin.microsoftonline.com%2ferror%3fcode%3d65004&admin_consent=True',
    );
    const failure = classifyRedirectError({ error: params.get('error') ?? '', error_description: params.get('error_description') ?? undefined }, 'admin_consent');
    expect(failure).toMatchObject({ class: 'user_declined', code: 'AADSTS65004', aadsts: 65004 });
  });

  it('recognises a wrong account during admin consent', () => {
    const failure = classifyRedirectError({ error: 'access_denied', error_description: `AADSTS50020: ${TEXT[50020]}` }, 'admin_consent');
    expect(failure).toMatchObject({ class: 'wrong_account', code: 'AADSTS50020' });
  });

  it('reads the number from error_uri when the description has none', () => {
    const failure = classifyRedirectError({ error: 'invalid_request', error_uri: 'https://login.microsoftonline.com/error?code=50011' }, 'authorize', { redirectUri: REDIRECT_URI });
    expect(failure).toMatchObject({ class: 'app_configuration', code: 'AADSTS50011', operatorAlert: true });
    expect(failure.fix).toContain(REDIRECT_URI);
  });

  it('covers the other redirect errors', () => {
    expect(classifyRedirectError({ error: 'unauthorized_client', error_description: `AADSTS700016: ${TEXT[700016]}` }, 'authorize').class).toBe('app_configuration');
    expect(classifyRedirectError({ error: 'consent_required', error_description: `AADSTS65001: ${TEXT[65001]}` }, 'authorize').class).toBe('consent_required');
    expect(classifyRedirectError({ error: 'interaction_required', error_description: `AADSTS53003: ${TEXT[53003]}` }, 'authorize').class).toBe('interaction_required');
    const busy = classifyRedirectError({ error: 'temporarily_unavailable' }, 'authorize');
    expect(busy).toMatchObject({ class: 'transient', fix: 'Wait a few minutes, then open the link again.' });
    expect(classifyRedirectError({ error: 'server_error' }, 'admin_consent').class).toBe('transient');
  });

  it('never echoes forged redirect parameters', () => {
    const hostile = '<script>alert(1)</script> Call +1 555 0100 to restore your mailbox.';
    const unknown = classifyRedirectError({ error: '<img src=x onerror=alert(1)>', error_description: hostile }, 'authorize');
    expect(unknown).toMatchObject({ class: 'unknown', code: 'unrecognised_error', aadsts: null });
    expect(JSON.stringify(unknown)).not.toMatch(/script|onerror|555/);
    const withNumber = classifyRedirectError({ error: 'invalid_request', error_description: `AADSTS99999: ${hostile}` }, 'authorize');
    expect(withNumber).toMatchObject({ class: 'unknown', code: 'AADSTS99999', message: 'Microsoft refused the request with AADSTS99999.' });
    expect(JSON.stringify(withNumber)).not.toMatch(/script|555/);
    // The classifier's internal keys are not reachable from a forged `error`.
    expect(classifyRedirectError({ error: 'client_configuration' }, 'authorize').class).toBe('unknown');
  });
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}
