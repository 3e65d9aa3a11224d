import { odata } from '@azure/data-tables';
import { z } from 'zod';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { StorageConflictError, type EntityTable, type Page, type Versioned } from '../storage/entity-table.js';
import { ALERT_ID_PATTERN, alertId, alertStatuses, type AlertKind, type AlertRecord, type AlertStatus } from './alert-record.js';

export { alertCodec, alertId, alertKinds, alertRecord, alertStatuses, type AlertKind, type AlertRecord, type AlertStatus } from './alert-record.js';

/*
 * Alerts in Table Storage. A row is keyed by a hash of its dedupe key, so raising the same
 * alert twice, from two instances at once, inserts once: the 409 is the answer "already
 * raised", not an error. Unsent rows are never deleted, so a failed send is never lost.
 */

export interface NewAlert {
  dedupeKey: string;
  kind: AlertKind;
  subjectId: string;
  tenantId?: string | null;
  recipients: readonly string[];
  subject: string;
  text: string;
  html: string;
}

export interface RaisedAlert {
  alert: AlertRecord;
  /** False when this dedupe key had been raised before: nothing new will be sent. */
  created: boolean;
}

/** What `GET /api/manage/alerts` shows: everything but the HTML copy of the body and the send lease. */
export type AlertView = Omit<AlertRecord, 'html' | 'claimedUntil'>;

export const alertView = ({ html: _html, claimedUntil: _claimed, ...view }: AlertRecord): AlertView => view;

export const listAlertsQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(50),
    cursor: z.string().min(1).max(2048).optional(),
    status: z.enum(alertStatuses).optional(),
  })
  .strict();
export type ListAlertsQuery = z.infer<typeof listAlertsQuery>;

export interface UnsentSummary {
  queued: number;
  /** Tried and failed (alerts without recipients are counted in `unaddressed` instead). */
  failed: number;
  /** Stored with nobody to send them to. */
  unaddressed: number;
  /** The most recent failure among unsent alerts. */
  lastError: string | null;
  lastAttemptAt: string | null;
}

export const NO_RECIPIENTS = 'No recipients: set the alert emails of the app or tenant, or BROKER_OPERATOR_EMAIL.';
/** Unsent alerts are few (they are sent, or they are what the operator must look at); this bounds a run's read anyway. */
const MAX_UNSENT_READ = 1000;
const MAX_ERROR_LENGTH = 1000;

export interface AlertStoreDeps {
  table: EntityTable<AlertRecord>;
  clock: Clock;
}

export class AlertStore {
  constructor(private readonly deps: AlertStoreDeps) {}

