import { odata, RestError, type TableClient, type TransactionAction } from '@azure/data-tables';
import { z } from 'zod';
import type { Clock } from '../clock.js';
import { randomToken } from '../ids.js';
import type { EntityCodec } from '../storage/entity-table.js';

/*
 * The audit trail of the token endpoint: one row per token issued or refused, never the
 * token itself. Writing a row per request on the hot path would add a storage round trip
 * to every token call, so `record` only queues; a timer writes the queue in Table
 * transactions (one round trip per ≤ 100 rows of a partition).
 *
 * Partition key `${tenantId}-${YYYYMMDD}` (UTC): one tenant's busy day is one partition,
 * tenants never share one, and retention deletes whole old partitions found by key range,
 * without reading recent rows. Row key: reverse ticks, so a partition lists newest first.
 *
 * @see https://learn.microsoft.com/azure/storage/tables/table-storage-design-patterns#log-tail-pattern
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-4.8 (detecting misuse needs an audit trail)
 */

/** Suggested name for StorageTables (prefixed like the others, e.g. `brokeraudit`). */
export const AUDIT_TABLE_NAME = 'audit';
/** Suggested default of `BROKER_AUDIT_RETENTION_DAYS`. */
export const DEFAULT_AUDIT_RETENTION_DAYS = 90;
/** Table Storage allows at most 100 operations in one entity group transaction. */
export const MAX_TRANSACTION_ROWS = 100;

export const auditOutcomes = ['issued', 'refused', 'failed'] as const;
export type AuditOutcome = (typeof auditOutcomes)[number];
export const auditSources = ['memory', 'shared', 'refresh'] as const;
export type AuditSource = (typeof auditSources)[number];

export const auditEventRecord = z.object({
  /** The row key: reverse ticks + instance tag + counter; sorts newest first, never collides. */
  id: z.string(),
  tenantId: z.string(),
  keyId: z.string(),
  connectionId: z.string().nullable().default(null),
  at: z.string(),
  outcome: z.enum(auditOutcomes),
  /** The error code when not issued. */
  code: z.string().nullable().default(null),
  source: z.enum(auditSources).nullable().default(null),
});
export type AuditEventRecord = z.infer<typeof auditEventRecord>;

export function auditPartitionKey(tenantId: string, at: string): string {
  return `${tenantId}-${dayOf(at)}`;
}

export const auditEventCodec: EntityCodec<AuditEventRecord> = {
  schema: auditEventRecord,
  partitionKey: (event) => auditPartitionKey(event.tenantId, event.at),
  rowKey: (event) => event.id,
};

/** What callers hand to `record`. Only these fields are copied, so nothing else (a token) can reach a row. */
export interface AuditEvent {
  tenantId: string;
  keyId: string;
  connectionId: string | null;
  outcome: AuditOutcome;
  code?: string | undefined;
  source?: AuditSource | undefined;
  /** ISO time; the log's clock when absent. */
  at?: string | undefined;
}

/** The part of `TableClient` the audit log uses; tests wrap a real one to inject failures. */
export type AuditTableClient = Pick<TableClient, 'createTable' | 'submitTransaction' | 'listEntities'>;

export interface AuditLogOptions {
  table: AuditTableClient;
  clock: Clock;
  flushIntervalMs?: number;
  /** Rows per transaction, at most 100. */
  maxBatch?: number;
  /** Events kept in memory; beyond it the oldest are dropped. */
  maxQueue?: number;
  onError: (message: string, error: unknown) => void;
}

export interface AuditStats {
  queued: number;
  /** Events lost to a full queue (or recorded after `close`). */
  dropped: number;
  /** Events Table Storage refused outright (400/413); retrying would not help. */
  rejected: number;
  written: number;
  failedFlushes: number;
}

export interface FlushResult {
  written: number;
  /** Kept for the next flush because the write failed. */
  requeued: number;
  rejected: number;
}

const TRANSACTIONS_IN_PARALLEL = 4;
const MAX_CODE_LENGTH = 200;
/** Greater than any epoch milliseconds a `Date` can hold, so reverse ticks stay positive and 16 digits wide. */
const MAX_TICKS = 8_640_000_000_000_001;

