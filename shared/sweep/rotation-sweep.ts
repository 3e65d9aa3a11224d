import { odata } from '@azure/data-tables';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { newId } from '../ids.js';
import type { Maintenance } from '../maintenance.js';
import type { Versioned } from '../storage/entity-table.js';
import type { ConnectionRecord, RunRecord } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import { withSpan } from '../telemetry.js';
import type { AccessTokens, KeepAliveOptions } from '../tokens/access-tokens.js';
import { Slots } from './slots.js';
import type { WriteBudget } from './write-budget.js';

/*
 * The keep-alive half of `rotate-tokens`. Microsoft kills a refresh token after 90 days
 * without use; redeeming it well before then (every BROKER_REFRESH_MAX_AGE_DAYS) keeps the
 * grant alive and rotates the stored token. A run is bounded in time and in Key Vault
 * writes, and the next run resumes after the last connection this one looked at.
 */

const STATE_NAME = 'rotation';
const RUN_PARTITION = 'rotate-tokens';

export interface SweepDeps {
  tables: StorageTables;
  accessTokens: AccessTokens;
  maintenance: Maintenance;
  clock: Clock;
  writeBudget: WriteBudget;
  refreshMaxAgeDays: number;
  timeBudgetSeconds: number;
  /** Calls to Microsoft in flight at once (BROKER_SWEEP_CONCURRENCY). */
  concurrency: number;
  /** Alerts ride along with each run (secret expiry, queued emails); absent until configured. */
  alerts?: () => Promise<Record<string, number>>;
  log: (message: string, detail?: unknown) => void;
}

export class RotationSweep {
  constructor(private readonly deps: SweepDeps) {}

  private isDue(connection: ConnectionRecord, staleBefore: string): boolean {
    if (connection.mode !== 'delegated') return false;
    // 'error' is the broker's "try again" mark; needs_reauth and revoked wait for a person.
    if (connection.status === 'error') return true;
    return connection.status === 'connected' && (connection.lastRefreshAt ?? '') < staleBefore;
  }

  /** One run, traced with its summary: counts and codes only. */
  run(): Promise<RunRecord> {
    return withSpan('rotate-tokens.run', {}, async (span) => {
      const run = await this.sweepOnce(this.deps.concurrency);
      span.setAttributes({
        'broker.run_id': run.id,
        'broker.sweep.due': run.due,
        'broker.sweep.refreshed': run.refreshed,
        'broker.sweep.failed': Object.values(run.failed).reduce((sum, count) => sum + count, 0),
        ...Object.fromEntries(Object.entries(run.failed).map(([code, count]) => [`broker.sweep.failed.${code}`, count])),
        'broker.sweep.skipped_for_budget': run.skippedForBudget,
        'broker.sweep.skipped_for_time': run.skippedForTime,
        'broker.sweep.complete': run.complete,
      });
      return run;
    });
  }

