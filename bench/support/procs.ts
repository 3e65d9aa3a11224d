import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { root, sleep } from './report.js';

/*
 * Processes a benchmark starts, and what it reads about them from /proc: CPU time (to say
 * which process the machine's cores went to) and resident memory. Every child is stopped by
 * its own pid when the benchmark ends, fails or is interrupted.
 */

const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU seconds the process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Resident set size now and its peak (VmHWM), in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

/** Direct children of `ppid` whose command line matches. */
export function childPids(ppid: number, match: RegExp): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent !== ppid) continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (match.test(cmdline)) found.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return found;
}

const cleanups: Array<() => Promise<void>> = [];
const running = new Set<ChildProcess>();

/** Runs at the end, last registered first (children, then the stack they used). */
export function onCleanup(cleanup: () => Promise<void>): void {
  cleanups.push(cleanup);
}

async function cleanUp(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((error: unknown) => console.error('cleanup failed:', error));
}

/** The benchmark's main: cleans up on success, failure and Ctrl-C. */
export function runMain(main: () => Promise<void>): void {
  let interrupted = false;
  const interrupt = (signal: string) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`${signal}: stopping`);
    void cleanUp().finally(() => process.exit(130));
  };
  process.on('SIGINT', () => interrupt('SIGINT'));
  process.on('SIGTERM', () => interrupt('SIGTERM'));
  // Last resort: never leave a broker or worker behind.
  process.on('exit', () => {
    for (const child of running) if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  });
  main()
    .then(cleanUp)
    .then(() => process.exit(0))
    .catch(async (error: unknown) => {
      console.error(error instanceof Error ? (error.stack ?? error.message) : error);
      await cleanUp();
      process.exit(1);
    });
}

export interface NodeChild {
  pid: number;
  child: ChildProcess;
  /** The last 64 KB of stdout + stderr. */
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  exited(): Promise<number | null>;
  /** SIGINT (a clean stop: profiles and audit queues are written), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export function spawnNode(args: readonly string[], options: { env?: NodeJS.ProcessEnv; execArgv?: readonly string[]; cwd?: string } = {}): NodeChild {
  const child = spawn(process.execPath, [...(options.execArgv ?? []), ...args], {
    cwd: options.cwd ?? root,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`could not start node ${args.join(' ')}`);
  running.add(child);
  let output = '';
  const append = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-65_536);
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const pid = child.pid;
  return {
    pid,
    child,
    output: () => output,
    async waitForOutput(pattern, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(output);
        if (match) return match;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`node ${args.join(' ')} exited before printing ${pattern}:\n${output}`);
        if (Date.now() > deadline) throw new Error(`node ${args.join(' ')} did not print ${pattern} within ${timeoutMs} ms:\n${output}`);
        await sleep(10);
      }
    },
    exited: () => exit,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}

export interface BrokerChild extends NodeChild {
  baseUrl: string;
}

/** `node dist/infra/local/start.js`, the local host as `npm start` runs it, with the given settings. */
export async function spawnBroker(env: NodeJS.ProcessEnv, execArgv: readonly string[] = []): Promise<BrokerChild> {
  const node = spawnNode([join(root, 'dist', 'infra', 'local', 'start.js')], { env, execArgv });
  onCleanup(() => node.stop());
  const match = await node.waitForOutput(/listening on (http:\/\/localhost:\d+)\/api/);
  return { ...node, baseUrl: match[1]! };
}

/** One GET with a fresh connection; resolves with the status, or rejects (ECONNREFUSED before the server listens). */
export function getOnce(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

/** A request without the client-side timeouts of fetch (undici gives up on headers after 300 s). */
export function httpRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end(options.body);
  });
}

/**
 * Heap figures of a child started with `--inspect=127.0.0.1:0`, through the DevTools protocol:
 * a full garbage collection first, so `usedMiB` is what is really retained.
 */
export async function heapAfterGc(child: NodeChild): Promise<{ usedMiB: number; totalMiB: number }> {
  const url = (await child.waitForOutput(/Debugger listening on (ws:\/\/\S+)/))[1]!;
  const socket = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true });
    socket.addEventListener('error', () => reject(new Error(`cannot reach the inspector at ${url}`)), { once: true });
  });
  let id = 0;
  const call = (method: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      id += 1;
      const mine = id;
      const onMessage = (event: MessageEvent) => {
        const message = JSON.parse(String(event.data)) as { id?: number; result?: Record<string, unknown> };
        if (message.id !== mine) return;
        socket.removeEventListener('message', onMessage);
        resolve(message.result ?? {});
      };
      socket.addEventListener('message', onMessage);
      socket.send(JSON.stringify({ id: mine, method }));
    });
  try {
    await call('HeapProfiler.collectGarbage');
    const usage = await call('Runtime.getHeapUsage');
    return { usedMiB: Number(usage.usedSize) / 2 ** 20, totalMiB: Number(usage.totalSize) / 2 ** 20 };
  } finally {
    socket.close();
  }
}
