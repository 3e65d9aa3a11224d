/** At most `size` calls run at once; the others wait, and go in the order they asked. */
export class Slots {
  private free: number;
  private readonly waiting: Array<() => void> = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`slots need a whole number of at least 1, not ${size}`);
    this.free = size;
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await call();
    } finally {
      // The slot passes straight to the next in line, so no newcomer can take it first.
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}
