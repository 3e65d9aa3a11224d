import { odata, RestError, type TableClient, type TransactionAction } from '@azure/data-tables';
import { z } from 'zod';
import type { Clock } from '../clock.js';
import { randomToken } from '../ids.js';
import { TupleMap } from '../tuple-map.js';
import type { EntityCodec } from '../storage/entity-table.js';

/*
 * The audit trail of the token endpoint: who got (or was refused) a token for which
 * connection, never the token itself. Writing a row per request on the hot path would add
 * a storage round trip to every token call, so `record` only counts in memory and a timer
 * writes in Table transactions (one round trip per ≤ 100 rows of a partition).
 *
 * Events are aggregated: one row per tenant × key × connection × outcome × source × code
 * and UTC minute (per instance), with a `count` and the first and last time. A sender fetching a token for
 * every message makes thousands of identical events a minute; one row each would cost a
 * Table write per token, and the trail would say nothing more. Each flush upserts the rows
 * whose count grew with their running total (Replace), so a retried write after a lost
 * answer cannot count twice, and a crash loses at most the last flush interval.
 *
 * Partition key `${tenantId}-${YYYYMMDD}` (UTC): one tenant's busy day is one partition,
 * tenants never share one, and retention deletes whole old partitions found by key range,
 * without reading recent rows. Row key: reverse ticks of the minute, so a partition lists
 * newest first, then this instance's tag and a counter (instances never share a row).
 *
 * @see https://learn.microsoft.com/azure/storage/tables/table-storage-design-patterns#log-tail-pattern
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-4.8 (detecting misuse needs an audit trail)
 */

/** Table Storage allows at most 100 operations in one entity group transaction. */
export const MAX_TRANSACTION_ROWS = 100;

export const auditOutcomes = ['issued', 'refused', 'failed'] as const;
export type AuditOutcome = (typeof auditOutcomes)[number];
export const auditSources = ['memory', 'shared', 'refresh'] as const;
export type AuditSource = (typeof auditSources)[number];

export const auditEventRecord = z.object({
  /** The row key: reverse ticks of the minute + instance tag + counter; sorts newest first, never collides. */
  id: z.string(),
  tenantId: z.string(),
  keyId: z.string(),
  connectionId: z.string().nullable().default(null),
  /** The first event of the row. */
  at: z.string(),
  /** The last event of the row (same UTC minute as `at`). */
  lastAt: z.string().nullable().default(null),
  /** How many events the row stands for. */
  count: z.number().int().positive().default(1),
  outcome: z.enum(auditOutcomes),
  /** The error code when not issued. */
  code: z.string().nullable().default(null),
  source: z.enum(auditSources).nullable().default(null),
});
export type AuditEventRecord = z.infer<typeof auditEventRecord>;

function auditPartitionKey(tenantId: string, at: string): string {
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
  /** Rows (aggregates) kept in memory; beyond it the oldest are dropped. */
  maxQueue?: number;
  onError: (message: string, error: unknown) => void;
}

/** Counted in events, not rows. */
export interface AuditStats {
  /** Recorded but not yet written. */
  queued: number;
  /** Events lost to a full queue (or recorded after `close`). */
  dropped: number;
  /** Events Table Storage refused outright (400/413); retrying would not help. */
  rejected: number;
  written: number;
  failedFlushes: number;
}

/** Counted in events, not rows. */
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
const MINUTE_MS = 60_000;
/** How many of the oldest rows `dropOldest` looks at for one it may forget without loss. */
const DROP_LOOKAHEAD = 64;

