import { randomBytes } from 'node:crypto';
import { RestError, TableClient, type TransactionAction } from '@azure/data-tables';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAzuriteTables, type AzuriteTables } from '../../../infra/local/azurite.js';
import type { Clock } from '../../../shared/clock.js';
import { EntityTable } from '../../../shared/storage/entity-table.js';
import {
  AuditLog,
  auditEventCodec,
  auditRetentionCutoff,
  purgeAuditEvents,
  type AuditEvent,
  type AuditEventRecord,
  type AuditLogOptions,
  type AuditTableClient,
} from '../../../shared/tokens/audit-log.js';

/* The audit log against real Azurite: batched transactions, overflow, failures, retention. */

let azurite: AzuriteTables;
const logs: AuditLog[] = [];

beforeAll(async () => {
  azurite = await startAzuriteTables();
});

afterEach(async () => {
  await Promise.all(logs.splice(0).map((log) => log.close()));
});

afterAll(async () => {
  await azurite?.stop();
});

function fakeClock(iso = '2025-03-01T12:00:00.000Z') {
  let now = Date.parse(iso);
  return {
    now: () => new Date(now),
    set(at: string) {
      now = Date.parse(at);
    },
  } satisfies Clock & { set(at: string): void };
}

function newTable(): TableClient {
  return TableClient.fromConnectionString(azurite.connectionString, `audit${randomBytes(6).toString('hex')}`, {
    allowInsecureConnection: true,
  });
}

/** Passes through to Azurite, recording every transaction and failing on demand. */
class RecordingTable implements AuditTableClient {
  readonly transactions: TransactionAction[][] = [];
  failWith: Error | null = null;
  constructor(readonly client: TableClient) {}
  createTable: AuditTableClient['createTable'] = (options) => this.client.createTable(options);
  listEntities: AuditTableClient['listEntities'] = (options) => this.client.listEntities(options);
  submitTransaction: AuditTableClient['submitTransaction'] = async (actions, options) => {
    if (this.failWith) throw this.failWith;
    this.transactions.push(actions);
    return this.client.submitTransaction(actions, options);
  };
}

function auditLog(options: Partial<AuditLogOptions> & Pick<AuditLogOptions, 'table'>) {
  const errors: { message: string; error: unknown }[] = [];
  const log = new AuditLog({
    clock: fakeClock(),
    flushIntervalMs: 60_000,
    onError: (message, error) => errors.push({ message, error }),
    ...options,
  });
  logs.push(log);
  return { log, errors };
}

async function rows(client: TableClient): Promise<Record<string, unknown>[]> {
  const all: Record<string, unknown>[] = [];
  for await (const entity of client.listEntities<Record<string, unknown>>()) all.push(entity);
  return all;
}

async function records(client: TableClient): Promise<AuditEventRecord[]> {
  const all: AuditEventRecord[] = [];
  for await (const row of new EntityTable(client, auditEventCodec).scan()) all.push(row.value);
  return all;
}

const event = (overrides: Partial<AuditEvent> = {}): AuditEvent => ({
  tenantId: 'tnt_a',
  keyId: 'key_a',
  connectionId: 'con_a',
  outcome: 'issued',
  source: 'memory',
  ...overrides,
});

