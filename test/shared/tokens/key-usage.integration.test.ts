import { randomBytes } from 'node:crypto';
import { RestError, TableClient } from '@azure/data-tables';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startAzuriteTables, type AzuriteTables } from '../../../infra/local/azurite.js';
import type { Clock } from '../../../shared/clock.js';
import { EntityTable } from '../../../shared/storage/entity-table.js';
import { tenantKeyCodec, type TenantKeyRecord } from '../../../shared/storage/records.js';
import { KeyUsage, type KeyUsageTableClient } from '../../../shared/tokens/key-usage.js';

/* lastUsedAt of tenant keys: a throttled Merge against real Azurite. */

let azurite: AzuriteTables;
let client: TableClient;
let keys: EntityTable<TenantKeyRecord>;

beforeAll(async () => {
  azurite = await startAzuriteTables();
});

afterAll(async () => {
  await azurite?.stop();
});

beforeEach(async () => {
  client = TableClient.fromConnectionString(azurite.connectionString, `tenantkeys${randomBytes(6).toString('hex')}`, {
    allowInsecureConnection: true,
  });
  keys = new EntityTable(client, tenantKeyCodec);
  await keys.insert(makeKey());
});

function makeKey(overrides: Partial<TenantKeyRecord> = {}): TenantKeyRecord {
  return {
    id: 'key_a',
    tenantId: 'tnt_a',
    prefix: 'mob_abcd',
    hash: 'sha256-of-the-key',
    createdAt: '2025-01-01T00:00:00.000Z',
    lastUsedAt: null,
    ...overrides,
  };
}

function fakeClock(iso = '2025-03-01T12:00:00.000Z') {
  let now = Date.parse(iso);
  return {
    now: () => new Date(now),
    advance(ms: number) {
      now += ms;
    },
  } satisfies Clock & { advance(ms: number): void };
}

/** Counts the writes that reach Azurite. */
function counting(inner: KeyUsageTableClient) {
  const table = {
    writes: 0,
    updateEntity: ((...args: Parameters<KeyUsageTableClient['updateEntity']>) => {
      table.writes += 1;
      return inner.updateEntity(...args);
    }) as KeyUsageTableClient['updateEntity'],
  };
  return table;
}

function keyUsage(table: KeyUsageTableClient, clock: Clock, intervalMinutes?: number) {
  const errors: { message: string; error: unknown }[] = [];
  const usage = new KeyUsage({ table, clock, onError: (message, error) => errors.push({ message, error }), ...(intervalMinutes ? { intervalMinutes } : {}) });
  return { usage, errors };
}

async function lastUsedAt(tenantId = 'tnt_a', keyId = 'key_a'): Promise<string | null | undefined> {
  return (await keys.get(tenantId, keyId))?.value.lastUsedAt;
}

