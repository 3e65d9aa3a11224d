import { odata } from '@azure/data-tables';
import type { Clock } from '../clock.js';
import type { ConnectService } from '../connect/connect-service.js';
import type { MicrosoftFailure } from '../identity/microsoft-errors.js';
import type { ConnectionRecord, StatusReason } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import { recordSecretDaysToExpiry } from '../telemetry.js';
import type { AlertService } from './alert-service.js';

/** Sent alerts are kept this long for the operator's view; unsent ones and open incidents stay. */
const SENT_ALERT_RETENTION_DAYS = 180;

/*
 * Where the broker's events meet the alerts: the token path and the callback report what
 * happened (never failing a request because an alert could not be raised), and each sweep
 * catches up on anything missed and sends what is queued.
 */
export class BrokerAlerts {
  constructor(
    private readonly deps: {
      alerts: AlertService;
      tables: StorageTables;
      connect: ConnectService;
      clock: Clock;
      log: (message: string, detail?: unknown) => void;
    },
  ) {}

  private async tenantOf(connection: ConnectionRecord) {
    return (await this.deps.tables.tenants.get(connection.tenantId, ''))?.value ?? null;
  }

  private quietly(what: string, work: () => Promise<unknown>): Promise<void> {
    return work().then(
      () => undefined,
      (error: unknown) => this.deps.log(`${what} could not be raised; the next sweep retries`, error),
    );
  }

  /** A connection became needs_reauth: one email per incident, with a fresh Re-authorize link. */
  needsReauth(connection: ConnectionRecord, reason: StatusReason): Promise<void> {
    return this.quietly('a re-authorization alert', async () => {
      const tenant = await this.tenantOf(connection);
      if (!tenant) return;
      await this.deps.alerts.needsReauth(connection, tenant, reason, () => this.deps.connect.createLink(connection));
    });
  }

  /** Microsoft said the app's secret expired (AADSTS7000222): the expired alert at once. */
  appFailure(connection: ConnectionRecord, failure: MicrosoftFailure): Promise<void> {
    if (failure.aadsts !== 7000222) return Promise.resolve();
    return this.quietly('a secret-expired alert', async () => {
      const app = await this.deps.tables.apps.get(connection.appId, '');
      if (app) await this.deps.alerts.secretExpired(app.value);
    });
  }

  /** The connection works again: closes an open incident with a recovery notice. */
  reconnected(connection: ConnectionRecord): Promise<void> {
    return this.quietly('a recovery notice', async () => {
      const tenant = await this.tenantOf(connection);
      if (tenant) await this.deps.alerts.reconnected(connection, tenant);
    });
  }

  /** Each rotate-tokens run: secret expiry, missed incidents, queued emails, clean-up. */
  async sweep(): Promise<Record<string, number>> {
    const apps = [];
    for await (const row of this.deps.tables.apps.scan()) apps.push(row.value);
    recordSecretDaysToExpiry(apps, this.deps.clock.now());
    const expiry = await this.deps.alerts.checkSecretExpiry(apps);
    let incidents = 0;
    for await (const row of this.deps.tables.connections.scan(odata`status eq ${'needs_reauth'}`)) {
      const reason = row.value.statusReason ?? { code: 'NEEDS_REAUTH', message: 'The mailbox must be authorized again.', fix: 'Open the Re-authorize link.' };
      const tenant = await this.tenantOf(row.value);
      if (!tenant) continue;
      const raised = await this.deps.alerts.needsReauth(row.value, tenant, reason, () => this.deps.connect.createLink(row.value));
      if (raised.created) incidents += 1;
    }
    const mail = await this.deps.alerts.sendPending();
    const purged = await this.deps.alerts.purge(new Date(this.deps.clock.now().getTime() - SENT_ALERT_RETENTION_DAYS * 86_400_000));
    return {
      secretExpiryRaised: expiry.raised,
      reauthIncidentsRaised: incidents,
      emailsSent: mail.sent,
      emailsFailed: mail.failed,
      alertsPurged: purged,
    };
  }
}
