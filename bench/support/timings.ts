/*
 * Wall time of each awaited call an adapter makes, for "where does a refresh spend its
 * time". Wraps an object's methods in a Proxy; nothing else changes.
 */

export class Timings {
  private readonly calls = new Map<string, number[]>();

  record(name: string, ms: number): void {
    const list = this.calls.get(name);
    if (list) list.push(ms);
    else this.calls.set(name, [ms]);
  }

  /** `methods` that return promises are timed under `${label}.${method}`. */
  wrap<T extends object>(target: T, label: string, methods: readonly string[]): T {
    const names = new Set(methods);
    return new Proxy(target, {
      get: (object, property, receiver) => {
        const value: unknown = Reflect.get(object, property, receiver);
        if (typeof value !== 'function' || typeof property !== 'string' || !names.has(property)) {
          return typeof value === 'function' ? value.bind(object) : value;
        }
        return (...args: unknown[]) => {
          const started = performance.now();
          const result = (value as (...a: unknown[]) => unknown).apply(object, args);
          if (result instanceof Promise) {
            return result.finally(() => this.record(`${label}.${property}`, performance.now() - started));
          }
          return result;
        };
      },
    });
  }

  summary(): Array<{ call: string; count: number; meanMs: number; p50Ms: number; p99Ms: number; totalS: number }> {
    return [...this.calls.entries()]
      .map(([call, list]) => {
        const sorted = [...list].sort((a, b) => a - b);
        const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
        const total = list.reduce((sum, ms) => sum + ms, 0);
        return { call, count: list.length, meanMs: total / list.length, p50Ms: at(0.5), p99Ms: at(0.99), totalS: total / 1000 };
      })
      .sort((a, b) => b.totalS - a.totalS);
  }
}
