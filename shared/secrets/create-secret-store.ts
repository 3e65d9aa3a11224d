import type { TokenCredential } from '@azure/identity';
import type { Config } from '../config.js';
import type { KeyVaultSecretStoreOptions } from './key-vault-store.js';
import { createLocalSecretStore } from './local-store.js';
import type { SecretStore, SetSecretOptions, StoredSecret } from './secret-store.js';

/**
 * Key Vault when BROKER_KEY_VAULT_URL is set, else the local encrypted file (which refuses to
 * run in Azure). Builds nothing that does I/O; `credential` is called only on the first
 * request to a real vault, never for an emulator, which takes a placeholder token.
 */
export function createSecretStore(config: Config, credential: () => TokenCredential): SecretStore {
  if (config.keyVault) {
    return keyVaultSecretStoreOnFirstUse({
      vaultUrl: config.keyVault.url,
      emulator: config.keyVault.emulator,
      ...(config.keyVault.emulator ? {} : { credential }),
    });
  }
  return createLocalSecretStore({ dataDir: config.localDataDir, key: config.localSecretsKey, runningInAzure: config.runningInAzure });
}

/**
 * The Key Vault store behind a first-use `import()`: @azure/keyvault-secrets and the Azure
 * core pipeline it brings are loaded when a secret is first read or written, not when the
 * app starts. A token served from memory never gets here.
 */
function keyVaultSecretStoreOnFirstUse(options: KeyVaultSecretStoreOptions): DeferredSecretStore {
  return new DeferredSecretStore(async () => {
    const { KeyVaultSecretStore } = await import('./key-vault-store.js');
    return new KeyVaultSecretStore(options);
  });
}

/** A secret store created by `load` on its first call; every later call shares that one. */
export class DeferredSecretStore implements SecretStore {
  private store: Promise<SecretStore> | undefined;

  constructor(private readonly load: () => Promise<SecretStore>) {}

  /** Whether the real store has been asked for yet; tests check that start-up did not. */
  get loaded(): boolean {
    return this.store !== undefined;
  }

  async set(name: string, value: string, options?: SetSecretOptions): Promise<StoredSecret> {
    return (await this.target()).set(name, value, options);
  }

  async get(name: string): Promise<StoredSecret | null> {
    return (await this.target()).get(name);
  }

  async delete(name: string): Promise<void> {
    return (await this.target()).delete(name);
  }

  async ping(): Promise<void> {
    return (await this.target()).ping();
  }

  private target(): Promise<SecretStore> {
    return (this.store ??= this.load());
  }
}
