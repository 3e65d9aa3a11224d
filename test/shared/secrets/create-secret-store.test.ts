import type { TokenCredential } from '@azure/identity';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../shared/config.js';
import { createSecretStore } from '../../../shared/secrets/create-secret-store.js';
import { KeyVaultSecretStore } from '../../../shared/secrets/key-vault-store.js';
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
      expect(store).toBeInstanceOf(KeyVaultSecretStore);
      await store.set('emulated', 'v');
      expect(vault.liveSecretNames()).toEqual(['emulated']);
      expect(credential.calls).toBe(0);
    } finally {
      await vault.close();
    }
  });

  it('builds the Azure credential for a real vault only when a request needs a token', () => {
    const credential = countingCredential();
    const store = createSecretStore(loadConfig({ ...base, BROKER_KEY_VAULT_URL: 'https://contoso.vault.azure.net' }), credential);
    expect(store).toBeInstanceOf(KeyVaultSecretStore);
    expect(credential.calls).toBe(0);
  });
});
