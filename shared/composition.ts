import type { TokenCredential } from '@azure/identity';
import { AlertMailer } from './alerts/alert-mailer.js';
import { alertSenderTokens } from './alerts/alert-sender.js';
import { AlertService } from './alerts/alert-service.js';
import { AlertStore } from './alerts/alert-store.js';
import { BrokerAlerts } from './alerts/broker-alerts.js';
import { OperatorKeys } from './auth/api-keys.js';
import { lazyDefaultAzureCredential } from './azure-credential.js';
import { ConnectService } from './connect/connect-service.js';
import { MsalIdentityClient, type IdentityClient } from './identity/msal-identity.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config.js';
import { Maintenance } from './maintenance.js';
import { AppsService } from './manage/apps.js';
import { ConnectionsService } from './manage/connections.js';
import { clientSecretChecker } from './manage/secret-check.js';
import { TenantsService } from './manage/tenants.js';
import { checkReadiness, type Readiness } from './readiness.js';
import { createSecretStore } from './secrets/create-secret-store.js';
import type { SecretStore } from './secrets/secret-store.js';
import { createStorageTables, type StorageTables } from './storage/tables.js';
import { AccessTokens } from './tokens/access-tokens.js';
import { AuditLog } from './tokens/audit-log.js';
import { KeyUsage } from './tokens/key-usage.js';
import { assertWithinRateLimit, RateLimiter } from './tokens/rate-limiter.js';
import { DataKey } from './tokens/data-key.js';
import { TokenService } from './tokens/token-service.js';
import { RotationSweep } from './sweep/rotation-sweep.js';
import { WriteBudget } from './sweep/write-budget.js';
import { verifyConnection, type ConnectionCheck } from './verify/verify-connection.js';
import type { ConnectionRecord } from './storage/records.js';

export interface Services {
  config: Config;
  clock: Clock;
  tables: StorageTables;
  secrets: SecretStore;
  operatorKeys: OperatorKeys;
  apps: AppsService;
  tenants: TenantsService;
  connections: ConnectionsService;
  identity: IdentityClient;
  connect: ConnectService;
  accessTokens: AccessTokens;
  tokens: TokenService;
  audit: AuditLog;
  sweep: RotationSweep;
  alerts: AlertService;
  verifyConnection(connection: ConnectionRecord): Promise<ConnectionCheck>;
  maintenance: Maintenance;
  readiness(): Promise<Readiness>;
}

/** What tests (and the local host) may swap: Azurite for Azure, a fake clock for time. */
export interface ServiceOverrides {
  clock?: Clock;
  /** How the sweep waits for Key Vault write budget; tests move a fake clock instead. */
  sleep?: (ms: number) => Promise<void>;
  tables?: StorageTables;
  secrets?: SecretStore;
  credential?: TokenCredential;
  log?: (message: string, detail?: unknown) => void;
  /** How long a call to Microsoft may take before it counts as a transient failure. */
  networkTimeoutMs?: number;
}

/**
 * The composition root: the only place that builds real adapters. Nothing here does I/O,
 * and the heavy SDKs are not loaded here either: @azure/identity waits for the first token
 * the managed identity must fetch, @azure/keyvault-secrets for the first secret read or
 * written, msal-node for the first call to Microsoft (inside MsalIdentityClient), nodemailer
 * and imapflow for the first alert or verify. So a cold start pays only for what its first
 * request touches.
 */
