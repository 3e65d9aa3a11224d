/**
 * Where refresh tokens, client secrets and the data-encryption key live. Two adapters:
 * Azure Key Vault (production) and a local AES-256-GCM file store (the embedded default).
 * Both pass the same contract tests (test/shared/secrets/secret-store.contract.ts).
 */
import { Buffer } from 'node:buffer';

export interface StoredSecret {
  name: string;
  value: string;
  /** Opaque version id; a `set` always creates a new one. */
  version: string;
  /** When the secret itself stops being valid (a client secret's expiry), if known. */
  expiresOn: Date | null;
  createdOn: Date;
  tags: Record<string, string>;
}

export interface SetSecretOptions {
  expiresOn?: Date;
  contentType?: string;
  tags?: Record<string, string>;
}

export interface SecretStore {
  /** Stores a new version. A name that was deleted (soft-deleted in Key Vault) is recovered first. */
  set(name: string, value: string, options?: SetSecretOptions): Promise<StoredSecret>;
  /** The latest version, or `null` when the name does not exist (or was deleted). */
  get(name: string): Promise<StoredSecret | null>;
  /** Deletes every version; deleting a missing name is not an error. */
  delete(name: string): Promise<void>;
  /** Cheap reachability probe for readiness. */
  ping(): Promise<void>;
}

// Key Vault names: ^[0-9a-zA-Z-]{1,127}$; starting with a letter keeps every tool happy.
const SECRET_NAME = /^[A-Za-z][0-9A-Za-z-]{0,126}$/;

export function assertSecretName(name: string): void {
  if (!SECRET_NAME.test(name)) throw new TypeError(`invalid secret name: ${JSON.stringify(name)}`);
}

/** Key Vault's limit; the local store enforces it too, so a local run fails where Azure would. */
export const MAX_SECRET_VALUE_BYTES = 25 * 1024;

// The Key Vault SDK writes `exp` as `(ms / 1000) | 0`, a 32-bit integer: later dates wrap negative.
const LATEST_EXPIRY_MS = 2 ** 31 * 1000 - 1000;

/** Checks what both adapters must refuse alike, before anything is sent or written. */
export function assertSecretInput(name: string, value: string, options: SetSecretOptions = {}): void {
  assertSecretName(name);
  if (typeof value !== 'string') throw new TypeError('secret value must be a string');
  if (Buffer.byteLength(value, 'utf8') > MAX_SECRET_VALUE_BYTES) {
    throw new TypeError(`secret value for ${name} exceeds ${MAX_SECRET_VALUE_BYTES} bytes`);
  }
  const expiresOn = options.expiresOn;
  if (expiresOn !== undefined && !(expiresOn instanceof Date && expiresOn.getTime() >= 1000 && expiresOn.getTime() <= LATEST_EXPIRY_MS)) {
    throw new TypeError(`expiresOn for ${name} must be a valid date between 1970 and 2038-01-19`);
  }
  // Key Vault's tag limits: 15 tags, names up to 512 and values up to 256 characters.
  const tags = Object.entries(options.tags ?? {});
  if (tags.length > 15 || tags.some(([key, tag]) => typeof tag !== 'string' || key.length > 512 || tag.length > 256)) {
    throw new TypeError(`tags for ${name} must be at most 15 strings (names up to 512, values up to 256 characters)`);
  }
}

/**
 * Secret names derive from resource ids, which are random and never reused, so a
 * soft-deleted secret can never block a new resource.
 */
export const secretNames = {
  appClientSecret: (appId: string) => `${toNamePart(appId)}-client-secret`,
  connectionRefreshToken: (connectionId: string) => `${toNamePart(connectionId)}-refresh-token`,
  dataKey: () => 'broker-data-key',
} as const;

function toNamePart(id: string): string {
  const part = id.replaceAll('_', '-');
  assertSecretName(part);
  return part;
}
