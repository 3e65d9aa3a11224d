import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../shared/config.js';
import {
  createLocalSecretStore,
  LOCAL_KEY_FILE,
  LOCAL_SECRETS_FILE,
  LocalEncryptedSecretStore,
} from '../../../shared/secrets/local-store.js';
import { defineSecretStoreContract, storeError } from './secret-store.contract.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'local-secrets-'));
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const local = (dataDir: string, key: Buffer | null = null) => createLocalSecretStore({ dataDir, key, runningInAzure: false });

defineSecretStoreContract('local encrypted file', async () => ({ store: local(await tempDir()) }));

describe('LocalEncryptedSecretStore', () => {
  it('writes no plaintext value or tag, and keeps file and key at mode 0600', async () => {
    const dir = await tempDir();
    const value = `refresh-${randomBytes(12).toString('hex')}`;
    await local(dir).set('conn-abc-refresh-token', value, { tags: { mailbox: 'someone@contoso.example' } });
    const file = await readFile(join(dir, LOCAL_SECRETS_FILE));
    for (const needle of [value, Buffer.from(value).toString('base64'), 'someone@contoso.example']) {
      expect(file.includes(needle)).toBe(false);
    }
    for (const name of [LOCAL_SECRETS_FILE, LOCAL_KEY_FILE]) {
      expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
    }
    expect((await readdir(dir)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('generates the key once and reads the same secrets in a new instance', async () => {
    const dir = await tempDir();
    await local(dir).set('persisted', 'survives restarts');
    const key = await readFile(join(dir, LOCAL_KEY_FILE), 'utf8');
    expect(Buffer.from(key.trim(), 'base64')).toHaveLength(32);
    expect((await local(dir).get('persisted'))?.value).toBe('survives restarts');
    expect(await readFile(join(dir, LOCAL_KEY_FILE), 'utf8')).toBe(key);
  });

  it('uses a configured key instead of a key file', async () => {
    const dir = await tempDir();
    const key = randomBytes(32);
    await local(dir, key).set('configured', 'v');
    await expect(stat(join(dir, LOCAL_KEY_FILE))).rejects.toThrow(/ENOENT/);
    expect((await local(dir, Buffer.from(key)).get('configured'))?.value).toBe('v');
  });

  it('fails clearly, naming the key, when opened with a different key', async () => {
    const dir = await tempDir();
    await local(dir, randomBytes(32)).set('guarded', 'v');
    const other = local(dir, randomBytes(32));
    const error = await storeError(other.get('guarded'));
    expect(error.message).toMatch(/encrypted with a different key than BROKER_LOCAL_SECRETS_KEY/);
    await storeError(other.ping());
    await storeError(other.set('another', 'v'));
  });

  it('detects a modified ciphertext', async () => {
    const dir = await tempDir();
    await local(dir).set('tampered', 'original');
    const path = join(dir, LOCAL_SECRETS_FILE);
    const contents = JSON.parse(await readFile(path, 'utf8')) as { secrets: Record<string, { data: string }[]> };
    const data = Buffer.from(contents.secrets.tampered![0]!.data, 'base64');
    data[0] = data[0]! ^ 1;
    contents.secrets.tampered![0]!.data = data.toString('base64');
    await writeFile(path, JSON.stringify(contents));
    const error = await storeError(local(dir).get('tampered'));
    expect(error.message).toMatch(/"tampered" .* failed authentication/);
  });

  it('detects a ciphertext moved to another name', async () => {
    const dir = await tempDir();
    const store = local(dir);
    await store.set('victim', 'victim value');
    await store.set('attacker', 'attacker value');
    const path = join(dir, LOCAL_SECRETS_FILE);
    const contents = JSON.parse(await readFile(path, 'utf8')) as { secrets: Record<string, unknown> };
    contents.secrets.victim = contents.secrets.attacker;
    await writeFile(path, JSON.stringify(contents));
    await storeError(local(dir).get('victim'));
    expect((await local(dir).get('attacker'))?.value).toBe('attacker value');
  });

  it('refuses a file that is not its own format, and a malformed key file', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, LOCAL_SECRETS_FILE), '{"some":"thing"}');
    expect((await storeError(local(dir).get('x'))).message).toMatch(/not a local secret file/);
    const other = await tempDir();
    await writeFile(join(other, LOCAL_KEY_FILE), 'too-short\n');
    expect((await storeError(local(other).get('x'))).message).toMatch(/must hold 32 bytes/);
  });

  it('keeps a bounded number of old versions', async () => {
    const dir = await tempDir();
    const store = new LocalEncryptedSecretStore({ file: join(dir, 'bounded.json'), key: randomBytes(32), runningInAzure: false, maxVersions: 3 });
    for (let i = 0; i < 6; i += 1) await store.set('rotating', `v${i}`);
    const contents = JSON.parse(await readFile(join(dir, 'bounded.json'), 'utf8')) as { secrets: Record<string, unknown[]> };
    expect(contents.secrets.rotating).toHaveLength(3);
    expect((await store.get('rotating'))?.value).toBe('v5');
  });

  it('stores names that are also Object.prototype members', async () => {
    const store = local(await tempDir());
    expect(await store.get('constructor')).toBeNull();
    await store.set('toString', 'v');
    expect((await store.get('toString'))?.value).toBe('v');
  });

  it('refuses to run in Azure', () => {
    expect(() => createLocalSecretStore({ dataDir: '/tmp/never-used', key: null, runningInAzure: true })).toThrow(ConfigError);
    expect(() => new LocalEncryptedSecretStore({ file: '/tmp/never-used', key: randomBytes(32), runningInAzure: true })).toThrow(
      /BROKER_KEY_VAULT_URL: is required in Azure/,
    );
  });
});
