import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { freePort } from './free-port.js';

/** Azurite's well-known development account; it is public and only ever valid against Azurite. */
const DEV_ACCOUNT = 'devstoreaccount1';
const DEV_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteTables {
  port: number;
  connectionString: string;
  stop(): Promise<void>;
}

export interface AzuriteOptions {
  /** Folder for Azurite's data; without it, everything stays in memory. */
  location?: string;
  port?: number;
}

export function azuriteConnectionString(port: number): string {
  return `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};TableEndpoint=http://127.0.0.1:${port}/${DEV_ACCOUNT};`;
}

function azuriteTableMain(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('azurite/package.json')), 'dist/src/table/main.js');
}

/** Starts Azurite's Table service as a child process and resolves once it listens. */
export async function startAzuriteTables(options: AzuriteOptions = {}): Promise<AzuriteTables> {
  const port = options.port ?? (await freePort());
  const args = [azuriteTableMain(), '--tableHost', '127.0.0.1', '--tablePort', String(port), '--disableTelemetry', '--silent'];
  if (options.location) {
    mkdirSync(options.location, { recursive: true });
    args.push('--location', options.location);
  } else {
    args.push('--inMemoryPersistence');
  }
  // Built, the watchdog sits beside this file as .js; run from source (vitest), only the .ts
  // exists, which Node 22 loads by stripping its types.
  const built = new URL('./azurite-watchdog.js', import.meta.url);
  const watchdog = (existsSync(built) ? built : new URL('./azurite-watchdog.ts', import.meta.url)).href;
  const child = spawn(process.execPath, ['--import', watchdog, ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  // The channel tells the child this process is alive; it must not keep this process running.
  child.channel?.unref();
  await waitForStart(child, port);
  return {
    port,
    connectionString: azuriteConnectionString(port),
    stop: () => stopChild(child),
  };
}

function waitForStart(child: ChildProcess, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => fail(new Error(`Azurite did not start on port ${port} within 30 s:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('successfully started') || output.includes('successfully listening')) done();
    };
    const onExit = (code: number | null) => fail(new Error(`Azurite exited with code ${code} before it started:\n${output}`));
    function cleanup() {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    }
    function done() {
      cleanup();
      // Keep draining so a chatty child never blocks on a full pipe.
      child.stdout?.resume();
      child.stderr?.resume();
      resolve();
    }
    function fail(error: Error) {
      cleanup();
      child.kill('SIGKILL');
      reject(error);
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    // Azurite saves its data and closes on SIGINT; SIGTERM would kill it before it saves.
    child.kill('SIGINT');
  });
}
