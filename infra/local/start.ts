import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join, resolve } from 'node:path';
import { registrations } from '../../functions/registrations.js';
import { createServices } from '../../shared/composition.js';
import { ConfigError, loadConfig, type Config, type Environment } from '../../shared/config.js';
import { startAzuriteTables } from './azurite.js';
import { createLocalHost } from './host.js';
import type { SandboxTrust } from './sandbox.js';

/*
 * `npm start`: the broker on http://localhost:7071/api with nothing configured. It starts
 * what a newcomer does not have (Azurite's Table service, an operator key, the local
 * secret store, and, unless BROKER_AUTHORITY_HOST names a real one, the sandbox identity
 * provider with a demo app, tenant and connection) and stops all of it on Ctrl-C. Real
 * settings replace each default.
 */

// Only ever used to validate the other settings before a real key is read or generated.
const STAND_IN_OPERATOR_KEY = 'stand-in-operator-key-for-validation-only';

function readOrCreateOperatorKey(dataDir: string): { key: string; created: boolean; path: string } {
  const path = join(dataDir, 'operator-key');
  if (existsSync(path)) return { key: readFileSync(path, 'utf8').trim(), created: false, path };
  const key = randomBytes(32).toString('base64url');
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return { key, created: true, path };
}

function exitWithConfigError(error: ConfigError): never {
  console.error(error.message);
  process.exit(1);
}

function configOrExit(env: Environment): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) exitWithConfigError(error);
    throw error;
  }
}

const isSet = (value: string | undefined) => value !== undefined && value.trim() !== '';

async function main(): Promise<void> {
  const env: Record<string, string | undefined> = { ...process.env };
  const dataDir = resolve(env.BROKER_LOCAL_DATA_DIR?.trim() || '.data');
  env.BROKER_LOCAL_DATA_DIR = dataDir;
  // Links and the redirect URI must point at the port this host listens on.
  const port = env.PORT?.trim() ?? '';
  if (!isSet(env.BROKER_PUBLIC_URL) && /^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535) {
    env.BROKER_PUBLIC_URL = `http://localhost:${Number(port)}`;
  }

  const needsOperatorKey = !isSet(env.BROKER_OPERATOR_KEY);
  const needsAzurite = !isSet(env.BROKER_TABLES_CONNECTION) && !isSet(env.BROKER_TABLES_URL);
  // Check every setting before starting anything, with stand-ins for what we would generate or start.
  const checked = configOrExit({
    ...env,
    ...(needsOperatorKey ? { BROKER_OPERATOR_KEY: STAND_IN_OPERATOR_KEY } : {}),
    ...(needsAzurite ? { BROKER_TABLES_CONNECTION: 'UseDevelopmentStorage=true' } : {}),
  });
  if (checked.sandbox && isSet(env.BROKER_AUTHORITY_HOST)) {
    exitWithConfigError(
      new ConfigError('BROKER_SANDBOX', `the sandbox is the identity provider, so it cannot run with BROKER_AUTHORITY_HOST=${env.BROKER_AUTHORITY_HOST}; unset one of them`, env.BROKER_SANDBOX),
    );
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  // Before anything starts: on a Node that cannot trust the CA at run time this re-runs the
  // command in a process that trusts it from the start, and only that process starts things.
  // The sandbox (its identity provider, jose, the x509 certificate tooling) is loaded only
  // when it runs: with BROKER_SANDBOX=false it would cost ~40 MB of memory and a few hundred
  // milliseconds of start-up for nothing.
  const sandbox = checked.sandbox ? await import('./sandbox.js') : undefined;
  let trust: SandboxTrust | undefined;
  if (sandbox) {
    trust = await sandbox.trustSandboxCertificateAuthority(join(dataDir, sandbox.SANDBOX_TLS_DIR));
    if (trust.relaunchWith) process.exit(await sandbox.relaunchTrusting(trust.relaunchWith));
  }

  const notes: string[] = [];
  if (needsOperatorKey) {
    const operator = readOrCreateOperatorKey(dataDir);
    env.BROKER_OPERATOR_KEY = operator.key;
    notes.push(
      operator.created
        ? `Operator key (generated once, saved in ${operator.path}):\n  ${operator.key}`
        : `Operator key: in ${operator.path}`,
    );
  }

  // Everything started so far, stopped in reverse order on Ctrl-C or when the start fails.
  const stoppers: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stopOne of stoppers.splice(0).reverse()) await stopOne().catch(() => undefined);
  };

  try {
    if (needsAzurite) {
      const azurite = await startAzuriteTables({ location: join(dataDir, 'azurite') });
      stoppers.push(() => azurite.stop());
      env.BROKER_TABLES_CONNECTION = azurite.connectionString;
      notes.push(`Table Storage: Azurite on 127.0.0.1:${azurite.port}, data in ${join(dataDir, 'azurite')}`);
    }

    let sandboxLines: string[] = [];
    const idp = sandbox && trust ? await sandbox.startLocalSandbox(trust.ca) : undefined;
    if (idp) {
      stoppers.push(() => idp.close());
      env.BROKER_AUTHORITY_HOST = idp.authorityHost;
      env.BROKER_SANDBOX = 'true';
    }

    const config = loadConfig(env);
    const services = createServices(config);
    // Stopped after the server (stoppers run in reverse): queued audit events are written out.
    stoppers.push(async () => {
      await services.audit.close();
    });
    notes.push(config.keyVault ? `Secrets: Key Vault ${config.keyVault.url}` : `Secrets: local encrypted store in ${dataDir}`);
    if (sandbox && idp && trust) sandboxLines = sandbox.describeSandbox(idp, trust.ca, await sandbox.seedSandboxDemo({ idp, services, dataDir }));

    const server: Server = createLocalHost({
      registrations: registrations({ rotationSchedule: config.rotationSchedule }),
      services: () => services,
      runSchedules: true,
    });
    await new Promise<void>((resolvePromise, reject) => {
      server.once('error', reject);
      server.listen(config.port, '127.0.0.1', () => resolvePromise());
    });
    stoppers.push(async () => {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    });
    const address = server.address();
    const listening = typeof address === 'object' && address ? address.port : config.port;

    console.log(`Mail OAuth Broker is listening on http://localhost:${listening}/api`);
    for (const note of notes) console.log(note);
    console.log(`The rotate-tokens timer runs on "${config.rotationSchedule}" (UTC). Run it now: curl -X POST -H "Authorization: Bearer <operator key>" http://localhost:${listening}/admin/functions/rotate-tokens`);
    for (const line of sandboxLines) console.log(line);
    console.log('Press Ctrl-C to stop.');
  } catch (error) {
    await stopAll();
    throw error;
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    await stopAll();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((error: unknown) => {
  console.error(`Mail OAuth Broker could not start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
