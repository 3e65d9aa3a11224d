import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzuriteTables, type AzuriteTables } from '../../infra/local/azurite.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { OPERATOR_KEY, startTestBroker, type TestBroker } from '../support/broker.js';
import { startKeyVaultFake, type KeyVaultFake } from '../support/key-vault-fake.js';

/*
 * The whole operator API through the local host, against real Azurite and the real
 * SecretClient talking to the HTTPS Key Vault fake.
 */

const SECOND_OPERATOR_KEY = 'second-operator-key-abcdefghijklmnopqrstuvwxyz';
const CLIENT_ID = '11111111-2222-4333-8444-555555555555';
const DIRECTORY = '99999999-8888-4777-8666-555555555555';
// Whole seconds: Key Vault keeps expiry dates to the second.
const inAYear = () => new Date(Math.floor(Date.now() / 1000 + 365 * 86_400) * 1000).toISOString();

let azurite: AzuriteTables;
let vault: KeyVaultFake;
let broker: TestBroker;

beforeAll(async () => {
  [azurite, vault] = await Promise.all([startAzuriteTables(), startKeyVaultFake()]);
  broker = await startTestBroker({
    tablesConnection: azurite.connectionString,
    env: {
      BROKER_OPERATOR_KEY: `${OPERATOR_KEY},${SECOND_OPERATOR_KEY}`,
      BROKER_KEY_VAULT_URL: vault.url,
      BROKER_KEY_VAULT_EMULATOR: 'true',
      BROKER_PUBLIC_URL: 'https://broker.example.com',
    },
  });
});

afterAll(async () => {
  await broker?.close();
  await Promise.all([azurite?.stop(), vault?.close()]);
});

async function json<T = Record<string, unknown>>(response: Response): Promise<T> {
  return (await response.json()) as T;
}

async function expectProblem(response: Response, status: number, code: string): Promise<Record<string, unknown>> {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toBe('application/problem+json');
  const problem = await json(response);
  expect(problem).toMatchObject({ status, code, type: `urn:mail-oauth-broker:${code.toLowerCase().replaceAll('_', '-')}` });
  expect(typeof problem.title).toBe('string');
  expect(typeof problem.detail).toBe('string');
  expect(JSON.stringify(problem)).not.toMatch(/\bat .+\.(ts|js):\d+/);
  return problem;
}

async function createApp(overrides: Record<string, unknown> = {}) {
  const response = await broker.call('POST', '/api/manage/apps', {
    body: { name: 'Contoso mail', clientId: CLIENT_ID, tenant: 'organizations', clientSecret: 'app-secret-value~1', clientSecretExpiresOn: inAYear(), ...overrides },
  });
  expect(response.status).toBe(201);
  return json<{ id: string } & Record<string, unknown>>(response);
}

async function createTenant(name = 'Fabrikam') {
  const response = await broker.call('POST', '/api/manage/tenants', { body: { name, alertEmails: ['admin@fabrikam.example'] } });
  expect(response.status).toBe(201);
  return json<{ id: string } & Record<string, unknown>>(response);
}

async function createConnection(tenantId: string, appId: string, mailbox: string, extra: Record<string, unknown> = {}) {
  return broker.call('POST', '/api/manage/connections', { body: { tenantId, appId, mailbox, protocols: ['smtp', 'imap'], ...extra } });
}

