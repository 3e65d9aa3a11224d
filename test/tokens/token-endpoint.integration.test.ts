import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../infra/local/free-port.js';
import { EntraError } from '../../infra/local/sandbox-idp/entra-errors.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { OPERATOR_KEY, startTestBroker } from '../support/broker.js';
import { killBrokerProcesses, startBrokerProcess, waitForOutput } from '../support/broker-process.js';
import { connectMailbox, sharedBrokerEnv, refreshGrants as grantsAnswered, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * POST /api/token against the real stack: Azurite, the Key Vault fake through SecretClient,
 * msal-node against the sandbox identity provider, and a second broker process sharing the
 * same storage for the cross-instance refresh.
 */

let fixture: ConnectFixture;
let key: string;

beforeAll(async () => {
  fixture = await startConnectFixture();
  key = await tenantKey(fixture);
});

afterAll(async () => {
  await fixture?.close();
});

function requestToken(connection: string, options: { key?: string | null; base?: string } = {}): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const bearer = options.key === undefined ? key : options.key;
  if (bearer !== null) headers.authorization = `Bearer ${bearer}`;
  return fetch(`${options.base ?? fixture.broker.baseUrl}/api/token`, { method: 'POST', headers, body: JSON.stringify({ connection }) });
}

const refreshGrants = () => grantsAnswered(fixture);

