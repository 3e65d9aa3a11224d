import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startAzuriteTables } from '../infra/local/azurite.js';
import { freePort } from '../infra/local/free-port.js';
import { getOnce, onCleanup, runMain, spawnNode, type NodeChild } from './support/procs.js';
import { machine, median, numberFlag, parseArgs, printMachine, printTable, root, saveJson, sleep } from './support/report.js';
import { progress } from './support/stack.js';

/*
 * bench:startup — cold start, against bare Node on the same machine in the same run, each
 * measured --reps times (default 7), interleaved, median reported:
 *  - `node -e 0`: process start to exit;
 *  - a bare node:http server: process start to its first answered request;
 *  - the local host `node dist/infra/local/start.js` (BROKER_SANDBOX=false, an Azurite that
 *    is already running, the local secret store): process start to the first answered
 *    GET /api/health, and to its "listening" line;
 *  - the Functions entry, as tsc emits it (`dist/functions/index.js`) and as it is deployed
 *    (the esbuild bundle, `dist/bundle/index.js`, package.json "main"): process start to the
 *    end of its import, with the settings an instance in Azure has (BROKER_TABLES_URL and
 *    BROKER_KEY_VAULT_URL, so the managed identity and Key Vault paths are the ones wired),
 *    and the resident memory right after. Outside the Functions host @azure/functions runs
 *    in "test mode" and skips the registrations, which cost little next to the imports;
 *  - the bundle with telemetry on (APPLICATIONINSIGHTS_CONNECTION_STRING set, as the Bicep
 *    does): the Azure Monitor distro is started before the rest is imported;
 *  - both entries under test/support/functions-worker.mjs, which stands in for the Functions
 *    worker (registrations through @azure/functions-core, an invocation through the
 *    programming model): process start → first answered GET /api/health.
 * Then which files each entry loads, and what each direct dependency costs to import alone
 * (time and resident memory, against a bare node's).
 * "First answered request" is found by polling every 2 ms with a new connection each time.
 *
 * Flags: --reps 7
 */

const OPERATOR_KEY = 'bench-startup-operator-key-0123456789abcdef';

/** Polls until `url` answers, from the child's spawn; ms since spawn. */
async function firstAnswer(child: NodeChild, url: string, spawnedAt: number): Promise<number> {
  for (;;) {
    try {
      const status = await getOnce(url);
      if (status > 0) return performance.now() - spawnedAt;
    } catch {
      if (child.child.exitCode !== null) throw new Error(`the process exited before answering:\n${child.output()}`);
      await sleep(2);
    }
  }
}

async function timeToExit(args: string[], env: NodeJS.ProcessEnv): Promise<{ wallMs: number; output: string }> {
  const started = performance.now();
  const child = spawnNode(args, { env });
  const code = await child.exited();
  const wallMs = performance.now() - started;
  if (code !== 0) throw new Error(`node ${args.join(' ')} exited with ${code}:\n${child.output()}`);
  return { wallMs, output: child.output() };
}

// performance.now() in the child counts from its own process start (performance.timeOrigin).
const IMPORT_TIMER = (specifier: string) =>
  `const t = performance.now(); await import(${JSON.stringify(specifier)}); ` +
  `const done = performance.now(); const rss = process.memoryUsage().rss / 1e6;` +
  `console.log('IMPORT_MS ' + (done - t) + ' ' + done + ' ' + rss); process.exit(0);`;

/** Process start → import done, and RSS then, of `specifier` imported by a fresh node. */
async function timedImport(specifier: string, env: NodeJS.ProcessEnv): Promise<{ importMs: number; sinceStart: number; rss: number; wallMs: number }> {
  const result = await timeToExit(['--input-type=module', '-e', IMPORT_TIMER(specifier)], env);
  const [, importMs, sinceStart, rss] = /IMPORT_MS (\S+) (\S+) (\S+)/.exec(result.output) ?? [];
  if (importMs === undefined) throw new Error(`no timing from importing ${specifier}:\n${result.output}`);
  return { importMs: Number(importMs), sinceStart: Number(sinceStart), rss: Number(rss), wallMs: result.wallMs };
}

/**
 * The entry run as the Functions worker runs it (test/support/functions-worker.mjs: the
 * registrations reach a stand-in for @azure/functions-core, and the invocation goes through
 * the programming model): process start → the first GET /api/health answered.
 */
async function workerFirstAnswer(entryFile: string, env: NodeJS.ProcessEnv): Promise<number> {
  const invocations = JSON.stringify([{ function: 'health', method: 'GET', path: '/api/health' }]);
  const { output } = await timeToExit([join(root, 'test', 'support', 'functions-worker.mjs'), entryFile, invocations], env);
  const line = output.split('\n').find((text) => text.startsWith('WORKER_ANSWERS '));
  const answer = line ? (JSON.parse(line.slice('WORKER_ANSWERS '.length)) as { status: number; answeredAtMs: number }[])[0] : undefined;
  if (answer?.status !== 200) throw new Error(`the stand-in worker did not answer GET /api/health with 200:\n${output}`);
  return answer.answeredAtMs;
}

