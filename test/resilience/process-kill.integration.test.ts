import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../infra/local/free-port.js';
import { delegatedScopes } from '../../shared/identity/msal-identity.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import type { ConnectionRecord, RunRecord } from '../../shared/storage/records.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { killBrokerProcesses, startBrokerProcess, waitForOutput, type BrokerProcess } from '../support/broker-process.js';
import { type ConnectFixture, connectionWithLink, connectMailbox, CUSTOMER_TENANT, sharedBrokerEnv, startConnectFixture, tenantKey } from '../support/connect-fixture.js';
import { openPage, signInThroughPages } from '../infra/sandbox-idp/support.js';

/*
 * A broker process killed (SIGKILL: no clean-up, no finally) at the worst moment of each
 * operation that changes what is stored: the code exchange of a callback, a refresh holding
 * the row's lease, and a sweep with half its refreshes done. The identity provider holds the
 * process inside the operation (`failNext(1, { delayMs })`) while the test kills it. After a
 * restart every connection must still be usable with what is stored.
 *
 * The children share the fixture's Azurite, Key Vault fake and identity provider, and its
 * public URL (so the same redirect URI), as instances behind one address do; the test sends
 * each browser step to the child it means, by rewriting the origin.
 */

const DAY = 86_400_000;
const LEASE_MS = 30_000;
/** Longer than the test needs to kill the process, shorter than msal's 15 s network timeout. */
const HOLD_MS = 10_000;

interface Child {
  process: BrokerProcess;
  base: string;
}

let fixture: ConnectFixture;
let key: string;
let dataDir: string;

beforeAll(async () => {
  fixture = await startConnectFixture();
  key = await tenantKey(fixture);
  dataDir = mkdtempSync(join(tmpdir(), 'broker-kill-'));
});