export function createServices(config: Config, overrides: ServiceOverrides = {}): Services {
  let credential = overrides.credential;
  const azureCredential = () => (credential ??= lazyDefaultAzureCredential());
  const clock = overrides.clock ?? systemClock;
  const tables = overrides.tables ?? createStorageTables({ setting: config.tables, credential: azureCredential });
  const secrets = overrides.secrets ?? createSecretStore(config, azureCredential);
  const connections = new ConnectionsService({ tables, secrets, clock });
  const log = overrides.log ?? ((message: string, detail?: unknown) => console.warn(message, detail ?? ''));
  const identity = new MsalIdentityClient({
    authorityHost: config.authorityHost,
    log: (message) => log(message),
    ...(overrides.networkTimeoutMs ? { networkTimeoutMs: overrides.networkTimeoutMs } : {}),
  });
  const apps = new AppsService({
    tables,
    secrets,
    clock,
    redirectUri: config.redirectUri,
    checkClientSecret: clientSecretChecker({ tables, identity, mailAppResource: config.mailAppResource }),
  });
  // Alerts need tokens (the sender's) and tokens report to alerts: the events reach them late-bound.
  let brokerAlerts: BrokerAlerts | undefined;
  const accessTokens = new AccessTokens({
    tables,
    secrets,
    clock,
    identity,
    apps,
    dataKey: new DataKey(secrets),
    mailResource: config.mailResource,
    mailAppResource: config.mailAppResource,
    redirectUri: config.redirectUri,
    log,
    events: {
      needsReauth: async (connection, reason) => brokerAlerts?.needsReauth(connection, reason),
      appFailure: async (connection, failure) => brokerAlerts?.appFailure(connection, failure),
    },
  });
  const connect = new ConnectService({
    tables,
    secrets,
    clock,
    identity,
    apps,
    publicUrl: config.publicUrl,
    redirectUri: config.redirectUri,
    linkTtlHours: config.linkTtlHours,
    mailResource: config.mailResource,
    mailAppResource: config.mailAppResource,
    events: { reconnected: async (connection) => brokerAlerts?.reconnected(connection) },
  });
  const alertStore = new AlertStore({ table: tables.alerts, clock });
  const alerts = new AlertService({
    store: alertStore,
    clock,
    publicUrl: config.publicUrl,
    operatorEmail: config.operatorEmail,
    log,
    mailer: new AlertMailer({
      store: alertStore,
      clock,
      smtp: config.smtp,
      log,
      getSenderToken:
        config.alertSender === null
          ? null
          : alertSenderTokens(config.alertSender, { connections: tables.connections, mailboxIndex: tables.mailboxIndex, accessTokens }),
      messageIdDomain: new URL(config.publicUrl).hostname,
    }),
  });
  brokerAlerts = new BrokerAlerts({ alerts, tables, connect, clock, log });
  const sweepAlerts = brokerAlerts;
  const audit = new AuditLog({ table: tables.auditClient, clock, onError: log });
  const keyUsage = new KeyUsage({ table: tables.tenantKeysClient, clock, onError: log });
  const rateLimiter = new RateLimiter({ limitPerMinute: config.tokenRateLimit, clock });
  const maintenance = new Maintenance({ tables, clock, auditRetentionDays: config.auditRetentionDays });
  const sleep = overrides.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  return {
    config,
    clock,
    tables,
    secrets,
    operatorKeys: new OperatorKeys(config.operatorKeys),
    apps,
    tenants: new TenantsService({ tables, clock, connections }),
    connections,
    identity,
    connect,
    alerts,
    accessTokens,
    tokens: new TokenService({
      tables,
      clock,
      accessTokens,
      hosts: { smtp: config.smtp, imap: config.imap, pop: config.pop },
      checkRateLimit: (keyId) => assertWithinRateLimit(rateLimiter, keyId),
      audit: (event) => audit.record(event),
      touchKey: (tenantId, keyId) => keyUsage.touch(tenantId, keyId),
    }),
    audit,
    maintenance,
    verifyConnection: (connection) =>
      verifyConnection(connection, { accessTokens, hosts: { smtp: config.smtp, imap: config.imap, pop: config.pop }, now: () => clock.now() }),
    sweep: new RotationSweep({
      tables,
      accessTokens,
      maintenance,
      clock,
      writeBudget: new WriteBudget({ writesPer10s: config.kvWriteBudget, clock, sleep }),
      refreshMaxAgeDays: config.refreshMaxAgeDays,
      timeBudgetSeconds: config.sweepTimeBudgetSeconds,
      concurrency: config.sweepConcurrency,
      alerts: () => sweepAlerts.sweep(),
      log,
    }),
    readiness: () => checkReadiness({ tables, secrets, secretStoreKind: config.keyVault ? 'key-vault' : 'local', alerts }),
  };
}
