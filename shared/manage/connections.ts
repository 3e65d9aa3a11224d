import { odata } from '@azure/data-tables';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { newId } from '../ids.js';
import { secretNames, type SecretStore } from '../secrets/secret-store.js';
import { StorageConflictError, type Page } from '../storage/entity-table.js';
import { mailboxIndexRowKey, type ConnectionRecord, type StatusReason } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import { isId, type CreateConnectionInput, type ListConnectionsQuery, type PatchConnectionInput } from './inputs.js';

export interface ConnectionView {
  id: string;
  tenantId: string;
  appId: string;
  mailbox: string;
  mode: ConnectionRecord['mode'];
  protocols: ConnectionRecord['protocols'];
  signInName: string | null;
  status: ConnectionRecord['status'];
  statusReason: StatusReason | null;
  connectedAt: string | null;
  lastRefreshAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ConnectionsDeps {
  tables: StorageTables;
  secrets: SecretStore;
  clock: Clock;
}

/** A create takes well under this; an index row older than it without its connection is left over. */
const ORPHAN_AFTER_MS = 60_000;

function notFound(): BrokerError {
  return new BrokerError('CONNECTION_NOT_FOUND', 'No connection with this id exists.');
}

/** A connection as it starts: pending, nothing bound, nothing cached. */
export function newConnectionRecord(
  fields: Pick<ConnectionRecord, 'id' | 'tenantId' | 'appId' | 'mailbox' | 'mode' | 'protocols' | 'signInName'>,
  now: string,
): ConnectionRecord {
  return {
    ...fields,
    status: 'pending',
    statusReason: null,
    connectedAt: null,
    lastRefreshAt: null,
    boundObjectId: null,
    boundTenantId: null,
    customerTenantId: null,
    refreshTokenUpdatedAt: null,
    accessTokenCipher: null,
    accessTokenExpiresAt: null,
    leaseOwner: null,
    leaseUntil: null,
    retryNotBefore: null,
    createdAt: now,
    updatedAt: now,
  };
}

export function connectionView(connection: ConnectionRecord): ConnectionView {
  return {
    id: connection.id,
    tenantId: connection.tenantId,
    appId: connection.appId,
    mailbox: connection.mailbox,
    mode: connection.mode,
    protocols: connection.protocols,
    signInName: connection.signInName,
    status: connection.status,
    statusReason: connection.statusReason,
    connectedAt: connection.connectedAt,
    lastRefreshAt: connection.lastRefreshAt,
    createdAt: connection.createdAt,
    updatedAt: connection.updatedAt,
  };
}

/** Connections: tenant × mailbox × app × mode × protocols; a mailbox is unique per tenant and mode. */
export class ConnectionsService {
  constructor(private readonly deps: ConnectionsDeps) {}

  async create(input: CreateConnectionInput): Promise<ConnectionView> {
    const { tables, clock } = this.deps;
    const [tenant, app] = await Promise.all([tables.tenants.get(input.tenantId, ''), tables.apps.get(input.appId, '')]);
    const missing = [
      ...(tenant ? [] : [{ field: 'tenantId', message: 'no tenant with this id exists' }]),
      ...(app ? [] : [{ field: 'appId', message: 'no app with this id exists' }]),
    ];
    if (missing.length > 0) {
      throw new BrokerError('INVALID_REQUEST', 'The connection refers to something that does not exist.', { fields: missing });
    }

    const now = clock.now().toISOString();
    const record = newConnectionRecord(
      {
        id: newId('con'),
        tenantId: input.tenantId,
        appId: input.appId,
        mailbox: input.mailbox,
        mode: input.mode,
        protocols: input.protocols,
        signInName: input.signInName ?? null,
      },
      now,
    );
    await this.claimMailbox(record);
    try {
      await tables.connections.insert(record);
    } catch (error) {
      // Ids are random, so "exists" can only be this very insert, retried after its answer was lost.
      if (!(error instanceof StorageConflictError && (await tables.connections.get(record.id, '')))) {
        await tables.mailboxIndex.delete(record.tenantId, mailboxIndexRowKey(record.mode, record.mailbox)).catch(() => false);
        throw error;
      }
    }
    return connectionView(record);
  }