describe('KeyUsage', () => {
  it('writes on the first use, not again within the interval, and again after it', async () => {
    const clock = fakeClock();
    const table = counting(client);
    const { usage, errors } = keyUsage(table, clock);

    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(await lastUsedAt()).toBe('2025-03-01T12:00:00.000Z');
    expect(table.writes).toBe(1);

    clock.advance(4 * 60_000 + 59_000);
    usage.touch('tnt_a', 'key_a');
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(table.writes).toBe(1);
    expect(await lastUsedAt()).toBe('2025-03-01T12:00:00.000Z');

    clock.advance(1_000);
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(table.writes).toBe(2);
    expect(await lastUsedAt()).toBe('2025-03-01T12:05:00.000Z');
    expect(errors).toEqual([]);
  });

  it('changes only lastUsedAt on the key row', async () => {
    const { usage } = keyUsage(client, fakeClock());
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect((await keys.get('tnt_a', 'key_a'))?.value).toEqual(makeKey({ lastUsedAt: '2025-03-01T12:00:00.000Z' }));
  });

  it('throttles each key on its own, with a configurable interval', async () => {
    await keys.insert(makeKey({ id: 'key_b' }));
    const clock = fakeClock();
    const table = counting(client);
    const { usage } = keyUsage(table, clock, 1);
    usage.touch('tnt_a', 'key_a');
    usage.touch('tnt_a', 'key_b');
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(table.writes).toBe(2);
    clock.advance(60_000);
    usage.touch('tnt_a', 'key_b');
    await usage.idle();
    expect(table.writes).toBe(3);
    expect(await lastUsedAt('tnt_a', 'key_b')).toBe('2025-03-01T12:01:00.000Z');
    expect(await lastUsedAt('tnt_a', 'key_a')).toBe('2025-03-01T12:00:00.000Z');
  });

  it('neither throws nor creates a row for an unknown or revoked key', async () => {
    const { usage, errors } = keyUsage(client, fakeClock());
    expect(() => usage.touch('tnt_a', 'key_unknown')).not.toThrow();
    expect(() => usage.touch('tnt_unknown', 'key_a')).not.toThrow();
    await usage.idle();
    expect(await keys.get('tnt_a', 'key_unknown')).toBeNull();
    expect(await keys.get('tnt_unknown', 'key_a')).toBeNull();
    expect(errors).toEqual([]);
  });

  it('does not throw when the table itself does not exist', async () => {
    const missing = TableClient.fromConnectionString(azurite.connectionString, 'nosuchtable', { allowInsecureConnection: true });
    const { usage, errors } = keyUsage(missing, fakeClock());
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(errors).toEqual([]);
  });

  it('reports storage failures to the log callback, never to the caller, and retries after the interval', async () => {
    const clock = fakeClock();
    let failing = true;
    const table: KeyUsageTableClient = {
      updateEntity: (async (...args: Parameters<KeyUsageTableClient['updateEntity']>) => {
        if (failing) throw new RestError('Service Unavailable', { statusCode: 503 });
        return client.updateEntity(...args);
      }) as KeyUsageTableClient['updateEntity'],
    };
    const { usage, errors } = keyUsage(table, clock);
    expect(() => usage.touch('tnt_a', 'key_a')).not.toThrow();
    await usage.idle();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/last used/);

    // Within the interval a failing store is not hammered by every request.
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(errors).toHaveLength(1);

    failing = false;
    clock.advance(5 * 60_000);
    usage.touch('tnt_a', 'key_a');
    await usage.idle();
    expect(await lastUsedAt()).toBe('2025-03-01T12:05:00.000Z');
  });

  it('survives a log callback that throws', async () => {
    const table: KeyUsageTableClient = {
      updateEntity: (async () => {
        throw new Error('boom');
      }) as KeyUsageTableClient['updateEntity'],
    };
    const usage = new KeyUsage({
      table,
      clock: fakeClock(),
      onError: () => {
        throw new Error('logger down');
      },
    });
    usage.touch('tnt_a', 'key_a');
    await expect(usage.idle()).resolves.toBeUndefined();
  });

  it('remembers at most maxKeys keys', async () => {
    const clock = fakeClock();
    const writes: string[] = [];
    const table: KeyUsageTableClient = {
      updateEntity: (async (entity: { rowKey?: string }) => {
        writes.push(entity.rowKey ?? '');
        return {};
      }) as unknown as KeyUsageTableClient['updateEntity'],
    };
    const usage = new KeyUsage({ table, clock, maxKeys: 10, onError: () => {} });
    for (let i = 0; i < 100; i += 1) usage.touch('tnt_a', `key_${i}`);
    await usage.idle();
    expect(writes).toHaveLength(100);
    // key_99 is still remembered; key_0 was forgotten, so it costs one extra write.
    usage.touch('tnt_a', 'key_99');
    usage.touch('tnt_a', 'key_0');
    await usage.idle();
    expect(writes.slice(100)).toEqual(['key_0']);
  });
});
