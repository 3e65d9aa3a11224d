import { z } from 'zod';
import type { EntityCodec } from './entity-table.js';

/*
 * What the broker keeps in Table Storage. Partition keys are random ids wherever a row is
 * read on its own, so load spreads over partitions; rows read together (a tenant's keys,
 * a tenant's mailbox index) share their tenant's partition, which one tenant cannot make hot.
 */

const timestamp = z.string();
const nullable = <T extends z.ZodType>(schema: T) => schema.nullable().default(null);

export const appRecord = z.object({
  id: z.string(),
  name: z.string(),
  clientId: z.string(),
  tenant: z.string(),
  clientSecretExpiresOn: nullable(timestamp),
  clientSecretVersion: nullable(z.string()),
  alertEmails: z.array(z.string()),
  createdAt: timestamp,
  updatedAt: timestamp,
});
export type AppRecord = z.infer<typeof appRecord>;
export const appCodec: EntityCodec<AppRecord> = {
  schema: appRecord,
  partitionKey: (app) => app.id,
  rowKey: () => '',
  jsonFields: ['alertEmails'],
};

export const tenantRecord = z.object({
  id: z.string(),
  name: z.string(),
  alertEmails: z.array(z.string()),
  createdAt: timestamp,
  updatedAt: timestamp,
});
export type TenantRecord = z.infer<typeof tenantRecord>;
export const tenantCodec: EntityCodec<TenantRecord> = {
  schema: tenantRecord,
  partitionKey: (tenant) => tenant.id,
  rowKey: () => '',
  jsonFields: ['alertEmails'],
};

export const tenantKeyRecord = z.object({
  id: z.string(),
  tenantId: z.string(),
  prefix: z.string(),
  hash: z.string(),
  createdAt: timestamp,
  lastUsedAt: nullable(timestamp),
});
export type TenantKeyRecord = z.infer<typeof tenantKeyRecord>;
export const tenantKeyCodec: EntityCodec<TenantKeyRecord> = {
  schema: tenantKeyRecord,
  partitionKey: (key) => key.tenantId,
  rowKey: (key) => key.id,
};

/** Lookup row: the hash of a presented key leads straight to its tenant. */
export const keyHashRecord = z.object({ hash: z.string(), tenantId: z.string(), keyId: z.string() });
export type KeyHashRecord = z.infer<typeof keyHashRecord>;
export const keyHashCodec: EntityCodec<KeyHashRecord> = {
  schema: keyHashRecord,
  partitionKey: (row) => row.hash,
  rowKey: () => '',
};

export const connectionModes = ['delegated', 'app_only'] as const;
export type ConnectionMode = (typeof connectionModes)[number];
export const mailProtocols = ['smtp', 'imap', 'pop'] as const;
export type MailProtocol = (typeof mailProtocols)[number];
export const connectionStatuses = ['pending', 'connected', 'needs_reauth', 'error', 'revoked'] as const;
export type ConnectionStatus = (typeof connectionStatuses)[number];

export const statusReason = z.object({ code: z.string(), message: z.string(), fix: z.string() });
export type StatusReason = z.infer<typeof statusReason>;

export const connectionRecord = z.object({
  id: z.string(),
  tenantId: z.string(),
  appId: z.string(),
  mailbox: z.string(),
  mode: z.enum(connectionModes),
  protocols: z.array(z.enum(mailProtocols)),
  signInName: nullable(z.string()),
  status: z.enum(connectionStatuses),
  statusReason: nullable(statusReason),
  connectedAt: nullable(timestamp),
  lastRefreshAt: nullable(timestamp),
  /** The identity bound by the first successful sign-in (`oid` + `tid`). */
  boundObjectId: nullable(z.string()),
  boundTenantId: nullable(z.string()),
  /** app_only: the customer's directory, learned from the admin consent redirect. */
  customerTenantId: nullable(z.string()),
  /** When the stored refresh token was last written; limits Key Vault writes to one a day. */
  refreshTokenUpdatedAt: nullable(timestamp),
  /** The current access token, encrypted with the data key, so other instances need not refresh. */
  accessTokenCipher: nullable(z.string()),
  accessTokenExpiresAt: nullable(timestamp),
  /** The refresh lease: one instance refreshes, the others wait for its result. */
  leaseOwner: nullable(z.string()),
  leaseUntil: nullable(timestamp),
  /** No call to Microsoft for this connection before this time (loop detection, throttling). */
  retryNotBefore: nullable(timestamp),
  createdAt: timestamp,
  updatedAt: timestamp,
});
export type ConnectionRecord = z.infer<typeof connectionRecord>;
export const connectionCodec: EntityCodec<ConnectionRecord> = {
  schema: connectionRecord,
  partitionKey: (connection) => connection.id,
  rowKey: () => '',
  jsonFields: ['protocols', 'statusReason'],
};

