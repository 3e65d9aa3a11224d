import { Buffer } from 'node:buffer';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../config.js';
import { BrokerError } from '../errors.js';
import { assertSecretInput, assertSecretName, type SecretStore, type SetSecretOptions, type StoredSecret } from './secret-store.js';

/**
 * Secrets for local runs, in one JSON file: every version AES-256-GCM encrypted under a
 * 32-byte key with a fresh 12-byte IV, its name and version bound as additional data so a
 * ciphertext moved to another name or version fails authentication instead of decrypting.
 */

export type KeySource = Buffer | (() => Promise<Buffer>);

export interface LocalSecretStoreOptions {
  file: string;
  key: KeySource;
  runningInAzure: boolean;
  /** Named in the wrong-key error, e.g. the key file path or BROKER_LOCAL_SECRETS_KEY. */
  keyDescription?: string;
  /** Older versions kept per name; only the latest is ever read, the rest bound the file's growth. */
  maxVersions?: number;
}

export const LOCAL_SECRETS_FILE = 'local-secrets.json';
export const LOCAL_KEY_FILE = 'local-secrets.key';

const FORMAT = 'mail-oauth-broker.local-secrets.v1';
const KEY_CHECK_AAD = `${FORMAT}\nkey-check`;
const KEY_CHECK_PLAINTEXT = 'mail-oauth-broker key check';

const sealedSchema = z.object({ iv: z.string(), tag: z.string(), data: z.string() });
const versionSchema = sealedSchema.extend({ version: z.string() });
const fileSchema = z.object({
  format: z.literal(FORMAT),
  keyCheck: sealedSchema,
  secrets: z.record(z.string(), z.array(versionSchema)),
});
type SecretsFile = z.infer<typeof fileSchema>;
type Sealed = z.infer<typeof sealedSchema>;

const payloadSchema = z.object({
  value: z.string(),
  createdOn: z.number(),
  expiresOn: z.number().nullable(),
  contentType: z.string().nullable(),
  tags: z.record(z.string(), z.string()),
});

export class LocalEncryptedSecretStore implements SecretStore {
  private readonly file: string;
  private readonly keySource: KeySource;
  private readonly keyDescription: string;
  private readonly maxVersions: number;
  private key: Promise<Buffer> | undefined;
  private writes: Promise<unknown> = Promise.resolve();

  constructor(options: LocalSecretStoreOptions) {
    if (options.runningInAzure) {
      throw new ConfigError('BROKER_KEY_VAULT_URL', 'is required in Azure: the local encrypted secret store refuses to run there');
    }
    this.file = options.file;
    this.keySource = options.key;
    this.keyDescription = options.keyDescription ?? 'the configured key';
    this.maxVersions = options.maxVersions ?? 5;
  }

  async set(name: string, value: string, options: SetSecretOptions = {}): Promise<StoredSecret> {
    assertSecretInput(name, value, options);
    return this.exclusive(async () => {
      const key = await this.loadKey();
      const contents = (await this.read(key)) ?? { format: FORMAT, keyCheck: seal(key, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD), secrets: {} };
      const version = randomBytes(16).toString('hex');
      // Whole seconds, as Key Vault keeps them, so both adapters answer alike.
      const payload: z.infer<typeof payloadSchema> = {
        value,
        createdOn: wholeSeconds(Date.now()),
        expiresOn: options.expiresOn ? wholeSeconds(options.expiresOn.getTime()) : null,
        contentType: options.contentType ?? null,
        tags: { ...options.tags },
      };
      const entry = entryKey(name);
      const versions = [...(versionsOf(contents, entry) ?? []), { version, ...seal(key, JSON.stringify(payload), aad(entry, version)) }];
      contents.secrets[entry] = versions.slice(-this.maxVersions);
      await this.write(contents);
      return toStoredSecret(name, version, payload);
    });
  }

  async get(name: string): Promise<StoredSecret | null> {
    assertSecretName(name);
    const key = await this.loadKey();
    const entry = entryKey(name);
    const contents = await this.read(key);
    const latest = contents ? versionsOf(contents, entry)?.at(-1) : undefined;
    if (!latest) return null;
    let payload: z.infer<typeof payloadSchema>;
    try {
      payload = payloadSchema.parse(JSON.parse(open(key, latest, aad(entry, latest.version))));
    } catch (error) {
      throw new BrokerError('SECRET_STORE_UNAVAILABLE', `Secret "${name}" in ${this.file} failed authentication: the file was modified or damaged`, {
        cause: error,
      });
    }
    return toStoredSecret(name, latest.version, payload);
  }

  async delete(name: string): Promise<void> {
    assertSecretName(name);
    await this.exclusive(async () => {
      const contents = await this.read(await this.loadKey());
      const entry = entryKey(name);
      if (!contents || !versionsOf(contents, entry)) return;
      delete contents.secrets[entry];
      await this.write(contents);
    });
  }

  /** Proves the key opens the file (a wrong key shows up in readiness, not at the first login). */
  async ping(): Promise<void> {
    await this.read(await this.loadKey());
  }

