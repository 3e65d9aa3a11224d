import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { connectMailbox, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * Rotating an app's client secret without downtime: the new secret is tried against
 * Microsoft first and replaces the old one only if Microsoft accepts it.
 */

let fixture: ConnectFixture;

beforeAll(async () => {
  fixture = await startConnectFixture();
});

afterAll(async () => {
  await fixture?.close();
});

const inAYear = () => new Date(Math.floor(Date.now() / 1000 + 365 * 86_400) * 1000).toISOString();

async function tokenStatus(connectionId: string): Promise<number> {
  fixture.broker.services.accessTokens.forget(connectionId);
  const row = await fixture.broker.services.tables.connections.get(connectionId, '');
  await fixture.broker.services.tables.connections.replace({ ...row!.value, accessTokenCipher: null });
  const response = await fetch(`${fixture.broker.baseUrl}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await tenantKey(fixture)}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection: connectionId }),
  });
  return response.status;
}

describe('PATCH /api/manage/apps/{id} with a new client secret', () => {
  it('refuses a secret Microsoft does not know, naming the AADSTS reason, and keeps the old one working', async () => {
    const connectionId = await connectMailbox(fixture, 'rotation@contoso.example');
    const before = await fixture.broker.services.secrets.get(secretNames.appClientSecret(fixture.app.id));
    // The secret's ID pasted instead of its value: the classic mistake.
    const response = await fixture.broker.call('PATCH', `/api/manage/apps/${fixture.app.id}`, {
      body: { clientSecret: '3f1b2c4d-0000-4000-8000-123456789abc', clientSecretExpiresOn: inAYear() },
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { detail: string; errors: { field: string }[] };
    expect(problem.detail).toContain('AADSTS7000215');
    expect(problem.errors).toEqual([expect.objectContaining({ field: 'clientSecret' })]);
    const after = await fixture.broker.services.secrets.get(secretNames.appClientSecret(fixture.app.id));
    expect(after?.version).toBe(before?.version);
    expect(await tokenStatus(connectionId)).toBe(200);
  });

  it('replaces the secret once Microsoft accepts the new one, and tokens keep flowing', async () => {
    const connectionId = await connectMailbox(fixture, 'rotated@contoso.example');
    const next = `sandbox~rotated-${Date.now()}`;
    fixture.idp.addSecret(fixture.app.clientId, next, new Date(Date.now() + 365 * 86_400_000));
    const expiresOn = inAYear();
    const response = await fixture.broker.call('PATCH', `/api/manage/apps/${fixture.app.id}`, { body: { clientSecret: next, clientSecretExpiresOn: expiresOn } });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ clientSecretExpiresOn: expiresOn });
    expect((await fixture.broker.services.secrets.get(secretNames.appClientSecret(fixture.app.id)))?.value).toBe(next);
    expect(await tokenStatus(connectionId)).toBe(200);
  });
});
