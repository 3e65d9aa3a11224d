import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { TableClient } from '@azure/data-tables';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzuriteTables, type AzuriteTables } from '../../../infra/local/azurite.js';
import { freePort } from '../../../infra/local/free-port.js';
import { AlertMailer, type SenderToken } from '../../../shared/alerts/alert-mailer.js';
import { alertCodec, type AlertRecord } from '../../../shared/alerts/alert-record.js';
import { AlertService } from '../../../shared/alerts/alert-service.js';
import { AlertStore, NO_RECIPIENTS } from '../../../shared/alerts/alert-store.js';
import type { Clock } from '../../../shared/clock.js';
import type { HostHint } from '../../../shared/config.js';
import { BrokerError } from '../../../shared/errors.js';
import { EntityTable } from '../../../shared/storage/entity-table.js';
import type { AppRecord, ConnectionRecord, TenantRecord } from '../../../shared/storage/records.js';
import { startMailServers, type MailServers, type ReceivedMail } from '../../support/mail-servers.js';
import { issueTestServerCertificate } from '../../support/test-ca.js';
import { newConnectionRecord } from '../../../shared/manage/connections.js';

/*
 * The alerts subsystem against real Azurite and a real local SMTP server (STARTTLS, XOAUTH2
 * only, with one expected token), driven by a fake clock the way the timer would drive it.
 */

const DAY = 86_400_000;
const HOUR = 3_600_000;
const SENDER = 'alerts@broker.example';
const TOKEN = `sender-token-${randomBytes(12).toString('hex')}`;
const CLIENT_SECRET = 'contoso~Q8s7Q~not-for-email-0123456789';
const START = Date.parse('2025-03-01T06:00:00.000Z');

let azurite: AzuriteTables;
let servers: MailServers;
let acceptToken = true;

beforeAll(async () => {
  const [tables, tls] = await Promise.all([startAzuriteTables(), issueTestServerCertificate(['localhost', '127.0.0.1'])]);
  azurite = tables;
  servers = await startMailServers({ tls, verifyToken: async (user, token) => acceptToken && user === SENDER && token === TOKEN });
});

afterAll(async () => {
  await Promise.all([servers?.close(), azurite?.stop()]);
});

function fakeClock(at = START) {
  let now = at;
  return { now: () => new Date(now), set: (ms: number) => void (now = ms), advance: (ms: number) => void (now += ms) } satisfies Clock & Record<string, unknown>;
}

interface Harness {
  clock: ReturnType<typeof fakeClock>;
  store: AlertStore;
  table: EntityTable<AlertRecord>;
  alerts: AlertService;
  logs: string[];
  mailer(options?: { smtp?: HostHint; sender?: (() => Promise<SenderToken>) | null }): AlertService;
}

/** One alerts table per test: a fresh store, service and mailer, sharing the mail server. */
function harness(options: { smtp?: HostHint; sender?: (() => Promise<SenderToken>) | null; operatorEmail?: string | null } = {}): Harness {
  const clock = fakeClock();
  const client = TableClient.fromConnectionString(azurite.connectionString, `alerts${randomBytes(6).toString('hex')}`, { allowInsecureConnection: true });
  const table = new EntityTable(client, alertCodec);
  const store = new AlertStore({ table, clock });
  const logs: string[] = [];
  const log = (message: string, detail?: unknown) => void logs.push(`${message} ${JSON.stringify(detail ?? '')}`);
  const service = (mailerOptions: { smtp?: HostHint; sender?: (() => Promise<SenderToken>) | null }) =>
    new AlertService({
      store,
      clock,
      publicUrl: 'https://broker.example',
      operatorEmail: options.operatorEmail === undefined ? 'ops@broker.example' : options.operatorEmail,
      log,
      mailer: new AlertMailer({
        store,
        clock,
        smtp: mailerOptions.smtp ?? servers.smtp,
        getSenderToken: mailerOptions.sender === undefined ? async () => ({ mailbox: SENDER, accessToken: TOKEN }) : mailerOptions.sender,
        messageIdDomain: 'broker.example',
        log,
        timeoutMs: 5_000,
      }),
    });
  return { clock, store, table, alerts: service(options), logs, mailer: service };
}

