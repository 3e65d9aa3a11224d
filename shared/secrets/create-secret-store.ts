import type { TokenCredential } from '@azure/identity';
import type { Config } from '../config.js';
import { KeyVaultSecretStore } from './key-vault-store.js';
import { createLocalSecretStore } from './local-store.js';
import type { SecretStore } from './secret-store.js';

/**
 * Key Vault when BROKER_KEY_VAULT_URL is set, else the local encrypted file (which refuses to
 * run in Azure). Builds nothing that does I/O; `credential` is called only on the first
 * request to a real vault, never for an emulator, which takes a placeholder token.
 */
export function createSecretStore(config: Config, credential: () => TokenCredential): SecretStore {
  if (config.keyVault) {
    return new KeyVaultSecretStore({
      vaultUrl: config.keyVault.url,
      emulator: config.keyVault.emulator,
      ...(config.keyVault.emulator ? {} : { credential }),
    });
  }
  return createLocalSecretStore({ dataDir: config.localDataDir, key: config.localSecretsKey, runningInAzure: config.runningInAzure });
}
