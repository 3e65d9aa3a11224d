import type { Clock } from '../clock.js';

/**
 * Key Vault allows about 300 secret writes per 10 s per vault (every setSecret is one); the
 * sweep keeps under a configurable share of that, counted the way the vault counts: by when a
 * write arrives.
 *
 * A write holds its slot from the moment it is allowed until it has finished, and only then
 * starts its 10 seconds in the window. Its arrival at the vault lies between those two
 * moments, so whenever a write is allowed, every earlier write that could arrive in the same
 * 10 seconds is still counted: no 10-second span of arrivals ever holds more than the budget,
 * however long a write takes to get there. (Stamping a slot when it is taken, as an earlier
 * version did, let a slow write and a fast later one land in one window: 308 writes against a
 * budget of 300 in bench:sweep.)
 *
 * @see https://learn.microsoft.com/azure/key-vault/general/service-limits
 */
export class WriteBudget {
  /** When each finished write finished, oldest first (finishing times only ever grow). */
  private readonly finished: number[] = [];
  private inFlight = 0;

  constructor(
    private readonly options: { writesPer10s: number; clock: Clock; sleep: (ms: number) => Promise<void>; windowMs?: number },
  ) {}

  private get windowMs(): number {
    return this.options.windowMs ?? 10_000;
  }

  private drop(now: number): void {
    while (this.finished.length > 0 && this.finished[0]! <= now - this.windowMs) this.finished.shift();
  }

  /** Writes in flight plus those that finished within the window, as of `now`. */
  private used(now: number): number {
    this.drop(now);
    return this.inFlight + this.finished.length;
  }

  /** When the next slot frees up at the earliest: a finished write leaving the window, or, with all in flight, one finishing now. */
  private nextFree(now: number): number {
    return this.finished.length > 0 ? this.finished[0]! + this.windowMs : now + this.windowMs;
  }

  /**
   * Runs `write` in a slot, waiting for one if the window is full. `false`, without running
   * it, when the wait would pass `deadline`. The slot counts even when the write fails: the
   * request may have reached the vault.
   */
  async spend(deadline: number, write: () => Promise<void>): Promise<boolean> {
    for (;;) {
      const now = this.options.clock.now().getTime();
      if (this.used(now) < this.options.writesPer10s) break;
      const freeAt = this.nextFree(now);
      if (freeAt > deadline) return false;
      await this.options.sleep(Math.max(1, freeAt - now));
    }
    this.inFlight += 1;
    try {
      await write();
    } finally {
      this.inFlight -= 1;
      this.finished.push(this.options.clock.now().getTime());
    }
    return true;
  }

  /**
   * Whether a slot will be free by `deadline` for one more write after `promised` others
   * already started that have yet to ask for theirs, without taking any: the sweep asks before
   * it starts a refresh. At the earliest, the budget's slots are free now (unused), as their
   * finished writes leave the window, or 10 s after now (in flight, counted as finishing now);
   * a write beyond the budget waits for a slot the writes before it used, a window later.
   */
  canSpendBy(deadline: number, promised = 0): boolean {
    const now = this.options.clock.now().getTime();
    const budget = this.options.writesPer10s;
    const unused = budget - this.used(now);
    const slot = promised % budget;
    const firstFree = slot < unused ? now : slot - unused < this.finished.length ? this.finished[slot - unused]! + this.windowMs : now + this.windowMs;
    return firstFree + Math.floor(promised / budget) * this.windowMs <= deadline;
  }

  /** Writes in flight plus those that finished within the last 10 s. */
  inWindow(): number {
    return this.used(this.options.clock.now().getTime());
  }
}
