import { inspect } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { odata } from '@azure/data-tables';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { mailboxIndexRowKey, type ConnectionRecord } from '../../shared/storage/records.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { connectMailbox, refreshGrants as grantsAnswered, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';
import { startTableFaultProxy, type TableFaultProxy } from '../support/table-fault-proxy.js';
import { KEY_CACHE_TTL_MS } from '../../shared/manage/tenants.js';

/*
 * Table Storage faults (issue 7): a second broker reaches Azurite through a fault-injecting
 * proxy, while the fixture's broker and its tables (straight to Azurite) are the unfaulted
 * view used to check that nothing was lost. Both share the Key Vault fake, the sandbox
 * identity provider and the clock.
 *
 * The Tables SDK retries 5xx and refused connections three times (about 1, 2 and 4 s with
 * jitter), so one 503 is invisible to the broker; a fault the caller is meant to see is
 * injected four times, and each costs the caller about five seconds.
 */

const SDK_ATTEMPTS = 4;

let fixture: ConnectFixture;
let proxy: TableFaultProxy;
let broker: TestBroker;
let key: string;
const logs: string[] = [];

beforeAll(async () => {
  fixture = await startConnectFixture();
  key = await tenantKey(fixture);
  proxy = await startTableFaultProxy({ targetPort: fixture.azurite.port });
  broker = await startTestBroker({
    tablesConnection: proxy.connectionString,
    env: {
      BROKER_KEY_VAULT_URL: fixture.vault.url,
      BROKER_KEY_VAULT_EMULATOR: 'true',
      BROKER_AUTHORITY_HOST: fixture.idp.authorityHost,
      BROKER_TOKEN_RATE_LIMIT: '100000',
    },
    overrides: { clock: fixture.clock, log: (message, detail) => logs.push(detail === undefined ? message : `${message} ${inspect(detail)}`) },
    hostLog: (line) => logs.push(line),
  });
});

afterEach(async () => {
  proxy.clearFaults();
  await proxy.up();
});

afterAll(async () => {
  await broker?.close();
  await proxy?.close();
  await fixture?.close();
});