let counter = 0;
const unique = (name: string) => `${name}-${(counter += 1)}-${randomBytes(3).toString('hex')}@contoso.example`;

function makeApp(expiresOn: number, overrides: Partial<AppRecord> = {}): AppRecord {
  return {
    id: `app_${randomBytes(13).toString('hex').slice(0, 26).replace(/[^a-z2-7]/g, 'a')}`,
    name: 'Contoso Mail',
    clientId: '11111111-2222-4333-8444-555555555555',
    tenant: 'organizations',
    clientSecretExpiresOn: new Date(expiresOn).toISOString(),
    clientSecretVersion: 'v1',
    alertEmails: [unique('admin')],
    createdAt: new Date(START).toISOString(),
    updatedAt: new Date(START).toISOString(),
    ...overrides,
  };
}

function makeConnection(): ConnectionRecord {
  const now = new Date(START).toISOString();
  const pending = newConnectionRecord(
    {
      id: `con_${randomBytes(13).toString('hex').slice(0, 26).replace(/[^a-z2-7]/g, 'b')}`,
      tenantId: 'tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa',
      appId: 'app_aaaaaaaaaaaaaaaaaaaaaaaaaa',
      mailbox: unique('mailbox'),
      mode: 'delegated',
      protocols: ['smtp'],
      signInName: null,
    },
    now,
  );
  return {
    ...pending,
    status: 'needs_reauth',
    statusReason: { code: 'AADSTS70008', message: 'The refresh token has expired due to inactivity.', fix: 'Sign in again through the Re-authorize link.' },
    connectedAt: now,
    lastRefreshAt: now,
    refreshTokenUpdatedAt: now,
  };
}

const makeTenant = (): TenantRecord => ({ id: 'tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa', name: 'Contoso', alertEmails: [unique('it')], createdAt: '', updatedAt: '' });

const to = (address: string): ReceivedMail[] => servers.received.filter((mail) => mail.to.includes(address));

/** The text and HTML parts of a multipart/alternative message, transfer encodings undone. */
function parts(raw: string): { text: string; html: string } {
  const boundary = /boundary="?([^";\r\n]+)"?/i.exec(raw)?.[1] ?? '\u0000';
  const found = { text: '', html: '' };
  for (const chunk of raw.split(`--${boundary}`)) {
    const split = chunk.search(/\r?\n\r?\n/);
    const type = /content-type:\s*text\/(plain|html)/i.exec(chunk.slice(0, Math.max(split, 0)))?.[1];
    if (split < 0 || !type) continue;
    const headers = chunk.slice(0, split);
    let body = chunk.slice(split).replace(/^\r?\n\r?\n/, '');
    const encoding = /content-transfer-encoding:\s*([\w-]+)/i.exec(headers)?.[1]?.toLowerCase();
    if (encoding === 'base64') body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    if (encoding === 'quoted-printable') {
      const bytes = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
      body = Buffer.from(bytes, 'latin1').toString('utf8');
    }
    found[type === 'plain' ? 'text' : 'html'] = body.replace(/\r\n/g, '\n');
  }
  return found;
}

