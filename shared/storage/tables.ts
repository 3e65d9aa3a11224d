import { TableClient } from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { alertCodec, type AlertRecord } from '../alerts/alert-record.js';
import type { TablesSetting } from '../config.js';
import { EntityTable, type EntityCodec } from './entity-table.js';
import {
  appCodec,
  authRequestCodec,
  connectionCodec,
  keyHashCodec,
  linkCodec,
  mailboxIndexCodec,
  runCodec,
  sweepStateCodec,
  tenantCodec,
  tenantKeyCodec,
  type AppRecord,
  type AuthRequestRecord,
  type ConnectionRecord,
  type KeyHashRecord,
  type LinkRecord,
  type MailboxIndexRecord,
  type RunRecord,
  type SweepStateRecord,
  type TenantKeyRecord,
  type TenantRecord,
} from './records.js';

export interface StorageTables {
  apps: EntityTable<AppRecord>;
  tenants: EntityTable<TenantRecord>;
  tenantKeys: EntityTable<TenantKeyRecord>;
  keyHashes: EntityTable<KeyHashRecord>;
  connections: EntityTable<ConnectionRecord>;
  mailboxIndex: EntityTable<MailboxIndexRecord>;
  authRequests: EntityTable<AuthRequestRecord>;
  links: EntityTable<LinkRecord>;
  runs: EntityTable<RunRecord>;
  alerts: EntityTable<AlertRecord>;
  sweepState: EntityTable<SweepStateRecord>;
  /** Raw: audit rows are written in batched transactions (shared/tokens/audit-log.ts). */
  auditClient: TableClient;
  /** Raw client of the tenant keys table, for the one-property Merge of lastUsedAt (shared/tokens/key-usage.ts). */
  tenantKeysClient: TableClient;
  /** A cheap round trip for readiness. */
  ping(): Promise<void>;
}

export interface StorageOptions {
  setting: TablesSetting;
  /** Needed only for `accountUrl` (the managed identity in Azure). */
  credential?: () => TokenCredential;
  /** Prepended to every table name; lets tests share one account without sharing rows. */
  tablePrefix?: string;
}

export function createStorageTables(options: StorageOptions): StorageTables {
  const prefix = options.tablePrefix ?? 'broker';
  const client = (name: string): TableClient => {
    const tableName = `${prefix}${name}`;
    if (options.setting.kind === 'connectionString') {
      // Azurite speaks plain http on localhost; Azure connection strings are https anyway.
      return TableClient.fromConnectionString(options.setting.connectionString, tableName, { allowInsecureConnection: true });
    }
    if (!options.credential) throw new TypeError('a credential is required for BROKER_TABLES_URL');
    return new TableClient(options.setting.url, tableName, options.credential());
  };
  const table = <T>(name: string, codec: EntityCodec<T>) => new EntityTable(client(name), codec);

  const tenants = table('tenants', tenantCodec);
  return {
    apps: table('apps', appCodec),
    tenants,
    tenantKeys: table('tenantkeys', tenantKeyCodec),
    keyHashes: table('keyhashes', keyHashCodec),
    connections: table('connections', connectionCodec),
    mailboxIndex: table('mailboxindex', mailboxIndexCodec),
    authRequests: table('authrequests', authRequestCodec),
    links: table('links', linkCodec),
    runs: table('runs', runCodec),
    alerts: table('alerts', alertCodec),
    sweepState: table('sweepstate', sweepStateCodec),
    auditClient: client('audit'),
    tenantKeysClient: client('tenantkeys'),
    ping: async () => {
      await tenants.get('ping', '');
    },
  };
}