describe('AuditLog', () => {
  it('writes 250 events of 3 tenants in one transaction per ≤ 100 rows of a partition, without tokens', async () => {
    const table = new RecordingTable(newTable());
    const { log, errors } = auditLog({ table });
    const tenants = { tnt_a: 150, tnt_b: 60, tnt_c: 40 };
    for (const [tenantId, count] of Object.entries(tenants)) {
      for (let i = 0; i < count; i += 1) {
        const refused = i % 10 === 0;
        // Extra properties (as a careless caller might pass) must never reach a row.
        const careless = { access_token: 'eyJ0eXAiOiJKV1Qi.secret', xoauth2: 'dXNlcj1...', refresh_token: 'M.R3_BAY' };
        log.record({
          ...careless,
          ...event({ tenantId, keyId: `key_${i % 3}`, connectionId: refused ? null : `con_${i}` }),
          ...(refused ? { outcome: 'refused', code: 'RATE_LIMITED', source: undefined } : {}),
        } as AuditEvent);
      }
    }
    expect(log.stats().queued).toBe(250);
    expect(table.transactions).toHaveLength(0); // nothing written on the caller's path

    expect(await log.flush()).toEqual({ written: 250, requeued: 0, rejected: 0 });
    expect(errors).toEqual([]);
    expect(log.stats()).toMatchObject({ queued: 0, written: 250, dropped: 0 });

    const perPartition = new Map<string, number>();
    for (const actions of table.transactions) {
      expect(actions.length).toBeLessThanOrEqual(100);
      const keys = new Set(actions.map(([, entity]) => entity.partitionKey));
      expect(keys.size).toBe(1);
      const key = [...keys][0]!;
      perPartition.set(key, (perPartition.get(key) ?? 0) + 1);
    }
    // tnt_a: 135 issued rows (one per connection) + 3 refused rows (one per key) = 138 rows.
    expect(Object.fromEntries(perPartition)).toEqual({ 'tnt_a-20250301': 2, 'tnt_b-20250301': 1, 'tnt_c-20250301': 1 });

    const stored = await rows(table.client);
    expect(stored).toHaveLength(135 + 3 + 54 + 3 + 36 + 3);
    const fields = ['id', 'tenantId', 'keyId', 'connectionId', 'at', 'lastAt', 'count', 'outcome', 'code', 'source'];
    const allowed = new Set(['partitionKey', 'rowKey', 'etag', 'timestamp', 'odata.etag', 'odata.metadata', ...fields]);
    for (const row of stored) {
      for (const key of Object.keys(row)) expect(allowed).toContain(key);
      expect(JSON.stringify(row)).not.toMatch(/eyJ0eXAi|dXNlcj1|M\.R3_BAY/);
    }
    expect(new Set(stored.map((row) => row.rowKey)).size).toBe(stored.length);

    const decoded = await records(table.client);
    expect(decoded.reduce((sum, row) => sum + row.count, 0)).toBe(250);
    expect(decoded.filter((row) => row.tenantId === 'tnt_a').reduce((sum, row) => sum + row.count, 0)).toBe(150);
    // i = 0, 30, 60, 90, 120 of tnt_a: refused with key_0.
    expect(decoded.find((row) => row.tenantId === 'tnt_a' && row.outcome === 'refused' && row.keyId === 'key_0')).toMatchObject({
      code: 'RATE_LIMITED',
      connectionId: null,
      source: null,
      count: 5,
      at: '2025-03-01T12:00:00.000Z',
    });
    expect(decoded.find((row) => row.outcome === 'issued')).toMatchObject({ code: null, source: 'memory', count: 1 });
  });

  it('counts identical events of a minute in one row and writes its running total', async () => {
    const table = new RecordingTable(newTable());
    const clock = fakeClock('2025-03-01T12:00:05.000Z');
    const { log } = auditLog({ table, clock });
    for (let i = 0; i < 1_000; i += 1) log.record(event({ at: `2025-03-01T12:00:${String(5 + (i % 50)).padStart(2, '0')}.000Z` }));
    log.record(event({ source: 'refresh' }));
    log.record(event({ outcome: 'refused', code: 'RATE_LIMITED', source: undefined }));
    log.record(event({ outcome: 'refused', code: 'CONNECTION_NOT_FOUND', source: undefined }));
    expect(await log.flush()).toEqual({ written: 1_003, requeued: 0, rejected: 0 });
    const first = await records(table.client);
    expect(first.map((row) => [row.outcome, row.source, row.code, row.count]).sort()).toEqual([
      ['issued', 'memory', null, 1_000],
      ['issued', 'refresh', null, 1],
      ['refused', null, 'CONNECTION_NOT_FOUND', 1],
      ['refused', null, 'RATE_LIMITED', 1],
    ]);
    expect(first.find((row) => row.count === 1_000)).toMatchObject({ at: '2025-03-01T12:00:05.000Z', lastAt: '2025-03-01T12:00:54.000Z' });

    // More of the same minute: the same row, now with the total; a new minute: a new row, listed first.
    for (let i = 0; i < 500; i += 1) log.record(event());
    clock.set('2025-03-01T12:01:00.000Z');
    log.record(event());
    expect(await log.flush()).toEqual({ written: 501, requeued: 0, rejected: 0 });
    const memoryRows = (await records(table.client)).filter((row) => row.source === 'memory');
    expect(memoryRows.map((row) => [row.at, row.count])).toEqual([
      ['2025-03-01T12:01:00.000Z', 1],
      ['2025-03-01T12:00:05.000Z', 1_500],
    ]);
    expect(log.stats()).toMatchObject({ queued: 0, written: 1_504 });
  });

  it('counts events that arrive while their row is being written, and writes them with the next flush', async () => {
    const table = new RecordingTable(newTable());
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const submit = table.submitTransaction;
    table.submitTransaction = async (actions, options) => {
      await gate;
      return submit(actions, options);
    };
    const { log } = auditLog({ table });
    for (let i = 0; i < 10; i += 1) log.record(event());
    const writing = log.flush();
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The row is on its way with a count of 10; these 5 land in the same row meanwhile.
    for (let i = 0; i < 5; i += 1) log.record(event());
    release();
    expect(await writing).toEqual({ written: 10, requeued: 0, rejected: 0 });
    expect(log.stats().queued).toBe(5);
    expect(await log.flush()).toEqual({ written: 5, requeued: 0, rejected: 0 });
    expect(log.stats()).toMatchObject({ queued: 0, written: 15 });
    expect((await records(table.client)).map((row) => row.count)).toEqual([15]);
  });

  it('keeps counting a busy row in memory but forgets a single written event', async () => {
    const table = newTable();
    const { log } = auditLog({ table });
    log.record(event({ connectionId: 'con_quiet' }));
    log.record(event({ connectionId: 'con_busy' }));
    log.record(event({ connectionId: 'con_busy' }));
    await log.flush();
    await log.flush(); // nothing new: the quiet row, written in full, is let go
    log.record(event({ connectionId: 'con_quiet' }));
    log.record(event({ connectionId: 'con_busy' }));
    await log.flush();
    const stored = await records(table);
    expect(stored.filter((row) => row.connectionId === 'con_busy').map((row) => row.count)).toEqual([3]);
    expect(stored.filter((row) => row.connectionId === 'con_quiet').map((row) => row.count)).toEqual([1, 1]);
  });

  it('never counts twice when a write succeeded but its answer was lost', async () => {
    const table = new RecordingTable(newTable());
    const { log } = auditLog({ table });
    for (let i = 0; i < 10; i += 1) log.record(event());
    const submit = table.submitTransaction;
    table.submitTransaction = async (actions, options) => {
      await submit(actions, options);
      throw new RestError('socket hang up', { code: 'ECONNRESET' });
    };
    expect(await log.flush()).toEqual({ written: 0, requeued: 10, rejected: 0 });
    table.submitTransaction = submit;
    log.record(event());
    expect(await log.flush()).toEqual({ written: 11, requeued: 0, rejected: 0 });
    expect((await records(table.client)).map((row) => row.count)).toEqual([11]);
  });

  it('lists a partition newest first and spreads days into partitions', async () => {
    const table = newTable();
    const clock = fakeClock('2025-03-01T23:59:59.000Z');
    const { log } = auditLog({ table, clock });
    log.record(event({ keyId: 'key_first' }));
    clock.set('2025-03-02T00:00:01.000Z');
    log.record(event({ keyId: 'key_second' }));
    log.record(event({ keyId: 'key_third', at: '2025-03-02T08:00:00.000Z' }));
    await log.flush();
    const stored = await rows(table);
    expect(stored.map((row) => [row.partitionKey, row.keyId])).toEqual([
      ['tnt_a-20250301', 'key_first'],
      ['tnt_a-20250302', 'key_third'],
      ['tnt_a-20250302', 'key_second'],
    ]);
  });

  it('drops the oldest events when the queue is full, counts them and never throws', async () => {
    const table = newTable();
    const { log } = auditLog({ table, maxQueue: 5 });
    for (let i = 0; i < 8; i += 1) expect(() => log.record(event({ keyId: `key_${i}` }))).not.toThrow();
    expect(log.stats()).toMatchObject({ queued: 5, dropped: 3 });
    await log.flush();
    const kept = (await records(table)).map((row) => row.keyId).sort();
    expect(kept).toEqual(['key_3', 'key_4', 'key_5', 'key_6', 'key_7']);
    expect(log.stats()).toMatchObject({ queued: 0, dropped: 3, written: 5 });

    // Rows storage holds in full make room first: nothing more is lost.
    for (let i = 8; i < 13; i += 1) log.record(event({ keyId: `key_${i}` }));
    expect(log.stats()).toMatchObject({ queued: 5, dropped: 3 });
  });

  it('makes room by forgetting a row storage holds in full rather than the oldest unwritten one', async () => {
    const table = new RecordingTable(newTable());
    const { log } = auditLog({ table, maxQueue: 2 });
    const submit = table.submitTransaction;
    // Only the first tenant's partition fails, so the oldest row stays unwritten.
    table.submitTransaction = async (actions, options) => {
      if (String(actions[0]![1].partitionKey).startsWith('tnt_fail')) throw new RestError('Service Unavailable', { statusCode: 503 });
      return submit(actions, options);
    };
    log.record(event({ tenantId: 'tnt_fail', keyId: 'key_oldest' }));
    log.record(event({ tenantId: 'tnt_ok', keyId: 'key_written' }));
    expect(await log.flush()).toEqual({ written: 1, requeued: 1, rejected: 0 });
    table.submitTransaction = submit;

    log.record(event({ tenantId: 'tnt_ok', keyId: 'key_newest' }));
    expect(log.stats()).toMatchObject({ dropped: 0, queued: 2 });
    await log.flush();
    expect((await records(table.client)).map((row) => row.keyId).sort()).toEqual(['key_newest', 'key_oldest', 'key_written']);
  });

  it('keeps the events of a failed flush and writes them on a later one', async () => {
    const table = new RecordingTable(newTable());
    const { log, errors } = auditLog({ table, maxQueue: 1_000 });
    for (let i = 0; i < 120; i += 1) log.record(event({ keyId: `key_${i}` }));
    table.failWith = new RestError('Service Unavailable', { statusCode: 503 });

    expect(await log.flush()).toEqual({ written: 0, requeued: 120, rejected: 0 });
    expect(log.stats()).toMatchObject({ queued: 120, failedFlushes: 1, written: 0 });
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/kept for the next flush/);

    log.record(event({ keyId: 'key_meanwhile' }));
    table.failWith = null;
    expect(await log.flush()).toEqual({ written: 121, requeued: 0, rejected: 0 });
    expect(await rows(table.client)).toHaveLength(121);
    expect(log.stats()).toMatchObject({ queued: 0, written: 121, dropped: 0 });
  });

  it('bounds what a failing store can make it keep', async () => {
    const table = new RecordingTable(newTable());
    const { log } = auditLog({ table, maxQueue: 50 });
    table.failWith = new Error('socket hang up');
    for (let round = 0; round < 3; round += 1) {
      for (let i = 0; i < 30; i += 1) log.record(event({ keyId: `key_${round}_${i}` }));
      await log.flush();
    }
    expect(log.stats()).toMatchObject({ queued: 50, dropped: 40, failedFlushes: 3 });
    table.failWith = null;
    await log.flush();
    const kept = (await records(table.client)).map((row) => row.keyId);
    expect(kept).toHaveLength(50);
    expect(kept).toContain('key_2_29');
    expect(kept).not.toContain('key_0_0');
  });

  it('drops a batch Table Storage refuses as invalid instead of retrying it forever', async () => {
    const table = newTable();
    const { log, errors } = auditLog({ table });
    log.record(event({ tenantId: 'tnt/bad#key' })); // '/' and '#' are not allowed in keys
    log.record(event({ tenantId: 'tnt_good' }));
    const result = await log.flush();
    expect(result).toEqual({ written: 1, requeued: 0, rejected: 1 });
    expect(log.stats()).toMatchObject({ queued: 0, rejected: 1 });
    expect(errors[0]!.message).toMatch(/refused 1 audit events/);
  });

  it('flushes on its timer without being asked', async () => {
    const table = newTable();
    const { log } = auditLog({ table, flushIntervalMs: 25 });
    log.record(event());
    await expect.poll(async () => (await rows(table)).length, { timeout: 5_000 }).toBe(1);
    expect(log.stats().written).toBe(1);
  });

  it('writes what is left on close and counts later events as dropped', async () => {
    const table = newTable();
    const { log } = auditLog({ table });
    log.record(event());
    await log.close();
    log.record(event());
    expect(await rows(table)).toHaveLength(1);
    expect(log.stats()).toMatchObject({ queued: 0, written: 1, dropped: 1 });
  });
});

