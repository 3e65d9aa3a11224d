import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { EntityCodec } from '../storage/entity-table.js';

/*
 * How an alert is kept in Table Storage (suggested table: `alerts`). Its own module, so
 * storage/tables.ts can import the codec without pulling in the alert service.
 */

export const alertKinds = ['secret_expiry', 'secret_expired', 'needs_reauth', 'reconnected'] as const;
export type AlertKind = (typeof alertKinds)[number];
export const alertStatuses = ['queued', 'sent', 'failed'] as const;
export type AlertStatus = (typeof alertStatuses)[number];

const timestamp = z.string();
const nullable = <T extends z.ZodType>(schema: T) => schema.nullable().default(null);

export const alertRecord = z.object({
  id: z.string(),
  /** What makes two raises the same alert; the row key derives from it, so the insert is the uniqueness check. */
  dedupeKey: z.string(),
  kind: z.enum(alertKinds),
  /** The app (`app_…`) or connection (`con_…`) the alert is about. */
  subjectId: z.string(),
  /** The tenant of a connection alert; null for app alerts, which go to the operator side. */
  tenantId: nullable(z.string()),
  recipients: z.array(z.string()),
  subject: z.string(),
  text: z.string(),
  html: z.string(),
  status: z.enum(alertStatuses),
  attempts: z.number().int().min(0),
  /** The mail server's answer or the reason it could not be sent; never a token. */
  lastError: nullable(z.string()),
  lastAttemptAt: nullable(timestamp),
  /** A sender working on it until then; another instance leaves it alone meanwhile. */
  claimedUntil: nullable(timestamp),
  /** needs_reauth only: when the connection worked again, which closes the incident. */
  resolvedAt: nullable(timestamp),
  createdAt: timestamp,
  sentAt: nullable(timestamp),
});
export type AlertRecord = z.infer<typeof alertRecord>;

/**
 * `alr_` + 128 bits of the dedupe key's SHA-256: the same key always lands on the same row,
 * and a key of any length or alphabet (mailboxes, Key Vault versions) fits Table key rules.
 */
export function alertId(dedupeKey: string): string {
  return `alr_${createHash('sha256').update(dedupeKey, 'utf8').digest('hex').slice(0, 32)}`;
}

export const ALERT_ID_PATTERN = /^alr_[0-9a-f]{32}$/;

export const alertCodec: EntityCodec<AlertRecord> = {
  schema: alertRecord,
  partitionKey: (alert) => alert.id,
  rowKey: () => '',
  jsonFields: ['recipients'],
};
