import type { Clock } from '../clock.js';
import type { Page } from '../storage/entity-table.js';
import type { AppRecord, ConnectionRecord, StatusReason, TenantRecord } from '../storage/records.js';
import type { AlertMailer, AlertSenderStatus, SendSummary } from './alert-mailer.js';
import type { AlertStore, AlertView, ListAlertsQuery, NewAlert, RaisedAlert } from './alert-store.js';
import { needsReauthEmail, reconnectedEmail, secretExpiryEmail } from './messages.js';
import { secretExpiredNow, secretExpiryDedupeKey, secretExpiryDue, type SecretExpiryDue } from './secret-expiry.js';

/*
 * What the rest of the broker calls when something deserves an email: the sweep (secret
 * expiry, sending), the token path (AADSTS7000222, a grant that died) and the callback (a
 * mailbox that works again). Raising only stores the alert; `sendPending` emails it, so a
 * token request never waits on SMTP.
 */

export type TenantContacts = Pick<TenantRecord, 'id' | 'name' | 'alertEmails'>;
export type ReauthConnection = Pick<ConnectionRecord, 'id' | 'tenantId' | 'mailbox' | 'mode' | 'signInName'>;

export interface ReauthorizeLink {
  url: string;
  expiresAt: string;
}

export interface AlertServiceDeps {
  store: AlertStore;
  mailer: AlertMailer;
  clock: Clock;
  /** BROKER_PUBLIC_URL, for the PATCH example in secret emails. */
  publicUrl: string;
  /** BROKER_OPERATOR_EMAIL: always told about secrets; told about mailboxes only when their tenant has no contacts. */
  operatorEmail: string | null;
  log: (message: string, detail?: unknown) => void;
}

export interface SecretExpiryCheck {
  checked: number;
  /** Apps with a warning due at this run (already raised or not). */
  due: number;
  /** Warnings raised for the first time by this run. */
  raised: number;
}

/** Case-insensitive, first spelling wins: the same person listed twice gets one copy. */
function uniqueAddresses(addresses: readonly (string | null | undefined)[]): string[] {
  const seen = new Map<string, string>();
  for (const address of addresses) {
    const trimmed = address?.trim();
    if (trimmed && !seen.has(trimmed.toLowerCase())) seen.set(trimmed.toLowerCase(), trimmed);
  }
  return [...seen.values()];
}

const incidentKey = (connectionId: string, sequence: number) => `needs_reauth:${connectionId}:${sequence}`;

function sequenceOf(dedupeKey: string): number {
  const sequence = Number(dedupeKey.slice(dedupeKey.lastIndexOf(':') + 1));
  return Number.isInteger(sequence) && sequence > 0 ? sequence : 0;
}

export class AlertService {
  constructor(private readonly deps: AlertServiceDeps) {}

  /** Every sweep: the due threshold of each app's secret, raised once per credential and threshold. */
  async checkSecretExpiry(apps: readonly AppRecord[], now: Date = this.deps.clock.now()): Promise<SecretExpiryCheck> {
    const check: SecretExpiryCheck = { checked: apps.length, due: 0, raised: 0 };
    for (const app of apps) {
      const due = secretExpiryDue(app, now);
      if (!due) continue;
      check.due += 1;
      // Once Microsoft has said this credential expired, "expires in 3 days" would only confuse.
      if (due.threshold > 0 && (await this.deps.store.byDedupeKey(secretExpiryDedupeKey(app, 0)))) continue;
      if ((await this.raiseSecretAlert(app, due, now)).created) check.raised += 1;
    }
    return check;
  }

  /** Microsoft said AADSTS7000222: the expired alert at once (the same one the 0-day threshold raises). */
  secretExpired(app: AppRecord): Promise<RaisedAlert> {
    return this.raiseSecretAlert(app, secretExpiredNow(app), this.deps.clock.now());
  }

  private raiseSecretAlert(app: AppRecord, due: SecretExpiryDue, now: Date): Promise<RaisedAlert> {
    const message = secretExpiryEmail({ app, due, now, publicUrl: this.deps.publicUrl });
    return this.raise({
      dedupeKey: due.dedupeKey,
      kind: due.kind,
      subjectId: app.id,
      tenantId: null,
      recipients: uniqueAddresses([...app.alertEmails, this.deps.operatorEmail]),
      ...message,
    });
  }