describe('purgeAuditEvents', () => {
  it('removes whole partitions of days before the cut-off, of every tenant, and nothing newer', async () => {
    const client = newTable();
    const { log } = auditLog({ table: client });
    const days = ['2024-11-30', '2024-12-01', '2025-01-15', '2025-02-28', '2025-03-01'];
    // Three tenants; one named like a prefix of another, one with many rows in one old partition.
    for (const tenantId of ['tnt_a', 'tnt_ab', 'tnt_z']) {
      for (const day of days) {
        const count = tenantId === 'tnt_z' && day === '2024-12-01' ? 230 : 2;
        // Distinct keys: identical events of a minute would share one row.
        for (let i = 0; i < count; i += 1) log.record(event({ tenantId, keyId: `key_${i}`, at: `${day}T${String(i % 24).padStart(2, '0')}:00:00.000Z` }));
      }
    }
    await log.flush();
    const unrelated = { partitionKey: 'not-an-audit-key', rowKey: 'x' };
    await client.createEntity(unrelated);
    const before = (await rows(client)).length;

    // 90 days before 2025-03-01T06:00Z is 2024-12-01T06:00Z: the 2024-12-01 partition is
    // kept whole (retention is counted in whole days), older ones go.
    const cutoff = auditRetentionCutoff(new Date('2025-03-01T06:00:00.000Z'), 90);
    expect(cutoff.toISOString()).toBe('2024-12-01T06:00:00.000Z');
    expect(await purgeAuditEvents(client, cutoff)).toBe(6);

    const left = await rows(client);
    expect(left).toHaveLength(before - 6);
    expect(left.filter((row) => String(row.partitionKey).endsWith('-20241130'))).toEqual([]);

    expect(await purgeAuditEvents(client, new Date('2025-02-01T00:00:00.000Z'))).toBe(2 + 2 + 230 + 3 * 2);
    const partitions = new Set((await rows(client)).map((row) => row.partitionKey));
    expect([...partitions].sort()).toEqual([
      'not-an-audit-key',
      'tnt_a-20250228',
      'tnt_a-20250301',
      'tnt_ab-20250228',
      'tnt_ab-20250301',
      'tnt_z-20250228',
      'tnt_z-20250301',
    ]);
    expect(await purgeAuditEvents(client, new Date('2025-02-01T00:00:00.000Z'))).toBe(0);
  });

  it('answers 0 for a table that does not exist yet', async () => {
    expect(await purgeAuditEvents(newTable(), new Date())).toBe(0);
  });

  it('stops between tenants when told to', async () => {
    const client = newTable();
    const { log } = auditLog({ table: client });
    for (const tenantId of ['tnt_a', 'tnt_b']) log.record(event({ tenantId, at: '2020-01-01T00:00:00.000Z' }));
    await log.flush();
    let calls = 0;
    expect(await purgeAuditEvents(client, new Date('2025-01-01T00:00:00.000Z'), { shouldContinue: () => calls++ < 1 })).toBe(1);
    expect(await purgeAuditEvents(client, new Date('2025-01-01T00:00:00.000Z'))).toBe(1);
  });
});
