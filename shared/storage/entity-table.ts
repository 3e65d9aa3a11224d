import { Buffer } from 'node:buffer';
import { RestError, type TableClient, type TableEntityResult } from '@azure/data-tables';
import { z } from 'zod';
import { BrokerError } from '../errors.js';

/** A stored record plus the ETag that guards the next conditional write. */
export interface Versioned<T> {
  value: T;
  etag: string;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface PageRequest {
  limit: number;
  cursor?: string | undefined;
  /** OData filter, built with `odata` from @azure/data-tables so values are escaped. */
  filter?: string | undefined;
}

export class StorageConflictError extends Error {
  override readonly name = 'StorageConflictError';
  constructor(readonly reason: 'exists' | 'changed') {
    super(reason === 'exists' ? 'entity already exists' : 'entity was changed concurrently');
  }
}

/**
 * How one record type is kept in a table: its keys, and which properties are JSON because
 * Table Storage only knows scalars. Rows are decoded through the zod schema, so a row
 * written by another version of the broker is checked, not trusted.
 */
export interface EntityCodec<T> {
  schema: z.ZodType<T>;
  partitionKey(value: T): string;
  rowKey(value: T): string;
  jsonFields?: readonly (keyof T & string)[];
}

const SYSTEM_PROPERTIES = new Set(['partitionKey', 'rowKey', 'etag', 'timestamp', 'odata.metadata', 'odata.etag']);

function statusOf(error: unknown): number | undefined {
  return error instanceof RestError ? error.statusCode : undefined;
}

function unavailable(error: unknown): BrokerError {
  return new BrokerError('STORAGE_UNAVAILABLE', 'Table Storage did not answer as expected; try again.', { cause: error });
}

const continuation = z.object({ nextPartitionKey: z.string().min(1), nextRowKey: z.string().optional() }).strict();

/** The SDK's continuation token is base64 JSON; check it before the SDK parses it blindly. */
function checkCursor(cursor: string): void {
  try {
    const decoded: unknown = JSON.parse(Buffer.from(cursor, 'base64').toString('utf8'));
    if (continuation.safeParse(decoded).success) return;
  } catch {
    // falls through to the typed error
  }
  throw new BrokerError('INVALID_CURSOR', 'The "cursor" query parameter is not one this API returned.', {
    fields: [{ field: 'cursor', message: 'unknown cursor' }],
  });
}

export class EntityTable<T> {
  private ready: Promise<void> | undefined;

  constructor(
    private readonly client: TableClient,
    private readonly codec: EntityCodec<T>,
  ) {}

  /** Tables are created on first use, so a cold start pays only for the tables it touches. */
  private ensureTable(): Promise<void> {
    this.ready ??= this.client.createTable().catch((error: unknown) => {
      this.ready = undefined;
      if (statusOf(error) !== 409) throw unavailable(error);
    });
    return this.ready;
  }

  private encode(value: T): Record<string, unknown> & { partitionKey: string; rowKey: string } {
    const json = new Set<string>(this.codec.jsonFields ?? []);
    const entity: Record<string, unknown> & { partitionKey: string; rowKey: string } = {
      partitionKey: this.codec.partitionKey(value),
      rowKey: this.codec.rowKey(value),
    };
    for (const [key, field] of Object.entries(value as Record<string, unknown>)) {
      if (field === null || field === undefined) continue;
      entity[key] = json.has(key) ? JSON.stringify(field) : field;
    }
    return entity;
  }

  private decode(entity: TableEntityResult<Record<string, unknown>>): T {
    const json = new Set<string>(this.codec.jsonFields ?? []);
    const plain: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(entity)) {
      if (SYSTEM_PROPERTIES.has(key)) continue;
      plain[key] = json.has(key) && typeof field === 'string' ? JSON.parse(field) : field;
    }
    const parsed = this.codec.schema.safeParse(plain);
    if (!parsed.success) {
      throw new BrokerError('INTERNAL', 'A stored record does not have the expected shape.', { cause: parsed.error });
    }
    return parsed.data;
  }

  async get(partitionKey: string, rowKey: string): Promise<Versioned<T> | null> {
    await this.ensureTable();
    try {
      const entity = await this.client.getEntity<Record<string, unknown>>(partitionKey, rowKey);
      return { value: this.decode(entity), etag: entity.etag };
    } catch (error) {
      if (statusOf(error) === 404) return null;
      if (error instanceof BrokerError) throw error;
      throw unavailable(error);
    }
  }

  /** Inserts; `StorageConflictError('exists')` when the keys are taken. */
  async insert(value: T): Promise<Versioned<T>> {
    await this.ensureTable();
    try {
      const response = await this.client.createEntity(this.encode(value));
      return { value, etag: response.etag ?? '' };
    } catch (error) {
      if (statusOf(error) === 409) throw new StorageConflictError('exists');
      throw unavailable(error);
    }
  }

  /** Replaces the whole row; with `etag`, only if nobody changed it since it was read. */
  async replace(value: T, etag?: string): Promise<Versioned<T>> {
    await this.ensureTable();
    try {
      const response = await this.client.updateEntity(this.encode(value), 'Replace', etag === undefined ? {} : { etag });
      return { value, etag: response.etag ?? '' };
    } catch (error) {
      const status = statusOf(error);
      if (status === 412 || status === 404) throw new StorageConflictError('changed');
      throw unavailable(error);
    }
  }

  async upsert(value: T): Promise<void> {
    await this.ensureTable();
    try {
      await this.client.upsertEntity(this.encode(value), 'Replace');
    } catch (error) {
      throw unavailable(error);
    }
  }

  /** Deletes; `false` when there was nothing to delete (or, with `etag`, it had changed). */
  async delete(partitionKey: string, rowKey: string, etag?: string): Promise<boolean> {
    await this.ensureTable();
    try {
      await this.client.deleteEntity(partitionKey, rowKey, etag === undefined ? {} : { etag });
      return true;
    } catch (error) {
      const status = statusOf(error);
      if (status === 404 || status === 412) return false;
      throw unavailable(error);
    }
  }

  async page(request: PageRequest): Promise<Page<T>> {
    if (request.cursor !== undefined) checkCursor(request.cursor);
    await this.ensureTable();
    try {
      const pages = this.client
        .listEntities<Record<string, unknown>>({ queryOptions: request.filter ? { filter: request.filter } : {} })
        .byPage({ maxPageSize: request.limit, ...(request.cursor ? { continuationToken: request.cursor } : {}) });
      const result = await pages.next();
      if (result.done) return { items: [], next: null };
      return { items: result.value.map((entity) => this.decode(entity)), next: result.value.continuationToken ?? null };
    } catch (error) {
      if (error instanceof BrokerError) throw error;
      throw unavailable(error);
    }
  }

  /** Every row matching `filter`, page by page; for sweeps and cascades, never for hot paths. */
  async *scan(filter?: string): AsyncGenerator<Versioned<T>> {
    await this.ensureTable();
    try {
      for await (const entity of this.client.listEntities<Record<string, unknown>>({ queryOptions: filter ? { filter } : {} })) {
        yield { value: this.decode(entity), etag: entity.etag };
      }
    } catch (error) {
      if (error instanceof BrokerError) throw error;
      throw unavailable(error);
    }
  }
}
