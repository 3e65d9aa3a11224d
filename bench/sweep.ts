import { join } from 'node:path';
import { delegatedScopes } from '../shared/identity/msal-identity.js';
import { secretNames } from '../shared/secrets/secret-store.js';
import type { RunRecord } from '../shared/storage/records.js';
import { connectMailbox } from '../test/support/connect-fixture.js';
import { mkdirSync, readdirSync } from 'node:fs';
import { summarizeCpuProfile, type ProfileSummary } from './support/cpu-profile.js';
import { cpuSeconds, httpRequest, onCleanup, runMain, spawnBroker, spawnNode } from './support/procs.js';
import { machine, numberFlag, parseArgs, printMachine, printTable, root, saveJson, type Cell } from './support/report.js';
import { connectedRow, inPool, OPERATOR_KEY, progress, startStack, type Stack } from './support/stack.js';

/*
 * bench:sweep — the rotate-tokens keep-alive over N connections (default 10,000) whose
 * refresh tokens are all due, against an identity provider that takes 50 ms per token call.
 *
 * Seeding: connection rows go straight into Azurite and their refresh tokens into the Key
 * Vault fake (through the real SecretClient). The refresh tokens are real sandbox grants:
 * one mailbox signs in through the sandbox's pages, and its refresh token is redeemed N times
 * at the sandbox's token endpoint (a redemption returns a new refresh token and leaves the
 * old one valid, as Entra does), so each connection holds its own valid token. They all
 * belong to that one sandbox user; the sweep never looks at whose token it is.
 *
 * Run A (the figure of issue 7): the sweep as composition.ts builds it, in its own process,
 * with the write budget raised to --budget (2,500 per 10 s; the BROKER_KV_WRITE_BUDGET setting
 * stops at 300) and --concurrency (8, the product's value when this benchmark was first run;
 * BROKER_SWEEP_CONCURRENCY now defaults to 16). The concurrency is the number of calls to
 * the identity provider in flight; the sweep leases as many connections again ahead of their
 * call. Ideal: min(concurrency / latency, budget / 10 s). Run B (the product path, unless --product-connections 0): --product-connections
 * of the same rows made due again, swept by `POST /admin/functions/rotate-tokens` on a broker
 * started with BROKER_KV_WRITE_BUDGET=300 and BROKER_SWEEP_CONCURRENCY=--product-concurrency
 * (16, the default), where the budget, not the concurrency, is the limit.
 * Key Vault writes are read from the fake's request log every 10 ms.
 *
 * Flags: --connections 10000 --concurrency 8 --budget 2500 --idp-delay 50 --product-connections 1500 --product-concurrency 16
 *        --profile (run A's sweeper under --cpu-prof)
 */

const DAY_MS = 86_400_000;

interface Sample {
  ms: number;
  refreshTokenWrites: number;
  kvGets: number;
  idpTokenCalls: number;
  idpMetadata: number;
}

interface SweepFigures {
  name: string;
  budgetPer10s: number;
  concurrency: number;
  run: RunRecord;
  seconds: number;
  perSecond: number;
  steadyPerSecond: number;
  ideal: number;
  maxWritesIn10s: number;
  windows: number[];
  kvGetsPerRefresh: number;
  idpCallsPerRefresh: number;
  idpMetadataPerRefresh: number;
  /** CPU milliseconds per refreshed connection, by process. */
  cpuMsPerRefresh: Record<string, number>;
}

interface StepTiming {
  call: string;
  count: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  totalS: number;
}

type CpuWatch = Record<string, { pid: number; start: number }>;

function cpuWatch(pids: Record<string, number | undefined>): CpuWatch {
  const watch: CpuWatch = {};
  for (const [name, pid] of Object.entries(pids)) if (pid !== undefined) watch[name] = { pid, start: cpuSeconds(pid) };
  return watch;
}

/** Read before the process exits. */
function cpuUsed(watch: CpuWatch): Record<string, number> {
  return Object.fromEntries(Object.entries(watch).map(([name, { pid, start }]) => [name, cpuSeconds(pid) - start]));
}

/**
 * Polls the fakes' request logs every 10 ms and empties them, so each poll copies only what
 * is new. A write's time is when it arrived at the Key Vault fake (the fake stamps it), which
 * is what Key Vault's throttling counts. (Stamping at the poll, as this benchmark did first,
 * put a busy event loop's delay into the stamps and could show 303 writes in 10 s where 300
 * arrived.)
 */
