import { odata } from '@azure/data-tables';
import type { Clock } from './clock.js';
import type { StorageTables } from './storage/tables.js';
import { auditRetentionCutoff, purgeAuditEvents } from './tokens/audit-log.js';

export interface SweepSummary {
  startedAt: string;
  finishedAt: string;
  expiredAuthRequestsRemoved: number;
  expiredLinksRemoved: number;
  auditEventsRemoved: number;
}

/**
 * The housekeeping part of the `rotate-tokens` sweep. Table Storage has no TTL, so expired
 * authorization requests and links, and audit events past their retention, are removed here; the ETag makes a row that was
 * renewed meanwhile survive.
 */
export class Maintenance {
  constructor(private readonly deps: { tables: StorageTables; clock: Clock; auditRetentionDays: number }) {}

  async sweep(): Promise<SweepSummary> {
    const startedAt = this.deps.clock.now().toISOString();
    const expired = odata`expiresAt lt ${startedAt}`;
    let expiredAuthRequestsRemoved = 0;
    for await (const row of this.deps.tables.authRequests.scan(expired)) {
      if (await this.deps.tables.authRequests.delete(row.value.stateHash, '', row.etag)) expiredAuthRequestsRemoved += 1;
    }
    let expiredLinksRemoved = 0;
    for await (const row of this.deps.tables.links.scan(expired)) {
      if (await this.deps.tables.links.delete(row.value.id, '', row.etag)) expiredLinksRemoved += 1;
    }
    const auditEventsRemoved = await purgeAuditEvents(this.deps.tables.auditClient, auditRetentionCutoff(this.deps.clock.now(), this.deps.auditRetentionDays));
    return { startedAt, finishedAt: this.deps.clock.now().toISOString(), expiredAuthRequestsRemoved, expiredLinksRemoved, auditEventsRemoved };
  }
}