  private loadKey(): Promise<Buffer> {
    this.key ??= (async () => {
      const key = typeof this.keySource === 'function' ? await this.keySource() : this.keySource;
      if (key.length !== 32) throw new BrokerError('SECRET_STORE_UNAVAILABLE', `The local secrets key must be 32 bytes, ${this.keyDescription} has ${key.length}`);
      return key;
    })();
    // A failed load (unreadable key file) is retried next call rather than remembered.
    this.key.catch(() => (this.key = undefined));
    return this.key;
  }

  private async read(key: Buffer): Promise<SecretsFile | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new BrokerError('SECRET_STORE_UNAVAILABLE', `Cannot read the local secret file ${this.file}`, { cause: error });
    }
    let contents: SecretsFile;
    try {
      contents = fileSchema.parse(JSON.parse(text));
    } catch (error) {
      throw new BrokerError('SECRET_STORE_UNAVAILABLE', `${this.file} is not a local secret file of this broker version`, { cause: error });
    }
    try {
      if (open(key, contents.keyCheck, KEY_CHECK_AAD) !== KEY_CHECK_PLAINTEXT) throw new Error('key check mismatch');
    } catch (error) {
      throw new BrokerError(
        'SECRET_STORE_UNAVAILABLE',
        `${this.file} was encrypted with a different key than ${this.keyDescription}: restore that key, or move the file away to start empty`,
        { cause: error },
      );
    }
    return contents;
  }

  // Temp file and rename: a crash mid-write leaves the old file whole, never half of a new one.
  private async write(contents: SecretsFile): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const temp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, `${JSON.stringify(contents, null, 1)}\n`, { mode: 0o600, flag: 'wx', flush: true });
      await rename(temp, this.file);
    } catch (error) {
      await rm(temp, { force: true });
      throw new BrokerError('SECRET_STORE_UNAVAILABLE', `Cannot write the local secret file ${this.file}`, { cause: error });
    }
  }

  // Read-modify-write of one file: two concurrent sets would otherwise lose one another's update.
  private exclusive<T>(action: () => Promise<T>): Promise<T> {
    const result = this.writes.then(action, action);
    this.writes = result.catch(() => undefined);
    return result;
  }
}

/**
 * The embedded default: `<dataDir>/local-secrets.json`, encrypted with `key` when configured
 * (BROKER_LOCAL_SECRETS_KEY), else with `<dataDir>/local-secrets.key`, generated on first use.
 * Does no I/O until the store is first used.
 */
export function createLocalSecretStore(options: { dataDir: string; key: Buffer | null; runningInAzure: boolean }): LocalEncryptedSecretStore {
  const keyFile = join(options.dataDir, LOCAL_KEY_FILE);
  return new LocalEncryptedSecretStore({
    file: join(options.dataDir, LOCAL_SECRETS_FILE),
    key: options.key ?? (() => loadOrCreateKeyFile(keyFile)),
    keyDescription: options.key ? 'BROKER_LOCAL_SECRETS_KEY' : keyFile,
    runningInAzure: options.runningInAzure,
  });
}

/** Reads the base64 key in `path`, creating it (mode 0600) when missing. */
export async function loadOrCreateKeyFile(path: string): Promise<Buffer> {
  const existing = await readKeyFile(path);
  if (existing) return existing;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    // link() publishes the complete file or fails if another process got there first; then use theirs.
    await link(temp, path);
    await chmod(path, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await rm(temp, { force: true });
  }
  const created = await readKeyFile(path);
  if (!created) throw new Error(`Could not create the local secrets key ${path}`);
  return created;
}

async function readKeyFile(path: string): Promise<Buffer | null> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const key = Buffer.from(text, 'base64');
  if (key.length !== 32 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
    throw new BrokerError('SECRET_STORE_UNAVAILABLE', `${path} must hold 32 bytes in base64; it does not`);
  }
  return key;
}

// Key Vault names are case-insensitive; so are these, or a local run would hide a clash.
function entryKey(name: string): string {
  return name.toLowerCase();
}

// Own properties only: "constructor" and "toString" are valid secret names.
function versionsOf(contents: SecretsFile, entry: string): SecretsFile['secrets'][string] | undefined {
  return Object.hasOwn(contents.secrets, entry) ? contents.secrets[entry] : undefined;
}

function aad(name: string, version: string): string {
  return `${FORMAT}\n${name}\n${version}`;
}

function seal(key: Buffer, plaintext: string, associatedData: string): Sealed {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(associatedData, 'utf8'));
  const data = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

function open(key: Buffer, sealed: Sealed, associatedData: string): string {
  const iv = Buffer.from(sealed.iv, 'base64');
  const tag = Buffer.from(sealed.tag, 'base64');
  if (iv.length !== 12 || tag.length !== 16) throw new Error('malformed IV or authentication tag');
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  decipher.setAAD(Buffer.from(associatedData, 'utf8'));
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(Buffer.from(sealed.data, 'base64')), decipher.final()]).toString('utf8');
}

function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

function toStoredSecret(name: string, version: string, payload: z.infer<typeof payloadSchema>): StoredSecret {
  return {
    name,
    value: payload.value,
    version,
    expiresOn: payload.expiresOn === null ? null : new Date(payload.expiresOn),
    createdOn: new Date(payload.createdOn),
    tags: { ...payload.tags },
  };
}