/** Uniqueness of (tenant, mode, mailbox), and the token endpoint's mailbox lookup. */
export const mailboxIndexRecord = z.object({
  tenantId: z.string(),
  mode: z.enum(connectionModes),
  mailbox: z.string(),
  connectionId: z.string(),
  /** Lets a create tell a row left by a create that failed half-way from one still in progress. */
  createdAt: nullable(timestamp),
});
export type MailboxIndexRecord = z.infer<typeof mailboxIndexRecord>;
export function mailboxIndexRowKey(mode: ConnectionMode, mailbox: string): string {
  // Row keys may not contain / \ # ? or control characters; a mailbox local part may.
  return `${mode}:${encodeURIComponent(mailbox.toLowerCase())}`;
}
export const mailboxIndexCodec: EntityCodec<MailboxIndexRecord> = {
  schema: mailboxIndexRecord,
  partitionKey: (row) => row.tenantId,
  rowKey: (row) => mailboxIndexRowKey(row.mode, row.mailbox),
};

export const authRequestRecord = z.object({
  /** SHA-256 of the `state` sent to Microsoft; the state itself is never stored. */
  stateHash: z.string(),
  connectionId: z.string(),
  linkId: nullable(z.string()),
  kind: z.enum(['authorize', 'admin_consent']),
  codeVerifier: nullable(z.string()),
  expectedMailbox: z.string(),
  createdAt: timestamp,
  expiresAt: timestamp,
});
export type AuthRequestRecord = z.infer<typeof authRequestRecord>;
export const authRequestCodec: EntityCodec<AuthRequestRecord> = {
  schema: authRequestRecord,
  partitionKey: (request) => request.stateHash,
  rowKey: () => '',
};

export const linkRecord = z.object({
  id: z.string(),
  connectionId: z.string(),
  createdAt: timestamp,
  expiresAt: timestamp,
  /** Set when the connection succeeded through this link; the link is dead from then on. */
  completedAt: nullable(timestamp),
});
export type LinkRecord = z.infer<typeof linkRecord>;
export const linkCodec: EntityCodec<LinkRecord> = {
  schema: linkRecord,
  partitionKey: (link) => link.id,
  rowKey: () => '',
};

/** One rotate-tokens run, newest first (the row key counts down). */
export const runRecord = z.object({
  id: z.string(),
  name: z.string(),
  startedAt: timestamp,
  finishedAt: timestamp,
  /** Connections that were due for a keep-alive refresh when looked at. */
  due: z.number().int(),
  refreshed: z.number().int(),
  /** Failures by the broker's error code (NEEDS_REAUTH, APP_MISCONFIGURED, MICROSOFT_UNAVAILABLE, …). */
  failed: z.record(z.string(), z.number().int()),
  skippedForBudget: z.number().int(),
  skippedForTime: z.number().int(),
  /** True when the run reached the end of the connections; otherwise the next run resumes. */
  complete: z.boolean(),
  housekeeping: z.record(z.string(), z.number().int()),
  alerts: z.record(z.string(), z.number().int()).default({}),
});
export type RunRecord = z.infer<typeof runRecord>;
export function runRowKey(startedAt: Date, id: string): string {
  return `${String(9_999_999_999_999 - startedAt.getTime()).padStart(13, '0')}-${id}`;
}
export const runCodec: EntityCodec<RunRecord> = {
  schema: runRecord,
  partitionKey: (run) => run.name,
  rowKey: (run) => runRowKey(new Date(run.startedAt), run.id),
  jsonFields: ['failed', 'housekeeping', 'alerts'],
};

/** Where the sweep stopped, so the next run continues there. */
export const sweepStateRecord = z.object({ name: z.string(), cursor: z.string(), updatedAt: timestamp });
export type SweepStateRecord = z.infer<typeof sweepStateRecord>;
export const sweepStateCodec: EntityCodec<SweepStateRecord> = {
  schema: sweepStateRecord,
  partitionKey: (state) => state.name,
  rowKey: () => '',
};
