import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/identity';
import { isRestError } from '@azure/keyvault-secrets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyVaultSecretStore, type KeyVaultSecretStoreOptions } from '../../../shared/secrets/key-vault-store.js';
import { startKeyVaultFake, type KeyVaultFake } from '../../support/key-vault-fake.js';
import { defineSecretStoreContract, storeError } from './secret-store.contract.js';

/* The real SecretClient, over HTTPS trusted through NODE_EXTRA_CA_CERTS, against the fake. */

const fast: Partial<KeyVaultSecretStoreOptions> = { pollIntervalMs: 50, retryOptions: { retryDelayInMs: 20, maxRetryDelayInMs: 100 } };

defineSecretStoreContract('Key Vault (SecretClient against the HTTPS fake)', async () => {
  const vault = await startKeyVaultFake();
  return { store: new KeyVaultSecretStore({ vaultUrl: vault.url, emulator: true, ...fast }), close: () => vault.close() };
});

class RecordingCredential implements TokenCredential {
  readonly calls: { scopes: string[]; tenantId: string | undefined }[] = [];
  async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken> {
    this.calls.push({ scopes: [scopes].flat(), tenantId: options?.tenantId });
    return { token: 'recorded-token', expiresOnTimestamp: Date.now() + 3_600_000 };
  }
}