function watch(stack: Stack): { stop(): Watched } {
  const started = performance.now();
  const startedAt = Date.now();
  const watched: Watched = { writes: [], samples: [] };
  let kvGets = 0;
  let idpTokenCalls = 0;
  let idpMetadata = 0;
  const take = () => {
    const now = performance.now() - started;
    const vault = stack.vault.requests();
    stack.vault.clearRequests();
    for (const request of vault) {
      // Counted at arrival with a token, whatever the answer (still pending at this poll, or a
      // refusal): the vault counts every authenticated write that reaches it.
      if (request.method === 'PUT' && request.path.endsWith('-refresh-token') && request.authorized) watched.writes.push(request.at - startedAt);
      else if (request.method === 'GET') kvGets += 1;
    }
    const idp = stack.idp.requests();
    stack.idp.clearRequests();
    for (const request of idp) {
      if (request.endpoint === 'token') idpTokenCalls += 1;
      else if (request.endpoint === 'openid-configuration') idpMetadata += 1;
    }
    watched.samples.push({ ms: now, refreshTokenWrites: watched.writes.length, kvGets, idpTokenCalls, idpMetadata });
  };
  take();
  const timer = setInterval(take, 10);
  return {
    stop() {
      clearInterval(timer);
      take();
      watched.writes.sort((a, b) => a - b);
      return watched;
    },
  };
}

interface Watched {
  /** Arrival time (ms from the start of watching) of every refresh-token write. */
  writes: number[];
  samples: Sample[];
}