describe('POST /api/token', () => {
  it('returns a fresh token, the XOAUTH2 string and host hints, then serves it from cache', async () => {
    const connectionId = await connectMailbox(fixture, 'sender@contoso.example');
    const before = refreshGrants();
    const response = await requestToken(connectionId);
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown> & { access_token: string; expires_in: number };
    expect(body).toMatchObject({
      token_type: 'Bearer',
      username: 'sender@contoso.example',
      smtp: { host: 'smtp.office365.com', port: 587, security: 'starttls' },
      imap: { host: 'outlook.office365.com', port: 993, security: 'tls' },
    });
    expect(body).not.toHaveProperty('pop');
    expect(body.expires_in).toBeGreaterThan(3000);
    expect(String(body.scope)).toContain('https://outlook.office.com/SMTP.Send');
    expect(Buffer.from(String(body.xoauth2), 'base64').toString()).toBe(`user=sender@contoso.example\x01auth=Bearer ${body.access_token}\x01\x01`);
    expect(refreshGrants()).toBe(before + 1);

    // By mailbox, case-insensitively, and from the cache: Microsoft is not called again.
    const again = (await (await requestToken('SENDER@contoso.example')).json()) as { access_token: string };
    expect(again.access_token).toBe(body.access_token);
    expect(refreshGrants()).toBe(before + 1);

    const keys = (await (await fixture.broker.call('GET', `/api/manage/tenants/${fixture.tenantId}/keys`)).json()) as { items: { lastUsedAt: string | null }[] };
    expect(keys.items.some((item) => item.lastUsedAt !== null)).toBe(true);

    // Each request left an audit event, written in the background, without the token.
    await fixture.broker.services.audit.flush();
    const rows: Record<string, unknown>[] = [];
    for await (const row of fixture.broker.services.tables.auditClient.listEntities<Record<string, unknown>>()) rows.push(row);
    const mine = rows.filter((row) => row.connectionId === connectionId);
    expect(mine.map((row) => [row.outcome, row.source])).toEqual(expect.arrayContaining([['issued', 'refresh'], ['issued', 'memory']]));
    expect(JSON.stringify(rows)).not.toContain(body.access_token);
  });

  it('answers 429 with Retry-After past the per-key rate limit', async () => {
    const connectionId = await connectMailbox(fixture, 'busy@contoso.example');
    const limited = await startTestBroker({
      tablesConnection: fixture.azurite.connectionString,
      env: { BROKER_KEY_VAULT_URL: fixture.vault.url, BROKER_KEY_VAULT_EMULATOR: 'true', BROKER_AUTHORITY_HOST: fixture.idp.authorityHost, BROKER_TOKEN_RATE_LIMIT: '3' },
    });
    try {
      const statuses: number[] = [];
      for (let index = 0; index < 4; index += 1) statuses.push((await requestToken(connectionId, { base: limited.baseUrl })).status);
      expect(statuses).toEqual([200, 200, 200, 429]);
      const refused = await requestToken(connectionId, { base: limited.baseUrl });
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(await refused.json()).toMatchObject({ code: 'RATE_LIMITED' });
      // Another key has its own budget.
      expect((await requestToken(connectionId, { base: limited.baseUrl, key: await tenantKey(fixture) })).status).toBe(200);
    } finally {
      await limited.close();
    }
  });

  it('refuses missing, unknown and revoked keys, and another tenant\'s connections', async () => {
    const connectionId = await connectMailbox(fixture, 'private@contoso.example');
    for (const bearer of [null, 'mob_unknown', OPERATOR_KEY]) {
      const response = await requestToken(connectionId, { key: bearer });
      expect(response.status).toBe(401);
      expect(response.headers.get('content-type')).toBe('application/problem+json');
    }
    const other = (await (await fixture.broker.call('POST', '/api/manage/tenants', { body: { name: 'Other' } })).json()) as { id: string };
    const otherKey = await tenantKey(fixture, other.id);
    for (const reference of [connectionId, 'private@contoso.example', 'con_aaaaaaaaaaaaaaaaaaaaaaaaaa', 'nobody@contoso.example']) {
      const response = await requestToken(reference, { key: otherKey });
      expect(response.status).toBe(404);
      const problem = (await response.json()) as { code: string; detail: string };
      expect(problem.code).toBe('CONNECTION_NOT_FOUND');
      expect(JSON.stringify(problem)).not.toContain('private@');
    }
    const keys = (await (await fixture.broker.call('GET', `/api/manage/tenants/${other.id}/keys`)).json()) as { items: { id: string }[] };
    await fixture.broker.call('DELETE', `/api/manage/tenants/${other.id}/keys/${keys.items[0]!.id}`);
    expect((await requestToken(connectionId, { key: otherKey })).status).toBe(401);
  });

  it('answers 409 for a connection that is not connected yet', async () => {
    const created = await fixture.broker.call('POST', '/api/manage/connections', {
      body: { tenantId: fixture.tenantId, appId: fixture.app.id, mailbox: 'waiting@contoso.example' },
    });
    const { id } = (await created.json()) as { id: string };
    const response = await requestToken(id);
    expect(response.status).toBe(409);
    expect(await response.json()).toMatchObject({ code: 'NOT_CONNECTED', reauthorizeLinkPath: `/api/manage/connections/${id}/authorize-link` });
  });

  it('marks a revoked grant needs_reauth and answers 409 with the re-authorize path', async () => {
    const connectionId = await connectMailbox(fixture, 'revoked@contoso.example');
    fixture.idp.revokeRefreshTokens('revoked@contoso.example');
    const response = await requestToken(connectionId);
    expect(response.status).toBe(409);
    const problem = (await response.json()) as Record<string, unknown>;
    expect(problem).toMatchObject({ code: 'NEEDS_REAUTH', connectionStatus: 'needs_reauth', reauthorizeLinkPath: `/api/manage/connections/${connectionId}/authorize-link` });
    expect(String(problem.detail)).toContain('AADSTS50173');
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(connection).toMatchObject({ status: 'needs_reauth', statusReason: { code: 'AADSTS50173' } });
    // The refresh token stays where it was: nothing is lost, a re-authorization replaces it.
    expect(await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId))).not.toBeNull();
    expect((await requestToken(connectionId)).status).toBe(409);
  });

  it('answers 503 with Retry-After when Microsoft fails and nothing valid is cached', async () => {
    const connectionId = await connectMailbox(fixture, 'outage@contoso.example');
    fixture.idp.failNext(1, { status: 503, retryAfterSeconds: 7 });
    const response = await requestToken(connectionId);
    expect(response.status).toBe(503);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await response.json()).toMatchObject({ code: 'MICROSOFT_UNAVAILABLE' });
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(connection.status).toBe('connected');
  });

  it('keeps serving a still-valid token while Microsoft fails, and recovers by itself', async () => {
    const connectionId = await connectMailbox(fixture, 'steady@contoso.example');
    const first = (await (await requestToken(connectionId)).json()) as { access_token: string; expires_in: number };
    // Four minutes before expiry: due for refresh but still valid.
    fixture.clock.advance((first.expires_in - 240) * 1000);
    try {
      fixture.idp.failNext(1, { status: 500 });
      const during = await requestToken(connectionId);
      expect(during.status).toBe(200);
      expect(((await during.json()) as { access_token: string }).access_token).toBe(first.access_token);
    } finally {
      fixture.clock.advance(-(first.expires_in - 240) * 1000);
    }
  });

  it('gives up on a hanging identity provider: 503 without a valid token, the cached one otherwise', async () => {
    const slow = await startTestBroker({
      tablesConnection: fixture.azurite.connectionString,
      env: { BROKER_KEY_VAULT_URL: fixture.vault.url, BROKER_KEY_VAULT_EMULATOR: 'true', BROKER_AUTHORITY_HOST: fixture.idp.authorityHost },
      overrides: { clock: fixture.clock, networkTimeoutMs: 500 },
    });
    try {
      const hanging = await connectMailbox(fixture, 'hanging@contoso.example');
      fixture.idp.failNext(1, { delayMs: 3000 });
      const started = Date.now();
      const refused = await requestToken(hanging, { base: slow.baseUrl });
      expect(refused.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(2500);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);

      const steady = await connectMailbox(fixture, 'patient@contoso.example');
      const first = (await (await requestToken(steady, { base: slow.baseUrl })).json()) as { access_token: string; expires_in: number };
      fixture.clock.advance((first.expires_in - 240) * 1000);
      try {
        fixture.idp.failNext(1, { delayMs: 3000 });
        const during = await requestToken(steady, { base: slow.baseUrl });
        expect(during.status).toBe(200);
        expect(((await during.json()) as { access_token: string }).access_token).toBe(first.access_token);
      } finally {
        fixture.clock.advance(-(first.expires_in - 240) * 1000);
      }
    } finally {
      await slow.close();
    }
  });

  for (const broken of ['reset', 'truncated-json'] as const) {
    it(`survives an identity provider that answers ${broken === 'reset' ? 'by dropping the connection' : 'with truncated JSON'}: 503, nothing lost, then recovers`, async () => {
      const mailbox = `broken-${broken}@contoso.example`;
      const connectionId = await connectMailbox(fixture, mailbox);
      const refreshToken = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));
      const grants = refreshGrants();
      fixture.idp.failNext(1, { broken });
      const response = await requestToken(connectionId);
      expect(response.status).toBe(503);
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await response.json()).toMatchObject({ code: 'MICROSOFT_UNAVAILABLE' });
      expect(refreshGrants()).toBe(grants + 1);
      // Not the mailbox's fault: still connected, the same refresh token kept.
      const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
      expect(connection.status).toBe('connected');
      expect((await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId)))?.value).toBe(refreshToken?.value);

      // A transient failure may pause this mailbox's calls for its Retry-After; past it, the next request refreshes.
      fixture.clock.advance(60_000);
      try {
        const recovered = await requestToken(connectionId);
        expect(recovered.status).toBe(200);
        expect(refreshGrants()).toBe(grants + 2);
      } finally {
        fixture.clock.advance(-60_000);
      }
    });
  }

  it('answers 503 for a throttled identity provider (429) and keeps the connection connected', async () => {
    const connectionId = await connectMailbox(fixture, 'throttled@contoso.example');
    fixture.idp.failNext(1, { status: 429, retryAfterSeconds: 12 });
    const response = await requestToken(connectionId);
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ code: 'MICROSOFT_UNAVAILABLE' });
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(connection.status).toBe('connected');
  });

  it('shows a refusal it has no rule for on the connection (status error, Microsoft\'s code and words), and clears it on the next success', async () => {
    const connectionId = await connectMailbox(fixture, 'unclassified@contoso.example');
    const sentence = 'No tenant-identifying information found in either the request or implied by any provided credentials.';
    fixture.idp.failNext(1, { refuse: new EntraError(50059, 'invalid_request', sentence) });
    const refused = await requestToken(connectionId);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ code: 'MICROSOFT_UNAVAILABLE' });
    const marked = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(marked).toMatchObject({ status: 'error', statusReason: { code: 'AADSTS50059', message: expect.stringContaining(sentence) as unknown } });
    // Still tried: the next request refreshes, answers, and the mark is gone.
    expect((await requestToken(connectionId)).status).toBe(200);
    const cleared = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
    expect(cleared).toMatchObject({ status: 'connected', statusReason: null });
  });

  it('keeps serving a still-valid token while Key Vault cannot be read, answers 503 without one, and lets go of the lease', async () => {
    const connectionId = await connectMailbox(fixture, 'vaultblind@contoso.example');
    const row = async () => (await fixture.broker.services.tables.connections.get(connectionId, ''))?.value;

    // No token yet: the refresh token cannot be read, so there is nothing to serve.
    fixture.vault.failNext(20, { status: 500, method: 'GET' });
    try {
      const refused = await requestToken(connectionId);
      expect(refused.status).toBe(503);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await refused.json()).toMatchObject({ code: 'SECRET_STORE_UNAVAILABLE' });
    } finally {
      fixture.vault.clearFaults();
    }
    // The lease was let go (another instance need not wait it out) and the mailbox is not blamed.
    expect(await row()).toMatchObject({ status: 'connected', leaseOwner: null });

    const first = (await (await requestToken(connectionId)).json()) as { access_token: string; expires_in: number };
    // Four minutes before expiry: due for refresh but still valid, and the vault is down again.
    fixture.clock.advance((first.expires_in - 240) * 1000);
    try {
      fixture.vault.failNext(20, { status: 500, method: 'GET' });
      const during = await requestToken(connectionId);
      expect(during.status).toBe(200);
      expect(((await during.json()) as { access_token: string }).access_token).toBe(first.access_token);
      expect(await row()).toMatchObject({ status: 'connected', leaseOwner: null });
      fixture.vault.clearFaults();
      // Back: the next request refreshes.
      const after = (await (await requestToken(connectionId)).json()) as { access_token: string };
      expect(after.access_token).not.toBe(first.access_token);
    } finally {
      fixture.vault.clearFaults();
      fixture.clock.advance(-(first.expires_in - 240) * 1000);
    }
  });

  it('keeps working when storing the rotated refresh token fails', async () => {
    const connectionId = await connectMailbox(fixture, 'vaultdown@contoso.example');
    const stored = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));
    // A day later the rotated refresh token is due to be written, and the vault refuses.
    fixture.clock.advance(25 * 3_600_000);
    try {
      fixture.vault.failNext(20, { status: 500, method: 'PUT' });
      const response = await requestToken(connectionId);
      expect(response.status).toBe(200);
      expect(fixture.vault.requests().some((request) => request.method === 'PUT' && request.fault)).toBe(true);
      expect(fixture.logs.at(-1)).toContain('the previous one stays in use');
      fixture.vault.clearFaults();
      const still = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));
      expect(still?.value).toBe(stored?.value);
      // The old refresh token still works for the next refresh.
      fixture.broker.services.accessTokens.forget(connectionId);
      const row = await fixture.broker.services.tables.connections.get(connectionId, '');
      await fixture.broker.services.tables.connections.replace({ ...row!.value, accessTokenCipher: null });
      expect((await requestToken(connectionId)).status).toBe(200);
    } finally {
      fixture.vault.clearFaults();
      fixture.clock.advance(-25 * 3_600_000);
    }
  });
});

describe('a refresh storm', () => {
  afterAll(() => {
    killBrokerProcesses();
  });

  it('makes exactly one call to Microsoft for 1,000 concurrent requests across two broker processes', async () => {
    const port = await freePort();
    const second = startBrokerProcess(sharedBrokerEnv(fixture, port), { trustTestCa: true });
    await waitForOutput(second, 'listening on');

    const connectionId = await connectMailbox(fixture, 'storm@contoso.example');
    const before = refreshGrants();
    const bases = [fixture.broker.baseUrl, `http://localhost:${port}`];
    const responses = await Promise.all(
      Array.from({ length: 1000 }, (_, index) => requestToken(index % 3 === 0 ? 'storm@contoso.example' : connectionId, { base: bases[index % 2]! })),
    );
    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status !== 200)).toEqual([]);
    const tokens = new Set(await Promise.all(responses.map(async (response) => ((await response.json()) as { access_token: string }).access_token)));
    expect(refreshGrants()).toBe(before + 1);
    expect(tokens.size).toBe(1);
  });
});
