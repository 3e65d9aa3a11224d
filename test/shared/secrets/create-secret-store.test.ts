import type { TokenCredential } from '@azure/identity';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../shared/config.js';
import { createSecretStore, DeferredSecretStore } from '../../../shared/secrets/create-secret-store.js';
import { LocalEncryptedSecretStore } from '../../../shared/secrets/local-store.js';
import { startKeyVaultFake } from '../../support/key-vault-fake.js';

const base = { BROKER_OPERATOR_KEY: 'op-key-0123456789abcdef0123456789abcdef', BROKER_TABLES_CONNECTION: 'UseDevelopmentStorage=true' };
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

function countingCredential() {
  const factory = Object.assign(
    (): TokenCredential => {
      factory.calls += 1;
      return { getToken: async () => ({ token: 't', expiresOnTimestamp: Date.now() + 3_600_000 }) };
    },
    { calls: 0 },
  );
  return factory;
}

describe('createSecretStore', () => {
  it('uses the local encrypted file without a vault, creating nothing until first use', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'create-store-'));
    dirs.push(dir);
    const credential = countingCredential();
    const store = createSecretStore(loadConfig({ ...base, BROKER_LOCAL_DATA_DIR: join(dir, 'data') }), credential);
    expect(store).toBeInstanceOf(LocalEncryptedSecretStore);
    await expect(stat(join(dir, 'data'))).rejects.toThrow(/ENOENT/);
    await store.set('first', 'v');
    expect((await store.get('first'))?.value).toBe('v');
    expect(credential.calls).toBe(0);
  });

  it('talks to an emulator with a placeholder token, never building the Azure credential', async () => {
    const vault = await startKeyVaultFake();
    try {
      const credential = countingCredential();
      const config = loadConfig({ ...base, BROKER_KEY_VAULT_URL: vault.url, BROKER_KEY_VAULT_EMULATOR: 'true' });
      const store = createSecretStore(config, credential);
      expect(store).toBeInstanceOf(DeferredSecretStore);
      expect((store as DeferredSecretStore).loaded).toBe(false);
      await store.set('emulated', 'v');
      expect((store as DeferredSecretStore).loaded).toBe(true);
      expect((await store.get('emulated'))?.value).toBe('v');
      expect(vault.liveSecretNames()).toEqual(['emulated']);
      expect(credential.calls).toBe(0);
    } finally {
      await vault.close();
    }
  });

  it('loads the Key Vault SDK and builds the Azure credential for a real vault only when a request needs them', () => {
    const credential = countingCredential();
    const store = createSecretStore(loadConfig({ ...base, BROKER_KEY_VAULT_URL: 'https://contoso.vault.azure.net' }), credential);
    expect(store).toBeInstanceOf(DeferredSecretStore);
    expect((store as DeferredSecretStore).loaded).toBe(false);
    expect(credential.calls).toBe(0);
  });
});

describe('DeferredSecretStore', () => {
  it('creates the real store once, on the first call, even when calls race', async () => {
    let loads = 0;
    const secrets = new Map<string, string>();
    const store = new DeferredSecretStore(async () => {
      loads += 1;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return {
        set: async (name, value) => {
          secrets.set(name, value);
          return { name, value, version: '1', expiresOn: null, createdOn: new Date(), tags: {} };
        },
        get: async (name) => (secrets.has(name) ? { name, value: secrets.get(name)!, version: '1', expiresOn: null, createdOn: new Date(), tags: {} } : null),
        delete: async (name) => void secrets.delete(name),
        ping: async () => undefined,
      };
    });
    expect(loads).toBe(0);
    await Promise.all([store.set('a', '1'), store.get('b'), store.ping()]);
    expect(await store.get('a')).toMatchObject({ value: '1' });
    await store.delete('a');
    expect(await store.get('a')).toBeNull();
    expect(loads).toBe(1);
  });

  it('passes a failed load on to every caller', async () => {
    const store = new DeferredSecretStore(async () => {
      throw new Error('the SDK is missing');
    });
    await expect(store.get('a')).rejects.toThrow('the SDK is missing');
    await expect(store.ping()).rejects.toThrow('the SDK is missing');
  });
});
