import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { httpHandler } from '../functions/http.js';
import { token as tokenRoutes } from '../functions/token.js';
import { LocalInvocationContext } from '../infra/local/local-context.js';
import { LocalHeaders } from '../infra/local/local-headers.js';
import { LocalHttpRequest } from '../infra/local/local-request.js';
import type { Services } from '../shared/composition.js';
import { connectMailbox, tenantKey } from '../test/support/connect-fixture.js';
import { monotonicUs, summarizeCpuProfile, type ProfileSummary, type ProfileWindow } from './support/cpu-profile.js';
import { cpuSeconds, onCleanup, runMain, spawnBroker, spawnNode } from './support/procs.js';
import { machine, numberFlag, parseArgs, printMachine, printTable, root, saveJson, type Cell } from './support/report.js';
import { postToken, progress, startStack } from './support/stack.js';

/*
 * bench:token — POST /api/token on its cached path (the access token is in the broker's
 * memory), through the local host in its own process, under autocannon at 64 connections;
 * side by side, in the same run, a bare node:http server answering the same JSON body.
 * Targets (issue 7): ≥ 0.5 of the bare server's requests/s, p99 within 2× of the bare p99.
 *
 * A third target, the floor (floor-host.ts), is the local host answering the same body from
 * an empty handler: the price of the Functions programming model's per-request objects.
 *
 * Last, without any network: the same token handler called in this process (serially, then
 * with 64 calls in flight), for the CPU the broker's own work costs per request.
 *
 * Flags: --duration 10 --warmup 3 --connections 64 --rounds 2
 *        --profile  (broker, floor and Azurite under --cpu-prof; slower, so its numbers are not the result)
 */

interface Measured {
  round: number;
  target: string;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  max: number;
  ok: number;
  non2xx: number;
  errors: number;
  cpu: Record<string, number>;
}

interface HandlerCost {
  inFlight: number;
  calls: number;
  microsecondsPerCall: number;
}

