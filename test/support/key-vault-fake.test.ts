import { SecretClient } from '@azure/keyvault-secrets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMULATOR_TOKEN } from '../../shared/secrets/key-vault-store.js';
import { startKeyVaultFake, type KeyVaultFake } from './key-vault-fake.js';

/* The fake is only worth its strictness: these pin the parts adapters' tests rely on. */

const token = { getToken: async () => ({ token: EMULATOR_TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) };

describe('Key Vault fake', () => {
  let vault: KeyVaultFake;
  let client: SecretClient;
  const raw = (path: string, init: RequestInit = {}) =>
    fetch(`${vault.url}${path}`, { ...init, headers: { authorization: 'Bearer t', ...init.headers } });

  beforeAll(async () => {
    vault = await startKeyVaultFake({ pageSize: 2, tenantId: 'tenant-x' });
    client = new SecretClient(vault.url, token, { disableChallengeResourceVerification: true });
  });
  afterAll(async () => {
    await vault?.close();
  });

  it('challenges a request without a token the way Key Vault does', async () => {
    const response = await fetch(`${vault.url}/secrets/any/?api-version=7.6`);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(
      'Bearer authorization="https://login.microsoftonline.com/tenant-x", resource="https://vault.azure.net"',
    );
  });

  it('insists on api-version, valid names, sizes and Unix-second dates', async () => {
    expect((await raw('/secrets/any/')).status).toBe(400);
    const put = (name: string, body: unknown) =>
      raw(`/secrets/${name}?api-version=7.6`, { method: 'PUT', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    expect((await put('bad_name', { value: 'v' })).status).toBe(400);
    expect((await put('big', { value: 'x'.repeat(25 * 1024 + 1) })).status).toBe(400);
    expect((await put('dated', { value: 'v', attributes: { exp: 1.5 } })).status).toBe(400);
    const missing = await raw('/secrets/never-set/?api-version=7.6');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: { code: 'SecretNotFound', message: expect.stringContaining('never-set') } });
  });

  it('pages GET /secrets by nextLink, reads versions, soft-deletes, purges', async () => {
    const first = await client.setSecret('paged-a', 'a1');
    await client.setSecret('paged-a', 'a2');
    await client.setSecret('paged-b', 'b');
    await client.setSecret('paged-c', 'c');
    const names: string[] = [];
    for await (const page of client.listPropertiesOfSecrets().byPage()) {
      expect(page.length).toBeLessThanOrEqual(2);
      names.push(...page.map((secret) => secret.name));
    }
    expect(names).toEqual(expect.arrayContaining(['paged-a', 'paged-b', 'paged-c']));
    expect((await client.getSecret('paged-a', { version: first.properties.version! })).value).toBe('a1');
    expect((await client.getSecret('paged-a')).value).toBe('a2');
    await (await client.beginDeleteSecret('paged-b')).pollUntilDone();
    expect(vault.deletedSecretNames()).toContain('paged-b');
    expect((await client.getDeletedSecret('paged-b')).properties.recoveryId).toBe(`${vault.url}/deletedsecrets/paged-b`);
    await client.purgeDeletedSecret('paged-b');
    expect(vault.deletedSecretNames()).not.toContain('paged-b');
    expect((await client.setSecret('paged-b', 'reborn')).value).toBe('reborn');
  });

  it('answers injected faults first, and logs requests without values', async () => {
    vault.clearRequests();
    vault.failNext(1, { status: 503 });
    const response = await raw('/secrets/paged-a/?api-version=7.6');
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(vault.requests()).toEqual([expect.objectContaining({ fault: true, status: 503 })]);
    expect(JSON.stringify(vault.requests())).not.toContain('a2');
  });
});