describe('operator authentication', () => {
  const routes: [string, string][] = [
    ['GET', '/api/manage/health'],
    ['GET', '/api/manage/runs'],
    ['GET', '/api/manage/alerts'],
    ['POST', '/api/manage/apps'],
    ['GET', '/api/manage/apps'],
    ['GET', '/api/manage/apps/app_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['PATCH', '/api/manage/apps/app_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['DELETE', '/api/manage/apps/app_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['POST', '/api/manage/tenants'],
    ['GET', '/api/manage/tenants'],
    ['GET', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['PATCH', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['DELETE', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['POST', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa/keys'],
    ['GET', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa/keys'],
    ['DELETE', '/api/manage/tenants/tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa/keys/key_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['POST', '/api/manage/connections'],
    ['GET', '/api/manage/connections'],
    ['GET', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['PATCH', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['DELETE', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa'],
    ['POST', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/authorize-link'],
    ['POST', '/api/manage/connections/con_aaaaaaaaaaaaaaaaaaaaaaaaaa/verify'],
  ];

  it.each(routes)('%s %s refuses a missing, wrong or tenant key with 401', async (method, path) => {
    const tenant = await createTenant();
    const tenantKey = await json<{ key: string }>(await broker.call('POST', `/api/manage/tenants/${tenant.id}/keys`));
    for (const authorization of [undefined, 'Bearer wrong-key-wrong-key-wrong-key-wrong-key', `Bearer ${tenantKey.key}`, OPERATOR_KEY]) {
      const response = await broker.call(method, path, {
        ...(method === 'POST' || method === 'PATCH' ? { body: {} } : {}),
        operator: false,
        headers: authorization === undefined ? {} : { authorization },
      });
      await expectProblem(response, 401, 'UNAUTHORIZED');
      expect(response.headers.get('www-authenticate')).toContain('Bearer');
    }
  });

  it('accepts every configured operator key, so one can be rotated without downtime', async () => {
    for (const key of [OPERATOR_KEY, SECOND_OPERATOR_KEY]) {
      const response = await broker.call('GET', '/api/manage/tenants', { headers: { authorization: `Bearer ${key}` } });
      expect(response.status).toBe(200);
    }
  });
});

describe('apps', () => {
  it('creates an app, keeps the secret write-only in Key Vault with its expiry', async () => {
    const expiresOn = inAYear();
    const app = await createApp({ clientSecretExpiresOn: expiresOn, alertEmails: ['ops@contoso.example'] });
    expect(app).toMatchObject({
      name: 'Contoso mail',
      clientId: CLIENT_ID,
      tenant: 'organizations',
      clientSecretExpiresOn: expiresOn,
      alertEmails: ['ops@contoso.example'],
      redirectUri: 'https://broker.example.com/api/oauth/callback',
    });
    expect(app.id).toMatch(/^app_[a-z2-7]{26}$/);
    expect(JSON.stringify(app)).not.toContain('app-secret-value');

    const stored = await broker.services.secrets.get(secretNames.appClientSecret(app.id));
    expect(stored?.value).toBe('app-secret-value~1');
    expect(stored?.expiresOn?.toISOString()).toBe(expiresOn);

    const fetched = await json(await broker.call('GET', `/api/manage/apps/${app.id}`));
    expect(fetched).toEqual(app);
    expect(JSON.stringify(fetched)).not.toContain('app-secret-value');
  });

  // (Checking the new secret with Microsoft first: test/connect/secret-rotation.integration.test.ts.
  // A multi-tenant app without connections has nothing that could break, so it is not checked.)
  it('rotates the secret with PATCH and changes only the given fields', async () => {
    const app = await createApp();
    const before = await broker.services.secrets.get(secretNames.appClientSecret(app.id));
    const expiresOn = inAYear();
    const response = await broker.call('PATCH', `/api/manage/apps/${app.id}`, { body: { clientSecret: 'rotated-secret', clientSecretExpiresOn: expiresOn } });
    expect(response.status).toBe(200);
    const patched = await json(response);
    expect(patched).toMatchObject({ name: 'Contoso mail', tenant: 'organizations', clientSecretExpiresOn: expiresOn });
    expect(await json(await broker.call('PATCH', `/api/manage/apps/${app.id}`, { body: { tenant: DIRECTORY } }))).toMatchObject({ tenant: DIRECTORY });
    const after = await broker.services.secrets.get(secretNames.appClientSecret(app.id));
    expect(after?.value).toBe('rotated-secret');
    expect(after?.version).not.toBe(before?.version);

    const renamed = await json(await broker.call('PATCH', `/api/manage/apps/${app.id}`, { body: { name: 'Renamed' } }));
    expect(renamed).toMatchObject({ name: 'Renamed', tenant: DIRECTORY, clientSecretExpiresOn: expiresOn });
  });

  it('refuses a secret without its expiry, an expired secret and a bad tenant, naming the fields', async () => {
    const app = await createApp();
    const alone = await expectProblem(await broker.call('PATCH', `/api/manage/apps/${app.id}`, { body: { clientSecret: 'x' } }), 400, 'INVALID_REQUEST');
    expect(alone.errors).toEqual([expect.objectContaining({ field: 'clientSecretExpiresOn' })]);

    const expired = await expectProblem(
      await broker.call('POST', '/api/manage/apps', {
        body: { name: 'a', clientId: CLIENT_ID, tenant: 'common', clientSecret: 's', clientSecretExpiresOn: '2020-01-01T00:00:00Z' },
      }),
      400,
      'INVALID_REQUEST',
    );
    expect(expired.errors).toEqual([expect.objectContaining({ field: 'clientSecretExpiresOn' })]);

    const wrong = await expectProblem(
      await broker.call('POST', '/api/manage/apps', {
        body: { name: '', clientId: 'not-a-guid', tenant: 'contoso', clientSecret: 7, clientSecretExpiresOn: 'tomorrow', extra: true },
      }),
      400,
      'INVALID_REQUEST',
    );
    const fields = (wrong.errors as { field: string }[]).map((error) => error.field).sort();
    expect(fields).toEqual(['clientId', 'clientSecret', 'clientSecretExpiresOn', 'extra', 'name', 'tenant']);
    expect(wrong.detail).toContain('clientId');
  });

  it('deletes an unused app with its secret, and refuses while a connection uses it', async () => {
    const app = await createApp();
    const tenant = await createTenant();
    const connection = await json<{ id: string }>(await createConnection(tenant.id, app.id, 'in-use@fabrikam.example'));
    await expectProblem(await broker.call('DELETE', `/api/manage/apps/${app.id}`), 409, 'APP_IN_USE');
    expect((await broker.call('DELETE', `/api/manage/connections/${connection.id}`)).status).toBe(204);

    expect((await broker.call('DELETE', `/api/manage/apps/${app.id}`)).status).toBe(204);
    expect(await broker.services.secrets.get(secretNames.appClientSecret(app.id))).toBeNull();
    await expectProblem(await broker.call('GET', `/api/manage/apps/${app.id}`), 404, 'APP_NOT_FOUND');
    await expectProblem(await broker.call('DELETE', `/api/manage/apps/${app.id}`), 404, 'APP_NOT_FOUND');
  });

  it('pages through the list with an opaque cursor', async () => {
    const created = new Set<string>();
    for (let index = 0; index < 3; index += 1) created.add((await createApp({ name: `paged ${index}` })).id);
    const seen: string[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const query: string = next ? `?limit=2&cursor=${encodeURIComponent(next)}` : '?limit=2';
      const page: { items: { id: string }[]; next: string | null } = await json(await broker.call('GET', `/api/manage/apps${query}`));
      expect(page.items.length).toBeLessThanOrEqual(2);
      seen.push(...page.items.map((item) => item.id));
      next = page.next;
      pages += 1;
    } while (next && pages < 50);
    for (const id of created) expect(seen).toContain(id);
    expect(new Set(seen).size).toBe(seen.length);

    await expectProblem(await broker.call('GET', '/api/manage/apps?cursor=garbage'), 400, 'INVALID_CURSOR');
    await expectProblem(await broker.call('GET', '/api/manage/apps?limit=0'), 400, 'INVALID_REQUEST');
    await expectProblem(await broker.call('GET', '/api/manage/apps?limit=1&limit=2'), 400, 'INVALID_REQUEST');
    await expectProblem(await broker.call('GET', '/api/manage/apps?color=blue'), 400, 'INVALID_REQUEST');
  });
});

describe('tenants and keys', () => {
  it('shows a key once, stores only its hash, and revokes it', async () => {
    const tenant = await createTenant();
    const response = await broker.call('POST', `/api/manage/tenants/${tenant.id}/keys`);
    expect(response.status).toBe(201);
    const created = await json<{ id: string; key: string; prefix: string }>(response);
    expect(created.id).toMatch(/^key_/);
    expect(created.key).toMatch(/^mob_[A-Za-z0-9_-]{43}$/);
    expect(created.key.startsWith(created.prefix)).toBe(true);

    const listed = await json<{ items: Record<string, unknown>[]; next: null }>(await broker.call('GET', `/api/manage/tenants/${tenant.id}/keys`));
    expect(listed.items).toEqual([{ id: created.id, prefix: created.prefix, createdAt: expect.any(String), lastUsedAt: null }]);
    expect(JSON.stringify(listed)).not.toContain(created.key);

    const principal = await broker.services.tenants.authenticate(`Bearer ${created.key}`);
    expect(principal).toEqual({ tenantId: tenant.id, keyId: created.id });

    expect((await broker.call('DELETE', `/api/manage/tenants/${tenant.id}/keys/${created.id}`)).status).toBe(204);
    await expect(broker.services.tenants.authenticate(`Bearer ${created.key}`)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expectProblem(await broker.call('DELETE', `/api/manage/tenants/${tenant.id}/keys/${created.id}`), 404, 'KEY_NOT_FOUND');
  });

  it('does not let one tenant revoke another tenant\'s key', async () => {
    const [a, b] = [await createTenant('A'), await createTenant('B')];
    const key = await json<{ id: string; key: string }>(await broker.call('POST', `/api/manage/tenants/${a.id}/keys`));
    await expectProblem(await broker.call('DELETE', `/api/manage/tenants/${b.id}/keys/${key.id}`), 404, 'KEY_NOT_FOUND');
    expect(await broker.services.tenants.authenticate(`Bearer ${key.key}`)).toMatchObject({ tenantId: a.id });
  });

  it('patches only the given fields', async () => {
    const tenant = await createTenant('Before');
    const patched = await json(await broker.call('PATCH', `/api/manage/tenants/${tenant.id}`, { body: { name: 'After' } }));
    expect(patched).toMatchObject({ id: tenant.id, name: 'After', alertEmails: ['admin@fabrikam.example'] });
    await expectProblem(await broker.call('PATCH', `/api/manage/tenants/${tenant.id}`, { body: { alertEmails: ['not an email'] } }), 400, 'INVALID_REQUEST');
  });

  it('offboards a tenant: keys, connections and their stored tokens are gone', async () => {
    const app = await createApp();
    const tenant = await createTenant();
    const key = await json<{ key: string }>(await broker.call('POST', `/api/manage/tenants/${tenant.id}/keys`));
    const connectionIds: string[] = [];
    for (const mailbox of ['one@fabrikam.example', 'two@fabrikam.example']) {
      const connection = await json<{ id: string }>(await createConnection(tenant.id, app.id, mailbox));
      connectionIds.push(connection.id);
      await broker.services.secrets.set(secretNames.connectionRefreshToken(connection.id), `refresh-token-of-${mailbox}`);
    }
    expect(vault.liveSecretNames()).toEqual(expect.arrayContaining(connectionIds.map(secretNames.connectionRefreshToken)));

    expect((await broker.call('DELETE', `/api/manage/tenants/${tenant.id}`)).status).toBe(204);

    await expectProblem(await broker.call('GET', `/api/manage/tenants/${tenant.id}`), 404, 'TENANT_NOT_FOUND');
    for (const id of connectionIds) {
      await expectProblem(await broker.call('GET', `/api/manage/connections/${id}`), 404, 'CONNECTION_NOT_FOUND');
      expect(vault.liveSecretNames()).not.toContain(secretNames.connectionRefreshToken(id));
      expect(await broker.services.secrets.get(secretNames.connectionRefreshToken(id))).toBeNull();
    }
    await expect(broker.services.tenants.authenticate(`Bearer ${key.key}`)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    const listed = await json<{ items: unknown[] }>(await broker.call('GET', `/api/manage/connections?tenantId=${tenant.id}`));
    expect(listed.items).toEqual([]);
    // The mailbox is free again for a new tenant with the same name.
    const again = await createTenant();
    expect((await createConnection(again.id, app.id, 'one@fabrikam.example')).status).toBe(201);
  });
});

describe('connections', () => {
  it('creates a pending connection in the documented shape', async () => {
    const [app, tenant] = [await createApp(), await createTenant()];
    const response = await createConnection(tenant.id, app.id, 'Sales@Fabrikam.example', { signInName: 'sales.upn@fabrikam.example' });
    expect(response.status).toBe(201);
    const connection = await json(response);
    expect(connection).toEqual({
      id: expect.stringMatching(/^con_[a-z2-7]{26}$/),
      tenantId: tenant.id,
      appId: app.id,
      mailbox: 'Sales@Fabrikam.example',
      mode: 'delegated',
      protocols: ['smtp', 'imap'],
      signInName: 'sales.upn@fabrikam.example',
      status: 'pending',
      statusReason: null,
      connectedAt: null,
      lastRefreshAt: null,
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    expect(await json(await broker.call('GET', `/api/manage/connections/${connection.id as string}`))).toEqual(connection);
  });

  it('keeps a mailbox unique per tenant and mode, case-insensitively', async () => {
    const [app, tenant, other] = [await createApp(), await createTenant(), await createTenant('Other')];
    expect((await createConnection(tenant.id, app.id, 'desk@fabrikam.example')).status).toBe(201);
    await expectProblem(await createConnection(tenant.id, app.id, 'DESK@fabrikam.example'), 409, 'MAILBOX_ALREADY_CONNECTED');
    expect((await createConnection(tenant.id, app.id, 'desk@fabrikam.example', { mode: 'app_only' })).status).toBe(201);
    expect((await createConnection(other.id, app.id, 'desk@fabrikam.example')).status).toBe(201);
  });

  it('refuses references that do not exist and fields that do not apply', async () => {
    const app = await createApp();
    const problem = await expectProblem(await createConnection('tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa', app.id, 'x@fabrikam.example'), 400, 'INVALID_REQUEST');
    expect(problem.errors).toEqual([expect.objectContaining({ field: 'tenantId' })]);
    const tenant = await createTenant();
    const appOnly = await expectProblem(
      await createConnection(tenant.id, app.id, 'x@fabrikam.example', { mode: 'app_only', signInName: 'y@fabrikam.example' }),
      400,
      'INVALID_REQUEST',
    );
    expect(appOnly.errors).toEqual([expect.objectContaining({ field: 'signInName' })]);
    await expectProblem(await createConnection(tenant.id, app.id, 'x@fabrikam.example', { protocols: ['smtp', 'smtp'] }), 400, 'INVALID_REQUEST');
    await expectProblem(await createConnection(tenant.id, app.id, 'x@fabrikam.example', { protocols: ['ews'] }), 400, 'INVALID_REQUEST');
  });

  it('filters the list by tenant and status, patches and deletes with the stored token', async () => {
    const [app, tenant] = [await createApp(), await createTenant()];
    const connection = await json<{ id: string }>(await createConnection(tenant.id, app.id, 'filter@fabrikam.example'));
    const byTenant = await json<{ items: { id: string }[] }>(await broker.call('GET', `/api/manage/connections?tenantId=${tenant.id}&status=pending`));
    expect(byTenant.items.map((item) => item.id)).toEqual([connection.id]);
    const connected = await json<{ items: unknown[] }>(await broker.call('GET', `/api/manage/connections?tenantId=${tenant.id}&status=connected`));
    expect(connected.items).toEqual([]);
    await expectProblem(await broker.call('GET', '/api/manage/connections?status=happy'), 400, 'INVALID_REQUEST');

    const patched = await json(await broker.call('PATCH', `/api/manage/connections/${connection.id}`, { body: { protocols: ['pop'] } }));
    expect(patched).toMatchObject({ protocols: ['pop'], mailbox: 'filter@fabrikam.example' });
    await expectProblem(await broker.call('PATCH', `/api/manage/connections/${connection.id}`, { body: { mailbox: 'other@x.example' } }), 400, 'INVALID_REQUEST');

    await broker.services.secrets.set(secretNames.connectionRefreshToken(connection.id), 'refresh-token');
    expect((await broker.call('DELETE', `/api/manage/connections/${connection.id}`)).status).toBe(204);
    expect(await broker.services.secrets.get(secretNames.connectionRefreshToken(connection.id))).toBeNull();
    await expectProblem(await broker.call('GET', `/api/manage/connections/${connection.id}`), 404, 'CONNECTION_NOT_FOUND');
    expect((await createConnection(tenant.id, app.id, 'filter@fabrikam.example')).status).toBe(201);
  });
});

describe('bad requests never reach a 500', () => {
  it('answers malformed JSON, wrong media types and oversized bodies with problems', async () => {
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { rawBody: '{"name": ', headers: { 'content-type': 'application/json' } }), 400, 'INVALID_JSON');
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { rawBody: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { rawBody: '{"name":"x"}' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { body: ['not', 'an', 'object'] }), 400, 'INVALID_REQUEST');
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { body: null }), 400, 'INVALID_REQUEST');
    const big = { name: 'x', alertEmails: [], padding: 'a'.repeat(70 * 1024) };
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { body: big }), 413, 'PAYLOAD_TOO_LARGE');
    await expectProblem(await broker.call('POST', '/api/manage/tenants', { body: { name: 'x', padding: 'a'.repeat(2 * 1024 * 1024) } }), 413, 'PAYLOAD_TOO_LARGE');
  });

  it('answers wrong methods with 405 and Allow, unknown paths and ids with 404', async () => {
    const wrong = await broker.call('PUT', '/api/manage/apps');
    await expectProblem(wrong, 405, 'METHOD_NOT_ALLOWED');
    expect(wrong.headers.get('allow')).toBe('POST, GET');
    await expectProblem(await broker.call('POST', '/api/health'), 405, 'METHOD_NOT_ALLOWED');
    await expectProblem(await broker.call('GET', '/api/no/such/route'), 404, 'NOT_FOUND');
    await expectProblem(await broker.call('DELETE', '/api/manage'), 404, 'NOT_FOUND');
    await expectProblem(await broker.call('GET', '/elsewhere'), 404, 'NOT_FOUND');
    for (const id of ['app_', 'app_%00', 'con_aaaaaaaaaaaaaaaaaaaaaaaaaa', "app_aaaaaaaaaaaaaaaaaaaaaaaa'", '..%2F..', '%E2%80%AE']) {
      const response = await broker.call('GET', `/api/manage/apps/${id}`);
      await expectProblem(response, 404, 'APP_NOT_FOUND');
    }
  });
});

describe('health and timers', () => {
  it('says nothing about dependencies on the public route, everything on the operator one', async () => {
    const live = await broker.call('GET', '/api/health', { operator: false });
    expect(live.status).toBe(200);
    expect(await json(live)).toEqual({ status: 'ok' });

    const ready = await json(await broker.call('GET', '/api/manage/health'));
    expect(ready).toMatchObject({
      ready: true,
      checks: { tableStorage: { ok: true }, secretStore: { ok: true }, alertSender: { configured: false } },
    });
  });

  it('runs rotate-tokens on demand, removing expired links and authorization requests only', async () => {
    const now = Date.now();
    const past = new Date(now - 60_000).toISOString();
    const future = new Date(now + 3_600_000).toISOString();
    const { links, authRequests } = broker.services.tables;
    await links.insert({ id: 'lnk_expired', connectionId: 'con_x', createdAt: past, expiresAt: past, completedAt: null });
    await links.insert({ id: 'lnk_alive', connectionId: 'con_x', createdAt: past, expiresAt: future, completedAt: null });
    const request = { connectionId: 'con_x', linkId: null, kind: 'authorize' as const, codeVerifier: 'v', expectedMailbox: 'x@y.example', createdAt: past };
    await authRequests.insert({ ...request, stateHash: 'expired', expiresAt: past });
    await authRequests.insert({ ...request, stateHash: 'alive', expiresAt: future });

    await expectProblem(await fetch(`${broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST' }), 401, 'UNAUTHORIZED');
    await expectProblem(
      await fetch(`${broker.baseUrl}/admin/functions/nope`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } }),
      404,
      'FUNCTION_NOT_FOUND',
    );
    const run = await fetch(`${broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
    expect(run.status).toBe(202);

    expect(await links.get('lnk_expired', '')).toBeNull();
    expect(await links.get('lnk_alive', '')).not.toBeNull();
    expect(await authRequests.get('expired', '')).toBeNull();
    expect(await authRequests.get('alive', '')).not.toBeNull();
  });
});
