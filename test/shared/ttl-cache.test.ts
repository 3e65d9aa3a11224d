import { describe, expect, it } from 'vitest';
import { TtlCache } from '../../shared/ttl-cache.js';

function clock() {
  let now = 0;
  return { now: () => new Date(now), advance: (ms: number) => (now += ms) };
}

describe('TtlCache', () => {
  it('answers from memory within the TTL and loads again after it', async () => {
    const time = clock();
    const cache = new TtlCache<string, number>({ ttlMs: 1000, maxEntries: 10, clock: time });
    let loads = 0;
    const load = async () => ++loads;
    expect(await cache.get('a', load)).toBe(1);
    expect(await cache.get('a', load)).toBe(1);
    time.advance(1001);
    expect(await cache.get('a', load)).toBe(2);
  });

  it('shares one load among concurrent misses and keeps only what `keep` accepts', async () => {
    const cache = new TtlCache<string, number | null>({ ttlMs: 1000, maxEntries: 10, clock: clock() });
    let loads = 0;
    const slow = () => new Promise<number | null>((resolve) => setTimeout(() => resolve(++loads), 10));
    const answers = await Promise.all(Array.from({ length: 5 }, () => cache.get('a', slow)));
    expect(answers).toEqual([1, 1, 1, 1, 1]);
    const none = async () => null;
    await cache.get('b', none, (value) => value !== null);
    let reloaded = false;
    await cache.get('b', async () => ((reloaded = true), null), (value) => value !== null);
    expect(reloaded).toBe(true);
  });

  it('drops expired entries as new ones arrive, and the oldest beyond the bound', async () => {
    const time = clock();
    const cache = new TtlCache<number, number>({ ttlMs: 1000, maxEntries: 3, clock: time });
    for (let key = 0; key < 3; key += 1) await cache.get(key, async () => key);
    await cache.get(3, async () => 3);
    let reloaded = 0;
    await cache.get(0, async () => ((reloaded += 1), 0));
    expect(reloaded).toBe(1);
    time.advance(2000);
    await cache.get(9, async () => 9);
    // Everything older than the TTL went with that insert.
    expect((cache as unknown as { entries: Map<number, unknown> }).entries.size).toBe(1);
  });

  it('keeps each value as long as its own TTL says, and a load that throws is not kept', async () => {
    const time = clock();
    const cache = new TtlCache<string, string | null>({ ttlMs: (value) => (value === null ? 100 : 10_000), maxEntries: 10, clock: time });
    let loads = 0;
    const found = async () => ((loads += 1), 'document');
    const missing = async () => ((loads += 1), null);
    await cache.get('good', found);
    await cache.get('bad', missing);
    time.advance(101);
    await cache.get('good', found);
    await cache.get('bad', missing);
    expect(loads).toBe(3);
    await expect(cache.get('thrown', () => { throw new Error('synchronous'); })).rejects.toThrow('synchronous');
    expect(await cache.get('thrown', found)).toBe('document');
  });
});
