import { createServices } from '../shared/composition.js';
import { loadConfig } from '../shared/config.js';
import { createSecretStore } from '../shared/secrets/create-secret-store.js';
import { createStorageTables, type StorageTables } from '../shared/storage/tables.js';
import { RotationSweep } from '../shared/sweep/rotation-sweep.js';
import { WriteBudget } from '../shared/sweep/write-budget.js';
import { Timings } from './support/timings.js';

/*
 * One rotate-tokens sweep in its own process, built from the real services as
 * shared/composition.ts builds it, but with the write budget and concurrency the benchmark
 * asks for: BROKER_KV_WRITE_BUDGET stops at 300 (Key Vault's own limit). The Table, Key Vault
 * and identity calls are timed (a Proxy around the real adapters). Prints the run record and
 * the timings as one JSON line.
 */

const config = loadConfig(process.env);
const timings = new Timings();
const raw = createStorageTables({ setting: config.tables });
const tables: StorageTables = {
  ...raw,
  connections: timings.wrap(raw.connections, 'table connections', ['get', 'replace']),
  apps: timings.wrap(raw.apps, 'table apps', ['get']),
};
const secrets = timings.wrap(
  createSecretStore(config, () => {
    throw new Error('the benchmark runs against the Key Vault emulator');
  }),
  'key vault',
  ['get', 'set'],
);
const services = createServices(config, { tables, secrets });
// AccessTokens holds this very object, so the refresh is timed where it is called.
const identity = services.identity as unknown as Record<string, unknown>;
const refresh = services.identity.refresh.bind(services.identity);
identity.refresh = (input: Parameters<typeof refresh>[0]) => {
  const started = performance.now();
  return refresh(input).finally(() => timings.record('identity refresh (MSAL: token POST; metadata GET once per process)', performance.now() - started));
};
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const budget = new WriteBudget({ writesPer10s: Number(process.env.BENCH_WRITE_BUDGET ?? config.kvWriteBudget), clock: services.clock, sleep });
const sweep = new RotationSweep({
  tables: services.tables,
  accessTokens: services.accessTokens,
  maintenance: services.maintenance,
  clock: services.clock,
  // spend = waiting for a slot + the Key Vault write it runs
  writeBudget: timings.wrap(budget, 'write budget', ['spend']),
  refreshMaxAgeDays: config.refreshMaxAgeDays,
  timeBudgetSeconds: config.sweepTimeBudgetSeconds,
  concurrency: Number(process.env.BENCH_SWEEP_CONCURRENCY),
  log: (message) => console.error(message),
});

const accessTokens = services.accessTokens as unknown as Record<string, unknown>;
const refreshUnlessSince = services.accessTokens.refreshUnlessSince.bind(services.accessTokens);
accessTokens.refreshUnlessSince = (...args: Parameters<typeof refreshUnlessSince>) => {
  const started = performance.now();
  return refreshUnlessSince(...args).finally(() => timings.record('one connection, end to end', performance.now() - started));
};

const run = await sweep.run();
console.log(`SWEEP_RESULT ${JSON.stringify({ run, timings: timings.summary() })}`);
await services.audit.close();
process.exit(0);
