import { describe, expect, it } from 'vitest';
import { WriteBudget } from '../../shared/sweep/write-budget.js';

/*
 * Key Vault counts a write when it arrives, which is somewhere between the moment the budget
 * allows it and the moment it finishes. The budget therefore holds a slot for the whole write
 * and starts its 10 seconds only when the write has finished.
 */

function virtualTime() {
  let now = 1_000_000;
  const clock = { now: () => new Date(now) };
  return { clock, advance: (ms: number) => (now += ms), at: () => now };
}

/** A write that finishes when told to. */
function pendingWrite() {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  return { write: () => done, finish };
}

describe('WriteBudget', () => {
  it('keeps a slot while its write is in flight, and for 10 s after it finished', async () => {
    const time = virtualTime();
    const sleeps: number[] = [];
    const budget = new WriteBudget({ writesPer10s: 2, clock: time.clock, sleep: async (ms) => void (sleeps.push(ms), time.advance(ms)) });
    const slow = pendingWrite();
    const first = budget.spend(time.at() + 60_000, slow.write);
    expect(await budget.spend(time.at() + 60_000, async () => undefined)).toBe(true);
    expect(budget.inWindow()).toBe(2);
    // Both slots are taken (one still writing): no third write within the next 10 s.
    expect(budget.canSpendBy(time.at() + 9_999)).toBe(false);
    expect(await budget.spend(time.at() + 5_000, async () => undefined)).toBe(false);

    // The slow write finishes 30 s later; its 10 s start then, not when it was allowed.
    time.advance(30_000);
    slow.finish();
    expect(await first).toBe(true);
    const finishedAt = time.at();
    expect(budget.inWindow()).toBe(1);
    expect(await budget.spend(finishedAt + 60_000, async () => undefined)).toBe(true);
    const waited = budget.spend(finishedAt + 60_000, async () => undefined);
    expect(await waited).toBe(true);
    expect(time.at()).toBe(finishedAt + 10_000);
    expect(sleeps.at(-1)).toBe(10_000);
  });

  it('answers whether one more write fits by a deadline after those already promised', async () => {
    const time = virtualTime();
    const budget = new WriteBudget({ writesPer10s: 3, clock: time.clock, sleep: async (ms) => void time.advance(ms) });
    const start = time.at();
    expect(budget.canSpendBy(start, 2)).toBe(true);
    expect(budget.canSpendBy(start + 9_999, 3)).toBe(false);
    expect(budget.canSpendBy(start + 19_999, 6)).toBe(false);
    expect(budget.canSpendBy(start + 20_000, 6)).toBe(true);
    expect(budget.canSpendBy(start + 9_999, 3)).toBe(false);
    expect(budget.canSpendBy(start + 10_000, 3)).toBe(true);
    await budget.spend(start, async () => undefined);
    time.advance(4_000);
    await budget.spend(time.at(), async () => undefined);
    const slow = pendingWrite();
    const writing = budget.spend(time.at(), slow.write);
    // Full: the next slots free as the writes leave the window, in the order they finished,
    // and the one still writing is counted as if it finished now.
    expect(budget.canSpendBy(start + 10_000, 0)).toBe(true);
    expect(budget.canSpendBy(start + 9_999, 0)).toBe(false);
    expect(budget.canSpendBy(start + 14_000, 1)).toBe(true);
    expect(budget.canSpendBy(start + 13_999, 1)).toBe(false);
    expect(budget.canSpendBy(time.at() + 10_000, 2)).toBe(true);
    expect(budget.canSpendBy(time.at() + 9_999, 2)).toBe(false);
    // More promised than the budget holds: those beyond it wait a window for a slot used before.
    expect(budget.canSpendBy(start + 20_000, 3)).toBe(true);
    expect(budget.canSpendBy(start + 19_999, 3)).toBe(false);
    expect(budget.canSpendBy(start + 34_000, 7)).toBe(true);
    expect(budget.canSpendBy(start + 33_999, 7)).toBe(false);
    slow.finish();
    await writing;
  });

  it('counts a failed write too: the request may have reached the vault', async () => {
    const time = virtualTime();
    const budget = new WriteBudget({ writesPer10s: 1, clock: time.clock, sleep: async (ms) => void time.advance(ms) });
    await expect(budget.spend(time.at() + 1_000, async () => Promise.reject(new Error('429')))).rejects.toThrow('429');
    expect(budget.inWindow()).toBe(1);
    expect(await budget.spend(time.at() + 1_000, async () => undefined)).toBe(false);
  });

  it('never lets more writes than the budget arrive within any 10 s, whatever each takes', async () => {
    // Writes of random duration run 20 at a time against a budget of 30; each arrives at a
    // random moment while it is in flight. Real timers, compressed: 10 s of budget = 200 ms.
    const windowMs = 200;
    const budget = new WriteBudget({ writesPer10s: 30, clock: { now: () => new Date() }, sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)), windowMs });
    const arrivals: number[] = [];
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const write = async () => {
      const duration = random() * 60;
      const arrival = random() * duration;
      await new Promise((resolve) => setTimeout(resolve, arrival));
      arrivals.push(performance.now());
      await new Promise((resolve) => setTimeout(resolve, duration - arrival));
    };
    const deadline = Date.now() + 10_000;
    let issued = 0;
    const worker = async () => {
      while (issued < 150) {
        issued += 1;
        expect(await budget.spend(deadline, write)).toBe(true);
      }
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    arrivals.sort((a, b) => a - b);
    let most = 0;
    for (let first = 0, index = 0; index < arrivals.length; index += 1) {
      // A little slack for timer granularity between Date.now() and performance.now().
      while (arrivals[index]! - arrivals[first]! >= windowMs - 2) first += 1;
      most = Math.max(most, index - first + 1);
    }
    expect(arrivals).toHaveLength(150);
    expect(most).toBeLessThanOrEqual(30);
  });
});
