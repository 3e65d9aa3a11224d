import type { AccessToken, TokenCredential } from '@azure/identity';
import { isRestError, RestError, SecretClient, type KeyVaultSecret } from '@azure/keyvault-secrets';
import { setTimeout as sleep } from 'node:timers/promises';
import { lazyDefaultAzureCredential } from '../azure-credential.js';
import { BrokerError } from '../errors.js';
import { assertSecretInput, assertSecretName, type SecretStore, type SetSecretOptions, type StoredSecret } from './secret-store.js';

export interface KeyVaultSecretStoreOptions {
  vaultUrl: string;
  /**
   * A local Key Vault-compatible server: its challenge names a resource that is not the
   * server's host, and it accepts any bearer token, so a placeholder credential is used
   * unless `credential` is given.
   */
  emulator?: boolean;
  /** A factory defers building the credential until the first request (cold starts). */
  credential?: TokenCredential | (() => TokenCredential);
  /** Passed to the SDK pipeline, which honours 429/503 `Retry-After` and backs off on 5xx. */
  retryOptions?: { maxRetries?: number; retryDelayInMs?: number; maxRetryDelayInMs?: number };
  /** Upper bound for one store call, throttling waits included. */
  operationTimeoutMs?: number;
  /** How often recovery of a soft-deleted name is polled. */
  pollIntervalMs?: number;
}

// Key Vault's Retry-After is a few seconds (limits are per 10 s); four tries ride out one window.
const DEFAULT_RETRY = { maxRetries: 4, retryDelayInMs: 500, maxRetryDelayInMs: 8_000 };
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_POLL_MS = 1_000;
// Answers 404 unless someone stores it: a GET proves reachability, auth and RBAC for one read.
const PROBE_NAME = 'broker-readiness-probe';

/** What the placeholder credential hands a local Key Vault-compatible server. */
export const EMULATOR_TOKEN = 'local-key-vault-emulator';

const emulatorCredential: TokenCredential = {
  getToken: async (): Promise<AccessToken> => ({ token: EMULATOR_TOKEN, expiresOnTimestamp: Date.now() + 60 * 60 * 1000 }),
};

/** Azure Key Vault through the official SDK. Secret values never reach messages or logs. */
export class KeyVaultSecretStore implements SecretStore {
  private readonly client: SecretClient;
  private readonly timeoutMs: number;
  private readonly pollMs: number;

  constructor(options: KeyVaultSecretStoreOptions) {
    const credential = lazyCredential(options.credential ?? (options.emulator ? emulatorCredential : lazyDefaultAzureCredential));
    this.client = new SecretClient(options.vaultUrl, credential, {
      disableChallengeResourceVerification: options.emulator === true,
      retryOptions: { ...DEFAULT_RETRY, ...options.retryOptions },
    });
    this.timeoutMs = options.operationTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
  }

  async set(name: string, value: string, options: SetSecretOptions = {}): Promise<StoredSecret> {
    assertSecretInput(name, value, options);
    const abortSignal = AbortSignal.timeout(this.timeoutMs);
    const request = { expiresOn: options.expiresOn, contentType: options.contentType, tags: options.tags, abortSignal };
    for (let recoveries = 0; ; ) {
      try {
        return toStoredSecret(await this.client.setSecret(name, value, request), value);
      } catch (error) {
        const inner = innerErrorCode(error);
        // Soft delete keeps the name: it must be recovered (with its old versions) before a new version.
        if (inner === 'ObjectIsDeletedButRecoverable' && recoveries < 3) {
          recoveries += 1;
          await this.recover(name, abortSignal);
        } else if (inner === 'ObjectIsBeingDeleted' && !abortSignal.aborted) {
          // Deletion finishes on the service's side a few seconds after DELETE answered.
          await sleep(this.pollMs, undefined, { signal: abortSignal }).catch(() => undefined);
        } else {
          throw failure('set', name, error);
        }
      }
    }
  }

  async get(name: string): Promise<StoredSecret | null> {
    assertSecretName(name);
    try {
      return toStoredSecret(await this.client.getSecret(name, { abortSignal: AbortSignal.timeout(this.timeoutMs) }));
    } catch (error) {
      if (statusOf(error) === 404) return null;
      throw failure('get', name, error);
    }
  }

