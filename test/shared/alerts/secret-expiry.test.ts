import { describe, expect, it } from 'vitest';
import {
  daysLeft,
  dueThreshold,
  secretExpiredNow,
  secretExpiryDedupeKey,
  secretExpiryDue,
} from '../../../shared/alerts/secret-expiry.js';
import type { AppRecord } from '../../../shared/storage/records.js';

/* When client-secret warnings are due: pure functions of the app and the time. */

const DAY = 86_400_000;
const HOUR = 3_600_000;
const EXPIRES = new Date('2025-06-30T17:00:00.000Z');

function makeApp(overrides: Partial<AppRecord> = {}): AppRecord {
  return {
    id: 'app_aaaaaaaaaaaaaaaaaaaaaaaaaa',
    name: 'Contoso Mail',
    clientId: '11111111-2222-4333-8444-555555555555',
    tenant: 'organizations',
    clientSecretExpiresOn: EXPIRES.toISOString(),
    clientSecretVersion: 'v1',
    alertEmails: ['admin@contoso.example'],
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    ...overrides,
  };
}

const before = (ms: number) => new Date(EXPIRES.getTime() - ms);

/** Every sweep run from `from` to `to` (both before expiry, in ms) every `step`: the distinct dedupe keys raised, in order. */
function sweep(app: AppRecord, from: number, to: number, step: number): string[] {
  const keys: string[] = [];
  for (let left = from; left >= to; left -= step) {
    const due = secretExpiryDue(app, before(left));
    if (due && !keys.includes(due.dedupeKey)) keys.push(due.dedupeKey);
  }
  return keys;
}

describe('dueThreshold', () => {
  it('is null while more than 30 days are left', () => {
    expect(dueThreshold(EXPIRES, before(31 * DAY))).toBeNull();
    expect(dueThreshold(EXPIRES, before(30 * DAY + 1))).toBeNull();
  });

  it('is the most urgent threshold crossed, N days meaning N × 24 hours before expiry', () => {
    expect(dueThreshold(EXPIRES, before(30 * DAY))).toBe(30);
    expect(dueThreshold(EXPIRES, before(15 * DAY))).toBe(30);
    expect(dueThreshold(EXPIRES, before(14 * DAY))).toBe(14);
    expect(dueThreshold(EXPIRES, before(13 * DAY))).toBe(14);
    expect(dueThreshold(EXPIRES, before(7 * DAY))).toBe(7);
    expect(dueThreshold(EXPIRES, before(3 * DAY + 1))).toBe(7);
    expect(dueThreshold(EXPIRES, before(3 * DAY))).toBe(3);
    expect(dueThreshold(EXPIRES, before(DAY))).toBe(1);
    expect(dueThreshold(EXPIRES, before(HOUR))).toBe(1);
  });

  it('is 0 from the moment it expired, however long ago', () => {
    expect(dueThreshold(EXPIRES, EXPIRES)).toBe(0);
    expect(dueThreshold(EXPIRES, before(-400 * DAY))).toBe(0);
  });

  it('daysLeft rounds up and stops at 0', () => {
    expect(daysLeft(EXPIRES, before(13 * DAY + HOUR))).toBe(14);
    expect(daysLeft(EXPIRES, before(HOUR))).toBe(1);
    expect(daysLeft(EXPIRES, before(-DAY))).toBe(0);
  });
});

describe('stepping the clock', () => {
  it('from 31 days to after expiry, many runs a day, gives exactly six alerts: 30, 14, 7, 3, 1, 0', () => {
    const app = makeApp();
    const keys = sweep(app, 31 * DAY, -2 * DAY, HOUR / 2);
    expect(keys).toEqual([30, 14, 7, 3, 1, 0].map((threshold) => secretExpiryDedupeKey(app, threshold as 30)));
  });

  it('on the 31st day before expiry, nothing', () => {
    expect(sweep(makeApp(), 31 * DAY, 30 * DAY + 1, HOUR)).toEqual([]);
  });

  it('a first run with 13 days left raises only the 14-day warning, not the 30-day one too', () => {
    const app = makeApp();
    expect(secretExpiryDue(app, before(13 * DAY))).toMatchObject({ threshold: 14, kind: 'secret_expiry' });
    expect(sweep(app, 13 * DAY, 0, HOUR)).toEqual([14, 7, 3, 1, 0].map((threshold) => secretExpiryDedupeKey(app, threshold as 14)));
  });

  it('a new secret (new version) starts the thresholds over', () => {
    const old = makeApp();
    const rotated = makeApp({ clientSecretVersion: 'v2' });
    expect(secretExpiryDedupeKey(old, 7)).not.toBe(secretExpiryDedupeKey(rotated, 7));
    const oldKeys = sweep(old, 31 * DAY, 5 * DAY, HOUR);
    const newKeys = sweep(rotated, 31 * DAY, 5 * DAY, HOUR);
    expect(oldKeys).toHaveLength(3);
    expect(newKeys).toHaveLength(3);
    expect(newKeys.some((key) => oldKeys.includes(key))).toBe(false);
  });

  it('without a recorded version, the expiry date tells credentials apart', () => {
    const a = makeApp({ clientSecretVersion: null });
    const b = makeApp({ clientSecretVersion: null, clientSecretExpiresOn: '2026-06-30T17:00:00.000Z' });
    expect(secretExpiryDedupeKey(a, 30)).not.toBe(secretExpiryDedupeKey(b, 30));
  });

  it('an app without a recorded expiry has nothing due', () => {
    expect(secretExpiryDue(makeApp({ clientSecretExpiresOn: null }), EXPIRES)).toBeNull();
  });
});

describe('secretExpiredNow (AADSTS7000222)', () => {
  it('is the expired alert with the 0-day threshold\'s dedupe key, so it is sent once', () => {
    const app = makeApp();
    const now = secretExpiredNow(app);
    expect(now).toMatchObject({ kind: 'secret_expired', threshold: 0, source: 'microsoft', expiresOn: EXPIRES });
    expect(now.dedupeKey).toBe(secretExpiryDue(app, EXPIRES)?.dedupeKey);
  });

  it('works for an app whose expiry the broker was never told', () => {
    expect(secretExpiredNow(makeApp({ clientSecretExpiresOn: null }))).toMatchObject({ threshold: 0, expiresOn: null });
  });
});
