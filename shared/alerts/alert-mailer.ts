import { Buffer } from 'node:buffer';
import type { Clock } from '../clock.js';
import type { HostHint } from '../config.js';
import type { Versioned } from '../storage/entity-table.js';
import type { AlertRecord } from './alert-record.js';
import type { AlertStore } from './alert-store.js';

/*
 * Sends queued alerts as real email: SMTP submission with STARTTLS and AUTH XOAUTH2, from a
 * mailbox of the broker's own whose access token the broker itself provides. Every outcome is
 * written to the alert's row before the next alert is tried, so a failure is stored with the
 * server's answer and retried next run, never dropped.
 *
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
 */

export interface SenderToken {
  mailbox: string;
  accessToken: string;
}

export interface AlertMailerDeps {
  store: AlertStore;
  clock: Clock;
  /** BROKER_SMTP_HOST. */
  smtp: HostHint;
  /** The alert sender's mailbox and a fresh token; null when BROKER_ALERT_SENDER is not set. */
  getSenderToken: (() => Promise<SenderToken>) | null;
  /** The Message-ID's right-hand side, e.g. the host of BROKER_PUBLIC_URL. */
  messageIdDomain: string;
  log: (message: string, detail?: unknown) => void;
  fromName?: string;
  /** Connection, greeting and socket timeouts of one SMTP session. */
  timeoutMs?: number;
  /** How long a claimed alert is left to this sender before another may take it. */
  claimMs?: number;
}

export interface SendSummary {
  sent: number;
  failed: number;
  /** Left queued for the next run: no sender configured, or the sender itself failed. */
  skipped: number;
}

export interface AlertSenderStatus {
  configured: boolean;
  /** False when the last attempt failed and alerts are waiting. */
  ok: boolean;
  queued: number;
  failed: number;
  unaddressed: number;
  lastError?: string;
  lastAttemptAt?: string;
  detail: string;
}

const DEFAULT_LIMIT = 50;
const DEFAULT_TIMEOUT_MS = 20_000;
const DEFAULT_CLAIM_MS = 5 * 60_000;

/** Failures of the session or the sender, not of one message: trying the next alert would fail the same way. */
const SENDER_FAILURE_CODES = new Set(['EAUTH', 'ECONNECTION', 'ESOCKET', 'ETIMEDOUT', 'EDNS', 'ETLS', 'EPROTOCOL', 'EOAUTH2', 'ECONNREFUSED']);

const fields = (value: unknown): Record<string, unknown> => (typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {});

/** nodemailer's `code` (EAUTH, ESOCKET…) plus the socket's original code (ECONNREFUSED…). */
function errorCodes(error: unknown): string[] {
  const { code, originalCode } = fields(error);
  return [code, originalCode].filter((value): value is string => typeof value === 'string');
}

/**
 * The server's own line when there is one (`535 5.7.3 Authentication unsuccessful`), else the
 * error's message, with the token and its XOAUTH2 encoding cut out in case either was echoed.
 */
export function describeSendError(error: unknown, secrets: readonly string[]): string {
  const { response } = fields(error);
  const codes = errorCodes(error);
  const message = error instanceof Error ? error.message : String(error);
  const text = typeof response === 'string' && response.trim() !== '' ? response.trim() : message;
  let described = codes.length > 0 ? `${text} (${codes.join(', ')})` : text;
  for (const secret of secrets) if (secret !== '') described = described.replaceAll(secret, '[redacted]');
  return described.slice(0, 1000);
}

/** Why the sender has no token, with the broker's fix when it has one (BrokerError carries it). */
function senderFailure(error: unknown): string {
  const { fix } = fields(error);
  const message = error instanceof Error ? error.message : String(error);
  return `The alert sender could not get an access token: ${message}${typeof fix === 'string' ? ` ${fix}` : ''}`.slice(0, 1000);
}

function xoauth2Forms(mailbox: string, accessToken: string): string[] {
  return [accessToken, Buffer.from(`user=${mailbox}\x01auth=Bearer ${accessToken}\x01\x01`, 'utf8').toString('base64')];
}

export class AlertMailer {
  constructor(private readonly deps: AlertMailerDeps) {}

  get configured(): boolean {
    return this.deps.getSenderToken !== null;
  }

  async sendPending(options: { limit?: number } = {}): Promise<SendSummary> {
    const rows = await this.deps.store.pending(options.limit ?? DEFAULT_LIMIT);
    if (rows.length === 0) return { sent: 0, failed: 0, skipped: 0 };
    if (!this.deps.getSenderToken) {
      this.deps.log(`${rows.length} alert(s) are stored but not emailed: BROKER_ALERT_SENDER is not set`, {
        alerts: rows.map(({ value }) => ({ id: value.id, kind: value.kind, subject: value.subject, recipients: value.recipients })),
      });
      return { sent: 0, failed: 0, skipped: rows.length };
    }

    let sender: SenderToken;
    try {
      sender = await this.deps.getSenderToken();
    } catch (error) {
      // The sender's own grant is gone or Microsoft is down: recorded on the first alert, so
      // readiness and the API show why nothing goes out; the rest stay queued untouched.
      const reason = senderFailure(error);
      const first = await this.deps.store.claim(rows[0]!, this.claimMs());
      if (first) await this.deps.store.markFailed(first, reason);
      this.deps.log(reason);
      return { sent: 0, failed: first ? 1 : 0, skipped: rows.length - (first ? 1 : 0) };
    }

    const summary: SendSummary = { sent: 0, failed: 0, skipped: 0 };
    for (const [index, row] of rows.entries()) {
      const claimed = await this.deps.store.claim(row, this.claimMs());
      if (!claimed) {
        summary.skipped += 1;
        continue;
      }
      const outcome = await this.send(claimed, sender);
      if (outcome === 'sent') {
        summary.sent += 1;
        continue;
      }
      summary.failed += 1;
      if (outcome === 'sender_failed') {
        summary.skipped += rows.length - index - 1;
        break;
      }
    }
    return summary;
  }