describe('client secret expiry warnings', () => {
  it('stepping the clock from 31 days to after expiry, 8 runs a day, sends exactly six emails, each once', async () => {
    const { clock, alerts } = harness();
    const app = makeApp(START + 31 * DAY);
    const [admin] = app.alertEmails as [string];
    for (let at = START; at <= START + 32 * DAY; at += 3 * HOUR) {
      clock.set(at);
      await alerts.checkSecretExpiry([app]);
      await alerts.sendPending();
      if (at < START + DAY) expect(to(admin)).toHaveLength(0);
    }

    const mails = to(admin);
    expect(mails.map((mail) => mail.subject)).toEqual([
      'Action needed: the client secret of "Contoso Mail" expires in 30 days',
      'Action needed: the client secret of "Contoso Mail" expires in 14 days',
      'Action needed: the client secret of "Contoso Mail" expires in 7 days',
      'Action needed: the client secret of "Contoso Mail" expires in 3 days',
      'Action needed: the client secret of "Contoso Mail" expires in 1 day',
      'Urgent: the client secret of "Contoso Mail" has expired',
    ]);
    for (const mail of mails) {
      expect(mail).toMatchObject({ user: SENDER, from: SENDER, to: [admin, 'ops@broker.example'] });
      const { text, html } = parts(mail.raw);
      for (const step of ['App registrations', 'New client secret', 'Secret ID', `PATCH /api/manage/apps/${app.id}`, 'Bearer $BROKER_OPERATOR_KEY']) {
        expect(text).toContain(step);
      }
      expect(html).toContain('Certificates &amp; secrets');
      expect(mail.raw).toMatch(/^Auto-Submitted: auto-generated/m);
      for (const secret of [TOKEN, CLIENT_SECRET, Buffer.from(`user=${SENDER}\x01auth=Bearer ${TOKEN}\x01\x01`).toString('base64')]) {
        expect(mail.raw).not.toContain(secret);
      }
    }
  });

  it('a first run with 13 days left sends the 14-day warning only', async () => {
    const { alerts } = harness();
    const app = makeApp(START + 13 * DAY);
    for (let run = 0; run < 3; run += 1) {
      await alerts.checkSecretExpiry([app]);
      await alerts.sendPending();
    }
    expect(to(app.alertEmails[0]!).map((mail) => mail.subject)).toEqual(['Action needed: the client secret of "Contoso Mail" expires in 13 days']);
  });

  it('a new secret starts the warnings over', async () => {
    const { clock, alerts } = harness();
    const app = makeApp(START + 10 * DAY);
    const admin = app.alertEmails[0]!;
    expect(await alerts.checkSecretExpiry([app])).toEqual({ checked: 1, due: 1, raised: 1 });
    await alerts.sendPending();

    // Rotated to a secret that itself expires in 20 days: its own 30-day warning is due at once.
    const rotated = { ...app, clientSecretVersion: 'v2', clientSecretExpiresOn: new Date(START + 20 * DAY).toISOString() };
    expect(await alerts.checkSecretExpiry([rotated])).toEqual({ checked: 1, due: 1, raised: 1 });
    expect(await alerts.checkSecretExpiry([rotated])).toEqual({ checked: 1, due: 1, raised: 0 });
    clock.advance(6 * DAY);
    await alerts.checkSecretExpiry([rotated]);
    await alerts.sendPending();
    expect(to(admin).map((mail) => mail.subject.replace(/.*expires in /, ''))).toEqual(['10 days', '20 days', '14 days']);
  });

  it("Microsoft's AADSTS7000222 sends the expired alert at once, and the sweep does not send it again", async () => {
    const { clock, alerts } = harness();
    const app = makeApp(START + 2 * DAY);
    expect((await alerts.secretExpired(app)).created).toBe(true);
    expect((await alerts.secretExpired(app)).created).toBe(false);
    await alerts.sendPending();
    // Neither the stale "expires in 2 days" nor a second "expired" once the recorded date passes.
    for (const at of [START + HOUR, START + 3 * DAY]) {
      clock.set(at);
      expect((await alerts.checkSecretExpiry([app])).raised).toBe(0);
      await alerts.sendPending();
    }
    const mails = to(app.alertEmails[0]!);
    expect(mails.map((mail) => mail.subject)).toEqual(['Urgent: the client secret of "Contoso Mail" has expired']);
    expect(parts(mails[0]!.raw).text).toContain('AADSTS7000222');
  });
});

