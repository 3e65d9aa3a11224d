import type { AppRecord } from '../storage/records.js';
import type { AlertKind } from './alert-record.js';

/*
 * When a client secret's expiry warnings are due. Pure functions of the app and the time, so
 * the sweep may run as often as it likes: each threshold maps to one dedupe key per
 * credential, and the store turns a repeat into a no-op.
 */

/** Days before expiry at which a warning goes out; 0 is the day it expired (or any time after). */
export const SECRET_EXPIRY_THRESHOLDS = [30, 14, 7, 3, 1, 0] as const;
export type ExpiryThreshold = (typeof SECRET_EXPIRY_THRESHOLDS)[number];

const DAY_MS = 86_400_000;

/**
 * The most urgent threshold crossed at `now`, or null while more than 30 days are left. A
 * threshold of N days is crossed once at most N days remain (N × 24 hours, not calendar days:
 * the broker cannot know the reader's time zone, and the email states the exact time). Only
 * the most urgent one counts, so a first run with 13 days left warns at 14 days and does not
 * also send the stale 30-day warning.
 */
export function dueThreshold(expiresOn: Date, now: Date): ExpiryThreshold | null {
  const left = expiresOn.getTime() - now.getTime();
  let due: ExpiryThreshold | null = null;
  for (const threshold of SECRET_EXPIRY_THRESHOLDS) if (left <= threshold * DAY_MS) due = threshold;
  return due;
}

/** Whole days left, rounded up, for the email ("expires in 13 days"); 0 once expired. */
export function daysLeft(expiresOn: Date, now: Date): number {
  return Math.max(0, Math.ceil((expiresOn.getTime() - now.getTime()) / DAY_MS));
}

/**
 * Which credential the warnings are about. The secret store's version changes with every new
 * secret, so a rotation starts the thresholds over; rows from before versions were kept fall
 * back to the expiry date, which a new secret changes too.
 */
export function credentialOf(app: Pick<AppRecord, 'clientSecretVersion' | 'clientSecretExpiresOn'>): string {
  return app.clientSecretVersion ?? `expires-${app.clientSecretExpiresOn ?? 'unknown'}`;
}

export function secretExpiryDedupeKey(app: Pick<AppRecord, 'id' | 'clientSecretVersion' | 'clientSecretExpiresOn'>, threshold: ExpiryThreshold): string {
  return `secret_expiry:${app.id}:${credentialOf(app)}:${threshold}`;
}

export interface SecretExpiryDue {
  kind: Extract<AlertKind, 'secret_expiry' | 'secret_expired'>;
  threshold: ExpiryThreshold;
  dedupeKey: string;
  /** Null only when Microsoft reported the expiry and the broker was never told the date. */
  expiresOn: Date | null;
  /** `microsoft`: a token request failed with AADSTS7000222, whatever the recorded date says. */
  source: 'schedule' | 'microsoft';
}

/** The warning due for an app at `now`, or null (nothing due, or no expiry recorded). */
export function secretExpiryDue(app: AppRecord, now: Date): SecretExpiryDue | null {
  if (!app.clientSecretExpiresOn) return null;
  const expiresOn = new Date(app.clientSecretExpiresOn);
  if (Number.isNaN(expiresOn.getTime())) return null;
  const threshold = dueThreshold(expiresOn, now);
  if (threshold === null) return null;
  return {
    kind: threshold === 0 ? 'secret_expired' : 'secret_expiry',
    threshold,
    dedupeKey: secretExpiryDedupeKey(app, threshold),
    expiresOn,
    source: 'schedule',
  };
}

/**
 * Microsoft's own signal (AADSTS7000222, "the provided client secret keys are expired"): the
 * expired alert at once. Its dedupe key is the 0-day threshold's, so the sweep and the token
 * path together send it once.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/reference-error-codes#aadsts-error-codes
 */
export function secretExpiredNow(app: AppRecord): SecretExpiryDue {
  const recorded = app.clientSecretExpiresOn ? new Date(app.clientSecretExpiresOn) : null;
  return {
    kind: 'secret_expired',
    threshold: 0,
    dedupeKey: secretExpiryDedupeKey(app, 0),
    expiresOn: recorded && !Number.isNaN(recorded.getTime()) ? recorded : null,
    source: 'microsoft',
  };
}
