import type { Clock } from './clock.js';

/**
 * A small in-process cache with a time to live, a size bound and one load per key at a time
 * (concurrent misses share it). For lookups on the hot path whose answer may lag a few
 * seconds on other instances; never for anything that must be exact.
 */
export class TtlCache<K, V> {
  private readonly entries = new Map<K, { value: V; until: number }>();
  private readonly loading = new Map<K, Promise<V>>();

  constructor(private readonly options: { ttlMs: number; maxEntries: number; clock: Clock }) {}

  async get(key: K, load: () => Promise<V>, keep: (value: V) => boolean = () => true): Promise<V> {
    const now = this.options.clock.now().getTime();
    const hit = this.entries.get(key);
    if (hit && hit.until > now) return hit.value;
    let pending = this.loading.get(key);
    if (!pending) {
      pending = load()
        .then((value) => {
          if (keep(value)) this.set(key, value);
          return value;
        })
        .finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending;
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  private set(key: K, value: V): void {
    this.entries.delete(key);
    // Oldest first: Map keeps insertion order, so the first key is the one to drop.
    if (this.entries.size >= this.options.maxEntries) this.entries.delete(this.entries.keys().next().value as K);
    this.entries.set(key, { value, until: this.options.clock.now().getTime() + this.options.ttlMs });
  }
}
