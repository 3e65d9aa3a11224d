import { describe, expect, it } from 'vitest';
import type { Clock } from '../../../shared/clock.js';
import { BrokerError } from '../../../shared/errors.js';
import { assertWithinRateLimit, RateLimiter } from '../../../shared/tokens/rate-limiter.js';

function fakeClock(start = Date.parse('2025-03-01T12:00:00.000Z')) {
  let now = start;
  return {
    now: () => new Date(now),
    advance(ms: number) {
      now += ms;
    },
  } satisfies Clock & { advance(ms: number): void };
}

describe('RateLimiter', () => {
  it('allows the limit, refuses the next request and says when to retry', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 3, clock });
    for (let i = 0; i < 3; i += 1) expect(limiter.take('key_a')).toEqual({ allowed: true });
    // Three a minute: one more every 20 s.
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 20 });
    clock.advance(5_000);
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 15 });
    clock.advance(14_500);
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 1 });
    clock.advance(500);
    expect(limiter.take('key_a')).toEqual({ allowed: true });
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 20 });
  });

  it('rounds Retry-After up to whole seconds and never answers 0', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 600, clock });
    for (let i = 0; i < 600; i += 1) expect(limiter.take('key_a').allowed).toBe(true);
    // 600 a minute: one more every 100 ms, so the client is told 1 s.
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 1 });
    clock.advance(100);
    expect(limiter.take('key_a')).toEqual({ allowed: true });
  });

  it('gives the whole allowance back after a quiet minute', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 5, clock });
    for (let i = 0; i < 5; i += 1) limiter.take('key_a');
    expect(limiter.take('key_a').allowed).toBe(false);
    clock.advance(60_000);
    for (let i = 0; i < 5; i += 1) expect(limiter.take('key_a')).toEqual({ allowed: true });
    expect(limiter.take('key_a')).toEqual({ allowed: false, retryAfterSeconds: 12 });
  });

  it('counts keys separately', () => {
    const limiter = new RateLimiter({ limitPerMinute: 1, clock: fakeClock() });
    expect(limiter.take('key_a').allowed).toBe(true);
    expect(limiter.take('key_a').allowed).toBe(false);
    expect(limiter.take('key_b').allowed).toBe(true);
  });

  it('does not refill when the clock goes backwards', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 1, clock });
    expect(limiter.take('key_a').allowed).toBe(true);
    clock.advance(-30_000);
    expect(limiter.take('key_a').allowed).toBe(false);
  });

  it('forgets idle keys, so memory follows the keys active in the last minute', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 10, clock });
    for (let i = 0; i < 5_000; i += 1) {
      limiter.take(`key_${i}`);
      clock.advance(100);
    }
    // 100 ms apart: only the last minute's 600 keys can still be remembered.
    expect(limiter.size).toBeLessThanOrEqual(601);
    clock.advance(60_000);
    limiter.take('key_last');
    expect(limiter.size).toBe(1);
  });

  it('forgets the key idle longest first, however the others took turns', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 10, clock });
    limiter.take('key_a');
    limiter.take('key_b');
    for (let i = 0; i < 3; i += 1) limiter.take('key_a');
    clock.advance(30_000);
    limiter.take('key_a');
    clock.advance(31_000);
    // key_b has been idle for 61 s, key_a for 31 s: only key_b goes.
    limiter.take('key_c');
    expect(limiter.size).toBe(2);
    clock.advance(30_000);
    limiter.take('key_c');
    expect(limiter.size).toBe(1);
  });

  it('stays within maxKeys even when every key is busy, erring towards allowing', () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limitPerMinute: 1, clock, maxKeys: 100 });
    for (let i = 0; i < 1_000; i += 1) limiter.take(`key_${i}`);
    expect(limiter.size).toBe(100);
    // key_0 was forgotten: it gets a fresh allowance rather than a wrong refusal elsewhere.
    expect(limiter.take('key_0').allowed).toBe(true);
    expect(limiter.take('key_999').allowed).toBe(false);
  });

  it('refuses a limit that is not a positive whole number', () => {
    expect(() => new RateLimiter({ limitPerMinute: 0, clock: fakeClock() })).toThrow(RangeError);
    expect(() => new RateLimiter({ limitPerMinute: 1.5, clock: fakeClock() })).toThrow(RangeError);
  });
});

describe('assertWithinRateLimit', () => {
  it('throws RATE_LIMITED with a 429 and Retry-After once the key is over its allowance', () => {
    const limiter = new RateLimiter({ limitPerMinute: 2, clock: fakeClock() });
    assertWithinRateLimit(limiter, 'key_a');
    assertWithinRateLimit(limiter, 'key_a');
    let caught: unknown;
    try {
      assertWithinRateLimit(limiter, 'key_a');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(BrokerError);
    expect(caught).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfterSeconds: 30 });
  });
});
