import type { Clock } from './clock.js';

const keepAll = (): boolean => true;

/**
 * A small in-process cache with a time to live, a size bound and one load per key at a time
 * (concurrent misses share it). For lookups on the hot path whose answer may lag a few
 * seconds on other instances; never for anything that must be exact.
 */
export class TtlCache<K, V> {
  private readonly entries = new Map<K, { value: V; until: number }>();
  private readonly loading = new Map<K, Promise<V>>();

  constructor(
    private readonly options: {
      /** How long a loaded value is kept; a function when it depends on the value (a failure kept shorter, say). */
      ttlMs: number | ((value: V) => number);
      maxEntries: number;
      clock: Clock;
    },
  ) {}

  /** The value while it is live, without loading: for callers with a synchronous way through on a hit. */
  peek(key: K): V | undefined {
    return this.live(key)?.value;
  }

  get(key: K, load: () => Promise<V>, keep: (value: V) => boolean = keepAll): Promise<V> {
    const hit = this.live(key);
    // Not an async function: a hit, the common case on the token path, resolves without one.
    if (hit) return Promise.resolve(hit.value);
    let pending = this.loading.get(key);
    if (!pending) {
      let loaded: Promise<V>;
      try {
        loaded = load();
      } catch (error) {
        loaded = Promise.reject(error);
      }
      pending = loaded
        .then((value) => {
          if (keep(value)) this.set(key, value);
          return value;
        })
        .finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending;
  }

  /** The entry while it is live: what `peek` and `get` both count as a hit. */
  private live(key: K): { value: V; until: number } | undefined {
    const hit = this.entries.get(key);
    return hit && hit.until > this.options.clock.now().getTime() ? hit : undefined;
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  private set(key: K, value: V): void {
    const now = this.options.clock.now().getTime();
    this.entries.delete(key);
    // Map keeps insertion order, so the oldest come first: expired ones at the front are
    // dropped as new ones arrive, and the size bound drops the oldest live one. (With a TTL per
    // value, an expired entry behind a live one waits its turn; `get` never returns it.)
    for (const [oldest, entry] of this.entries) {
      if (entry.until > now && this.entries.size < this.options.maxEntries) break;
      this.entries.delete(oldest);
    }
    const { ttlMs } = this.options;
    this.entries.set(key, { value, until: now + (typeof ttlMs === 'function' ? ttlMs(value) : ttlMs) });
  }
}