  /** Stores a new alert as queued, or returns the one already raised with the same dedupe key. */
  async raise(input: NewAlert): Promise<RaisedAlert> {
    const now = this.deps.clock.now().toISOString();
    const recipients = [...new Set(input.recipients.map((address) => address.trim()).filter((address) => address !== ''))];
    const record: AlertRecord = {
      id: alertId(input.dedupeKey),
      dedupeKey: input.dedupeKey,
      kind: input.kind,
      subjectId: input.subjectId,
      tenantId: input.tenantId ?? null,
      recipients,
      subject: input.subject,
      text: input.text,
      html: input.html,
      // Kept and visible through the API, but nobody to send it to: failed from the start.
      status: recipients.length === 0 ? 'failed' : 'queued',
      attempts: 0,
      lastError: recipients.length === 0 ? NO_RECIPIENTS : null,
      lastAttemptAt: null,
      claimedUntil: null,
      resolvedAt: null,
      createdAt: now,
      sentAt: null,
    };
    // A second round only if the existing row vanished between the 409 and the read (a purge).
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        await this.deps.table.insert(record);
        return { alert: record, created: true };
      } catch (error) {
        if (!(error instanceof StorageConflictError)) throw error;
      }
      const existing = await this.deps.table.get(record.id, '');
      if (existing) return { alert: existing.value, created: false };
    }
    throw new BrokerError('CONFLICT', `The alert ${record.id} kept changing while it was being raised.`);
  }

  async get(id: string): Promise<Versioned<AlertRecord> | null> {
    return ALERT_ID_PATTERN.test(id) ? this.deps.table.get(id, '') : null;
  }

  byDedupeKey(dedupeKey: string): Promise<Versioned<AlertRecord> | null> {
    return this.deps.table.get(alertId(dedupeKey), '');
  }

  private async unsent(): Promise<Versioned<AlertRecord>[]> {
    const rows: Versioned<AlertRecord>[] = [];
    for await (const row of this.deps.table.scan(odata`status ne ${'sent'}`)) {
      rows.push(row);
      if (rows.length >= MAX_UNSENT_READ) break;
    }
    return rows;
  }

  /**
   * Alerts to send now: queued and failed ones with recipients that no sender holds. Never-tried
   * first, then oldest first, so a few that keep failing cannot starve new ones.
   */
  async pending(limit: number): Promise<Versioned<AlertRecord>[]> {
    const now = this.deps.clock.now().toISOString();
    return (await this.unsent())
      .filter(({ value }) => value.recipients.length > 0 && (value.claimedUntil === null || value.claimedUntil <= now))
      .sort((a, b) => a.value.attempts - b.value.attempts || a.value.createdAt.localeCompare(b.value.createdAt))
      .slice(0, limit);
  }

  /**
   * Takes an alert for sending under its ETag: a sweep and a token request sending at the same
   * moment send it once. A sender that dies mid-send lets the claim lapse and it is sent again
   * (at least once, never zero times).
   */
  async claim(row: Versioned<AlertRecord>, forMs: number): Promise<Versioned<AlertRecord> | null> {
    const until = new Date(this.deps.clock.now().getTime() + forMs).toISOString();
    try {
      return await this.deps.table.replace({ ...row.value, claimedUntil: until }, row.etag);
    } catch (error) {
      if (error instanceof StorageConflictError) return null;
      throw error;
    }
  }

  /** `warning`: recipients the server refused while it took the message for the others. */
  markSent(row: Versioned<AlertRecord>, warning?: string): Promise<AlertRecord> {
    return this.update(row, (current, now) => ({
      ...current,
      status: 'sent',
      attempts: current.attempts + 1,
      lastAttemptAt: now,
      sentAt: now,
      claimedUntil: null,
      lastError: warning === undefined ? current.lastError : warning.slice(0, MAX_ERROR_LENGTH),
    }));
  }

  /** Keeps the alert, with why it failed; the next run tries again. */
  markFailed(row: Versioned<AlertRecord>, error: string): Promise<AlertRecord> {
    return this.update(row, (current, now) => ({
      ...current,
      status: 'failed',
      attempts: current.attempts + 1,
      lastAttemptAt: now,
      claimedUntil: null,
      lastError: error.slice(0, MAX_ERROR_LENGTH),
    }));
  }

  async list(query: ListAlertsQuery): Promise<Page<AlertView>> {
    const page = await this.deps.table.page({
      limit: query.limit,
      cursor: query.cursor,
      filter: query.status ? odata`status eq ${query.status}` : undefined,
    });
    return { items: page.items.map(alertView), next: page.next };
  }

  /** Every needs_reauth incident of a connection, open or resolved. */
  async incidents(connectionId: string): Promise<Versioned<AlertRecord>[]> {
    const rows: Versioned<AlertRecord>[] = [];
    for await (const row of this.deps.table.scan(odata`kind eq ${'needs_reauth'} and subjectId eq ${connectionId}`)) rows.push(row);
    return rows;
  }

  /** Closes an incident; true only for the one caller that closed it, so one recovery notice goes out. */
  async resolve(row: Versioned<AlertRecord>): Promise<boolean> {
    let resolved = false;
    await this.update(row, (current, now) => {
      resolved = current.resolvedAt === null;
      return resolved ? { ...current, resolvedAt: now } : null;
    });
    return resolved;
  }

  /** For readiness: what is waiting, and the latest reason it could not go. */
  async unsentSummary(): Promise<UnsentSummary> {
    const all = (await this.unsent()).map((row) => row.value);
    const rows = all.filter((row) => row.recipients.length > 0);
    const latest = rows.filter((row) => row.lastAttemptAt !== null).sort((a, b) => (b.lastAttemptAt ?? '').localeCompare(a.lastAttemptAt ?? ''))[0];
    const count = (status: AlertStatus) => rows.filter((row) => row.status === status).length;
    return {
      queued: count('queued'),
      failed: count('failed'),
      unaddressed: all.length - rows.length,
      lastError: latest?.lastError ?? null,
      lastAttemptAt: latest?.lastAttemptAt ?? null,
    };
  }

  /**
   * Table Storage has no TTL: the sweep removes sent alerts created before `before`. Unsent ones
   * stay, and so do open incidents, whose row is what keeps a second email from going out.
   */
  async purge(before: Date): Promise<number> {
    let removed = 0;
    for await (const row of this.deps.table.scan(odata`status eq ${'sent'} and createdAt lt ${before.toISOString()}`)) {
      if (row.value.kind === 'needs_reauth' && row.value.resolvedAt === null) continue;
      if (await this.deps.table.delete(row.value.id, '', row.etag)) removed += 1;
    }
    return removed;
  }

  /** Conditional on the ETag, re-read on conflict, so a concurrent change (a resolve during a send) survives. */
  private async update(row: Versioned<AlertRecord>, change: (current: AlertRecord, now: string) => AlertRecord | null): Promise<AlertRecord> {
    let current: Versioned<AlertRecord> | null = row;
    for (let attempt = 0; current && attempt < 5; attempt += 1) {
      const next = change(current.value, this.deps.clock.now().toISOString());
      if (next === null) return current.value;
      try {
        await this.deps.table.replace(next, current.etag);
        return next;
      } catch (error) {
        if (!(error instanceof StorageConflictError)) throw error;
        current = await this.deps.table.get(row.value.id, '');
      }
    }
    throw new BrokerError('CONFLICT', `The alert ${row.value.id} ${current ? 'kept changing' : 'no longer exists'}; it is retried on the next run.`);
  }
}
