import { DefaultAzureCredential, type TokenCredential } from '@azure/identity';
import { OperatorKeys } from './auth/api-keys.js';
import { ConnectService } from './connect/connect-service.js';
import { MsalIdentityClient, type IdentityClient } from './identity/msal-identity.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config.js';
import { Maintenance } from './maintenance.js';
import { AppsService } from './manage/apps.js';
import { ConnectionsService } from './manage/connections.js';
import { TenantsService } from './manage/tenants.js';
import { checkReadiness, type Readiness } from './readiness.js';
import { createSecretStore } from './secrets/create-secret-store.js';
import type { SecretStore } from './secrets/secret-store.js';
import { createStorageTables, type StorageTables } from './storage/tables.js';

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
  maintenance: Maintenance;
  readiness(): Promise<Readiness>;
}

/** What tests (and the local host) may swap: Azurite for Azure, a fake clock for time. */
export interface ServiceOverrides {
  clock?: Clock;
  tables?: StorageTables;
  secrets?: SecretStore;
  credential?: TokenCredential;
}

/**
 * The composition root: the only place that builds real adapters. Nothing here does I/O,
 * so a cold start pays only for what its first request touches.
 */
export function createServices(config: Config, overrides: ServiceOverrides = {}): Services {
  let credential = overrides.credential;
  const azureCredential = () => (credential ??= new DefaultAzureCredential());
  const clock = overrides.clock ?? systemClock;
  const tables = overrides.tables ?? createStorageTables({ setting: config.tables, credential: azureCredential });
  const secrets = overrides.secrets ?? createSecretStore(config, azureCredential);
  const connections = new ConnectionsService({ tables, secrets, clock });
  const apps = new AppsService({ tables, secrets, clock, redirectUri: config.redirectUri });
  const identity = new MsalIdentityClient({ authorityHost: config.authorityHost });
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
    connect: new ConnectService({
      tables,
      secrets,
      clock,
      identity,
      apps,
      publicUrl: config.publicUrl,
      redirectUri: config.redirectUri,
      linkTtlHours: config.linkTtlHours,
      mailResource: config.mailResource,
    }),
    maintenance: new Maintenance({ tables, clock }),
    readiness: () =>
      checkReadiness({ tables, secrets, secretStoreKind: config.keyVault ? 'key-vault' : 'local', alertSender: config.alertSender }),
  };
}
