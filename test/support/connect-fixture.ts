import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { startAzuriteTables, type AzuriteTables } from '../../infra/local/azurite.js';
import { startSandboxIdentityProvider, type SandboxIdentityProvider } from '../../infra/local/sandbox-idp/index.js';
import type { Clock } from '../../shared/clock.js';
import { openPage, signInThroughPages } from '../infra/sandbox-idp/support.js';
import { OPERATOR_KEY, startTestBroker, type TestBroker } from './broker.js';
import { startKeyVaultFake, type KeyVaultFake } from './key-vault-fake.js';
import { issueTestServerCertificate } from './test-ca.js';

/*
 * Everything the connect flow touches, for real where it can run here: Azurite, the real
 * SecretClient against the Key Vault fake, the real msal-node against the sandbox identity
 * provider, and the broker behind its local host.
 */

export const CUSTOMER_TENANT = '5d2f7a3e-1c4b-4e8a-9f60-2b7d9c1e4a35';

export interface MovableClock extends Clock {
  advance(ms: number): void;
}

export function movableClock(): MovableClock {
  let offset = 0;
  return { now: () => new Date(Date.now() + offset), advance: (ms) => (offset += ms) };
}

export interface ConnectFixture {
  azurite: AzuriteTables;
  vault: KeyVaultFake;
  idp: SandboxIdentityProvider;
  broker: TestBroker;
  clock: MovableClock;
  app: { id: string; clientId: string; clientSecret: string };
  tenantId: string;
  /** Everything the broker logged (its `log` hook with details, and the functions' context logs), newest last. */
  logs: string[];
  close(): Promise<void>;
}

/** Refresh-token grants the sandbox identity provider has answered so far (each one is a call to "Microsoft"). */
export function refreshGrants(fixture: Pick<ConnectFixture, 'idp'>): number {
  return fixture.idp.requests().filter((request) => request.grantType === 'refresh_token').length;
}

export async function startConnectFixture(options: { env?: Record<string, string> } = {}): Promise<ConnectFixture> {
  const clock = movableClock();
  const logs: string[] = [];
  const [azurite, vault, tls] = await Promise.all([startAzuriteTables(), startKeyVaultFake(), issueTestServerCertificate(['localhost', '127.0.0.1'])]);
  const idp = await startSandboxIdentityProvider({ tls });
  const broker = await startTestBroker({
    tablesConnection: azurite.connectionString,
    // The refresh storm sends 1,000 requests with one key; the rate limit has its own test.
    env: { BROKER_KEY_VAULT_URL: vault.url, BROKER_KEY_VAULT_EMULATOR: 'true', BROKER_AUTHORITY_HOST: idp.authorityHost, BROKER_TOKEN_RATE_LIMIT: '100000', ...options.env },
    // Warnings the broker logs (a failed Key Vault write, say) are kept for assertions, not printed.
    overrides: { clock, log: (message, detail) => logs.push(detail === undefined ? message : `${message} ${inspect(detail, { depth: 8 })}`) },
    hostLog: (line) => logs.push(line),
  });

  const clientId = randomUUID();
  const clientSecret = `sandbox~${randomUUID()}`;
  idp.registerApp({
    clientId,
    clientSecret,
    secretExpiresOn: new Date(Date.now() + 365 * 86_400_000),
    redirectUris: [broker.services.config.redirectUri],
    displayName: 'Contoso Mail (test)',
  });
  for (const upn of ['alice@contoso.example', 'bob@contoso.example']) idp.addUser({ upn, tid: CUSTOMER_TENANT, name: upn.split('@')[0]! });

  const created = await broker.call('POST', '/api/manage/apps', {
    body: { name: 'Contoso Mail', clientId, tenant: 'organizations', clientSecret, clientSecretExpiresOn: new Date(Date.now() + 300 * 86_400_000).toISOString() },
  });
  if (created.status !== 201) throw new Error(`creating the app failed: ${created.status} ${await created.text()}`);
  const app = (await created.json()) as { id: string };
  const tenant = await broker.call('POST', '/api/manage/tenants', { body: { name: 'Contoso' } });
  const tenantId = ((await tenant.json()) as { id: string }).id;

  return {
    azurite,
    vault,
    idp,
    broker,
    clock,
    app: { id: app.id, clientId, clientSecret },
    tenantId,
    logs,
    close: async () => {
      await broker.close();
      await Promise.all([idp.close(), vault.close(), azurite.stop()]);
    },
  };
}

/** A new pending connection and its one-click link. */
export async function connectionWithLink(
  fixture: ConnectFixture,
  mailbox: string,
  extra: Record<string, unknown> = {},
): Promise<{ connectionId: string; link: string; expiresAt: string }> {
  const created = await fixture.broker.call('POST', '/api/manage/connections', {
    body: { tenantId: fixture.tenantId, appId: fixture.app.id, mailbox, protocols: ['smtp', 'imap'], ...extra },
  });
  if (created.status !== 201) throw new Error(`creating the connection failed: ${created.status} ${await created.text()}`);
  const connectionId = ((await created.json()) as { id: string }).id;
  const link = await newLink(fixture, connectionId);
  return { connectionId, ...link };
}

export async function newLink(fixture: ConnectFixture, connectionId: string): Promise<{ link: string; expiresAt: string }> {
  const response = await fixture.broker.call('POST', `/api/manage/connections/${connectionId}/authorize-link`);
  if (response.status !== 201) throw new Error(`creating the link failed: ${response.status} ${await response.text()}`);
  const body = (await response.json()) as { url: string; expiresAt: string };
  return { link: body.url, expiresAt: body.expiresAt };
}

/** A connected mailbox: a new sandbox user signs in through the link's pages. */
export async function connectMailbox(fixture: ConnectFixture, mailbox: string, extra: Record<string, unknown> = {}): Promise<string> {
  fixture.idp.addUser({ upn: mailbox, tid: CUSTOMER_TENANT });
  const { connectionId, link } = await connectionWithLink(fixture, mailbox, extra);
  const opened = await openPage(link);
  const back = await signInThroughPages(fixture.idp, opened.location!.toString());
  const page = await openPage(back.location!.toString());
  if (page.status !== 200) throw new Error(`connecting ${mailbox} failed: ${page.status} ${page.html}`);
  return connectionId;
}

/** A tenant API key for the fixture's tenant (or another). */
export async function tenantKey(fixture: ConnectFixture, tenantId = fixture.tenantId): Promise<string> {
  const response = await fixture.broker.call('POST', `/api/manage/tenants/${tenantId}/keys`);
  return ((await response.json()) as { key: string }).key;
}

/** Settings for another broker process sharing this fixture's storage, vault and identity provider. */
export function sharedBrokerEnv(fixture: ConnectFixture, port: number): Record<string, string> {
  return {
    PORT: String(port),
    BROKER_PUBLIC_URL: fixture.broker.services.config.publicUrl,
    BROKER_OPERATOR_KEY: OPERATOR_KEY,
    BROKER_TABLES_CONNECTION: fixture.azurite.connectionString,
    BROKER_KEY_VAULT_URL: fixture.vault.url,
    BROKER_KEY_VAULT_EMULATOR: 'true',
    BROKER_AUTHORITY_HOST: fixture.idp.authorityHost,
    BROKER_SANDBOX: 'false',
  };
}