afterAll(async () => {
  killBrokerProcesses();
  await fixture?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function startChild(): Promise<Child> {
  const port = await freePort();
  const started = startBrokerProcess(
    {
      ...sharedBrokerEnv(fixture, port),
      BROKER_LOCAL_DATA_DIR: dataDir,
      // Only the test runs the sweep: the default schedule could fire at :00 or :30 mid-test.
      BROKER_ROTATION_SCHEDULE: '0 0 0 1 1 *',
    },
    { trustTestCa: true },
  );
  await waitForOutput(started, 'listening on');
  return { process: started, base: `http://localhost:${port}` };
}

async function kill(child: Child): Promise<void> {
  child.process.child.kill('SIGKILL');
  await child.process.exited;
}

/** The same URL, sent to one particular instance. */
function at(child: Child, url: string | URL): string {
  const target = new URL(url);
  const base = new URL(child.base);
  target.protocol = base.protocol;
  target.host = base.host;
  return target.toString();
}

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const grants = (type: string, from = 0) => fixture.idp.requests().slice(from).filter((request) => request.endpoint === 'token' && request.grantType === type);
/** Token requests the identity provider has received but not answered yet. */
const pending = (type: string, from = 0) => grants(type, from).filter((request) => request.status === 0).length;

async function row(connectionId: string): Promise<ConnectionRecord> {
  const found = await fixture.broker.services.tables.connections.get(connectionId, '');
  if (!found) throw new Error(`no row for ${connectionId}`);
  return found.value;
}

function requestToken(child: Child, connection: string): Promise<Response> {
  return fetch(`${child.base}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
}

const refreshTokenName = (connectionId: string) => secretNames.connectionRefreshToken(connectionId);

/** Redeems the refresh token Key Vault holds, straight at the identity provider: it is what a restarted broker has to work with. */
async function redeemStored(connectionId: string): Promise<void> {
  const stored = fixture.vault.latest(refreshTokenName(connectionId));
  expect(stored?.value).toBeTruthy();
  const tokens = await fixture.broker.services.identity.refresh({
    app: { clientId: fixture.app.clientId, tenant: 'organizations', clientSecret: fixture.app.clientSecret },
    scopes: delegatedScopes(['smtp', 'imap'], fixture.broker.services.config.mailResource),
    refreshToken: stored!.value,
  });
  expect(tokens.accessToken).toBeTruthy();
}

describe('a broker process killed mid-operation', () => {
  /** Each restarted process is the next scenario's victim; a scenario run alone starts its own. */
  let victim: Child | undefined;

  it('mid-callback: the code exchange dies with the process, and the same Authorize link still connects the mailbox', async () => {
    const mailbox = 'crash-callback@contoso.example';
    fixture.idp.addUser({ upn: mailbox, tid: CUSTOMER_TENANT });
    const { connectionId, link } = await connectionWithLink(fixture, mailbox);
    const first = await startChild();

    const opened = await openPage(at(first, link));
    expect(opened.status).toBe(302);
    const back = await signInThroughPages(fixture.idp, opened.location!.toString());
    const callbackUrl = at(first, back.location!);
    expect(new URL(callbackUrl).pathname).toBe('/api/oauth/callback');

    const mark = fixture.idp.requests().length;
    fixture.idp.failNext(1, { delayMs: HOLD_MS });
    const answer = fetch(callbackUrl, { redirect: 'manual' }).then(
      (response) => response.status,
      () => 'no answer' as const,
    );
    await until('the code exchange to reach the identity provider', () => pending('authorization_code', mark) === 1);
    await kill(first);
    expect(await answer).toBe('no answer');

    // Nothing half-done is left behind: no refresh token, the connection still pending, the link still open.
    expect(fixture.vault.versionCount(refreshTokenName(connectionId))).toBe(0);
    expect(await row(connectionId)).toMatchObject({ status: 'pending', boundObjectId: null });
    expect((await fixture.broker.services.tables.links.get(new URL(link).pathname.split('/').at(-1)!, ''))?.value.completedAt).toBeNull();

    const second = await startChild();
    // The state died with the exchange (single use, consumed before the code went out): the old redirect is refused, politely.
    const replay = await openPage(at(second, callbackUrl));
    expect(replay.status).toBeGreaterThanOrEqual(400);
    expect(replay.status).toBeLessThan(500);

    const reopened = await openPage(at(second, link));
    expect(reopened.status).toBe(302);
    const signedIn = await signInThroughPages(fixture.idp, reopened.location!.toString());
    const page = await openPage(at(second, signedIn.location!));
    expect(page.status).toBe(200);

    expect(await row(connectionId)).toMatchObject({ status: 'connected', leaseOwner: null });
    expect(fixture.vault.versionCount(refreshTokenName(connectionId))).toBe(1);
    // Usable: the restarted process refreshes with the stored token, and the stored token redeems on its own.
    const refreshesBefore = grants('refresh_token').length;
    const token = await requestToken(second, connectionId);
    expect(token.status).toBe(200);
    expect(grants('refresh_token').length).toBe(refreshesBefore + 1);
    await redeemStored(connectionId);
    victim = second;
  }, 60_000);

  it('mid-refresh: the dead holder\'s lease runs out, then exactly one refresh serves the token', async () => {
    const connectionId = await connectMailbox(fixture, 'crash-refresh@contoso.example');
    const holder = victim ?? (await startChild());
    const storedBefore = fixture.vault.latest(refreshTokenName(connectionId))?.value;
    const versionsBefore = fixture.vault.versionCount(refreshTokenName(connectionId));

    const mark = fixture.idp.requests().length;
    fixture.idp.failNext(1, { delayMs: HOLD_MS });
    const answer = requestToken(holder, connectionId).then(
      (response) => response.status,
      () => 'no answer' as const,
    );
    await until('the refresh to reach the identity provider', () => pending('refresh_token', mark) === 1);
    const leased = await row(connectionId);
    expect(leased.leaseOwner).not.toBeNull();
    const leaseUntil = new Date(leased.leaseUntil!).getTime();
    await kill(holder);
    const killedAt = Date.now();
    expect(await answer).toBe('no answer');

    const restarted = await startChild();
    const afterRestart = fixture.idp.requests().length;
    const statuses: number[] = [];
    let served: Response | undefined;
    while (!served) {
      const response = await requestToken(restarted, connectionId);
      statuses.push(response.status);
      if (response.status === 200) {
        served = response;
        break;
      }
      // While the lease stands, the caller is told to come back, not given an error that blames the mailbox.
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({ code: 'REFRESH_IN_PROGRESS' });
      const retryAfter = Number(response.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(0);
      expect(Date.now() - killedAt).toBeLessThan(45_000);
      await sleep(Math.min(retryAfter, 5) * 1000);
    }
    const servedAt = Date.now();
    const recovery = servedAt - killedAt;
    console.log(`mid-refresh: served ${recovery} ms after the kill (lease ran out ${leaseUntil - killedAt} ms after it), answers ${statuses.join(', ')}`);
    // Bounded by the lease: nobody refreshed behind the dead holder's back, and nobody waited much past it.
    expect(servedAt).toBeGreaterThanOrEqual(leaseUntil - 1_000);
    expect(recovery).toBeLessThan(45_000);
    expect(grants('refresh_token', afterRestart)).toHaveLength(1);

    expect(await row(connectionId)).toMatchObject({ status: 'connected', leaseOwner: null, leaseUntil: null });
    // Within a day of the last write the rotated token is not written again: the stored one stays, and still works.
    expect(fixture.vault.versionCount(refreshTokenName(connectionId))).toBe(versionsBefore);
    expect(fixture.vault.latest(refreshTokenName(connectionId))?.value).toBe(storedBefore);
    await redeemStored(connectionId);
    // The next caller gets the same token without Microsoft.
    const body = (await served.json()) as { access_token: string };
    const grantsNow = grants('refresh_token').length;
    const again = await requestToken(restarted, connectionId);
    expect(((await again.json()) as { access_token: string }).access_token).toBe(body.access_token);
    expect(grants('refresh_token').length).toBe(grantsNow);
    victim = restarted;
  }, 75_000);

  it('mid-sweep: half the refreshes done, half holding leases, and the next run finishes the job without loss', async () => {
    const ids: string[] = [];
    for (let index = 0; index < 6; index += 1) ids.push(await connectMailbox(fixture, `crash-sweep${index}@contoso.example`));
    // Due for the sweep: last refreshed, and the refresh token last written, eight days ago.
    const eightDaysAgo = new Date(Date.now() - 8 * DAY).toISOString();
    for (const id of ids) {
      const current = await fixture.broker.services.tables.connections.get(id, '');
      await fixture.broker.services.tables.connections.replace({ ...current!.value, lastRefreshAt: eightDaysAgo, refreshTokenUpdatedAt: eightDaysAgo }, current!.etag);
    }
    const versionsBefore = new Map(ids.map((id) => [id, fixture.vault.versionCount(refreshTokenName(id))]));
    const sweeper = victim ?? (await startChild());
    const sweepStarted = new Date().toISOString();

    const mark = fixture.idp.requests().length;
    // The first three refreshes to reach Microsoft are answered at once, the other three are held.
    fixture.idp.failNext(3, { delayMs: 1 });
    fixture.idp.failNext(3, { delayMs: HOLD_MS });
    const run = fetch(`${sweeper.base}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } }).then(
      (response) => response.status,
      () => 'no answer' as const,
    );
    const rows = () => Promise.all(ids.map(row));
    const done = (connection: ConnectionRecord) => connection.leaseOwner === null && (connection.lastRefreshAt ?? '') >= sweepStarted;
    await until('three refreshes done and three held', async () => pending('refresh_token', mark) === 3 && (await rows()).filter(done).length === 3);
    await kill(sweeper);
    expect(await run).toBe('no answer');

    const killed = await rows();
    const finished = killed.filter(done).map((connection) => connection.id);
    const held = killed.filter((connection) => !done(connection));
    expect(held).toHaveLength(3);
    for (const connection of held) {
      expect(connection.leaseOwner).not.toBeNull();
      expect(connection.lastRefreshAt).toBe(eightDaysAgo);
      // Cut off before Microsoft answered: the stored token is the old one, untouched.
      expect(fixture.vault.versionCount(refreshTokenName(connection.id))).toBe(versionsBefore.get(connection.id));
    }
    for (const id of finished) expect(fixture.vault.versionCount(refreshTokenName(id))).toBe(versionsBefore.get(id)! + 1);
    const leaseEnds = Math.max(...held.map((connection) => new Date(connection.leaseUntil!).getTime()));
    expect(leaseEnds - Date.now()).toBeLessThanOrEqual(LEASE_MS);

    const restarted = await startChild();
    const afterRestart = fixture.idp.requests().length;
    // The next run starts while the dead leases still stand: it waits them out (up to 20 s) instead of failing.
    await sleep(Math.max(0, leaseEnds - 5_000 - Date.now()));
    const started = Date.now();
    const response = await fetch(`${restarted.base}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
    expect(response.status).toBe(202);
    console.log(`mid-sweep: the run after the restart took ${Date.now() - started} ms; leases ran out ${leaseEnds - started} ms into it`);
    const runs = (await (await fixture.broker.call('GET', '/api/manage/runs?limit=1')).json()) as { items: RunRecord[] };
    expect(runs.items[0]).toMatchObject({ due: 3, refreshed: 3, failed: {}, complete: true });
    expect(grants('refresh_token', afterRestart)).toHaveLength(3);

    for (const id of ids) {
      expect(await row(id)).toMatchObject({ status: 'connected', leaseOwner: null });
      expect((await row(id)).lastRefreshAt! >= sweepStarted).toBe(true);
      // Exactly one rotation each: written once, by whichever run refreshed it.
      expect(fixture.vault.versionCount(refreshTokenName(id))).toBe(versionsBefore.get(id)! + 1);
      await redeemStored(id);
      expect((await requestToken(restarted, id)).status).toBe(200);
    }
    expect(fixture.vault.liveSecretNames()).toEqual(expect.arrayContaining(ids.map(refreshTokenName)));
  }, 75_000);
});
