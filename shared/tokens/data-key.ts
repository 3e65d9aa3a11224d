import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { secretNames, type SecretStore } from '../secrets/secret-store.js';

/*
 * The data-encryption key (AES-256-GCM) that protects access tokens kept in Table rows, so
 * instances can share a refreshed token without anyone who reads the table getting it. The
 * key lives in the secret store; each instance reads it once.
 */

const FORMAT = 'v1';

export class DataKey {
  private key: Promise<{ version: string; bytes: Buffer }> | undefined;

  constructor(private readonly secrets: SecretStore) {}

  private load(): Promise<{ version: string; bytes: Buffer }> {
    this.key ??= (async () => {
      const existing = await this.secrets.get(secretNames.dataKey());
      if (existing) return { version: existing.version, bytes: Buffer.from(existing.value, 'base64') };
      const created = await this.secrets.set(secretNames.dataKey(), randomBytes(32).toString('base64'), { contentType: 'data-key' });
      // Two instances may create it at once; whichever version is latest now is the one all will read.
      const latest = (await this.secrets.get(secretNames.dataKey())) ?? created;
      return { version: latest.version, bytes: Buffer.from(latest.value, 'base64') };
    })().catch((error: unknown) => {
      this.key = undefined;
      throw error;
    });
    return this.key;
  }

  /** `associated` binds the ciphertext to its row, so a value copied to another row does not decrypt. */
  async encrypt(plaintext: string, associated: string): Promise<string> {
    const { bytes } = await this.load();
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', bytes, iv);
    cipher.setAAD(Buffer.from(associated, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [FORMAT, iv.toString('base64url'), body.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  /** `null` when the value was made with another key or was tampered with: callers treat it as absent. */
  async decrypt(sealed: string, associated: string): Promise<string | null> {
    const [format, iv, body, tag] = sealed.split('.');
    if (format !== FORMAT || !iv || !body || !tag) return null;
    const { bytes } = await this.load();
    try {
      const decipher = createDecipheriv('aes-256-gcm', bytes, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(associated, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      return null;
    }
  }
}