describe('re-authorization alerts', () => {
  it('needs_reauth sends one email with the link, however often it is raised; reconnected sends one recovery notice', async () => {
    const { alerts } = harness();
    const connection = makeConnection();
    const tenant = makeTenant();
    const contact = tenant.alertEmails[0]!;
    let links = 0;
    const link = async () => ({ url: `https://broker.example/api/connect/lnk_${'c'.repeat(25)}${(links += 1)}`, expiresAt: '2025-03-08T06:00:00.000Z' });

    const first = await alerts.needsReauth(connection, tenant, connection.statusReason!, link);
    const second = await alerts.needsReauth(connection, tenant, connection.statusReason!, link);
    expect([first.created, second.created, second.alert.id]).toEqual([true, false, first.alert.id]);
    expect(links).toBe(1);
    await alerts.sendPending();
    await alerts.sendPending();
    const [problem, ...rest] = to(contact);
    expect(rest).toHaveLength(0);
    expect(problem!.subject).toBe(`Action needed: re-authorize the mailbox ${connection.mailbox}`);
    const { text, html } = parts(problem!.raw);
    expect(text).toContain(`https://broker.example/api/connect/lnk_${'c'.repeat(25)}1`);
    expect(html).toContain(`href="https://broker.example/api/connect/lnk_${'c'.repeat(25)}1"`);
    expect(text).toContain('The refresh token has expired due to inactivity. (AADSTS70008)');
    expect(problem!.to).toEqual([contact]);

    expect(await alerts.reconnected(connection, tenant)).toMatchObject({ created: true, alert: { kind: 'reconnected' } });
    expect(await alerts.reconnected(connection, tenant)).toBeNull();
    await alerts.sendPending();
    expect(to(contact).map((mail) => mail.subject)).toEqual([problem!.subject, `Resolved: the mailbox ${connection.mailbox} is connected again`]);

    // A later failure is a new incident: a new email with a new link.
    expect((await alerts.needsReauth(connection, tenant, connection.statusReason!, link)).created).toBe(true);
    await alerts.sendPending();
    expect(to(contact)).toHaveLength(3);
    expect(parts(to(contact)[2]!.raw).text).toContain(`lnk_${'c'.repeat(25)}2`);
  });

  it('reconnected without an open incident sends nothing', async () => {
    const { alerts } = harness();
    expect(await alerts.reconnected(makeConnection(), makeTenant())).toBeNull();
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 0, skipped: 0 });
  });

  it('two instances raising the same incident at once store and send it once', async () => {
    const { alerts, store } = harness();
    const connection = makeConnection();
    const tenant = makeTenant();
    const link = { url: 'https://broker.example/api/connect/lnk_dddddddddddddddddddddddddd', expiresAt: '2025-03-08T06:00:00.000Z' };
    const raised = await Promise.all(Array.from({ length: 5 }, () => alerts.needsReauth(connection, tenant, connection.statusReason!, link)));
    expect(new Set(raised.map((result) => result.alert.id)).size).toBe(1);
    expect(raised.filter((result) => result.created)).toHaveLength(1);
    expect(await store.incidents(connection.id)).toHaveLength(1);
  });
});

