import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';

/*
 * What every benchmark prints: the machine and the exact command first (absolute numbers on
 * a shared 2-core machine mean little without them), then markdown tables that can be
 * pasted into bench/RESULTS.md as they are. The raw figures also go to .data/bench/ as JSON.
 */

export const root = process.env.BENCH_ROOT ?? process.cwd();

export interface Machine {
  date: string;
  command: string;
  nproc: number;
  memoryGiB: number;
  cpu: string;
  node: string;
  kernel: string;
  /** 1-minute load average when the benchmark started: other work on a shared machine skews every figure. */
  loadAtStart: number;
  /** The commit, and whether the working tree (what dist/ was built from) differs from it. */
  source: string;
}

function source(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const changed = git('status', '--porcelain', '--untracked-files=no', '--', 'functions', 'shared', 'infra').split('\n').filter(Boolean).length;
    const untracked = git('status', '--porcelain', '--', 'functions', 'shared', 'infra').split('\n').filter((line) => line.startsWith('??')).length;
    return `${git('rev-parse', '--short', 'HEAD')}${changed + untracked > 0 ? ` + working tree (${changed} changed, ${untracked} untracked paths under functions/ shared/ infra/)` : ''}`;
  } catch {
    return 'unknown';
  }
}

export function machine(): Machine {
  return {
    date: new Date().toISOString(),
    command: process.env.BENCH_COMMAND ?? process.argv.slice(1).join(' '),
    nproc: availableParallelism(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    kernel: release(),
    loadAtStart: loadavg()[0]!,
    source: source(),
  };
}

export function printMachine(title: string, m: Machine): void {
  console.log(`\n## ${title}\n`);
  console.log(`- command: \`${m.command}\``);
  console.log(`- date: ${m.date}`);
  console.log(`- source: ${m.source}`);
  console.log(`- machine: nproc ${m.nproc}, ${m.memoryGiB} GiB memory, ${m.cpu}, Linux ${m.kernel}, Node ${m.node}`);
  console.log(`- 1-minute load average: ${m.loadAtStart.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end (this benchmark's own processes included)\n`);
}

export type Cell = string | number | boolean | null | undefined;

function cell(value: Cell): string {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2);
  return String(value);
}

/** A markdown table with padded columns, readable in a terminal and valid in RESULTS.md. */
export function table(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((row) => row.map(cell));
  const widths = headers.map((header, index) => Math.max(header.length, ...text.map((row) => (row[index] ?? '').length)));
  const line = (values: readonly string[]) => `| ${values.map((value, index) => value.padEnd(widths[index]!)).join(' | ')} |`;
  return [line(headers), `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`, ...text.map(line)].join('\n');
}

export function printTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): void {
  console.log(`${table(headers, rows)}\n`);
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function saveJson(name: string, data: unknown): string {
  const dir = join(root, '.data', 'bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
  return path;
}

/** `--name value` and bare `--flag` (true). */
export function parseArgs(argv: readonly string[] = process.argv.slice(2)): Map<string, string | true> {
  const flags = new Map<string, string | true>();
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index]!;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`);
    const [name, inline] = arg.slice(2).split('=', 2) as [string, string | undefined];
    const next = argv[index + 1];
    if (inline !== undefined) flags.set(name, inline);
    else if (next !== undefined && !next.startsWith('--')) {
      flags.set(name, next);
      index += 1;
    } else flags.set(name, true);
  }
  return flags;
}

export function numberFlag(flags: Map<string, string | true>, name: string, fallback: number): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw === true || !Number.isFinite(value) || value < 0) throw new Error(`--${name} needs a non-negative number`);
  return value;
}

export function listFlag(flags: Map<string, string | true>, name: string, fallback: readonly number[]): number[] {
  const raw = flags.get(name);
  if (raw === undefined) return [...fallback];
  if (raw === true) throw new Error(`--${name} needs a comma-separated list of numbers`);
  const values = raw.split(',').map(Number);
  if (values.some((value) => !Number.isFinite(value) || value < 0)) throw new Error(`--${name} needs a comma-separated list of numbers`);
  return values;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
