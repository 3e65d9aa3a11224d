import { connectMailbox, tenantKey } from '../test/support/connect-fixture.js';
import { runMain, spawnBroker, type BrokerChild } from './support/procs.js';
import { listFlag, machine, median, numberFlag, parseArgs, percentile, printMachine, printTable, saveJson } from './support/report.js';
import { progress, startStack } from './support/stack.js';

/*
 * bench:storm — 1,000 concurrent POST /api/token for one connection whose access token no
 * broker has fetched yet (a freshly connected mailbox: the callback stores the refresh token
 * only), spread round-robin over 1 and over 4 broker processes that share Azurite and the
 * Key Vault fake. Counted: refresh-token grants at the sandbox identity provider (target: 1
 * per storm, whatever the number of processes) and the time until every request is answered.
 * The identity provider answers at once, or after --idp-delays ms (Microsoft usually takes
 * 100–300 ms), so requests keep arriving while the refresh is in flight.
 *
 * Flags: --requests 1000 --processes 1,4 --idp-delays 0,200 --reps 3
 */

interface Storm {
  processes: number;
  idpDelayMs: number;
  rep: number;
  requests: number;
  ok: number;
  refreshGrants: number;
  discovery: number;
  distinctTokens: number;
  /** When the refresh grant reached the identity provider (polled every 5 ms). */
  refreshAtMs: number;
  firstMs: number;
  p50Ms: number;
  p99Ms: number;
  allServedMs: number;
  statuses: Record<string, number>;
}

async function main(): Promise<void> {
  const flags = parseArgs();
  const requests = numberFlag(flags, 'requests', 1000);
  const processCounts = listFlag(flags, 'processes', [1, 4]);
  const delays = listFlag(flags, 'idp-delays', [0, 200]);
  const reps = numberFlag(flags, 'reps', 3);
  const info = machine();

  progress('starting Azurite, the Key Vault fake and the sandbox identity provider');
  const stack = await startStack();
  const key = await tenantKey(stack);
  const storms: Storm[] = [];
  let serial = 0;

  for (const count of processCounts) {
    progress(`starting ${count} broker process(es)`);
    const brokers: BrokerChild[] = await Promise.all(Array.from({ length: count }, () => spawnBroker(stack.brokerEnv())));
    // Each process's first request pays for lazy set-up (tables, data key, MSAL modules): not part of a storm.
    const warm = await connectMailbox(stack, `storm-warm-${count}@contoso.example`);
    for (const broker of brokers) await token(broker.baseUrl, key, warm);

    for (const delay of delays) {
      for (let rep = 1; rep <= reps; rep += 1) {
        serial += 1;
        const connectionId = await connectMailbox(stack, `storm-${serial}@contoso.example`);
        if (delay > 0) stack.idp.failNext(1, { delayMs: delay });
        const before = stack.idp.requests();
        progress(`${count} process(es), identity provider +${delay} ms, storm ${rep}/${reps}: ${requests} concurrent requests`);
        const started = performance.now();
        let refreshAtMs = Number.NaN;
        const poll = setInterval(() => {
          if (!Number.isNaN(refreshAtMs)) return;
          const seen = stack.idp.requests().slice(before.length).some((request) => request.grantType === 'refresh_token');
          if (seen) refreshAtMs = performance.now() - started;
        }, 5);
        const answers = await Promise.all(
          Array.from({ length: requests }, async (_, index) => {
            const answer = await token(brokers[index % count]!.baseUrl, key, connectionId);
            return { ...answer, ms: performance.now() - started };
          }),
        );
        clearInterval(poll);
        const after = stack.idp.requests().slice(before.length);
        const times = answers.map((answer) => answer.ms);
        const statuses: Record<string, number> = {};
        for (const answer of answers) statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
        storms.push({
          processes: count,
          idpDelayMs: delay,
          rep,
          requests,
          ok: statuses['200'] ?? 0,
          refreshGrants: after.filter((request) => request.grantType === 'refresh_token').length,
          discovery: after.filter((request) => request.endpoint === 'openid-configuration').length,
          distinctTokens: new Set(answers.filter((answer) => answer.status === 200).map((answer) => answer.accessToken)).size,
          refreshAtMs,
          firstMs: Math.min(...times),
          p50Ms: percentile(times, 50),
          p99Ms: percentile(times, 99),
          allServedMs: Math.max(...times),
          statuses,
        });
      }
    }
    await Promise.all(brokers.map((broker) => broker.stop()));
  }

  printMachine('bench:storm — 1,000 concurrent requests on a never-fetched token', info);
  console.log(`Each storm: a mailbox connected just before (no access token anywhere yet), ${requests} POST /api/token sent at once, round-robin over the broker processes, from this process (fetch, one connection per request). Times are from the first send.\n`);
  printTable(
    ['processes', 'IdP delay ms', 'storm', 'answered 200', 'refresh calls to IdP', 'metadata GETs', 'distinct tokens', 'refresh at IdP ms', 'first answer ms', 'p50 ms', 'p99 ms', 'all served ms'],
    storms.map((storm) => [
      storm.processes,
      storm.idpDelayMs,
      storm.rep,
      `${storm.ok}/${storm.requests}`,
      storm.refreshGrants,
      storm.discovery,
      storm.distinctTokens,
      storm.refreshAtMs,
      storm.firstMs,
      storm.p50Ms,
      storm.p99Ms,
      storm.allServedMs,
    ]),
  );
  const summary = [];
  for (const count of processCounts) {
    for (const delay of delays) {
      const group = storms.filter((storm) => storm.processes === count && storm.idpDelayMs === delay);
      const maxCalls = Math.max(...group.map((storm) => storm.refreshGrants));
      summary.push([
        count,
        delay,
        group.length,
        `${median(group.map((storm) => storm.refreshGrants))} (max ${maxCalls})`,
        maxCalls <= 1 && group.every((storm) => storm.ok === storm.requests) ? 'met' : 'NOT met',
        median(group.map((storm) => storm.refreshAtMs)),
        median(group.map((storm) => storm.p50Ms)),
        median(group.map((storm) => storm.allServedMs)),
      ]);
    }
  }
  printTable(['processes', 'IdP delay ms', 'storms', 'refresh calls per storm, median', 'target 1', 'refresh at IdP ms, median', 'p50 ms, median', 'all served ms, median'], summary);
  console.log(`Raw figures: ${saveJson('storm', { machine: info, requests, storms })}`);
}

async function token(baseUrl: string, key: string, connection: string): Promise<{ status: number; accessToken: string | null }> {
  const response = await fetch(`${baseUrl}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
  const body = (await response.json()) as { access_token?: string };
  return { status: response.status, accessToken: body.access_token ?? null };
}

runMain(main);
