import { odata } from '@azure/data-tables';
import type { Clock } from './clock.js';
import type { StorageTables } from './storage/tables.js';

export interface SweepSummary {
  startedAt: string;
  finishedAt: string;
  expiredAuthRequestsRemoved: number;
  expiredLinksRemoved: number;
}

/**
 * The housekeeping part of the `rotate-tokens` sweep. Table Storage has no TTL, so expired
 * authorization requests and links are removed here; the ETag makes a row that was
 * renewed meanwhile survive.
 */
export class Maintenance {
  constructor(private readonly deps: { tables: StorageTables; clock: Clock }) {}

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
    return { startedAt, finishedAt: this.deps.clock.now().toISOString(), expiredAuthRequestsRemoved, expiredLinksRemoved };
  }
}