  /**
   * Sends the DELETE and returns without waiting for the soft delete to settle (seconds of
   * polling); a `set` that races it waits then, which is rare since names are never reused.
   */
  async delete(name: string): Promise<void> {
    assertSecretName(name);
    try {
      await this.client.beginDeleteSecret(name, { abortSignal: AbortSignal.timeout(this.timeoutMs) });
    } catch (error) {
      if (statusOf(error) === 404) return;
      throw failure('delete', name, error);
    }
  }

  async ping(): Promise<void> {
    try {
      await this.client.getSecret(PROBE_NAME, { abortSignal: AbortSignal.timeout(this.timeoutMs) });
    } catch (error) {
      if (statusOf(error) !== 404) throw failure('reach', PROBE_NAME, error);
    }
  }

  private async recover(name: string, abortSignal: AbortSignal): Promise<void> {
    try {
      const poller = await this.client.beginRecoverDeletedSecret(name, { abortSignal, intervalInMs: this.pollMs });
      // Polled by hand: the SDK's pollUntilDone has no deadline while the name still answers 404.
      while (!poller.isDone()) {
        await sleep(this.pollMs, undefined, { signal: abortSignal });
        await poller.poll({ abortSignal });
      }
    } catch (error) {
      // Someone else recovered (404 now) or the deletion is still settling (409): set again decides.
      const status = statusOf(error);
      if (status === 404 || status === 409) return;
      throw failure('recover', name, error);
    }
  }
}

function lazyCredential(source: TokenCredential | (() => TokenCredential)): TokenCredential {
  if (typeof source !== 'function') return source;
  let credential: TokenCredential | undefined;
  return { getToken: (scopes, options) => (credential ??= source()).getToken(scopes, options) };
}

function toStoredSecret(secret: KeyVaultSecret, sentValue?: string): StoredSecret {
  const { properties } = secret;
  const value = secret.value ?? sentValue;
  if (value === undefined || properties.version === undefined) {
    throw new BrokerError('SECRET_STORE_UNAVAILABLE', `Key Vault answered without a value or version for secret "${secret.name}"`);
  }
  return {
    name: secret.name,
    value,
    version: properties.version,
    expiresOn: properties.expiresOn ?? null,
    createdOn: properties.createdOn ?? new Date(),
    tags: { ...properties.tags },
  };
}

function statusOf(error: unknown): number | undefined {
  return isRestError(error) ? error.statusCode : undefined;
}

interface KeyVaultErrorDetails {
  error?: { code?: string; message?: string; innerError?: { code?: string } };
}

// The SDK parses Key Vault's `innererror` into `details.error.innerError`; `code` is only the outer one.
function innerErrorCode(error: unknown): string | undefined {
  if (!isRestError(error)) return undefined;
  return (error.details as KeyVaultErrorDetails | undefined)?.error?.innerError?.code;
}


function failure(operation: string, name: string, error: unknown): BrokerError {
  const what = `Key Vault could not ${operation} secret "${name}"`;
  if (isRestError(error)) {
    const inner = innerErrorCode(error);
    const code = [error.code, inner].filter(Boolean).join('/');
    const retryAfter = Number(error.response?.headers.get('retry-after'));
    // A copy without request and response: the request of a failed set carries the secret value.
    const cause = new RestError(error.message, { code: error.code, statusCode: error.statusCode });
    cause.details = error.details;
    return new BrokerError('SECRET_STORE_UNAVAILABLE', `${what}: ${error.statusCode ?? 'no response'} ${code} ${error.message}`.trim(), {
      cause,
      ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterSeconds: Math.ceil(retryAfter) } : {}),
    });
  }
  if (error instanceof Error && error.name === 'AbortError') {
    return new BrokerError('SECRET_STORE_UNAVAILABLE', `${what}: no answer in time`, { cause: error });
  }
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new BrokerError('SECRET_STORE_UNAVAILABLE', `${what}: ${message}`, { cause: error });
}