  /**
   * A connection became needs_reauth: one email per incident to its tenant's contacts, with a
   * fresh Re-authorize link. An incident stays open until `reconnected`; raising it again
   * meanwhile returns the open one and creates no link. Incidents are numbered per connection
   * and the number is in the dedupe key, so two instances raising at once insert one row.
   *
   * `link` may be a function so that a link is created only when an email will carry it.
   */
  async needsReauth(
    connection: ReauthConnection,
    tenant: TenantContacts,
    reason: StatusReason,
    link: ReauthorizeLink | (() => Promise<ReauthorizeLink>),
  ): Promise<RaisedAlert> {
    const incidents = await this.deps.store.incidents(connection.id);
    const open = incidents.find((incident) => incident.value.resolvedAt === null);
    if (open) return { alert: open.value, created: false };
    const sequence = Math.max(0, ...incidents.map((incident) => sequenceOf(incident.value.dedupeKey))) + 1;
    const reauthorize = typeof link === 'function' ? await link() : link;
    return this.raise({
      dedupeKey: incidentKey(connection.id, sequence),
      kind: 'needs_reauth',
      subjectId: connection.id,
      tenantId: tenant.id,
      recipients: this.tenantRecipients(tenant),
      ...needsReauthEmail({ connection, tenant, reason, link: reauthorize }),
    });
  }

  /**
   * The connection works again: closes its open incident and sends the recovery notice to the
   * people who got the problem email. Nothing when there was no open incident, and nothing the
   * second time for the same incident (closing it is conditional, and the notice's dedupe key
   * names the incident).
   */
  async reconnected(connection: Pick<ConnectionRecord, 'id' | 'mailbox'>, tenant: TenantContacts): Promise<RaisedAlert | null> {
    let notice: RaisedAlert | null = null;
    for (const incident of await this.deps.store.incidents(connection.id)) {
      if (incident.value.resolvedAt !== null || !(await this.deps.store.resolve(incident))) continue;
      const now = this.deps.clock.now();
      const recipients = incident.value.recipients.length > 0 ? incident.value.recipients : this.tenantRecipients(tenant);
      notice = await this.raise({
        // The incident's creation time keeps the key unique even if purged incident numbers are reused.
        dedupeKey: `reconnected:${incident.value.dedupeKey}@${incident.value.createdAt}`,
        kind: 'reconnected',
        subjectId: connection.id,
        tenantId: tenant.id,
        recipients,
        ...reconnectedEmail({ connection, tenant, since: incident.value.createdAt, now }),
      });
    }
    return notice;
  }

  sendPending(options: { limit?: number } = {}): Promise<SendSummary> {
    return this.deps.mailer.sendPending(options);
  }

  /** `GET /api/manage/alerts`: what was raised, what went out, and what is still waiting and why. */
  list(query: ListAlertsQuery): Promise<Page<AlertView>> {
    return this.deps.store.list(query);
  }

  status(options: { probe?: boolean } = {}): Promise<AlertSenderStatus> {
    return this.deps.mailer.status(options);
  }

  /** For the sweep's clean-up: sent alerts older than `before` (unsent ones and open incidents stay). */
  purge(before: Date): Promise<number> {
    return this.deps.store.purge(before);
  }

  private tenantRecipients(tenant: TenantContacts): string[] {
    // Without contacts of its own the tenant's problem would reach nobody; the operator can act on it.
    return uniqueAddresses(tenant.alertEmails.length > 0 ? tenant.alertEmails : [this.deps.operatorEmail]);
  }

  private async raise(alert: NewAlert): Promise<RaisedAlert> {
    const raised = await this.deps.store.raise(alert);
    if (raised.created) {
      const { id, kind, subjectId, recipients, status, lastError } = raised.alert;
      this.deps.log(`alert raised: ${alert.subject}`, { id, kind, subjectId, recipients, status, ...(lastError ? { lastError } : {}) });
    }
    return raised;
  }
}
