import { RestError, type TableClient } from '@azure/data-tables';
import type { Clock } from '../clock.js';

/*
 * `lastUsedAt` of tenant API keys (shown by `GET /api/manage/tenants/{id}/keys`), kept
 * cheaply: a Merge of that one property on the key's row (PK = tenantId, RK = keyId, see
 * `tenantKeyCodec`), at most once per key per interval per instance, never awaited by the
 * token request. The value is therefore accurate to the interval, which is what an
 * operator deciding whether a key is still in use needs.
 *
 * Merge with `If-Match: *` (the SDK's default for updateEntity) changes only `lastUsedAt`
 * and fails with 404 instead of creating a row, so a key revoked meanwhile stays deleted.
 *
 * @see https://learn.microsoft.com/rest/api/storageservices/merge-entity
 */

/** The part of `TableClient` (of the tenant keys table) this needs; tests use Azurite. */
export type KeyUsageTableClient = Pick<TableClient, 'updateEntity'>;

export interface KeyUsageOptions {
  table: KeyUsageTableClient;
  clock: Clock;
  /** Minimum time between two writes for one key on this instance. */
  intervalMinutes?: number;
  /** Hard bound on remembered keys; beyond it the oldest write is forgotten (costing at most one extra write). */
  maxKeys?: number;
  onError: (message: string, error: unknown) => void;
}

export class KeyUsage {
  private readonly table: KeyUsageTableClient;
  private readonly clock: Clock;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly onError: (message: string, error: unknown) => void;
  /**
   * Time of the last write per key id (ids are unique across tenants), oldest first (a key
   * is re-inserted when written). The id string is the principal's own, the same object on
   * every request, so a lookup does not hash a new string.
   */
  private readonly written = new Map<string, number>();
  private readonly pending = new Set<Promise<void>>();

  constructor(options: KeyUsageOptions) {
    this.table = options.table;
    this.clock = options.clock;
    this.intervalMs = (options.intervalMinutes ?? 5) * 60_000;
    this.maxKeys = Math.max(1, options.maxKeys ?? 100_000);
    this.onError = options.onError;
  }

  /** Notes that a key was just used; synchronous, never throws, writes at most once per interval. */
  touch(tenantId: string, keyId: string): void {
    const now = this.clock.now();
    const nowMs = now.getTime();
    const last = this.written.get(keyId);
    if (last !== undefined && nowMs - last < this.intervalMs) return;
    // Marked before the write, so concurrent requests do not all write; a failed write is
    // retried after the interval, not by every following request while storage is down.
    this.written.delete(keyId);
    this.written.set(keyId, nowMs);
    this.evict(nowMs);
    const write = this.write(tenantId, keyId, now.toISOString()).finally(() => this.pending.delete(write));
    this.pending.add(write);
  }

  /** Resolves when the writes started so far have finished; for shutdown and tests. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending);
  }

  private async write(tenantId: string, keyId: string, lastUsedAt: string): Promise<void> {
    try {
      await this.table.updateEntity({ partitionKey: tenantId, rowKey: keyId, lastUsedAt }, 'Merge');
    } catch (error) {
      // 404: the key (or its table) is gone, e.g. revoked while the request ran; nothing to record.
      if (error instanceof RestError && error.statusCode === 404) return;
      try {
        this.onError('Could not record when an API key was last used', error);
      } catch {
        // a failing logger must not surface as an unhandled rejection
      }
    }
  }

  private evict(nowMs: number): void {
    for (const [id, at] of this.written) {
      // An entry older than the interval means "write on next touch", the same as no entry.
      if (nowMs - at < this.intervalMs && this.written.size <= this.maxKeys) break;
      this.written.delete(id);
    }
  }
}
