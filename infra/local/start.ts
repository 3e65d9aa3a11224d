import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { registrations } from '../../functions/registrations.js';
import { createServices, type Services } from '../../shared/composition.js';
import { ConfigError, loadConfig, type Config, type Environment } from '../../shared/config.js';
import { startAzuriteTables, type AzuriteTables } from './azurite.js';
import { createLocalHost } from './host.js';

/*
 * `npm start`: the broker on http://localhost:7071/api with nothing configured. It starts
 * what a newcomer does not have (Azurite's Table service, an operator key, the local
 * secret store) and stops all of it on Ctrl-C. Real settings replace each default.
 */

function readOrCreateOperatorKey(dataDir: string): { key: string; created: boolean; path: string } {
  const path = join(dataDir, 'operator-key');
  if (existsSync(path)) return { key: readFileSync(path, 'utf8').trim(), created: false, path };
  const key = randomBytes(32).toString('base64url');
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return { key, created: true, path };
}

function configOrExit(env: Environment): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
}

async function main(): Promise<void> {
  const env: Record<string, string | undefined> = { ...process.env };
  const dataDir = resolve(env.BROKER_LOCAL_DATA_DIR?.trim() || '.data');
  env.BROKER_LOCAL_DATA_DIR = dataDir;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const notes: string[] = [];
  if (!env.BROKER_OPERATOR_KEY?.trim()) {
    const operator = readOrCreateOperatorKey(dataDir);
    env.BROKER_OPERATOR_KEY = operator.key;
    notes.push(
      operator.created
        ? `Operator key (generated once, saved in ${operator.path}):\n  ${operator.key}`
        : `Operator key: in ${operator.path}`,
    );
  }

  const needsAzurite = !env.BROKER_TABLES_CONNECTION?.trim() && !env.BROKER_TABLES_URL?.trim();
  // Check every setting before starting anything, with a stand-in for the Azurite we would start.
  const config = configOrExit(needsAzurite ? { ...env, BROKER_TABLES_CONNECTION: 'UseDevelopmentStorage=true' } : env);

  let azurite: AzuriteTables | undefined;
  if (needsAzurite) {
    azurite = await startAzuriteTables({ location: join(dataDir, 'azurite') });
    config.tables = { kind: 'connectionString', connectionString: azurite.connectionString };
    notes.push(`Table Storage: Azurite on 127.0.0.1:${azurite.port}, data in ${join(dataDir, 'azurite')}`);
  }
  const stopAzurite = async () => {
    await azurite?.stop();
  };

  let services: Services | undefined;
  const provider = () => (services ??= createServices(config));
  provider();
  notes.push(config.keyVault ? `Secrets: Key Vault ${config.keyVault.url}` : `Secrets: local encrypted store in ${dataDir}`);

  const server = createLocalHost({ registrations: registrations({ rotationSchedule: config.rotationSchedule }), services: provider });
  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(config.port, '127.0.0.1', () => resolvePromise());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;

  console.log(`Mail OAuth Broker is listening on http://localhost:${port}/api`);
  for (const note of notes) console.log(note);
  console.log(`Run the rotate-tokens timer now: curl -X POST -H "Authorization: Bearer <operator key>" http://localhost:${port}/admin/functions/rotate-tokens`);
  console.log('Press Ctrl-C to stop.');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
    await stopAzurite();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((error: unknown) => {
  console.error(`Mail OAuth Broker could not start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
