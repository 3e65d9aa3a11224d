import { readFileSync } from 'node:fs';

/*
 * A V8 .cpuprofile (node --cpu-prof) read into the few numbers that say where a process's
 * time went: self time by package or source area, the share of busy samples that had a
 * package anywhere on the stack, and our own functions by inclusive time.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A span of CLOCK_MONOTONIC in microseconds: `process.hrtime.bigint() / 1000n` in any process on this machine. */
export interface ProfileWindow {
  startUs: number;
  endUs: number;
}

/** Now on the clock V8's profiler stamps samples with (both are CLOCK_MONOTONIC on Linux). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export interface ProfileSummary {
  durationMs: number;
  busyMs: number;
  /** Whether only the samples inside the given window were counted. */
  windowed: boolean;
  /** Self time by area (npm package, node internals, broker source folder, GC…), busiest first. */
  selfByArea: Array<{ area: string; ms: number; shareOfBusy: number }>;
  /** Share of busy samples with the area anywhere on the stack (areas overlap). */
  onStackByArea: Array<{ area: string; shareOfBusy: number }>;
  /** Functions by self time. */
  topSelf: Array<{ fn: string; ms: number; shareOfBusy: number }>;
  /** Broker functions (dist/…) by inclusive time of their synchronous work. */
  brokerInclusive: Array<{ fn: string; ms: number; shareOfBusy: number }>;
}

function area(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (url === '') {
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(program)') return '(program: V8/native)';
    return `native ${functionName || '(anonymous)'}`;
  }
  if (url.startsWith('node:')) return 'node internals';
  const modules = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (modules) return modules[1]!;
  const broker = /\/dist\/(?:bench\/)?((?:functions|shared\/[^/]+|infra\/local|test\/support|bench))\//.exec(url);
  if (broker) return `broker ${broker[1]}`;
  return url;
}

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^.*\/node_modules\//, '').replace(/^.*\/dist\//, '').replace(/^file:\/\//, '');
  return `${functionName || '(anonymous)'} ${file}${url ? `:${lineNumber + 1}` : ''}`;
}

export function summarizeCpuProfile(path: string, window?: ProfileWindow, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  // Only the load, not start-up: keep the samples stamped inside the window.
  const windowed = window !== undefined && window.startUs < profile.endTime && window.endUs > profile.startTime;
  let kept = profile.samples;
  if (windowed) {
    kept = [];
    let at = profile.startTime;
    for (let index = 0; index < profile.samples.length; index += 1) {
      at += profile.timeDeltas[index] ?? 0;
      if (at >= window.startUs && at <= window.endUs) kept.push(profile.samples[index]!);
    }
  }
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const msPerSample = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length);
  const durationMs = kept.length * msPerSample;

  const hits = new Map<number, number>();
  for (const id of kept) hits.set(id, (hits.get(id) ?? 0) + 1);
  const idle = (node: ProfileNode) => node.callFrame.functionName === '(idle)' && node.callFrame.url === '';
  let busySamples = 0;
  for (const [id, count] of hits) if (!idle(byId.get(id)!)) busySamples += count;
  const busyMs = busySamples * msPerSample;
  const share = (samples: number) => (busySamples === 0 ? 0 : samples / busySamples);

  const selfArea = new Map<string, number>();
  const selfFn = new Map<string, number>();
  const onStack = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, count] of hits) {
    const leaf = byId.get(id)!;
    if (idle(leaf)) continue;
    selfArea.set(area(leaf), (selfArea.get(area(leaf)) ?? 0) + count);
    selfFn.set(label(leaf), (selfFn.get(label(leaf)) ?? 0) + count);
    // Each area and each broker function counts once per sample, however deep it recurses.
    const areas = new Set<string>();
    const fns = new Set<string>();
    for (let current: number | undefined = id; current !== undefined; current = parent.get(current)) {
      const node = byId.get(current)!;
      areas.add(area(node));
      if (area(node).startsWith('broker ')) fns.add(label(node));
    }
    for (const name of areas) onStack.set(name, (onStack.get(name) ?? 0) + count);
    for (const name of fns) inclusive.set(name, (inclusive.get(name) ?? 0) + count);
  }
  const sorted = (map: Map<string, number>) => [...map.entries()].sort((a, b) => b[1] - a[1]);
  return {
    durationMs,
    busyMs,
    windowed,
    selfByArea: sorted(selfArea).map(([name, samples]) => ({ area: name, ms: samples * msPerSample, shareOfBusy: share(samples) })),
    onStackByArea: sorted(onStack)
      .filter(([name]) => !name.startsWith('(') && name !== 'GC')
      .slice(0, top)
      .map(([name, samples]) => ({ area: name, shareOfBusy: share(samples) })),
    topSelf: sorted(selfFn).slice(0, top).map(([fn, samples]) => ({ fn, ms: samples * msPerSample, shareOfBusy: share(samples) })),
    brokerInclusive: sorted(inclusive).slice(0, top).map(([fn, samples]) => ({ fn, ms: samples * msPerSample, shareOfBusy: share(samples) })),
  };
}