describe('sending', () => {
  it('a refused login (535) marks the alert failed without the token, keeps it, and the next run sends it', async () => {
    const { alerts, store } = harness();
    const app = makeApp(START + 5 * DAY);
    const { alert } = (await alerts.secretExpired(app)) as { alert: AlertRecord };
    acceptToken = false;
    try {
      expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 1, skipped: 0 });
    } finally {
      acceptToken = true;
    }
    const failed = (await store.get(alert.id))!.value;
    expect(failed).toMatchObject({ status: 'failed', attempts: 1 });
    expect(failed.lastError).toContain('535 5.7.3 Authentication unsuccessful');
    expect(failed.lastError).not.toContain(TOKEN);
    expect((await alerts.list({ status: 'failed', limit: 10 })).items.map((item) => item.id)).toEqual([alert.id]);
    expect(await alerts.status()).toMatchObject({ configured: true, ok: false, failed: 1, lastError: failed.lastError });

    expect(await alerts.sendPending()).toEqual({ sent: 1, failed: 0, skipped: 0 });
    expect((await store.get(alert.id))!.value).toMatchObject({ status: 'sent', attempts: 2 });
    expect(to(app.alertEmails[0]!)).toHaveLength(1);
    expect(await alerts.status()).toMatchObject({ ok: true, queued: 0, failed: 0 });
  });

  it('a server that is down fails the first alert, leaves the rest queued, and a later run sends them all', async () => {
    const { alerts, store, mailer } = harness({ smtp: { host: '127.0.0.1', port: await freePort() } });
    const apps = [makeApp(START + DAY), makeApp(START + 2 * DAY), makeApp(START + 3 * DAY)];
    expect((await alerts.checkSecretExpiry(apps)).raised).toBe(3);
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 1, skipped: 2 });
    const rows = await Promise.all(apps.map(async (app) => (await store.list({ limit: 10 })).items.find((item) => item.subjectId === app.id)!));
    expect(rows.map((row) => row.status).sort()).toEqual(['failed', 'queued', 'queued']);
    expect(rows.find((row) => row.status === 'failed')!.lastError).toMatch(/ECONNREFUSED/);

    expect(await mailer({}).sendPending()).toEqual({ sent: 3, failed: 0, skipped: 0 });
    for (const app of apps) expect(to(app.alertEmails[0]!)).toHaveLength(1);
  });

  it('two senders at once send each alert once', async () => {
    const { alerts, mailer } = harness();
    const apps = Array.from({ length: 4 }, (_, index) => makeApp(START + (index + 1) * DAY));
    await alerts.checkSecretExpiry(apps);
    const [a, b] = await Promise.all([alerts.sendPending(), mailer({}).sendPending()]);
    expect(a.sent + b.sent).toBe(4);
    for (const app of apps) expect(to(app.alertEmails[0]!)).toHaveLength(1);
  });

  it('without a sender, alerts stay queued and are logged, and status says so', async () => {
    const { alerts, logs } = harness({ sender: null });
    const app = makeApp(START + 7 * DAY);
    await alerts.checkSecretExpiry([app]);
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 0, skipped: 1 });
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 0, skipped: 1 });
    expect(to(app.alertEmails[0]!)).toHaveLength(0);
    expect((await alerts.list({ status: 'queued', limit: 10 })).items).toMatchObject([{ subjectId: app.id, attempts: 0, lastError: null }]);
    expect(logs.some((line) => line.includes('BROKER_ALERT_SENDER is not set') && line.includes('expires in 7 days'))).toBe(true);
    const status = await alerts.status({ probe: true });
    expect(status).toMatchObject({ configured: false, ok: true, queued: 1 });
    expect(status.detail).toContain('BROKER_ALERT_SENDER is not set');
  });

  it("a sender whose own grant is gone: the alert stays, marked with why, and readiness says so", async () => {
    const gone = async (): Promise<SenderToken> => {
      throw new BrokerError('NEEDS_REAUTH', 'The refresh token has expired due to inactivity. (AADSTS70008)');
    };
    const { alerts, mailer } = harness({ sender: gone });
    const app = makeApp(START + 7 * DAY);
    await alerts.checkSecretExpiry([app]);
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 1, skipped: 0 });
    const status = await alerts.status({ probe: true });
    expect(status).toMatchObject({ configured: true, ok: false, lastError: expect.stringContaining('could not get an access token: The refresh token has expired') });
    expect(await mailer({}).sendPending()).toEqual({ sent: 1, failed: 0, skipped: 0 });
  });

  it('an alert with nobody to send it to is kept as failed, not retried, and counted', async () => {
    const { alerts } = harness({ operatorEmail: null });
    const app = makeApp(START + 7 * DAY, { alertEmails: [] });
    expect((await alerts.checkSecretExpiry([app])).raised).toBe(1);
    expect(await alerts.sendPending()).toEqual({ sent: 0, failed: 0, skipped: 0 });
    expect((await alerts.list({ limit: 10 })).items).toMatchObject([{ status: 'failed', lastError: NO_RECIPIENTS, attempts: 0 }]);
    expect(await alerts.status()).toMatchObject({ ok: true, unaddressed: 1 });
  });
});

describe('the alert list and clean-up', () => {
  it('pages without the HTML copy, filters by status, and purges only old sent alerts', async () => {
    const { alerts, clock } = harness();
    const apps = Array.from({ length: 3 }, () => makeApp(START + 5 * DAY));
    await alerts.checkSecretExpiry(apps);
    await alerts.sendPending({ limit: 2 });
    const first = await alerts.list({ limit: 2 });
    expect(first.items).toHaveLength(2);
    expect(first.next).not.toBeNull();
    expect(first.items[0]).not.toHaveProperty('html');
    expect(first.items[0]).not.toHaveProperty('claimedUntil');
    const second = await alerts.list({ limit: 2, cursor: first.next! });
    expect(second.items).toHaveLength(1);
    expect((await alerts.list({ status: 'sent', limit: 10 })).items).toHaveLength(2);
    expect((await alerts.list({ status: 'queued', limit: 10 })).items).toHaveLength(1);

    clock.advance(200 * DAY);
    expect(await alerts.purge(new Date(clock.now().getTime() - 180 * DAY))).toBe(2);
    expect((await alerts.list({ limit: 10 })).items.map((item) => item.status)).toEqual(['queued']);
  });
});
