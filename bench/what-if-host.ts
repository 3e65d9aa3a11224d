import type { AddressInfo } from 'node:net';
import { registrations } from '../functions/registrations.js';
import { createLocalHost } from '../infra/local/host.js';
import { createServices, type Services } from '../shared/composition.js';
import { loadConfig } from '../shared/config.js';
import { TenantsService } from '../shared/manage/tenants.js';
import type { EntityTable, Versioned } from '../shared/storage/entity-table.js';
import type { StorageTables } from '../shared/storage/tables.js';
import { KeyUsage } from '../shared/tokens/key-usage.js';
import { assertWithinRateLimit, RateLimiter } from '../shared/tokens/rate-limiter.js';
import { TokenService } from '../shared/tokens/token-service.js';

/*
 * bench:token --what-if: the local host exactly as `npm start` builds it, except that the two
 * Table reads every token request makes (the key hash → tenant, and the connection row) are
 * remembered for BENCH_CACHE_TTL_MS. Only the token endpoint's services see the cache; the
 * refresh path (AccessTokens' lease) and the operator API read storage as before.
 *
 * This is an experiment to size a recommendation, not a change to the product: a real version
 * must bound the cache, keep the TTL short (a revoked key or a connection set to needs_reauth
 * on another instance is honoured only when its entry expires) and drop entries on the
 * instance that made the change.
 */

const ttlMs = Number(process.env.BENCH_CACHE_TTL_MS ?? 30_000);

function remembered<T>(table: EntityTable<T>): EntityTable<T> {
  const entries = new Map<string, { at: number; value: Promise<Versioned<T> | null> }>();
  return new Proxy(table, {
    get(target, property, receiver) {
      if (property === 'get') {
        return (partitionKey: string, rowKey: string) => {
          const key = `${partitionKey}\n${rowKey}`;
          const now = Date.now();
          const hit = entries.get(key);
          if (hit && now - hit.at < ttlMs) return hit.value;
          const value = target.get(partitionKey, rowKey);
          entries.set(key, { at: now, value });
          // Misses and failures are not remembered: a new key or connection works at once.
          value.then((found) => found === null && entries.delete(key), () => entries.delete(key));
          return value;
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

const config = loadConfig(process.env);
const services = createServices(config);
const tables: StorageTables = { ...services.tables, keyHashes: remembered(services.tables.keyHashes), connections: remembered(services.tables.connections) };
const rateLimiter = new RateLimiter({ limitPerMinute: config.tokenRateLimit, clock: services.clock });
const keyUsage = new KeyUsage({ table: services.tables.tenantKeysClient, clock: services.clock, onError: (message) => console.warn(message) });
const patched: Services = {
  ...services,
  tenants: new TenantsService({ tables, clock: services.clock, connections: services.connections }),
  tokens: new TokenService({
    tables,
    clock: services.clock,
    accessTokens: services.accessTokens,
    hosts: { smtp: config.smtp, imap: config.imap, pop: config.pop },
    checkRateLimit: (keyId) => assertWithinRateLimit(rateLimiter, keyId),
    audit: (event) => services.audit.record(event),
    touchKey: (tenantId, keyId) => keyUsage.touch(tenantId, keyId),
  }),
};

const server = createLocalHost({ registrations: registrations({ rotationSchedule: config.rotationSchedule }), services: () => patched });
server.listen(config.port, '127.0.0.1', () => {
  console.log(`What-if broker (token lookups remembered for ${ttlMs} ms) is listening on http://localhost:${(server.address() as AddressInfo).port}/api`);
});
process.on('SIGINT', () => {
  server.closeAllConnections();
  server.close(() => void services.audit.close().finally(() => process.exit(0)));
});