function requestToken(base: string, connection: string, bearer = key): Promise<Response> {
  return fetch(`${base}/api/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ connection }),
  });
}

async function accessToken(response: Response): Promise<string> {
  expect(response.status).toBe(200);
  return ((await response.json()) as { access_token: string }).access_token;
}

async function expectProblem(response: Response, status: number, code: string): Promise<Record<string, unknown>> {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toBe('application/problem+json');
  const problem = (await response.json()) as Record<string, unknown>;
  expect(problem).toMatchObject({ status, code });
  return problem;
}

const refreshGrants = () => grantsAnswered(fixture);
/** The unfaulted view: the fixture broker's tables talk to Azurite directly. */
const direct = () => fixture.broker.services.tables;
const row = async (id: string): Promise<ConnectionRecord | null> => (await direct().connections.get(id, ''))?.value ?? null;
const storedRefreshToken = (id: string) => fixture.vault.latest(secretNames.connectionRefreshToken(id))?.value;
/** Entity paths of one connection's row (reads, replaces, deletes; inserts go to the table's path). */
const connectionRow = (id: string) => `brokerconnections(PartitionKey='${id}'`;

async function collect<T>(rows: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of rows) all.push(item);
  return all;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Connected, holding its refresh token, with no lease left behind. */
async function expectIntact(id: string, refreshToken: string | undefined): Promise<void> {
  expect(refreshToken).toBeTruthy();
  expect(storedRefreshToken(id)).toBe(refreshToken);
  expect(await row(id)).toMatchObject({ status: 'connected', leaseOwner: null });
}

describe('Table Storage faults on the token path', () => {
  it('keeps serving a cached token through a short outage, answers 503 once nothing can be checked, and recovers', async () => {
    const id = await connectMailbox(fixture, 'cached@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const cached = await accessToken(await requestToken(broker.baseUrl, id));
    const grants = refreshGrants();

    // One 503 is retried by the SDK and never reaches the broker.
    proxy.failNext(1, { status: 503, match: { pathIncludes: connectionRow(id) } });
    expect(await accessToken(await requestToken(broker.baseUrl, id))).toBe(cached);

    // The key and the connection were looked up moments ago: the token this broker holds is served.
    await proxy.down('refuse');
    expect(await accessToken(await requestToken(broker.baseUrl, id))).toBe(cached);

    // Past the few seconds those lookups are remembered, the key cannot be checked: 503.
    fixture.clock.advance(KEY_CACHE_TTL_MS + 1_000);
    try {
      const allDown = await requestToken(broker.baseUrl, id);
      await expectProblem(allDown, 503, 'STORAGE_UNAVAILABLE');
      expect(Number(allDown.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await proxy.up();
      fixture.clock.advance(-(KEY_CACHE_TTL_MS + 1_000));
    }

    expect(await accessToken(await requestToken(broker.baseUrl, id))).toBe(cached);
    expect(refreshGrants()).toBe(grants);
    await expectIntact(id, refreshToken);
  });

  it('reads the row once for a first token request: the row found is the row the refresh starts from', async () => {
    const id = await connectMailbox(fixture, 'oneread@contoso.example');
    const before = proxy.requests().length;
    await accessToken(await requestToken(broker.baseUrl, id));
    const touched = proxy.requests().slice(before).filter((request) => request.path.includes(connectionRow(id)));
    // One read, then the lease and its release, both with the ETag of that read.
    expect(touched.map((request) => request.method)).toEqual(['GET', 'PUT', 'PUT']);
  });

  it('lets go of the lease when the app cannot be read: 503 STORAGE_UNAVAILABLE without a valid token, the valid one otherwise', async () => {
    const id = await connectMailbox(fixture, 'appread@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const grants = refreshGrants();
    const appReads = { method: 'GET', pathIncludes: 'brokerapps(' };

    // Nothing valid to serve yet: the caller hears that storage failed, not Microsoft.
    proxy.failNext(SDK_ATTEMPTS, { status: 503, match: appReads });
    await expectProblem(await requestToken(broker.baseUrl, id), 503, 'STORAGE_UNAVAILABLE');
    expect(refreshGrants()).toBe(grants);
    await expectIntact(id, refreshToken);

    const first = (await (await requestToken(broker.baseUrl, id)).json()) as { access_token: string; expires_in: number };
    // Four minutes before expiry: due for a refresh, still valid.
    const ahead = (first.expires_in - 240) * 1000;
    fixture.clock.advance(ahead);
    try {
      proxy.failNext(SDK_ATTEMPTS, { status: 503, match: appReads });
      expect(await accessToken(await requestToken(broker.baseUrl, id))).toBe(first.access_token);
      expect(await row(id)).toMatchObject({ status: 'connected', leaseOwner: null });
    } finally {
      fixture.clock.advance(-ahead);
    }
  });

  it('answers 503 when the row write after a refresh fails, keeps the refresh token redeemable, and refreshes again once storage is back', async () => {
    const id = await connectMailbox(fixture, 'midrefresh@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const connectedAt = (await row(id))?.lastRefreshAt;
    const grants = refreshGrants();

    // The first PUT on the row is the lease; the release that follows Microsoft's answer fails.
    proxy.failNext(SDK_ATTEMPTS, { status: 503, skip: 1, match: { method: 'PUT', pathIncludes: connectionRow(id) } });
    await expectProblem(await requestToken(broker.baseUrl, id), 503, 'STORAGE_UNAVAILABLE');
    expect(refreshGrants()).toBe(grants + 1);
    // The new access token was not kept anywhere, the old refresh token was not replaced, and
    // the lease stays taken until it runs out (30 s).
    const stranded = await row(id);
    expect(stranded).toMatchObject({ status: 'connected', accessTokenCipher: null, lastRefreshAt: connectedAt });
    expect(stranded?.leaseOwner).not.toBeNull();
    expect(storedRefreshToken(id)).toBe(refreshToken);

    // Another instance waits for the stranded lease, then gives up with 503 and Retry-After.
    const waiting = requestToken(fixture.broker.baseUrl, id);
    // Time for it to reach the wait (its deadline is taken from the clock then), then past the deadline.
    await sleep(1_000);
    fixture.clock.advance(22_000);
    try {
      const gaveUp = await waiting;
      await expectProblem(gaveUp, 503, 'REFRESH_IN_PROGRESS');
      expect(Number(gaveUp.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      fixture.clock.advance(-22_000);
    }

    // The lease holder recovers at once: the stored refresh token still works.
    const token = await accessToken(await requestToken(broker.baseUrl, id));
    expect(refreshGrants()).toBe(grants + 2);
    expect(await row(id)).toMatchObject({ status: 'connected', statusReason: null, leaseOwner: null, accessTokenCipher: expect.any(String) });
    // The other instance now uses the shared copy instead of calling Microsoft.
    expect(await accessToken(await requestToken(fixture.broker.baseUrl, id))).toBe(token);
    expect(refreshGrants()).toBe(grants + 2);
    await expectIntact(id, refreshToken);
  });

  it('refreshes once when the lease write loses a 412 race', async () => {
    const id = await connectMailbox(fixture, 'race-lease@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const grants = refreshGrants();
    proxy.clearRequests();

    proxy.failNext(1, { status: 412, match: { method: 'PUT', pathIncludes: connectionRow(id) } });
    const token = await accessToken(await requestToken(broker.baseUrl, id));
    expect(refreshGrants()).toBe(grants + 1);
    const puts = proxy.requests().filter((request) => request.method === 'PUT' && request.path.includes(connectionRow(id)));
    expect(puts.map((request) => [request.status, request.faulted])).toEqual([[412, true], [204, false], [204, false]]);

    expect(await accessToken(await requestToken(fixture.broker.baseUrl, id))).toBe(token);
    expect(refreshGrants()).toBe(grants + 1);
    await expectIntact(id, refreshToken);
  });

  it('keeps the refreshed token when the release write gets a 412: re-read, write again, one refresh', async () => {
    const id = await connectMailbox(fixture, 'race-release@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const grants = refreshGrants();
    proxy.clearRequests();

    proxy.failNext(1, { status: 412, skip: 1, match: { method: 'PUT', pathIncludes: connectionRow(id) } });
    const token = await accessToken(await requestToken(broker.baseUrl, id));
    expect(refreshGrants()).toBe(grants + 1);
    const writes = proxy.requests().filter((request) => request.path.includes(connectionRow(id)) && request.method !== 'GET');
    expect(writes.map((request) => [request.status, request.faulted])).toEqual([[204, false], [412, true], [204, false]]);

    expect(await row(id)).toMatchObject({ leaseOwner: null, accessTokenCipher: expect.any(String), lastRefreshAt: expect.any(String) });
    expect(await accessToken(await requestToken(fixture.broker.baseUrl, id))).toBe(token);
    expect(refreshGrants()).toBe(grants + 1);
    await expectIntact(id, refreshToken);
  });

  it('keeps an operator PATCH that lands while the release write is in flight (a real 412 from storage)', async () => {
    const id = await connectMailbox(fixture, 'race-patch@contoso.example');
    const refreshToken = storedRefreshToken(id);
    const grants = refreshGrants();
    proxy.clearRequests();

    proxy.delayNext(1, 1_000, { skip: 1, match: { method: 'PUT', pathIncludes: connectionRow(id) } });
    const pending = requestToken(broker.baseUrl, id);
    await waitFor(() => proxy.requests().some((request) => request.delayedMs > 0), 'the release write');
    const patched = await fixture.broker.call('PATCH', `/api/manage/connections/${id}`, { body: { protocols: ['smtp', 'imap', 'pop'] } });
    expect(patched.status).toBe(200);

    await accessToken(await pending);
    expect(refreshGrants()).toBe(grants + 1);
    const writes = proxy.requests().filter((request) => request.path.includes(connectionRow(id)) && request.method === 'PUT');
    expect(writes.map((request) => [request.status, request.faulted])).toEqual([[204, false], [412, false], [204, false]]);
    expect(await row(id)).toMatchObject({ protocols: ['smtp', 'imap', 'pop'], accessTokenCipher: expect.any(String) });
    await expectIntact(id, refreshToken);
  });
});

describe('Table Storage faults in the keep-alive sweep', () => {
  it('counts a refresh whose outcome could not be written as failed, loses nothing, and refreshes it on the next run', async () => {
    const id = await connectMailbox(fixture, 'sweepfault@contoso.example');
    const before = await row(id);
    const refreshToken = storedRefreshToken(id);
    fixture.clock.advance(8 * 86_400_000);
    try {
      // The first PUT on the row is the lease; the write of the outcome after it fails.
      proxy.failNext(SDK_ATTEMPTS, { status: 503, skip: 1, match: { method: 'PUT', pathIncludes: connectionRow(id) } });
      const failed = await broker.services.sweep.run();
      expect(failed.failed).toMatchObject({ STORAGE_UNAVAILABLE: 1 });
      // Counted once: as failed, not also as refreshed.
      expect(failed.refreshed + Object.values(failed.failed).reduce((sum, count) => sum + count, 0)).toBe(failed.due);
      // The rotated refresh token was stored before the row would have said so; the row did not
      // change, so the connection is still due, and its lease runs out by itself.
      const stranded = await row(id);
      expect(stranded).toMatchObject({ status: 'connected', lastRefreshAt: before?.lastRefreshAt });
      expect(stranded?.leaseOwner).not.toBeNull();
      expect(storedRefreshToken(id)).not.toBe(refreshToken);

      fixture.clock.advance(31_000);
      const next = await broker.services.sweep.run();
      expect(next.failed).toEqual({});
      expect(next.refreshed).toBeGreaterThanOrEqual(1);
      const healed = await row(id);
      expect(healed).toMatchObject({ status: 'connected', leaseOwner: null });
      expect(healed!.lastRefreshAt! > before!.lastRefreshAt!).toBe(true);
    } finally {
      fixture.clock.advance(-(8 * 86_400_000 + 31_000));
    }
  });
});

describe('Table Storage faults on the operator API', () => {
  const indexRow = async (tenantId: string, mailbox: string) => (await direct().mailboxIndex.get(tenantId, mailboxIndexRowKey('delegated', mailbox)))?.value ?? null;
  const connectionsOf = async (mailbox: string) => collect(direct().connections.scan(odata`mailbox eq ${mailbox}`));
  const createBody = (mailbox: string) => ({ tenantId: fixture.tenantId, appId: fixture.app.id, mailbox, protocols: ['smtp'] });

  it('answers 503 when the connection row cannot be written, leaves no index row behind, and the retry gets 201', async () => {
    const mailbox = 'new-a@contoso.example';
    proxy.failNext(SDK_ATTEMPTS, { status: 503, match: { method: 'POST', pathIncludes: 'brokerconnections' } });
    await expectProblem(await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) }), 503, 'STORAGE_UNAVAILABLE');
    expect(await indexRow(fixture.tenantId, mailbox)).toBeNull();
    expect(await connectionsOf(mailbox)).toEqual([]);

    expect((await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) })).status).toBe(201);
    expect(await connectionsOf(mailbox)).toHaveLength(1);
  });

  // When storage fails after the index insert and the compensating delete fails too, the
  // orphan index row is taken over by a later create once it is clearly stale.
  it('lets the same POST succeed after storage failed between the index row and the connection row', async () => {
    const mailbox = 'new-b@contoso.example';
    proxy.failNext(SDK_ATTEMPTS, { status: 503, match: { method: 'POST', pathIncludes: 'brokerconnections' } });
    proxy.failNext(SDK_ATTEMPTS, { status: 503, match: { method: 'DELETE', pathIncludes: 'brokermailboxindex(' } });
    await expectProblem(await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) }), 503, 'STORAGE_UNAVAILABLE');
    proxy.clearFaults();

    // Right away the row could still belong to a create in progress; a minute later it cannot.
    expect((await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) })).status).toBe(409);
    fixture.clock.advance(61_000);
    try {
      const retried = await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) });
      expect(retried.status).toBe(201);
      expect(await connectionsOf(mailbox)).toHaveLength(1);
    } finally {
      fixture.clock.advance(-61_000);
    }
  });

  // The index insert reached storage but its answer was lost; the SDK's own retry gets 409,
  // which the broker recognises as its own row.
  it('creates the connection when the answer to the index insert is lost and the SDK retries it', async () => {
    const mailbox = 'new-c@contoso.example';
    proxy.failNext(1, { status: 503, afterForward: true, match: { method: 'POST', pathIncludes: 'brokermailboxindex' } });
    const created = await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) });
    expect(created.status).toBe(201);
  });

  // The connection insert reached storage but its answer was lost; the SDK's retry gets 409,
  // which can only be this very insert (ids are random).
  it('creates exactly one connection when the answer to the connection insert is lost and the SDK retries it', async () => {
    const mailbox = 'new-d@contoso.example';
    proxy.failNext(1, { status: 503, afterForward: true, match: { method: 'POST', pathIncludes: 'brokerconnections' } });
    const created = await broker.call('POST', '/api/manage/connections', { body: createBody(mailbox) });
    expect(created.status).toBe(201);
    expect(await connectionsOf(mailbox)).toHaveLength(1);
  });

  it('completes a tenant DELETE interrupted by 503 half-way when it is repeated', async () => {
    const tenant = ((await (await fixture.broker.call('POST', '/api/manage/tenants', { body: { name: 'Leaving' } })).json()) as { id: string }).id;
    const leavingKey = await tenantKey(fixture, tenant);
    const ids = [
      await connectMailbox(fixture, 'leaving-1@contoso.example', { tenantId: tenant }),
      await connectMailbox(fixture, 'leaving-2@contoso.example', { tenantId: tenant }),
    ];
    await accessToken(await requestToken(fixture.broker.baseUrl, ids[0]!, leavingKey));
    const secrets = ids.map((id) => secretNames.connectionRefreshToken(id));
    expect(fixture.vault.liveSecretNames()).toEqual(expect.arrayContaining(secrets));

    // The first connection row cannot be deleted: by then the keys are gone, and that
    // connection's refresh token and index row.
    proxy.failNext(SDK_ATTEMPTS, { status: 503, match: { method: 'DELETE', pathIncludes: 'brokerconnections(' } });
    await expectProblem(await broker.call('DELETE', `/api/manage/tenants/${tenant}`), 503, 'STORAGE_UNAVAILABLE');
    expect(fixture.vault.liveSecretNames().filter((name) => secrets.includes(name))).toHaveLength(1);
    // The other broker remembered the key for a few seconds; past that it is refused there too.
    fixture.clock.advance(KEY_CACHE_TTL_MS + 1_000);
    try {
      expect((await requestToken(fixture.broker.baseUrl, ids[0]!, leavingKey)).status).toBe(401);
    } finally {
      fixture.clock.advance(-(KEY_CACHE_TTL_MS + 1_000));
    }
    expect((await fixture.broker.call('GET', `/api/manage/tenants/${tenant}`)).status).toBe(200);
    expect(await collect(direct().connections.scan(odata`tenantId eq ${tenant}`))).toHaveLength(2);

    expect((await broker.call('DELETE', `/api/manage/tenants/${tenant}`)).status).toBe(204);
    await expectProblem(await fixture.broker.call('GET', `/api/manage/tenants/${tenant}`), 404, 'TENANT_NOT_FOUND');
    expect(fixture.vault.liveSecretNames().filter((name) => secrets.includes(name))).toEqual([]);
    expect(await collect(direct().connections.scan(odata`tenantId eq ${tenant}`))).toEqual([]);
    expect(await collect(direct().mailboxIndex.scan(odata`PartitionKey eq ${tenant}`))).toEqual([]);
    expect(await collect(direct().tenantKeys.scan(odata`PartitionKey eq ${tenant}`))).toEqual([]);
    expect(await collect(direct().keyHashes.scan(odata`tenantId eq ${tenant}`))).toEqual([]);
  });
});