  /**
   * The mailbox index row is the uniqueness check: inserting it is atomic and a second one is
   * a 409. A 409 can also be this insert retried after a lost answer, or a row a failed create
   * left behind (its connection never written): both are taken over rather than blocking the
   * mailbox for good.
   */
  private async claimMailbox(record: ConnectionRecord): Promise<void> {
    const { tables, clock } = this.deps;
    const row = { tenantId: record.tenantId, mode: record.mode, mailbox: record.mailbox, connectionId: record.id, createdAt: record.createdAt };
    const taken = () => new BrokerError('MAILBOX_ALREADY_CONNECTED', `${record.mailbox} already has a ${record.mode} connection in this tenant.`);
    try {
      await tables.mailboxIndex.insert(row);
      return;
    } catch (error) {
      if (!(error instanceof StorageConflictError)) throw error;
    }
    const existing = await tables.mailboxIndex.get(record.tenantId, mailboxIndexRowKey(record.mode, record.mailbox));
    if (!existing || existing.value.connectionId === record.id) return;
    if (await tables.connections.get(existing.value.connectionId, '')) throw taken();
    // A create still in progress has written its index row moments ago; only an old one is an orphan.
    const age = clock.now().getTime() - new Date(existing.value.createdAt ?? 0).getTime();
    if (age < ORPHAN_AFTER_MS) throw taken();
    try {
      await tables.mailboxIndex.replace(row, existing.etag);
    } catch (error) {
      if (error instanceof StorageConflictError) throw taken();
      throw error;
    }
  }

  async get(id: string | undefined): Promise<ConnectionRecord> {
    if (!isId('con', id)) throw notFound();
    const found = await this.deps.tables.connections.get(id, '');
    if (!found) throw notFound();
    return found.value;
  }

  async list(query: ListConnectionsQuery): Promise<Page<ConnectionView>> {
    const clauses = [
      ...(query.tenantId ? [odata`tenantId eq ${query.tenantId}`] : []),
      ...(query.status ? [odata`status eq ${query.status}`] : []),
    ];
    const page = await this.deps.tables.connections.page({
      limit: query.limit,
      cursor: query.cursor,
      filter: clauses.length > 0 ? clauses.join(' and ') : undefined,
    });
    return { items: page.items.map(connectionView), next: page.next };
  }

  async patch(id: string | undefined, patch: PatchConnectionInput): Promise<ConnectionView> {
    if (!isId('con', id)) throw notFound();
    const current = await this.deps.tables.connections.get(id, '');
    if (!current) throw notFound();
    if (patch.signInName != null && current.value.mode !== 'delegated') {
      throw new BrokerError('INVALID_REQUEST', 'signInName applies to delegated connections only.', {
        fields: [{ field: 'signInName', message: 'not allowed for app_only connections' }],
      });
    }
    const next: ConnectionRecord = {
      ...current.value,
      protocols: patch.protocols ?? current.value.protocols,
      signInName: patch.signInName === undefined ? current.value.signInName : patch.signInName,
      updatedAt: this.deps.clock.now().toISOString(),
    };
    // Conditional on the ETag: a refresh that wrote the row meanwhile must not be undone.
    try {
      await this.deps.tables.connections.replace(next, current.etag);
    } catch (error) {
      if (error instanceof StorageConflictError) {
        throw new BrokerError('CONFLICT', 'The connection changed while it was being updated; read it again and retry.');
      }
      throw error;
    }
    return connectionView(next);
  }

  /** Removes the stored refresh token, then the index, then the row: a failed delete can be retried to completion. */
  async remove(connection: ConnectionRecord): Promise<void> {
    await this.deps.secrets.delete(secretNames.connectionRefreshToken(connection.id));
    const index = await this.deps.tables.mailboxIndex.get(connection.tenantId, mailboxIndexRowKey(connection.mode, connection.mailbox));
    if (index?.value.connectionId === connection.id) {
      await this.deps.tables.mailboxIndex.delete(connection.tenantId, mailboxIndexRowKey(connection.mode, connection.mailbox));
    }
    await this.deps.tables.connections.delete(connection.id, '');
  }

  async delete(id: string | undefined): Promise<void> {
    await this.remove(await this.get(id));
  }
}
