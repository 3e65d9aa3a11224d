import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrokerError } from '../../../shared/errors.js';
import { MAX_SECRET_VALUE_BYTES, type SecretStore } from '../../../shared/secrets/secret-store.js';

export interface ContractSubject {
  store: SecretStore;
  close?: () => Promise<void>;
}

/**
 * What every SecretStore adapter promises, whatever it stores in. Each test uses fresh
 * names, so one store instance serves the whole suite.
 */
export function defineSecretStoreContract(label: string, open: () => Promise<ContractSubject>): void {
  describe(`SecretStore contract: ${label}`, () => {
    let subject: ContractSubject;
    const store = () => subject.store;
    const fresh = (what = 'secret') => `${what}-${randomBytes(6).toString('hex')}`;

    beforeAll(async () => {
      subject = await open();
    });
    afterAll(async () => {
      await subject?.close?.();
    });

    it('answers null for a name never set', async () => {
      expect(await store().get(fresh())).toBeNull();
    });

    it('returns what was set, and get returns the same', async () => {
      const name = fresh();
      const before = Date.now();
      const stored = await store().set(name, 'refresh-token-value');
      expect(stored).toMatchObject({ name, value: 'refresh-token-value', expiresOn: null, tags: {} });
      expect(stored.version).toMatch(/^\S+$/);
      expect(stored.createdOn.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
      expect(stored.createdOn.getTime()).toBeLessThanOrEqual(Date.now());
      expect(await store().get(name)).toEqual(stored);
    });

    it('creates a new version on every set and reads the latest', async () => {
      const name = fresh();
      const first = await store().set(name, 'one');
      const second = await store().set(name, 'two');
      expect(second.version).not.toBe(first.version);
      expect(await store().get(name)).toMatchObject({ value: 'two', version: second.version });
    });

    it('keeps expiry (in whole seconds, as Key Vault does) and tags', async () => {
      const name = fresh();
      const expiresOn = new Date(Date.UTC(2031, 4, 6, 7, 8, 9, 999));
      const tags = { purpose: 'client-secret', app: 'app_abc' };
      await store().set(name, 'v', { expiresOn, tags, contentType: 'text/plain' });
      const read = await store().get(name);
      expect(read?.expiresOn?.toISOString()).toBe('2031-05-06T07:08:09.000Z');
      expect(read?.tags).toEqual(tags);
    });

    it('round-trips any text up to the 25 KB limit and refuses more', async () => {
      const name = fresh();
      const unicode = 'ümlaut ✓ 𝄞 \u0000 "quoted" \\ \n';
      await store().set(name, unicode);
      expect((await store().get(name))?.value).toBe(unicode);
      const largest = 'x'.repeat(MAX_SECRET_VALUE_BYTES);
      await store().set(name, largest);
      expect((await store().get(name))?.value).toBe(largest);
      await expect(store().set(name, `${largest}x`)).rejects.toThrow(TypeError);
      expect((await store().get(name))?.value).toBe(largest);
    });

    it('treats names case-insensitively, as Key Vault does', async () => {
      const name = fresh('Mixed-Case');
      await store().set(name, 'v1');
      expect((await store().get(name.toLowerCase()))?.value).toBe('v1');
    });

    it('deletes, after which get answers null', async () => {
      const name = fresh();
      await store().set(name, 'doomed');
      await store().delete(name);
      expect(await store().get(name)).toBeNull();
    });

    it('does not mind deleting a missing name, or deleting twice', async () => {
      const name = fresh();
      await store().delete(name);
      await store().set(name, 'v');
      await store().delete(name);
      await store().delete(name);
      expect(await store().get(name)).toBeNull();
    });

    it('sets a name again after deleting it', async () => {
      const name = fresh();
      await store().set(name, 'before', { tags: { generation: '1' } });
      await store().delete(name);
      const again = await store().set(name, 'after', { tags: { generation: '2' } });
      expect(again).toMatchObject({ value: 'after', tags: { generation: '2' } });
      expect(await store().get(name)).toMatchObject({ value: 'after', version: again.version });
    });

    it('refuses invalid names before touching storage', async () => {
      for (const bad of ['', 'has_underscore', 'has space', '1starts-with-digit', 'x'.repeat(128), '../escape']) {
        await expect(store().set(bad, 'v')).rejects.toThrow(TypeError);
        await expect(store().get(bad)).rejects.toThrow(TypeError);
        await expect(store().delete(bad)).rejects.toThrow(TypeError);
      }
    });

    it('refuses expiry dates the Key Vault SDK cannot encode, and more than 15 tags', async () => {
      await expect(store().set(fresh(), 'v', { expiresOn: new Date('2038-01-20T00:00:00Z') })).rejects.toThrow(TypeError);
      await expect(store().set(fresh(), 'v', { expiresOn: new Date(Number.NaN) })).rejects.toThrow(TypeError);
      const tags = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`t${i}`, 'v']));
      await expect(store().set(fresh(), 'v', { tags })).rejects.toThrow(TypeError);
    });

    it('keeps every one of many concurrent writes', async () => {
      const names = Array.from({ length: 12 }, () => fresh('parallel'));
      await Promise.all(names.map((name, i) => store().set(name, `value-${i}`)));
      const read = await Promise.all(names.map((name) => store().get(name)));
      expect(read.map((secret) => secret?.value)).toEqual(names.map((_, i) => `value-${i}`));
    });

    it('answers ping', async () => {
      await expect(store().ping()).resolves.toBeUndefined();
    });
  });
}

/** The error a store call failed with, checked to be the store's own typed one. */
export async function storeError(promise: Promise<unknown>): Promise<BrokerError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(BrokerError);
  expect((error as BrokerError).code).toBe('SECRET_STORE_UNAVAILABLE');
  return error as BrokerError;
}
