import { odata } from '@azure/data-tables';
import { newTenantKey, hashKey, bearerKey } from '../auth/api-keys.js';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { newId } from '../ids.js';
import type { Page } from '../storage/entity-table.js';
import type { TenantKeyRecord, TenantRecord } from '../storage/records.js';
import { TtlCache } from '../ttl-cache.js';
import type { StorageTables } from '../storage/tables.js';
import type { ConnectionsService } from './connections.js';
import { isId, type CreateTenantInput, type ListQuery, type PatchTenantInput } from './inputs.js';

export interface TenantView {
  id: string;
  name: string;
  alertEmails: string[];
  createdAt: string;
  updatedAt: string;
}

export interface TenantKeyView {
  id: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

export interface TenantsDeps {
  tables: StorageTables;
  clock: Clock;
  connections: ConnectionsService;
}

/** Who a presented tenant key belongs to; shared between the requests that present the key. */
export interface TenantPrincipal {
  readonly tenantId: string;
  readonly keyId: string;
}

function notFound(): BrokerError {
  return new BrokerError('TENANT_NOT_FOUND', 'No tenant with this id exists.');
}

function unauthorized(): BrokerError {
  return new BrokerError('UNAUTHORIZED', 'Send a valid tenant API key as "Authorization: Bearer mob_…".');
}

const tenantView = (tenant: TenantRecord): TenantView => ({
  id: tenant.id,
  name: tenant.name,
  alertEmails: tenant.alertEmails,
  createdAt: tenant.createdAt,
  updatedAt: tenant.updatedAt,
});

const keyView = (key: TenantKeyRecord): TenantKeyView => ({
  id: key.id,
  prefix: key.prefix,
  createdAt: key.createdAt,
  lastUsedAt: key.lastUsedAt,
});

/** Tenants (SaaS customers) and their API keys. Keys are shown once and kept only as hashes. */
/** How long another instance may still accept a revoked key. */
export const KEY_CACHE_TTL_MS = 10_000;

export class TenantsService {
  /** By key hash: the row was found by that very hash (its partition key), so a hit needs no second comparison. */
  private readonly principals: TtlCache<string, TenantPrincipal | null>;

  constructor(private readonly deps: TenantsDeps) {
    this.principals = new TtlCache({ ttlMs: KEY_CACHE_TTL_MS, maxEntries: 10_000, clock: deps.clock });
  }

  async create(input: CreateTenantInput): Promise<TenantView> {
    const now = this.deps.clock.now().toISOString();
    const record: TenantRecord = { id: newId('tnt'), name: input.name, alertEmails: input.alertEmails, createdAt: now, updatedAt: now };
    await this.deps.tables.tenants.insert(record);
    return tenantView(record);
  }

  async get(id: string | undefined): Promise<TenantView> {
    return tenantView(await this.record(id));
  }

  private async record(id: string | undefined): Promise<TenantRecord> {
    if (!isId('tnt', id)) throw notFound();
    const found = await this.deps.tables.tenants.get(id, '');
    if (!found) throw notFound();
    return found.value;
  }

  async list(query: ListQuery): Promise<Page<TenantView>> {
    const page = await this.deps.tables.tenants.page({ limit: query.limit, cursor: query.cursor });
    return { items: page.items.map(tenantView), next: page.next };
  }

  async patch(id: string | undefined, patch: PatchTenantInput): Promise<TenantView> {
    const current = await this.record(id);
    const next: TenantRecord = {
      ...current,
      name: patch.name ?? current.name,
      alertEmails: patch.alertEmails ?? current.alertEmails,
      updatedAt: this.deps.clock.now().toISOString(),
    };
    await this.deps.tables.tenants.replace(next);
    return tenantView(next);
  }

  /**
   * Offboarding: keys first (the tenant's callers stop at once), then connections with
   * their stored tokens, then the tenant row. Each step is idempotent, so a DELETE that
   * failed half-way is completed by repeating it.
   */
  async delete(id: string | undefined): Promise<void> {
    const tenant = await this.record(id);
    for await (const key of this.deps.tables.tenantKeys.scan(odata`PartitionKey eq ${tenant.id}`)) {
      await this.removeKey(key.value);
    }
    for await (const connection of this.deps.tables.connections.scan(odata`tenantId eq ${tenant.id}`)) {
      await this.deps.connections.remove(connection.value);
    }
    await this.deps.tables.tenants.delete(tenant.id, '');
  }

  async createKey(tenantId: string | undefined): Promise<TenantKeyView & { key: string }> {
    const tenant = await this.record(tenantId);
    const { key, prefix, hash } = newTenantKey();
    const record: TenantKeyRecord = {
      id: newId('key'),
      tenantId: tenant.id,
      prefix,
      hash,
      createdAt: this.deps.clock.now().toISOString(),
      lastUsedAt: null,
    };
    await this.deps.tables.tenantKeys.insert(record);
    try {
      await this.deps.tables.keyHashes.insert({ hash, tenantId: tenant.id, keyId: record.id });
    } catch (error) {
      await this.deps.tables.tenantKeys.delete(tenant.id, record.id).catch(() => false);
      throw error;
    }
    return { ...keyView(record), key };
  }

  async listKeys(tenantId: string | undefined, query: ListQuery): Promise<Page<TenantKeyView>> {
    const tenant = await this.record(tenantId);
    const page = await this.deps.tables.tenantKeys.page({
      limit: query.limit,
      cursor: query.cursor,
      filter: odata`PartitionKey eq ${tenant.id}`,
    });
    return { items: page.items.map(keyView), next: page.next };
  }

  async revokeKey(tenantId: string | undefined, keyId: string | undefined): Promise<void> {
    const tenant = await this.record(tenantId);
    const key = isId('key', keyId) ? await this.deps.tables.tenantKeys.get(tenant.id, keyId) : null;
    if (!key) throw new BrokerError('KEY_NOT_FOUND', 'This tenant has no API key with this id.');
    await this.removeKey(key.value);
  }

  /** The lookup row goes first: from that moment the key authenticates nothing. */
  private async removeKey(key: TenantKeyRecord): Promise<void> {
    await this.deps.tables.keyHashes.delete(key.hash, '');
    this.principals.delete(key.hash);
    await this.deps.tables.tenantKeys.delete(key.tenantId, key.id);
  }

  /**
   * The tenant a presented key belongs to; 401 for a missing, unknown or revoked key. Known
   * keys are remembered for a few seconds: a revocation is immediate on the instance that
   * revoked, and reaches the others within `KEY_CACHE_TTL_MS`.
   */
  authenticate(authorization: string | null | undefined): Promise<TenantPrincipal> {
    const key = bearerKey(authorization);
    if (key === null) return Promise.reject(unauthorized());
    const hash = hashKey(key);
    // A key this instance knows is answered without waiting for anything.
    const known = this.principals.peek(hash);
    if (known) return Promise.resolve(known);
    return this.principals.get(hash, () => this.principalOf(hash), (found) => found !== null).then((found) => found ?? Promise.reject(unauthorized()));
  }

  private async principalOf(hash: string): Promise<TenantPrincipal | null> {
    const row = await this.deps.tables.keyHashes.get(hash, '');
    return row ? { tenantId: row.value.tenantId, keyId: row.value.keyId } : null;
  }
}