describe('KeyVaultSecretStore', () => {
  let vault: KeyVaultFake;
  const storeFor = (options: Partial<KeyVaultSecretStoreOptions> = {}) =>
    new KeyVaultSecretStore({ vaultUrl: vault.url, emulator: true, ...fast, ...options });

  beforeAll(async () => {
    vault = await startKeyVaultFake({ tenantId: 'contoso-tenant-id' });
  });
  afterAll(async () => {
    await vault?.close();
  });

  it('authenticates through the challenge: bare first request, then a token for the named resource and tenant', async () => {
    vault.clearRequests();
    const credential = new RecordingCredential();
    await storeFor({ credential }).set('challenge-test', 'value', { contentType: 'text/plain', tags: { a: 'b' } });
    const [first, ...rest] = vault.requests();
    expect(first).toMatchObject({ method: 'PUT', authorized: false, hasBody: false, status: 401 });
    expect(rest).toEqual([expect.objectContaining({ method: 'PUT', authorized: true, hasBody: true, status: 200 })]);
    expect(rest[0]?.apiVersion).toMatch(/^\d{4}-\d{2}-\d{2}|^7\.\d$/);
    expect(credential.calls[0]).toEqual({ scopes: ['https://vault.azure.net/.default'], tenantId: 'contoso-tenant-id' });
    expect(vault.latest('challenge-test')).toEqual({ value: 'value', contentType: 'text/plain', tags: { a: 'b' } });
  });

  it('sends expiry as Unix seconds', async () => {
    await storeFor().set('expiry-test', 'v', { expiresOn: new Date('2030-01-02T03:04:05.678Z') });
    expect(vault.latest('expiry-test')?.exp).toBe(Date.parse('2030-01-02T03:04:05Z') / 1000);
  });

  it('waits out 429 + Retry-After and succeeds', async () => {
    const store = storeFor();
    await store.ping();
    vault.clearRequests();
    vault.failNext(2, { status: 429, retryAfterSeconds: 1 });
    const started = Date.now();
    await store.set('throttled', 'eventually');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    expect(vault.requests().map((r) => [r.method, r.status])).toEqual([
      ['PUT', 429],
      ['PUT', 429],
      ['PUT', 200],
    ]);
    expect(vault.latest('throttled')?.value).toBe('eventually');
  });

  it('reports throttling that outlasts the retries as unavailable, with Retry-After', async () => {
    const store = storeFor({ retryOptions: { maxRetries: 1 } });
    await store.ping();
    vault.failNext(2, { status: 429, retryAfterSeconds: 1 });
    const error = await storeError(store.get('anything'));
    expect(error.retryAfterSeconds).toBe(1);
    expect(isRestError(error.cause) && error.cause.statusCode).toBe(429);
  });

  it('maps refusals to SECRET_STORE_UNAVAILABLE without the value, request or response in the cause', async () => {
    const store = storeFor();
    const value = 'super-secret-value-that-must-not-leak';
    vault.failNext(1, { status: 403, code: 'Forbidden' });
    const error = await storeError(store.set('refused', value));
    expect(error.message).toMatch(/could not set secret "refused": 403 Forbidden/);
    expect(error.message).not.toContain(value);
    expect(isRestError(error.cause)).toBe(true);
    const cause = error.cause as { request?: unknown; response?: unknown };
    expect(cause.request).toBeUndefined();
    expect(cause.response).toBeUndefined();
    expect(JSON.stringify(error)).not.toContain(value);
  });

  it('re-creates a deleted name by recovering it first (409 ObjectIsDeletedButRecoverable)', async () => {
    const store = storeFor();
    await store.set('recreated', 'first life');
    await store.delete('recreated');
    expect(vault.deletedSecretNames()).toContain('recreated');
    vault.clearRequests();
    const stored = await store.set('recreated', 'second life');
    const calls = vault.requests().map((r) => `${r.method} ${r.path} ${r.status}`);
    expect(calls[0]).toBe('PUT /secrets/recreated 409');
    expect(calls).toContain('POST /deletedsecrets/recreated/recover 200');
    expect(calls.at(-1)).toBe('PUT /secrets/recreated 200');
    expect(vault.deletedSecretNames()).not.toContain('recreated');
    expect(vault.versionCount('recreated')).toBe(2);
    expect(await store.get('recreated')).toMatchObject({ value: 'second life', version: stored.version });
  });

  it('deletes with two requests and without waiting for the soft delete to settle', async () => {
    const slow = await startKeyVaultFake({ deleteDelayMs: 600 });
    try {
      const store = new KeyVaultSecretStore({ vaultUrl: slow.url, emulator: true, ...fast });
      await store.set('settling', 'v');
      slow.clearRequests();
      await store.delete('settling');
      expect(slow.requests().map((r) => `${r.method} ${r.status}`)).toEqual(['DELETE 200', 'GET 404']);
      expect(await store.get('settling')).toBeNull();
      // A set that races the deletion waits for it (409 ObjectIsBeingDeleted), then recovers.
      slow.clearRequests();
      const again = await store.set('settling', 'back');
      expect(again.value).toBe('back');
      const calls = slow.requests().map((r) => `${r.method} ${r.path} ${r.status}`);
      expect(calls.filter((call) => call === 'PUT /secrets/settling 409').length).toBeGreaterThan(2);
      expect(calls).toContain('POST /deletedsecrets/settling/recover 200');
    } finally {
      await slow.close();
    }
  });

  it('keeps the SDK’s challenge resource check outside emulator mode', async () => {
    const store = new KeyVaultSecretStore({ vaultUrl: vault.url, credential: new RecordingCredential(), ...fast });
    const error = await storeError(store.get('anything'));
    expect(error.message).toMatch(/does not match the requested domain/);
  });

  it('reports an unreachable vault on ping', async () => {
    const gone = await startKeyVaultFake();
    await gone.close();
    const store = new KeyVaultSecretStore({ vaultUrl: gone.url, emulator: true, ...fast, retryOptions: { maxRetries: 1, retryDelayInMs: 10 } });
    const error = await storeError(store.ping());
    expect(error.message).toMatch(/could not reach/);
  });

  it('gives up within the operation timeout', async () => {
    const store = storeFor({ operationTimeoutMs: 500 });
    await store.ping();
    vault.failNext(1, { status: 429, retryAfterSeconds: 5 });
    const started = Date.now();
    const error = await storeError(store.get('patient'));
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(error.message).toMatch(/no answer in time/);
  });
});