function dayOf(iso: string): string {
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}`;
}

function statusOf(error: unknown): number | undefined {
  return error instanceof RestError ? error.statusCode : undefined;
}

/** A FIFO with O(1) push and drop-oldest; the array is compacted once half of it is consumed. */
class EventQueue {
  private items: AuditEventRecord[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(item: AuditEventRecord): void {
    this.items.push(item);
  }

  dropOldest(): void {
    this.head += 1;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  drain(): AuditEventRecord[] {
    const all = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return all;
  }

  /** Puts events that failed to write back in front of those recorded meanwhile (they are older). */
  requeue(older: AuditEventRecord[]): void {
    this.items = older.concat(this.items.slice(this.head));
    this.head = 0;
  }
}

export class AuditLog {
  private readonly table: AuditTableClient;
  private readonly clock: Clock;
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private readonly onError: (message: string, error: unknown) => void;
  private readonly queue = new EventQueue();
  private readonly timer: NodeJS.Timeout;
  /** Distinguishes this instance's row keys from another's within the same millisecond. */
  private readonly instanceTag = randomToken(5);
  private counter = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private flushing = false;
  private closed = false;
  private ready: Promise<void> | undefined;
  private readonly counts = { dropped: 0, rejected: 0, written: 0, failedFlushes: 0 };

  constructor(options: AuditLogOptions) {
    this.table = options.table;
    this.clock = options.clock;
    this.maxBatch = Math.min(Math.max(1, options.maxBatch ?? MAX_TRANSACTION_ROWS), MAX_TRANSACTION_ROWS);
    this.maxQueue = Math.max(1, options.maxQueue ?? 10_000);
    this.onError = options.onError;
    this.timer = setInterval(() => {
      if (!this.flushing && this.queue.size > 0) void this.flush();
    }, options.flushIntervalMs ?? 1000);
    // An idle instance must be free to exit or be frozen; `close()` writes what is left.
    this.timer.unref();
  }

  /** Queues one event; synchronous, O(1), never throws and never waits for storage. */
  record(event: AuditEvent): void {
    if (this.closed) {
      this.counts.dropped += 1;
      return;
    }
    const given = event.at === undefined ? Number.NaN : Date.parse(event.at);
    const time = Number.isNaN(given) ? this.clock.now().getTime() : given;
    this.counter = (this.counter + 1) % 2_176_782_336; // 36^6: six base-36 digits
    this.queue.push({
      id: `${String(MAX_TICKS - time).padStart(16, '0')}_${this.instanceTag}${this.counter.toString(36).padStart(6, '0')}`,
      tenantId: event.tenantId,
      keyId: event.keyId,
      connectionId: event.connectionId ?? null,
      at: new Date(time).toISOString(),
      outcome: event.outcome,
      code: event.code === undefined ? null : event.code.slice(0, MAX_CODE_LENGTH),
      source: event.source ?? null,
    });
    if (this.queue.size > this.maxQueue) {
      this.queue.dropOldest();
      this.counts.dropped += 1;
    }
  }

  stats(): AuditStats {
    return { queued: this.queue.size, ...this.counts };
  }

  /** Writes everything queued so far (after any flush already running). Never rejects. */
  flush(): Promise<FlushResult> {
    const run = this.tail.then(() => this.flushOnce());
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Stops the timer and writes what is queued; events recorded afterwards are counted as dropped. */
  async close(): Promise<FlushResult> {
    this.closed = true;
    clearInterval(this.timer);
    return this.flush();
  }

  private report(message: string, error: unknown): void {
    try {
      this.onError(message, error);
    } catch {
      // a failing logger must not break the audit log
    }
  }

  private ensureTable(): Promise<void> {
    this.ready ??= this.table.createTable().catch((error: unknown) => {
      this.ready = undefined;
      throw error;
    });
    return this.ready;
  }

  private async flushOnce(): Promise<FlushResult> {
    const events = this.queue.drain();
    const result: FlushResult = { written: 0, requeued: 0, rejected: 0 };
    if (events.length === 0) return result;
    this.flushing = true;
    try {
      const chunks = this.chunk(events);
      const failed: AuditEventRecord[] = [];
      let lastError: unknown;
      try {
        await this.ensureTable();
      } catch (error) {
        this.retryLater(events, result, error);
        return result;
      }
      let next = 0;
      const worker = async () => {
        while (next < chunks.length) {
          const chunk = chunks[next++]!;
          try {
            await this.table.submitTransaction(chunk.map(toUpsert));
            result.written += chunk.length;
          } catch (error) {
            const status = statusOf(error);
            if (status === 400 || status === 413) {
              result.rejected += chunk.length;
              this.report(`Table Storage refused ${chunk.length} audit events; they are dropped`, error);
            } else {
              if (status === 404) this.ready = undefined;
              failed.push(...chunk);
              lastError = error;
            }
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(TRANSACTIONS_IN_PARALLEL, chunks.length) }, worker));
      this.counts.written += result.written;
      this.counts.rejected += result.rejected;
      if (failed.length > 0) this.retryLater(failed, result, lastError);
      return result;
    } finally {
      this.flushing = false;
    }
  }

  private retryLater(events: AuditEventRecord[], result: FlushResult, error: unknown): void {
    this.counts.failedFlushes += 1;
    this.queue.requeue(events);
    // The failed events are the oldest, so they are the first to go when the queue is full.
    const overflow = Math.max(0, this.queue.size - this.maxQueue);
    for (let i = 0; i < overflow; i += 1) this.queue.dropOldest();
    this.counts.dropped += overflow;
    result.requeued = Math.max(0, events.length - overflow);
    this.report(`Writing ${events.length} audit events failed; they are kept for the next flush`, error);
  }

  /** Groups by partition (a transaction may span only one) and cuts into ≤ maxBatch rows. */
  private chunk(events: AuditEventRecord[]): AuditEventRecord[][] {
    const byPartition = new Map<string, AuditEventRecord[]>();
    for (const event of events) {
      const key = auditEventCodec.partitionKey(event);
      const group = byPartition.get(key);
      if (group) group.push(event);
      else byPartition.set(key, [event]);
    }
    const chunks: AuditEventRecord[][] = [];
    for (const group of byPartition.values()) {
      for (let i = 0; i < group.length; i += this.maxBatch) chunks.push(group.slice(i, i + this.maxBatch));
    }
    return chunks;
  }
}

/** Upsert, not create: a transaction that succeeded but whose answer was lost can be retried harmlessly. */
function toUpsert(event: AuditEventRecord): TransactionAction {
  const entity: Record<string, unknown> & { partitionKey: string; rowKey: string } = {
    partitionKey: auditEventCodec.partitionKey(event),
    rowKey: auditEventCodec.rowKey(event),
  };
  for (const [key, value] of Object.entries(event)) {
    if (value !== null && value !== undefined) entity[key] = value;
  }
  return ['upsert', entity, 'Replace'];
}

/** The instant before which audit rows are purged, for `BROKER_AUDIT_RETENTION_DAYS`. */
export function auditRetentionCutoff(now: Date, retentionDays: number): Date {
  return new Date(now.getTime() - retentionDays * 86_400_000);
}

export interface PurgeOptions {
  /** Checked between tenants; `false` stops cleanly and the next sweep resumes (nothing to remember). */
  shouldContinue?: () => boolean;
}

/**
 * Deletes every audit partition of a day before `before`'s UTC day (retention is kept to
 * whole days). Walks the partition keys tenant by tenant with range queries: per tenant one
 * `$top=1` probe plus a range query that returns only old rows, so recent rows are never read.
 */
export async function purgeAuditEvents(table: AuditTableClient, before: Date, options: PurgeOptions = {}): Promise<number> {
  const cutoffDay = dayOf(before.toISOString());
  let deleted = 0;
  let after: string | null = null;
  try {
    while (options.shouldContinue?.() ?? true) {
      const partitionKey = await firstPartitionKeyAfter(table, after);
      if (partitionKey === null) break;
      const match = /^(.+)-(\d{8})$/.exec(partitionKey);
      if (!match) {
        after = partitionKey; // not an audit partition; step over it
        continue;
      }
      const tenantId = match[1]!;
      deleted += await deleteRange(table, tenantId, `${tenantId}-`, `${tenantId}-${cutoffDay}`);
      after = `${tenantId}-99999999`;
    }
  } catch (error) {
    if (statusOf(error) !== 404) throw error; // 404: the table was never created, nothing to purge
  }
  return deleted;
}

async function firstPartitionKeyAfter(table: AuditTableClient, after: string | null): Promise<string | null> {
  const filter = after === null ? undefined : odata`PartitionKey gt ${after}`;
  const pages = table
    .listEntities({ queryOptions: { select: ['partitionKey', 'rowKey'], ...(filter ? { filter } : {}) } })
    .byPage({ maxPageSize: 1 });
  // The service may answer a page with no rows and a continuation token; keep asking.
  for await (const page of pages) {
    if (page.length > 0) return page[0]!.partitionKey ?? null;
  }
  return null;
}

async function deleteRange(table: AuditTableClient, tenantId: string, from: string, to: string): Promise<number> {
  const rows = table.listEntities({
    queryOptions: { select: ['partitionKey', 'rowKey'], filter: odata`PartitionKey ge ${from} and PartitionKey lt ${to}` },
  });
  let deleted = 0;
  let batch: { partitionKey: string; rowKey: string }[] = [];
  const submit = async () => {
    if (batch.length === 0) return;
    const current = batch;
    batch = [];
    deleted += await deleteBatch(table, current);
  };
  for await (const row of rows) {
    const partitionKey = row.partitionKey ?? '';
    const rowKey = row.rowKey ?? '';
    // A range of tenant `a` also spans a tenant named like `a-1…`; only exact `a-YYYYMMDD` is ours.
    if (partitionKey.length !== tenantId.length + 9 || !/^\d{8}$/.test(partitionKey.slice(-8))) continue;
    if (batch.length === MAX_TRANSACTION_ROWS || (batch.length > 0 && batch[0]!.partitionKey !== partitionKey)) await submit();
    batch.push({ partitionKey, rowKey });
  }
  await submit();
  return deleted;
}

async function deleteBatch(table: AuditTableClient, rows: { partitionKey: string; rowKey: string }[]): Promise<number> {
  try {
    await table.submitTransaction(rows.map((row): TransactionAction => ['delete', row]));
    return rows.length;
  } catch (error) {
    // One row gone already (a purge that overlapped) fails the whole transaction: go one by one.
    if (statusOf(error) !== 404) throw error;
  }
  let deleted = 0;
  for (const row of rows) {
    try {
      await table.submitTransaction([['delete', row]]);
      deleted += 1;
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
    }
  }
  return deleted;
}