function dayOf(iso: string): string {
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}`;
}

function statusOf(error: unknown): number | undefined {
  return error instanceof RestError ? error.statusCode : undefined;
}

/**
 * What makes two events one row: the minute and every field of the event but its time. The
 * few-valued fields come first, so thousands of connections share the inner maps and differ
 * only in the last one.
 */
type AggregateKey = [minute: number, outcome: string, code: string | null, source: string | null, tenantId: string, keyId: string, connectionId: string | null];

/** One row being counted: `row.count` grows as events arrive; `written` is what storage holds. */
interface Aggregate {
  key: AggregateKey;
  /** Without `at` and `lastAt`: they are made from `firstMs` and `lastMs` when the row is taken for a write. */
  row: Omit<AuditEventRecord, 'at' | 'lastAt'>;
  minute: number;
  written: number;
  firstMs: number;
  lastMs: number;
}

/** A write in flight: the row as it was sent, so a later event cannot change what is counted as written. */
interface Pending {
  aggregate: Aggregate;
  row: AuditEventRecord;
}

export class AuditLog {
  private readonly table: AuditTableClient;
  private readonly clock: Clock;
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private readonly onError: (message: string, error: unknown) => void;
  /** Insertion-ordered, so the first entries are the oldest rows. */
  private readonly aggregates = new Set<Aggregate>();
  /** The same rows by key (no joined string to build and hash per event); `forget` keeps the two in step. */
  private readonly byKey = new TupleMap<AggregateKey, Aggregate>();
  private readonly timer: NodeJS.Timeout;
  /** Distinguishes this instance's row keys from another's within the same minute. */
  private readonly instanceTag = randomToken(5);
  private counter = 0;
  private unwritten = 0;
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
      if (!this.flushing && this.unwritten > 0) void this.flush();
    }, options.flushIntervalMs ?? 1000);
    // An idle instance must be free to exit or be frozen; `close()` writes what is left.
    this.timer.unref();
  }

  /** Counts one event; synchronous, O(1), never throws and never waits for storage. */
  record(event: AuditEvent): void {
    if (this.closed) {
      this.counts.dropped += 1;
      return;
    }
    const given = event.at === undefined ? Number.NaN : Date.parse(event.at);
    const time = Number.isNaN(given) ? this.clock.now().getTime() : given;
    const minute = time - (((time % MINUTE_MS) + MINUTE_MS) % MINUTE_MS);
    const connectionId = event.connectionId ?? null;
    const code = event.code === undefined ? null : event.code.slice(0, MAX_CODE_LENGTH);
    const source = event.source ?? null;
    this.unwritten += 1;
    const key: AggregateKey = [minute, event.outcome, code, source, event.tenantId, event.keyId, connectionId];
    const existing = this.byKey.get(key);
    if (existing) {
      existing.row.count += 1;
      // Times stay numbers until a flush: an ISO string per event would cost more than the count.
      if (time < existing.firstMs) existing.firstMs = time;
      if (time > existing.lastMs) existing.lastMs = time;
      return;
    }
    this.counter = (this.counter + 1) % 2_176_782_336; // 36^6: six base-36 digits
    const aggregate: Aggregate = {
      key,
      minute,
      written: 0,
      firstMs: time,
      lastMs: time,
      row: {
        id: `${String(MAX_TICKS - minute).padStart(16, '0')}_${this.instanceTag}${this.counter.toString(36).padStart(6, '0')}`,
        tenantId: event.tenantId,
        keyId: event.keyId,
        connectionId,
        count: 1,
        outcome: event.outcome,
        code,
        source,
      },
    };
    this.aggregates.add(aggregate);
    this.byKey.set(key, aggregate);
    if (this.aggregates.size > this.maxQueue) this.dropOldest();
  }

  stats(): AuditStats {
    return { queued: this.unwritten, ...this.counts };
  }

  /** Writes everything counted so far (after any flush already running). Never rejects. */
  flush(): Promise<FlushResult> {
    const run = this.tail.then(() => this.flushOnce());
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Stops the timer and writes what is counted; events recorded afterwards are counted as dropped. */
  async close(): Promise<FlushResult> {
    this.closed = true;
    clearInterval(this.timer);
    return this.flush();
  }

  /**
   * Over the bound: forget a row storage already holds in full if one is among the oldest,
   * else the oldest. The look is bounded: `record` runs on the token path, and while storage
   * is down no row is written at all.
   */
  private dropOldest(): void {
    let looked = 0;
    for (const aggregate of this.aggregates) {
      if (aggregate.written === aggregate.row.count) {
        this.forget(aggregate);
        return;
      }
      if (++looked === DROP_LOOKAHEAD) break;
    }
    this.lose(this.aggregates.values().next().value!, 'dropped');
  }

  private lose(aggregate: Aggregate, as: 'dropped' | 'rejected'): number {
    const lost = aggregate.row.count - aggregate.written;
    this.unwritten -= lost;
    this.counts[as] += lost;
    aggregate.written = aggregate.row.count;
    // Later events of the same minute start a new row instead of adding to this one.
    this.forget(aggregate);
    return lost;
  }

  private forget(aggregate: Aggregate): void {
    if (this.aggregates.delete(aggregate)) this.byKey.delete(aggregate.key);
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

  /**
   * Rows whose count grew since they were last written, as they are now. Forgets what storage
   * holds in full when it is of a past minute, or when it is a single event: a quiet key and
   * connection (one token a minute, say) would otherwise keep a row in memory per connection
   * for nothing, while a busy one keeps counting into the same row.
   */
  private takePending(): Pending[] {
    // A minute ago, not now: an event stamped by a slightly slower clock may still arrive.
    const settledBefore = this.clock.now().getTime() - MINUTE_MS;
    const pending: Pending[] = [];
    for (const aggregate of this.aggregates) {
      if (aggregate.written < aggregate.row.count) {
        const row = { ...aggregate.row, at: new Date(aggregate.firstMs).toISOString(), lastAt: new Date(aggregate.lastMs).toISOString() };
        pending.push({ aggregate, row });
      }
      else if (aggregate.minute < settledBefore || aggregate.written === 1) this.forget(aggregate);
    }
    return pending;
  }

  private async flushOnce(): Promise<FlushResult> {
    const pending = this.takePending();
    const result: FlushResult = { written: 0, requeued: 0, rejected: 0 };
    if (pending.length === 0) return result;
    this.flushing = true;
    try {
      try {
        await this.ensureTable();
      } catch (error) {
        this.retryLater(pending, result, error);
        return result;
      }
      const chunks = this.chunk(pending);
      const failed: Pending[] = [];
      let lastError: unknown;
      let next = 0;
      const worker = async () => {
        while (next < chunks.length) {
          const chunk = chunks[next++]!;
          try {
            await this.table.submitTransaction(chunk.map(({ row }) => toUpsert(row)));
            for (const { aggregate, row } of chunk) {
              // A row dropped meanwhile was already counted as lost.
              const newlyWritten = Math.max(0, row.count - aggregate.written);
              aggregate.written = Math.max(aggregate.written, row.count);
              this.unwritten -= newlyWritten;
              result.written += newlyWritten;
            }
          } catch (error) {
            const status = statusOf(error);
            if (status === 400 || status === 413) {
              let lost = 0;
              for (const { aggregate } of chunk) lost += this.lose(aggregate, 'rejected');
              result.rejected += lost;
              this.report(`Table Storage refused ${lost} audit events; they are dropped`, error);
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
      if (failed.length > 0) this.retryLater(failed, result, lastError);
      return result;
    } finally {
      this.flushing = false;
    }
  }

  /** The rows stay counted in memory; the next flush writes their totals. */
  private retryLater(failed: Pending[], result: FlushResult, error: unknown): void {
    this.counts.failedFlushes += 1;
    const events = failed.reduce((sum, { aggregate }) => sum + aggregate.row.count - aggregate.written, 0);
    result.requeued = events;
    this.report(`Writing ${events} audit events failed; they are kept for the next flush`, error);
  }

  /** Groups by partition (a transaction may span only one) and cuts into ≤ maxBatch rows. */
  private chunk(pending: Pending[]): Pending[][] {
    const byPartition = new Map<string, Pending[]>();
    for (const item of pending) {
      const key = auditEventCodec.partitionKey(item.row);
      const group = byPartition.get(key);
      if (group) group.push(item);
      else byPartition.set(key, [item]);
    }
    const chunks: Pending[][] = [];
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