function figures(name: string, run: RunRecord, watched: Watched, budgetPer10s: number, concurrency: number, idpDelayMs: number, cpu: Record<string, number>): SweepFigures {
  const { samples, writes } = watched;
  const seconds = (Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000;
  const last = samples.at(-1)!;
  // Steady rate: between the 10th and the 90th percentile of the writes (no start-up, no tail).
  const low = writes[Math.floor(writes.length * 0.1)];
  const high = writes[Math.floor(writes.length * 0.9)];
  const steadyPerSecond = low !== undefined && high !== undefined && high > low ? (Math.floor(writes.length * 0.9) - Math.floor(writes.length * 0.1)) / ((high - low) / 1000) : Number.NaN;
  // The most writes in any 10 s, [t, t + 10 s), sliding over every write.
  let maxWritesIn10s = 0;
  for (let first = 0, index = 0; index < writes.length; index += 1) {
    while (writes[index]! - writes[first]! >= 10_000) first += 1;
    maxWritesIn10s = Math.max(maxWritesIn10s, index - first + 1);
  }
  const windows: number[] = [];
  if (writes.length > 0) {
    for (const at of writes) {
      const bucket = Math.floor((at - writes[0]!) / 10_000);
      windows[bucket] = (windows[bucket] ?? 0) + 1;
    }
  }
  const refreshed = Math.max(1, run.refreshed);
  return {
    name,
    budgetPer10s,
    concurrency,
    run,
    seconds,
    perSecond: run.refreshed / seconds,
    steadyPerSecond,
    ideal: Math.min(concurrency / (idpDelayMs / 1000), budgetPer10s / 10),
    maxWritesIn10s,
    windows: Array.from(windows, (count) => count ?? 0),
    kvGetsPerRefresh: last.kvGets / refreshed,
    idpCallsPerRefresh: last.idpTokenCalls / refreshed,
    idpMetadataPerRefresh: last.idpMetadata / refreshed,
    cpuMsPerRefresh: Object.fromEntries(Object.entries(cpu).map(([process, seconds]) => [process, (seconds * 1000) / refreshed])),
  };
}

runMain(async () => {
  const flags = parseArgs();
  const connections = numberFlag(flags, 'connections', 10_000);
  const concurrency = numberFlag(flags, 'concurrency', 8);
  const budget = numberFlag(flags, 'budget', 2500);
  const idpDelay = numberFlag(flags, 'idp-delay', 50);
  const productConnections = Math.min(connections, numberFlag(flags, 'product-connections', 1500));
  const productConcurrency = numberFlag(flags, 'product-concurrency', 16);
  const profile = flags.has('profile');
  const info = machine();
  const profileDir = join(root, '.data', 'bench', 'profiles', `sweep-${info.date.replace(/[:.]/g, '-')}`);
  if (profile) mkdirSync(profileDir, { recursive: true });

  progress('starting Azurite, the Key Vault fake and the sandbox identity provider');
  const stack = await startStack();
  const services = stack.broker.services;
  const seed = await connectMailbox(stack, 'sweep-seed@contoso.example');
  const seedToken = stack.vault.latest(secretNames.connectionRefreshToken(seed))?.value;
  if (!seedToken) throw new Error('the seed mailbox has no refresh token in the vault');

  progress(`minting ${connections} refresh tokens at the sandbox's token endpoint`);
  let started = performance.now();
  const tokens: string[] = new Array<string>(connections);
  const form = (refreshToken: string) =>
    new URLSearchParams({
      grant_type: 'refresh_token',
      client_id: stack.app.clientId,
      client_secret: stack.app.clientSecret,
      refresh_token: refreshToken,
      scope: delegatedScopes(['smtp', 'imap'], services.config.mailResource).join(' '),
    });
  await inPool(tokens, 16, async (_, index) => {
    const response = await fetch(`${stack.idp.authorityHost}/organizations/oauth2/v2.0/token`, { method: 'POST', body: form(seedToken) });
    const body = (await response.json()) as { refresh_token?: string };
    if (!response.ok || !body.refresh_token) throw new Error(`minting a refresh token failed: ${response.status} ${JSON.stringify(body)}`);
    tokens[index] = body.refresh_token;
  });
  const mintSeconds = (performance.now() - started) / 1000;

  progress(`seeding ${connections} connection rows and refresh tokens`);
  started = performance.now();
  const old = new Date(Date.now() - 10 * DAY_MS).toISOString();
  const ids: string[] = new Array<string>(connections);
  await inPool(tokens, 32, async (refreshToken, index) => {
    const row = connectedRow({ tenantId: stack.tenantId, appId: stack.app.id, mailbox: `sweep-${index}@contoso.example`, at: old });
    await services.secrets.set(secretNames.connectionRefreshToken(row.id), refreshToken, { contentType: 'refresh-token', tags: { connectionId: row.id } });
    await services.tables.connections.insert(row);
    ids[index] = row.id;
    if ((index + 1) % 2000 === 0) progress(`  ${index + 1} seeded`);
  });
  const seedSeconds = (performance.now() - started) / 1000;

  // Run A: the sweep with the raised budget, in its own process.
  stack.vault.clearRequests();
  stack.idp.clearRequests();
  stack.idp.failNext(connections + 100, { delayMs: idpDelay });
  progress(`run A: sweeping ${connections} seeded connections (budget ${budget}/10 s, concurrency ${concurrency}, IdP +${idpDelay} ms)`);
  let watcher = watch(stack);
  const worker = spawnNode([join(root, 'dist', 'bench', 'bench', 'sweep-worker.js')], {
    env: stack.brokerEnv({ BENCH_WRITE_BUDGET: String(budget), BENCH_SWEEP_CONCURRENCY: String(concurrency), BROKER_SWEEP_TIME_BUDGET_S: '3600' }),
    execArgv: profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  });
  onCleanup(() => worker.stop());
  let cpu = cpuWatch({ sweeper: worker.pid, 'fakes (KV, IdP) + poller': process.pid, azurite: stack.azuritePid });
  const line = await worker.waitForOutput(/SWEEP_RESULT (\{.*\})\n/, (connections / 10 + 600) * 1000);
  const workerResult = JSON.parse(line[1]!) as { run: RunRecord; timings: StepTiming[] };
  const runA = figures(`A: budget ${budget}/10 s, concurrency ${concurrency} (sweep built directly)`, workerResult.run, watcher.stop(), budget, concurrency, idpDelay, cpuUsed(cpu));
  await worker.exited();
  const results = [runA];
  let sweeperProfile: ProfileSummary | undefined;
  if (profile) {
    const file = readdirSync(profileDir).find((name) => name.includes(`.${worker.pid}.`));
    if (file) sweeperProfile = summarizeCpuProfile(join(profileDir, file));
  }

  if (productConnections > 0) {
    progress(`run B: making ${productConnections} connections due again`);
    await inPool(ids.slice(0, productConnections), 32, async (id) => {
      const row = await services.tables.connections.get(id, '');
      if (row) await services.tables.connections.replace({ ...row.value, lastRefreshAt: old, refreshTokenUpdatedAt: old }, row.etag);
    });
    const broker = await spawnBroker(
      stack.brokerEnv({ BROKER_KV_WRITE_BUDGET: '300', BROKER_SWEEP_CONCURRENCY: String(productConcurrency), BROKER_SWEEP_TIME_BUDGET_S: '3600' }),
    );
    stack.vault.clearRequests();
    stack.idp.clearRequests();
    stack.idp.failNext(productConnections + 100, { delayMs: idpDelay });
    progress(`run B: POST /admin/functions/rotate-tokens (BROKER_KV_WRITE_BUDGET=300, concurrency ${productConcurrency}, IdP +${idpDelay} ms)`);
    watcher = watch(stack);
    cpu = cpuWatch({ sweeper: broker.pid, 'fakes (KV, IdP) + poller': process.pid, azurite: stack.azuritePid });
    const answer = await httpRequest(`${broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
    const watchedB = watcher.stop();
    const used = cpuUsed(cpu);
    if (answer.status !== 202) throw new Error(`rotate-tokens answered ${answer.status}: ${answer.body}`);
    const [runB] = await services.sweep.latest(1);
    results.push(figures(`B: BROKER_KV_WRITE_BUDGET=300, concurrency ${productConcurrency} (product path)`, runB!, watchedB, 300, productConcurrency, idpDelay, used));
    await broker.stop();
  }

  printMachine(`bench:sweep — rotate-tokens keep-alive, identity provider at ${idpDelay} ms`, info);
  console.log(
    `Seeding: ${connections} refresh tokens minted at the sandbox in ${mintSeconds.toFixed(1)} s; ${connections} rows + secrets written in ${seedSeconds.toFixed(1)} s (not part of the figures). IdP latency: +${idpDelay} ms per token call.\n`,
  );
  const rows: Cell[][] = results.map((result) => [
    result.name,
    result.run.due,
    result.run.refreshed,
    Object.entries(result.run.failed).map(([code, count]) => `${code} ${count}`).join(', ') || 0,
    result.run.complete ? 'yes' : 'no',
    result.seconds,
    result.perSecond,
    result.steadyPerSecond,
    result.ideal,
    `${Math.round((result.perSecond / result.ideal) * 100)} %`,
    result.perSecond / result.ideal >= 0.8 ? 'met' : 'NOT met',
    `${result.maxWritesIn10s} / ${result.budgetPer10s}`,
    result.maxWritesIn10s <= result.budgetPer10s ? 'met' : 'NOT met',
  ]);
  printTable(
    ['run', 'due', 'refreshed', 'failed', 'complete', 'seconds', 'conn/s', 'conn/s steady', 'ideal conn/s', 'of ideal', 'target ≥ 80 %', 'most KV writes in any 10 s / budget', 'never over'],
    rows,
  );
  for (const result of results) {
    console.log(`Key Vault refresh-token writes in consecutive 10 s windows from the first write, ${result.name}: ${result.windows.join(', ')}\n`);
  }
  printTable(
    ['run', 'KV reads per refresh', 'IdP token calls per refresh', 'IdP metadata GETs per refresh', 'CPU ms per refresh: sweeper', 'fakes + poller', 'Azurite'],
    results.map((result) => [
      result.name,
      result.kvGetsPerRefresh,
      result.idpCallsPerRefresh,
      result.idpMetadataPerRefresh,
      result.cpuMsPerRefresh.sweeper,
      result.cpuMsPerRefresh['fakes (KV, IdP) + poller'],
      result.cpuMsPerRefresh.azurite,
    ]),
  );
  console.log(`Run A, wall time of each awaited call in the sweeper (${concurrency} identity calls at a time, up to ${2 * concurrency} connections in flight; "end to end" includes the wait for an identity slot):\n`);
  printTable(
    ['call', 'count', 'per refresh', 'mean ms', 'p50 ms', 'p99 ms'],
    workerResult.timings.map((step) => [step.call, step.count, step.count / Math.max(1, runA.run.refreshed), step.meanMs, step.p50Ms, step.p99Ms]),
  );
  if (sweeperProfile) {
    console.log(`### CPU profile: run A's sweeper (${Math.round(sweeperProfile.busyMs)} ms busy of ${Math.round(sweeperProfile.durationMs)} ms, whole process)\n`);
    printTable(['self time by area', 'ms', '% of busy'], sweeperProfile.selfByArea.slice(0, 12).map((row) => [row.area, row.ms, (row.shareOfBusy * 100).toFixed(1)]));
    printTable(['on the stack', '% of busy samples'], sweeperProfile.onStackByArea.map((row) => [row.area, (row.shareOfBusy * 100).toFixed(1)]));
    printTable(['function (self)', 'ms', '% of busy'], sweeperProfile.topSelf.map((row) => [row.fn, row.ms, (row.shareOfBusy * 100).toFixed(1)]));
  }
  console.log(`Raw figures: ${saveJson('sweep', { machine: info, connections, concurrency, budget, idpDelay, mintSeconds, seedSeconds, results, timingsA: workerResult.timings })}`);
});