  private claimMs(): number {
    return this.deps.claimMs ?? DEFAULT_CLAIM_MS;
  }

  private async send(row: Versioned<AlertRecord>, sender: SenderToken): Promise<'sent' | 'failed' | 'sender_failed'> {
    const alert = row.value;
    const timeout = this.deps.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // 465 is implicit TLS; anything else (587) must upgrade with STARTTLS before AUTH, so the token never travels in clear.
    const implicitTls = this.deps.smtp.port === 465;
    // Loaded on first use, like the verifier's: most instances never send an alert.
    const { createTransport } = await import('nodemailer');
    const transport = createTransport({
      host: this.deps.smtp.host,
      port: this.deps.smtp.port,
      secure: implicitTls,
      requireTLS: !implicitTls,
      auth: { type: 'OAuth2', user: sender.mailbox, accessToken: sender.accessToken },
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
      tls: { minVersion: 'TLSv1.2' },
      logger: false,
      debug: false,
    });
    let refused: string[];
    try {
      const info = await transport.sendMail({
        // Exchange Online sends only as the signed-in mailbox (5.7.60 otherwise).
        from: { name: this.deps.fromName ?? 'Mail OAuth Broker', address: sender.mailbox },
        to: alert.recipients,
        subject: alert.subject,
        text: alert.text,
        html: alert.html,
        date: this.deps.clock.now(),
        // Stable across retries, so a resend after a lost "sent" mark is recognisably the same message.
        messageId: `<${alert.id}@${this.deps.messageIdDomain}>`,
        // RFC 3834: out-of-office and other auto-replies are not sent back to an alert.
        headers: { 'Auto-Submitted': 'auto-generated', 'X-Auto-Response-Suppress': 'All' },
      });
      refused = (info.rejected as readonly unknown[]).map((address) => (typeof address === 'string' ? address : String(fields(address).address)));
    } catch (error) {
      const reason = describeSendError(error, xoauth2Forms(sender.mailbox, sender.accessToken));
      await this.deps.store.markFailed(row, reason);
      this.deps.log(`alert ${alert.id} (${alert.kind}) could not be sent; it is retried on the next run: ${reason}`);
      return errorCodes(error).some((code) => SENDER_FAILURE_CODES.has(code)) ? 'sender_failed' : 'failed';
    } finally {
      transport.close();
    }
    // Outside the try: a storage error here must not mark a delivered message as failed (and resend it).
    // If this write fails the claim lapses and the alert goes again; the stable Message-ID marks it as the same.
    await this.deps.store.markSent(row, refused.length > 0 ? `Not accepted for: ${refused.join(', ')}` : undefined);
    return 'sent';
  }

  /**
   * For readiness (`GET /api/manage/health`): read from storage, so every instance reports the
   * same. With `probe`, the sender's token is fetched too, so a sender whose own grant is gone
   * shows up before an alert needs it.
   */
  async status(options: { probe?: boolean } = {}): Promise<AlertSenderStatus> {
    const unsent = await this.deps.store.unsentSummary();
    const counts = { queued: unsent.queued, failed: unsent.failed, unaddressed: unsent.unaddressed };
    const last = {
      ...(unsent.lastError === null ? {} : { lastError: unsent.lastError }),
      ...(unsent.lastAttemptAt === null ? {} : { lastAttemptAt: unsent.lastAttemptAt }),
    };
    const unaddressed = unsent.unaddressed > 0 ? `; ${unsent.unaddressed} alert(s) have no recipients` : '';
    if (!this.deps.getSenderToken) {
      return {
        configured: false,
        ok: true,
        ...counts,
        ...last,
        detail: `BROKER_ALERT_SENDER is not set: alerts are stored and logged, not emailed (${unsent.queued + unsent.failed} waiting, see GET /api/manage/alerts)${unaddressed}`,
      };
    }
    if (options.probe) {
      try {
        await this.deps.getSenderToken();
      } catch (error) {
        const reason = senderFailure(error);
        return { configured: true, ok: false, ...counts, lastError: reason, detail: `${reason} (${unsent.queued + unsent.failed} alert(s) waiting)` };
      }
    }
    const ok = unsent.failed === 0;
    return {
      configured: true,
      ok,
      ...counts,
      ...last,
      detail: ok
        ? `alerts are emailed from the alert sender (${unsent.queued} queued)${unaddressed}`
        : `${unsent.failed} alert(s) could not be sent yet: ${unsent.lastError ?? 'see GET /api/manage/alerts?status=failed'}${unaddressed}`,
    };
  }
}