/** The token route's handler as the host runs it (same registration, same request class), without sockets. */
async function handlerCost(services: Services, key: string, connectionId: string): Promise<HandlerCost[]> {
  const handler = httpHandler(tokenRoutes[0]!, () => services);
  const body = Buffer.from(JSON.stringify({ connection: connectionId }));
  const headers = { host: '127.0.0.1', authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': String(body.length) };
  const parsed = () => Object.assign(Object.create(null) as Record<string, string>, headers);
  const once = async () => {
    const context = new LocalInvocationContext({ functionName: 'token', logHandler: () => undefined });
    const request = new LocalHttpRequest({ method: 'POST', url: 'http://localhost/api/token', headers: new LocalHeaders(parsed()), params: {}, body });
    const answer = await handler(request, context);
    if (answer.status !== 200) throw new Error(`the token handler answered ${answer.status}: ${String(answer.body)}`);
  };
  const run = async (inFlight: number, calls: number) => {
    const started = process.hrtime.bigint();
    for (let done = 0; done < calls; done += inFlight) await Promise.all(Array.from({ length: inFlight }, once));
    return Number(process.hrtime.bigint() - started) / 1000 / calls;
  };
  await run(1, 20_000);
  const costs: HandlerCost[] = [];
  for (const inFlight of [1, 64]) costs.push({ inFlight, calls: 64_000, microsecondsPerCall: await run(inFlight, 64_000) });
  return costs;
}

runMain(async () => {
  const flags = parseArgs();
  const duration = numberFlag(flags, 'duration', 10);
  const warmup = numberFlag(flags, 'warmup', 3);
  const connections = numberFlag(flags, 'connections', 64);
  const profile = flags.has('profile');
  const rounds = numberFlag(flags, 'rounds', profile ? 1 : 2);
  const info = machine();

  const profileDir = join(root, '.data', 'bench', 'profiles', `token-${info.date.replace(/[:.]/g, '-')}`);
  if (profile) {
    mkdirSync(profileDir, { recursive: true });
    // Azurite is started by the stack as a child of this process: it inherits this.
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profileDir}`.trim();
  }
  progress('starting Azurite, the Key Vault fake and the sandbox identity provider');
  // The in-process handler runs make ~150,000 calls with one key in a few seconds.
  const stack = await startStack({ env: { BROKER_TOKEN_RATE_LIMIT: '1000000' } });
  if (profile) delete process.env.NODE_OPTIONS;
  const connectionId = await connectMailbox(stack, 'bench-token@contoso.example');
  const key = await tenantKey(stack);

  progress('starting the broker process');
  const broker = await spawnBroker(stack.brokerEnv(), profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
  const first = await postToken(broker.baseUrl, key, connectionId);
  if (first.status !== 200) throw new Error(`the first token request answered ${first.status}: ${first.body}`);
  // From here on the token comes from the broker's memory.
  const cached = await postToken(broker.baseUrl, key, connectionId);
  if (cached.status !== 200) throw new Error(`the cached token request answered ${cached.status}: ${cached.body}`);

  const bare = spawnNode([join(root, 'dist', 'bench', 'bench', 'bare-server.js')], { env: { ...process.env, BENCH_BODY: cached.body } });
  onCleanup(() => bare.stop());
  const bareUrl = (await bare.waitForOutput(/listening on (http:\/\/127\.0\.0\.1:\d+)/))[1]!;

  const request = {
    method: 'POST' as const,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection: connectionId }),
  };
  const floor = spawnNode([join(root, 'dist', 'bench', 'bench', 'floor-host.js')], {
    env: { ...process.env, BENCH_BODY: cached.body },
    execArgv: profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  });
  onCleanup(() => floor.stop());
  const floorUrl = (await floor.waitForOutput(/listening on (http:\/\/127\.0\.0\.1:\d+)/))[1]!;

  const brokerUrl = `${broker.baseUrl.replace('localhost', '127.0.0.1')}/api/token`;
  const targets = [
    { name: 'bare node:http', url: `${bareUrl}/api/token`, pid: bare.pid },
    { name: 'floor: local host, empty handler', url: `${floorUrl}/api/token`, pid: floor.pid },
    { name: 'broker /api/token', url: brokerUrl, pid: broker.pid },
  ];
  const pids: Record<string, number | undefined> = { 'load generator + fakes': process.pid, target: undefined, azurite: stack.azuritePid };

  const measured: Measured[] = [];
  // The measured seconds against each target, for the profiles (start-up and warm-up left out).
  const windows = new Map<number, ProfileWindow[]>();
  for (let round = 1; round <= rounds; round += 1) {
    for (const target of targets) {
      progress(`round ${round}: ${target.name}: warm-up ${warmup} s, then ${duration} s at ${connections} connections`);
      if (warmup > 0) await autocannon({ url: target.url, connections, duration: warmup, ...request });
      const watched: Record<string, number> = { ...pids, target: target.pid } as Record<string, number>;
      const before = Object.fromEntries(Object.entries(watched).filter(([, pid]) => pid !== undefined).map(([name, pid]) => [name, cpuSeconds(pid)]));
      const startUs = monotonicUs();
      const result = await autocannon({ url: target.url, connections, duration, ...request });
      windows.set(target.pid, [...(windows.get(target.pid) ?? []), { startUs, endUs: monotonicUs() }]);
      const cpu = Object.fromEntries(Object.entries(before).map(([name, seconds]) => [name, cpuSeconds(watched[name]!) - seconds]));
      measured.push({
        round,
        target: target.name,
        requestsPerSecond: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        max: result.latency.max,
        ok: result['2xx'],
        non2xx: result.non2xx,
        errors: result.errors + result.timeouts,
        cpu,
      });
    }
  }

  progress('the token handler in this process, without sockets');
  const handler = profile ? [] : await handlerCost(stack.broker.services, key, connectionId);

  let profiles: Record<string, ProfileSummary> = {};
  if (profile) {
    await broker.stop();
    await floor.stop();
    await stack.close();
    const files = readdirSync(profileDir).filter((file) => file.endsWith('.cpuprofile'));
    const find = (pid: number | undefined) => files.find((file) => pid !== undefined && file.includes(`.${pid}.`));
    const profiled: Array<[string, number | undefined, ProfileWindow | undefined]> = [
      ['broker', broker.pid, windows.get(broker.pid)?.[0]],
      ['azurite (during the broker run)', stack.azuritePid, windows.get(broker.pid)?.[0]],
    ];
    profiled.push(['floor host', floor.pid, windows.get(floor.pid)?.[0]]);
    for (const [name, pid, window] of profiled) {
      const file = find(pid);
      if (file) profiles[name] = summarizeCpuProfile(join(profileDir, file), window);
    }
  }

  printMachine(`bench:token — cached token path vs bare node:http${profile ? ' (PROFILED: not the result)' : ''}`, info);
  console.log(`Body: ${Buffer.byteLength(cached.body)} bytes of JSON from every target; ${connections} connections, ${warmup} s warm-up, ${duration} s measured, targets in their own processes, autocannon in this one.\n`);
  printTable(
    ['round', 'target', 'req/s', 'p50 ms', 'p99 ms', 'max ms', '2xx', 'non-2xx', 'errors', 'CPU s target', 'CPU µs per request', 'CPU s Azurite', 'CPU s autocannon+fakes'],
    measured.map((row) => [
      row.round,
      row.target,
      Math.round(row.requestsPerSecond),
      row.p50,
      row.p99,
      row.max,
      row.ok,
      row.non2xx,
      row.errors,
      row.cpu.target,
      Math.round(((row.cpu.target ?? 0) * 1e6) / Math.max(1, row.ok + row.non2xx)),
      row.cpu.azurite,
      row.cpu['load generator + fakes'],
    ]),
  );
  const ratios: Cell[][] = [];
  for (let round = 1; round <= rounds; round += 1) {
    const bareRow = measured.find((row) => row.round === round && row.target === targets[0]!.name)!;
    const floorRow = measured.find((row) => row.round === round && row.target === targets[1]!.name)!;
    for (const row of measured.filter((candidate) => candidate.round === round && candidate !== bareRow)) {
      const throughput = row.requestsPerSecond / bareRow.requestsPerSecond;
      const p99 = row.p99 / bareRow.p99;
      ratios.push([round, row.target, throughput, throughput >= 0.5 ? 'met' : 'NOT met', p99, p99 <= 2 ? 'met' : 'NOT met', row.requestsPerSecond / floorRow.requestsPerSecond]);
    }
  }
  printTable(['round', 'target', 'req/s ÷ bare', 'target ≥ 0.5', 'p99 ÷ bare p99', 'target ≤ 2', 'req/s ÷ floor'], ratios);

  if (handler.length > 0) {
    console.log('The token handler alone, called in the benchmark\'s process (no sockets, no host): the CPU of the broker\'s own work.\n');
    printTable(['calls in flight', 'calls', 'µs per call'], handler.map((row) => [row.inFlight, row.calls, row.microsecondsPerCall.toFixed(1)]));
  }

  for (const [name, summary] of Object.entries(profiles)) {
    const span = summary.windowed ? 'the measured load against the broker' : 'the whole process life';
    console.log(`### CPU profile: ${name} (${Math.round(summary.busyMs)} ms busy of ${Math.round(summary.durationMs)} ms: ${span})\n`);
    printTable(['self time by area', 'ms', '% of busy'], summary.selfByArea.slice(0, 12).map((row) => [row.area, row.ms, (row.shareOfBusy * 100).toFixed(1)]));
    printTable(['on the stack', '% of busy samples'], summary.onStackByArea.map((row) => [row.area, (row.shareOfBusy * 100).toFixed(1)]));
    printTable(['function (self)', 'ms', '% of busy'], summary.topSelf.map((row) => [row.fn, row.ms, (row.shareOfBusy * 100).toFixed(1)]));
    if (summary.brokerInclusive.length > 0) {
      printTable(['broker function (inclusive, synchronous part)', 'ms', '% of busy'], summary.brokerInclusive.map((row) => [row.fn, row.ms, (row.shareOfBusy * 100).toFixed(1)]));
    }
  }
  if (profile) console.log(`Profiles: ${profileDir} (open in Chrome DevTools › Performance, or speedscope)\n`);
  const saved = saveJson('token', { machine: info, connections, duration, warmup, bodyBytes: Buffer.byteLength(cached.body), measured, handler, profiles });
  console.log(`Raw figures: ${saved}`);
});