// Records every file resolved while importing the entry, ESM and CommonJS alike, into `out`.
const LOADED_FILES = (specifier: string, out: string) =>
  `import { registerHooks } from 'node:module'; import { writeFileSync } from 'node:fs'; const urls = new Set();` +
  `registerHooks({ resolve(s, c, next) { const r = next(s, c); urls.add(r.url); return r; } });` +
  `await import(${JSON.stringify(specifier)}); writeFileSync(${JSON.stringify(out)}, JSON.stringify([...urls])); process.exit(0);`;

runMain(async () => {
  const flags = parseArgs();
  const reps = numberFlag(flags, 'reps', 7);
  const info = machine();

  progress('starting Azurite (outside the timings)');
  const azurite = await startAzuriteTables();
  onCleanup(() => azurite.stop());
  const dataDir = mkdtempSync(join(tmpdir(), 'broker-startup-'));
  onCleanup(async () => rmSync(dataDir, { recursive: true, force: true }));
  const hostSettings: NodeJS.ProcessEnv = {
    ...process.env,
    BROKER_SANDBOX: 'false',
    BROKER_TABLES_CONNECTION: azurite.connectionString,
    BROKER_OPERATOR_KEY: OPERATOR_KEY,
    BROKER_LOCAL_DATA_DIR: dataDir,
    BROKER_LOCAL_SECRETS_KEY: randomBytes(32).toString('base64'),
  };
  // What an instance in Azure has: nothing is contacted during the import.
  const azureSettings: NodeJS.ProcessEnv = {
    ...process.env,
    BROKER_PUBLIC_URL: 'https://func-broker-bench.azurewebsites.net',
    BROKER_OPERATOR_KEY: OPERATOR_KEY,
    BROKER_TABLES_URL: 'https://stbench.table.core.windows.net',
    BROKER_KEY_VAULT_URL: 'https://kv-bench.vault.azure.net',
  };
  const withTelemetry: NodeJS.ProcessEnv = {
    ...azureSettings,
    // An ingestion endpoint nobody listens on: the exporters send nothing within the import.
    APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/',
  };
  const tscEntry = pathToFileURL(join(root, 'dist', 'functions', 'index.js')).href;
  // The deployed entry: package.json "main", built by `npm run build:bundle`.
  const main = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { main: string }).main;
  const bundleEntry = pathToFileURL(join(root, main)).href;
  const bundleDir = join(root, dirname(main));
  const entries = [
    { name: 'tsc output (dist/functions/index.js)', specifier: tscEntry, env: azureSettings },
    { name: `bundle (${main})`, specifier: bundleEntry, env: azureSettings },
    { name: 'bundle, telemetry on', specifier: bundleEntry, env: withTelemetry },
  ];

  const rows: Record<string, number[]> = {
    'node -e 0: start → exit': [],
    'bare node:http: start → first answer': [],
    'local host: start → "listening" line': [],
    'local host: start → first answered GET /api/health': [],
  };
  for (const entry of entries) rows[`${entry.name}: process start → import done`] = [];
  for (const entry of entries.slice(0, 2)) rows[`${entry.name} in the stand-in worker: process start → first answered GET /api/health`] = [];
  const rss: Record<string, number[]> = { 'bare node (import node:os)': [] };
  for (const entry of entries) rss[entry.name] = [];

  for (let rep = 1; rep <= reps; rep += 1) {
    progress(`repetition ${rep}/${reps}`);
    rows['node -e 0: start → exit']!.push((await timeToExit(['-e', '0'], process.env)).wallMs);

    let port = await freePort();
    let started = performance.now();
    const bare = spawnNode(['-e', `require('node:http').createServer((q, s) => s.end('{}')).listen(${port}, '127.0.0.1')`]);
    rows['bare node:http: start → first answer']!.push(await firstAnswer(bare, `http://127.0.0.1:${port}/`, started));
    await bare.stop();

    port = await freePort();
    started = performance.now();
    const host = spawnNode([join(root, 'dist', 'infra', 'local', 'start.js')], { env: { ...hostSettings, PORT: String(port) } });
    const answered = firstAnswer(host, `http://127.0.0.1:${port}/api/health`, started);
    const listening = host.waitForOutput(/listening on/).then(() => performance.now() - started);
    rows['local host: start → first answered GET /api/health']!.push(await answered);
    rows['local host: start → "listening" line']!.push(await listening);
    await host.stop();

    for (const entry of entries) {
      const imported = await timedImport(entry.specifier, entry.env);
      rows[`${entry.name}: process start → import done`]!.push(imported.sinceStart);
      rss[entry.name]!.push(imported.rss);
    }
    rss['bare node (import node:os)']!.push((await timedImport('node:os', process.env)).rss);
    for (const entry of entries.slice(0, 2)) {
      rows[`${entry.name} in the stand-in worker: process start → first answered GET /api/health`]!.push(await workerFirstAnswer(fileURLToPath(entry.specifier), entry.env));
    }
  }

  progress('which files each entry loads, and what each direct dependency costs to import alone');
  const loaded = (specifier: string, env: NodeJS.ProcessEnv) => {
    const out = join(dataDir, `loaded-${randomBytes(4).toString('hex')}.json`);
    return timeToExit(['--input-type=module', '-e', LOADED_FILES(specifier, out)], env).then(() => JSON.parse(readFileSync(out, 'utf8')) as string[]);
  };
  const tscFiles = await loaded(tscEntry, azureSettings);
  const packages = new Map<string, number>();
  let ownFiles = 0;
  for (const url of tscFiles) {
    const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (match) packages.set(match[1]!, (packages.get(match[1]!) ?? 0) + 1);
    else if (url.includes('/dist/')) ownFiles += 1;
  }
  const bundleFiles = (await loaded(bundleEntry, azureSettings)).filter((url) => url.startsWith('file:'));
  const bundleBytes = bundleFiles.reduce((sum, url) => sum + statSync(fileURLToPath(url)).size, 0);
  const allChunks = readdirSync(join(bundleDir, 'chunks')).filter((file) => file.endsWith('.js'));
  const allBytes = allChunks.reduce((sum, file) => sum + statSync(join(bundleDir, 'chunks', file)).size, statSync(join(root, main)).size);

  const direct = ['@azure/functions', '@azure/data-tables', '@azure/identity', '@azure/keyvault-secrets', '@azure/msal-node', 'zod', 'jose', 'nodemailer', 'imapflow'];
  const alone: Array<[string, number, number]> = [];
  for (const name of direct) {
    const times: number[] = [];
    const memory: number[] = [];
    for (let rep = 0; rep < Math.min(reps, 5); rep += 1) {
      const result = await timedImport(name, process.env);
      times.push(result.importMs);
      memory.push(result.rss);
    }
    alone.push([name, median(times), median(memory)]);
  }

  printMachine('bench:startup — cold start against bare node', info);
  console.log(
    `${reps} repetitions of each, interleaved; Azurite (in memory) was already running for the local host (local secret store); ` +
      'the entries were imported with Azure-like settings (BROKER_TABLES_URL, BROKER_KEY_VAULT_URL). Medians in ms.\n',
  );
  printTable(
    ['measurement', 'median ms', 'min ms', 'max ms'],
    Object.entries(rows).map(([name, values]) => [name, median(values), Math.min(...values), Math.max(...values)]),
  );
  const nodeStart = median(rows['node -e 0: start → exit']!);
  const bare = median(rows['bare node:http: start → first answer']!);
  const host = median(rows['local host: start → first answered GET /api/health']!);
  printTable(
    ['comparison', 'ms', '× bare (node -e 0 for imports, bare http for answers)'],
    [
      ['local host first answer − bare http first answer', host - bare, host / bare],
      ...entries.map((entry): [string, number, number] => {
        const done = median(rows[`${entry.name}: process start → import done`]!);
        return [`${entry.name} import done − node -e 0 exit`, done - nodeStart, done / nodeStart];
      }),
      ...entries.slice(0, 2).map((entry): [string, number, number] => {
        const answered = median(rows[`${entry.name} in the stand-in worker: process start → first answered GET /api/health`]!);
        return [`${entry.name} in the stand-in worker, first answer − bare http first answer`, answered - bare, answered / bare];
      }),
    ],
  );
  printTable(
    ['resident memory right after the import', 'median MB'],
    Object.entries(rss).map(([name, values]) => [name, median(values)]),
  );
  const total = [...packages.values()].reduce((sum, count) => sum + count, 0);
  console.log(
    `At import, the tsc output resolves ${ownFiles} of the broker's own files and ${total} files from ${packages.size} npm packages. ` +
      `The bundle loads ${bundleFiles.length} files (${(bundleBytes / 1e6).toFixed(1)} MB of JavaScript) of its ${allChunks.length + 1} (${(allBytes / 1e6).toFixed(1)} MB); ` +
      'the rest are the chunks of lazily imported SDKs.\n',
  );
  printTable(
    ['direct dependency', 'loaded at import (tsc output)', 'files resolved', 'import alone, median ms', 'RSS after importing it alone, MB'],
    alone.map(([name, ms, mb]) => [name, packages.has(name) ? 'yes' : 'no', packages.get(name) ?? 0, ms, mb]),
  );
  printTable(
    ['most files resolved by the tsc output (direct and transitive)', 'files'],
    [...packages.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15),
  );
  console.log(
    `Raw figures: ${saveJson('startup', { machine: info, reps, rows, rss, ownFiles, packages: Object.fromEntries(packages), bundleFiles: bundleFiles.length, bundleBytes, allChunks: allChunks.length, allBytes, alone })}`,
  );
});
