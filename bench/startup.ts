import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
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
 *  - the Functions entry: `import('dist/functions/index.js')` with the settings it needs,
 *    timed inside the process and from process start to exit. Outside the Functions host
 *    @azure/functions runs in "test mode" and skips the registrations; the import cost is
 *    all there is to measure here.
 * Then which npm packages that entry loads at import, and what each costs to import alone
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

const IMPORT_TIMER = (specifier: string) =>
  `const t = performance.now(); await import(${JSON.stringify(specifier)}); ` +
  `const done = performance.now(); await new Promise((r) => setTimeout(r, 100));` +
  `console.log('IMPORT_MS ' + (done - t) + ' ' + done + ' ' + process.memoryUsage().rss / 1e6); process.exit(0);`;

// Records every file resolved while importing the entry, ESM and CommonJS alike, into `out`.
const LOADED_PACKAGES = (specifier: string, out: string) =>
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
  const settings: NodeJS.ProcessEnv = {
    ...process.env,
    BROKER_SANDBOX: 'false',
    BROKER_TABLES_CONNECTION: azurite.connectionString,
    BROKER_OPERATOR_KEY: OPERATOR_KEY,
    BROKER_LOCAL_DATA_DIR: dataDir,
    BROKER_LOCAL_SECRETS_KEY: randomBytes(32).toString('base64'),
  };
  const entry = pathToFileURL(join(root, 'dist', 'functions', 'index.js')).href;

  const rows: Record<string, number[]> = {
    'node -e 0: start → exit': [],
    'bare node:http: start → first answer': [],
    'local host: start → "listening" line': [],
    'local host: start → first answered GET /api/health': [],
    'Functions entry: import() inside the process': [],
    'Functions entry: process start → import done': [],
    'Functions entry: start → exit': [],
  };
  const entryRss: number[] = [];
  const bareRss: number[] = [];
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
    const host = spawnNode([join(root, 'dist', 'infra', 'local', 'start.js')], { env: { ...settings, PORT: String(port) } });
    const answered = firstAnswer(host, `http://127.0.0.1:${port}/api/health`, started);
    const listening = host.waitForOutput(/listening on/).then(() => performance.now() - started);
    rows['local host: start → first answered GET /api/health']!.push(await answered);
    rows['local host: start → "listening" line']!.push(await listening);
    await host.stop();

    const imported = await timeToExit(['--input-type=module', '-e', IMPORT_TIMER(entry)], settings);
    const [, importMs, sinceStart, rss] = /IMPORT_MS (\S+) (\S+) (\S+)/.exec(imported.output) ?? [];
    entryRss.push(Number(rss));
    const nothing = await timeToExit(['--input-type=module', '-e', IMPORT_TIMER('node:os')], process.env);
    bareRss.push(Number(/IMPORT_MS \S+ \S+ (\S+)/.exec(nothing.output)?.[1]));
    rows['Functions entry: import() inside the process']!.push(Number(importMs));
    rows['Functions entry: process start → import done']!.push(Number(sinceStart));
    rows['Functions entry: start → exit']!.push(imported.wallMs);
  }

  progress('which packages the Functions entry loads, and their import cost alone');
  const loadedFile = join(dataDir, 'loaded.json');
  await timeToExit(['--input-type=module', '-e', LOADED_PACKAGES(entry, loadedFile)], settings);
  const urls = JSON.parse(readFileSync(loadedFile, 'utf8')) as string[];
  const files = new Map<string, number>();
  let ownFiles = 0;
  for (const url of urls) {
    const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (match) files.set(match[1]!, (files.get(match[1]!) ?? 0) + 1);
    else if (url.includes('/dist/')) ownFiles += 1;
  }
  const direct = ['@azure/functions', '@azure/data-tables', '@azure/identity', '@azure/keyvault-secrets', '@azure/msal-node', 'zod', 'jose', 'nodemailer', 'imapflow'];
  const alone: Array<[string, number, number]> = [];
  for (const name of direct) {
    const times: number[] = [];
    const rss: number[] = [];
    for (let rep = 0; rep < Math.min(reps, 5); rep += 1) {
      const result = await timeToExit(['--input-type=module', '-e', IMPORT_TIMER(name)], process.env);
      const [, ms, , mb] = /IMPORT_MS (\S+) (\S+) (\S+)/.exec(result.output) ?? [];
      times.push(Number(ms));
      rss.push(Number(mb));
    }
    alone.push([name, median(times), median(rss)]);
  }

  printMachine('bench:startup — cold start against bare node', info);
  console.log(`${reps} repetitions of each, interleaved; Azurite (in memory) was already running; local secret store; medians in ms.\n`);
  printTable(
    ['measurement', 'median ms', 'min ms', 'max ms'],
    Object.entries(rows).map(([name, values]) => [name, median(values), Math.min(...values), Math.max(...values)]),
  );
  const bare = median(rows['bare node:http: start → first answer']!);
  const nodeStart = median(rows['node -e 0: start → exit']!);
  printTable(
    ['comparison', 'ms', '× bare'],
    [
      ['local host first answer − bare http first answer', median(rows['local host: start → first answered GET /api/health']!) - bare, median(rows['local host: start → first answered GET /api/health']!) / bare],
      ['Functions entry start → exit − node -e 0', median(rows['Functions entry: start → exit']!) - nodeStart, median(rows['Functions entry: start → exit']!) / nodeStart],
    ],
  );
  const total = [...files.values()].reduce((sum, count) => sum + count, 0);
  console.log(
    `At import, dist/functions/index.js resolves ${ownFiles} of the broker's own files and ${total} files from ${files.size} npm packages; ` +
      `RSS after the import ${median(entryRss).toFixed(0)} MB against ${median(bareRss).toFixed(0)} MB for a bare node (medians).\n`,
  );
  printTable(
    ['direct dependency', 'loaded at import', 'files resolved', 'import alone, median ms', 'RSS after importing it alone, MB'],
    alone.map(([name, ms, rss]) => [name, files.has(name) ? 'yes' : 'no', files.get(name) ?? 0, ms, rss]),
  );
  printTable(
    ['most files resolved (direct and transitive)', 'files'],
    [...files.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15),
  );
  console.log(`Raw figures: ${saveJson('startup', { machine: info, reps, rows, entryRss, bareRss, ownFiles, files: Object.fromEntries(files), alone })}`);
});
