import { describe, expect, it } from 'vitest';
import { Slots } from '../../shared/sweep/slots.js';

function deferred() {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((yes, no) => ((resolve = yes), (reject = no)));
  return { promise, resolve, reject };
}

describe('Slots', () => {
  it('runs at most its size at once, the others in the order they asked, and frees a slot when a call fails', async () => {
    const slots = new Slots(2);
    const started: number[] = [];
    const calls = Array.from({ length: 5 }, () => deferred());
    const runs = calls.map((call, index) =>
      slots.run(async () => {
        started.push(index);
        await call.promise;
        return index;
      }),
    );
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    await settle();
    expect(started).toEqual([0, 1]);
    calls[1]!.reject(new Error('refused'));
    await expect(runs[1]).rejects.toThrow('refused');
    await settle();
    expect(started).toEqual([0, 1, 2]);
    // A newcomer while others wait goes behind them.
    const late = slots.run(async () => {
      started.push(99);
      return 99;
    });
    calls[0]!.resolve();
    calls[2]!.resolve();
    await settle();
    expect(started).toEqual([0, 1, 2, 3, 4]);
    calls[3]!.resolve();
    calls[4]!.resolve();
    expect(await Promise.all([runs[0], runs[2], runs[3], runs[4], late])).toEqual([0, 2, 3, 4, 99]);
    expect(started.at(-1)).toBe(99);
  });

  it('refuses a size that is not a whole number of at least 1', () => {
    for (const size of [0, -1, 1.5, Number.NaN]) expect(() => new Slots(size)).toThrow(RangeError);
  });
});