  private async sweepOnce(limit: number): Promise<RunRecord> {
    const { clock, tables } = this.deps;
    const started = clock.now();
    const deadline = started.getTime() + this.deps.timeBudgetSeconds * 1000;
    const staleBefore = new Date(started.getTime() - this.deps.refreshMaxAgeDays * 86_400_000).toISOString();
    const state = await tables.sweepState.get(STATE_NAME, '');
    const resumeAfter = state?.value.cursor ?? '';

    const run: RunRecord = {
      id: newId('run'),
      name: RUN_PARTITION,
      startedAt: started.toISOString(),
      finishedAt: started.toISOString(),
      due: 0,
      refreshed: 0,
      failed: {},
      skippedForBudget: 0,
      skippedForTime: 0,
      complete: false,
      housekeeping: {},
      alerts: {},
    };

    // Connections are read in key order from where the last run stopped; ids are random, so
    // that order spreads each run's work over the whole table.
    const rows = tables.connections.scan(resumeAfter ? odata`PartitionKey gt ${resumeAfter}` : undefined);
    let cursor = resumeAfter;
    let stopped: 'time' | 'budget' | null = null;
    const inFlight = new Set<Promise<void>>();
    // A slot is taken when a rotated refresh token is about to be written. Waiting for one is
    // capped well inside the refresh lease (30 s), so a wait never lets another instance in.
    const budget = {
      exhausted: false,
      writeGate: async (write: () => Promise<void>) => {
        const written = await this.deps.writeBudget.spend(Math.min(deadline, clock.now().getTime() + 12_000), write);
        if (!written) budget.exhausted = true;
        return written;
      },
    };
    // Most connections share a handful of apps: their credentials are read once per run.
    const credentials = this.deps.accessTokens.appCredentialsForRun();
    // `limit` calls to Microsoft at once, and as many connections again being made ready for
    // theirs (lease, refresh-token read): a slot's next refresh does not wait for storage.
    // A connection made ready holds its lease for about one call's time before it is redeemed.
    const redeemSlots = new Slots(limit);
    const redeemSlot = <T>(call: () => Promise<T>) => redeemSlots.run(call);
    // Outcomes still being written to the connections' rows; a slot does not wait for them.
    const settling: Promise<void>[] = [];
    const settleLater = (settled: Promise<void>) => {
      settling.push(
        settled.catch((error: unknown) => {
          run.refreshed -= 1;
          this.countFailure(run, error);
        }),
      );
    };

    for await (const row of rows) {
      const connection = row.value;
      if (!this.isDue(connection, staleBefore)) {
        cursor = connection.id;
        continue;
      }
      run.due += 1;
      if (clock.now().getTime() >= deadline) {
        stopped = 'time';
        run.skippedForTime += 1;
        break;
      }
      // Each refresh in flight may still want its write: this one starts only if all can have theirs.
      if (budget.exhausted || !this.deps.writeBudget.canSpendBy(deadline, inFlight.size)) {
        stopped = 'budget';
        run.skippedForBudget += 1;
        break;
      }
      const task = this.refreshOne(row, staleBefore, run, { writeGate: budget.writeGate, credentials, settleLater, redeemSlot }).finally(() => inFlight.delete(task));
      inFlight.add(task);
      cursor = connection.id;
      if (inFlight.size >= 2 * limit) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    await Promise.all(settling);
    run.complete = stopped === null;

    // A complete pass starts the next one from the beginning; a cut-short one resumes.
    await tables.sweepState.upsert({ name: STATE_NAME, cursor: run.complete ? '' : cursor, updatedAt: clock.now().toISOString() });

    const housekeeping = await this.deps.maintenance.sweep();
    run.housekeeping = {
      expiredAuthRequestsRemoved: housekeeping.expiredAuthRequestsRemoved,
      expiredLinksRemoved: housekeeping.expiredLinksRemoved,
      auditEventsRemoved: housekeeping.auditEventsRemoved,
    };
    if (this.deps.alerts) {
      try {
        run.alerts = await this.deps.alerts();
      } catch (error) {
        this.deps.log('alerts could not be processed in this run', error);
      }
    }
    run.finishedAt = clock.now().toISOString();
    await tables.runs.insert(run);
    return run;
  }

  private async refreshOne(
    row: Versioned<ConnectionRecord>,
    staleBefore: string,
    run: RunRecord,
    options: KeepAliveOptions,
  ): Promise<void> {
    try {
      await this.deps.accessTokens.refreshUnlessSince(row, new Date(staleBefore), options);
      run.refreshed += 1;
    } catch (error) {
      this.countFailure(run, error, row.value.id);
    }
  }

  private countFailure(run: RunRecord, error: unknown, connectionId?: string): void {
    const code = error instanceof BrokerError ? error.code : 'INTERNAL';
    run.failed[code] = (run.failed[code] ?? 0) + 1;
    if (!(error instanceof BrokerError)) this.deps.log(`refreshing ${connectionId ?? 'a connection'} failed unexpectedly`, error);
  }

  async latest(limit: number): Promise<RunRecord[]> {
    const page = await this.deps.tables.runs.page({ limit, filter: odata`PartitionKey eq ${RUN_PARTITION}` });
    return page.items;
  }
}
