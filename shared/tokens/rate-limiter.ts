import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';

/*
 * `BROKER_TOKEN_RATE_LIMIT`: token requests per API key per minute, as a token bucket that
 * holds a minute's allowance and refills continuously. A burst of the whole allowance is
 * fine; after that, requests are let through at the steady rate, and `retryAfterSeconds`
 * says exactly when the next one will be.
 *
 * The limit is per instance. The Functions platform scales out, so with n instances a key
 * may get up to n × the limit. That is acceptable for what this limit is for: stopping a
 * runaway or looping client from turning the token endpoint (and the refresh path behind
 * it) into a hot loop on the instances it lands on. It costs nothing per request, and an
 * instance under a flood is exactly where refusals are needed. The broker already serves
 * cached tokens and makes one Microsoft call per connection across instances, so a higher
 * effective limit never multiplies calls to Microsoft. A global limit would need shared
 * state on every request: a counter row per key and window in Table Storage updated with
 * ETags (one more round trip and a hot row per busy key), a Redis counter, or Azure API
 * Management's `rate-limit-by-key` policy in front of the Function App.
 */

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface RateLimiterOptions {
  limitPerMinute: number;
  clock: Clock;
  /** Hard bound on tracked keys; the least recently used one is forgotten beyond it. */
  maxKeys?: number;
}

const MINUTE_MS = 60_000;

interface Bucket {
  /** Units: one request costs `MINUTE_MS` units and the bucket gains `limitPerMinute` units per ms, so all arithmetic stays in integers. */
  units: number;
  updatedAtMs: number;
}

export class RateLimiter {
  private readonly limit: number;
  private readonly capacity: number;
  private readonly maxKeys: number;
  private readonly clock: Clock;
  /** In least-recently-used order: each `take` moves its key to the end. */
  private readonly buckets = new Map<string, Bucket>();
  /** The key at the end: taking it again needs no move (a busy key's requests come in runs). */
  private lastKey: string | undefined;

  constructor(options: RateLimiterOptions) {
    if (!Number.isInteger(options.limitPerMinute) || options.limitPerMinute < 1) {
      throw new RangeError('limitPerMinute must be a positive whole number');
    }
    this.limit = options.limitPerMinute;
    this.capacity = this.limit * MINUTE_MS;
    this.maxKeys = Math.max(1, options.maxKeys ?? 100_000);
    this.clock = options.clock;
  }

  /** Takes one request from `keyId`'s allowance; O(1) amortized. */
  take(keyId: string): RateDecision {
    const now = this.clock.now().getTime();
    let bucket = this.buckets.get(keyId);
    let units = this.capacity;
    if (bucket) {
      // A minute refills the bucket entirely; capping elapsed first keeps the product exact.
      const elapsed = Math.min(Math.max(0, now - bucket.updatedAtMs), MINUTE_MS);
      units = Math.min(this.capacity, bucket.units + elapsed * this.limit);
      if (keyId !== this.lastKey) {
        this.buckets.delete(keyId);
        this.buckets.set(keyId, bucket);
      }
    } else {
      bucket = { units, updatedAtMs: now };
      this.buckets.set(keyId, bucket);
    }
    this.lastKey = keyId;
    const allowed = units >= MINUTE_MS;
    if (allowed) units -= MINUTE_MS;
    bucket.units = units;
    bucket.updatedAtMs = now;
    this.evict(now);
    if (allowed) return { allowed: true };
    const waitMs = Math.ceil((MINUTE_MS - units) / this.limit);
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  }

  /** Keys tracked now; for tests and diagnostics. */
  get size(): number {
    return this.buckets.size;
  }

  /**
   * A key untouched for a minute has a full bucket, which is what an unknown key gets, so
   * forgetting it changes nothing. Oldest first, so each entry is looked at once.
   */
  private evict(now: number): void {
    for (const [keyId, bucket] of this.buckets) {
      const idle = now - bucket.updatedAtMs >= MINUTE_MS;
      if (!idle && this.buckets.size <= this.maxKeys) break;
      // Over the hard bound a key is forgotten early: it can only gain allowance, never lose it.
      this.buckets.delete(keyId);
    }
  }
}

/** Throws `RATE_LIMITED` (429 + `Retry-After`) when `keyId` is over its allowance. */
export function assertWithinRateLimit(limiter: RateLimiter, keyId: string): void {
  const decision = limiter.take(keyId);
  if (!decision.allowed) {
    throw new BrokerError(
      'RATE_LIMITED',
      `This API key made more token requests than allowed per minute; retry after ${decision.retryAfterSeconds} s.`,
      { retryAfterSeconds: decision.retryAfterSeconds },
    );
  }
}
