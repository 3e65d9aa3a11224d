import type { Clock } from '../clock.js';

/**
 * Key Vault allows about 300 secret writes per 10 s per vault (every setSecret is one); the
 * sweep keeps under a configurable share of that. A sliding window of the last 10 s of
 * writes: `reserve` waits for room, or says no when waiting would overrun the deadline.
 *
 * @see https://learn.microsoft.com/azure/key-vault/general/service-limits
 */
export class WriteBudget {
  private readonly window: number[] = [];

  constructor(
    private readonly options: { writesPer10s: number; clock: Clock; sleep: (ms: number) => Promise<void>; windowMs?: number },
  ) {}

  private get windowMs(): number {
    return this.options.windowMs ?? 10_000;
  }

  /** Takes one write slot, waiting if the window is full; `false` when that would pass `deadline`. */
  async reserve(deadline: number): Promise<boolean> {
    for (;;) {
      const now = this.options.clock.now().getTime();
      while (this.window.length > 0 && this.window[0]! <= now - this.windowMs) this.window.shift();
      if (this.window.length < this.options.writesPer10s) {
        this.window.push(now);
        return true;
      }
      const freeAt = this.window[0]! + this.windowMs;
      if (freeAt > deadline) return false;
      await this.options.sleep(freeAt - now);
    }
  }

  /** Whether a slot will be free by `deadline`, without taking it: the sweep asks before it starts a refresh. */
  canReserveBy(deadline: number): boolean {
    const now = this.options.clock.now().getTime();
    const live = this.window.filter((at) => at > now - this.windowMs);
    if (live.length < this.options.writesPer10s) return true;
    return live[0]! + this.windowMs <= deadline;
  }

  /** The most writes reserved in any window so far is what the tests check against the limit. */
  inWindow(): number {
    const now = this.options.clock.now().getTime();
    return this.window.filter((at) => at > now - this.windowMs).length;
  }
}
