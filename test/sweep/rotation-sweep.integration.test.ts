import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EntraError } from '../../infra/local/sandbox-idp/entra-errors.js';
import { BrokerError } from '../../shared/errors.js';
import type { IdentityClient } from '../../shared/identity/msal-identity.js';
import { AppsService } from '../../shared/manage/apps.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { RotationSweep } from '../../shared/sweep/rotation-sweep.js';
import { WriteBudget } from '../../shared/sweep/write-budget.js';
import type { ConnectionRecord, RunRecord } from '../../shared/storage/records.js';
import type { StorageTables } from '../../shared/storage/tables.js';
import { AccessTokens } from '../../shared/tokens/access-tokens.js';
import { DataKey } from '../../shared/tokens/data-key.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, refreshGrants as grantsAnswered, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * The rotate-tokens sweep against the real stack: it redeems refresh tokens before
 * Microsoft's 90-day inactivity limit, within a Key Vault write budget and a time budget,
 * and a run cut short resumes where it stopped.
 */

const DAY = 86_400_000;
let fixture: ConnectFixture;

beforeAll(async () => {
  fixture = await startConnectFixture();
});

afterAll(async () => {
  await fixture?.close();
});

const refreshGrants = () => grantsAnswered(fixture);

async function runTimer(): Promise<RunRecord> {
  const response = await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
  expect(response.status).toBe(202);
  const runs = (await (await fixture.broker.call('GET', '/api/manage/runs?limit=1')).json()) as { items: RunRecord[] };
  return runs.items[0]!;
}

/**
 * A sweep with its own AccessTokens over the broker's storage, vault and identity provider,
 * counting every call it makes to Table Storage and Key Vault.
 */
function countedSweep(options: {
  concurrency: number;
  beforeLease?: (row: ConnectionRecord) => Promise<void>;
  afterRefresh?: () => Promise<void>;
}): { sweep: RotationSweep; calls: (name: string) => number } {
  const { services } = fixture.broker;
  const log: string[] = [];
  const counting = <T extends object>(target: T, label: string, intercept?: (method: string, args: unknown[]) => Promise<void>): T =>
    new Proxy(target, {
      get: (object, property, receiver) => {
        const value: unknown = Reflect.get(object, property, receiver);
        if (typeof value !== 'function' || typeof property !== 'string') return value;
        return (...args: unknown[]) => {
          log.push(label === 'secrets' ? `${label}.${property} ${String(args[0])}` : `${label}.${property}`);
          const call = () => (value as (...a: unknown[]) => unknown).apply(object, args);
          return intercept && property === 'replace' ? intercept(property, args).then(call) : call();
        };
      },
    });
  const leased = new Set<string>();
  const tables: StorageTables = {
    ...services.tables,
    connections: counting(services.tables.connections, 'connections', async (method, args) => {
      const record = args[0] as ConnectionRecord;
      if (method !== 'replace' || !options.beforeLease || record.leaseOwner === null || leased.has(record.id)) return;
      leased.add(record.id);
      await options.beforeLease(record);
    }),
    apps: counting(services.tables.apps, 'apps'),
  };
  const secrets = counting(services.secrets, 'secrets');
  const identity: IdentityClient = {
    ...bindAll(services.identity),
    refresh: async (input) => {
      const result = await services.identity.refresh(input);
      await options.afterRefresh?.();
      return result;
    },
  };
  const { config } = services;
  const accessTokens = new AccessTokens({
    tables,
    secrets,
    clock: fixture.clock,
    identity,
    apps: new AppsService({ tables, secrets, clock: fixture.clock, redirectUri: config.redirectUri }),
    dataKey: new DataKey(secrets),
    mailResource: config.mailResource,
    mailAppResource: config.mailAppResource,
    redirectUri: config.redirectUri,
    log: () => undefined,
  });
  const sweep = new RotationSweep({
    tables,
    accessTokens,
    maintenance: services.maintenance,
    clock: fixture.clock,
    writeBudget: new WriteBudget({ writesPer10s: 250, clock: fixture.clock, sleep: async (ms) => fixture.clock.advance(ms) }),
    refreshMaxAgeDays: 7,
    timeBudgetSeconds: 60,
    concurrency: options.concurrency,
    log: () => undefined,
  });
  return { sweep, calls: (name) => log.filter((entry) => entry === name).length };
}

function bindAll(identity: IdentityClient): IdentityClient {
  return {
    authorizeUrl: (input) => identity.authorizeUrl(input),
    redeemCode: (input) => identity.redeemCode(input),
    refresh: (input) => identity.refresh(input),
    clientCredentials: (input) => identity.clientCredentials(input),
    adminConsentUrl: (input) => identity.adminConsentUrl(input),
  };
}

async function status(connectionId: string): Promise<Record<string, unknown>> {
  return (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as Record<string, unknown>;
}

describe('the rotation sweep', () => {
  it('refreshes connections whose refresh token is older than the limit, and only those', async () => {
    const old = [await connectMailbox(fixture, 'old1@contoso.example'), await connectMailbox(fixture, 'old2@contoso.example')];
    fixture.clock.advance(8 * DAY);
    const fresh = await connectMailbox(fixture, 'fresh@contoso.example');
    const versions = old.map((id) => fixture.vault.versionCount(secretNames.connectionRefreshToken(id)));
    const before = refreshGrants();
    try {
      const run = await runTimer();
      expect(run).toMatchObject({ due: 2, refreshed: 2, failed: {}, complete: true, skippedForBudget: 0 });
      expect(refreshGrants()).toBe(before + 2);
      for (const [index, id] of old.entries()) {
        expect(fixture.vault.versionCount(secretNames.connectionRefreshToken(id))).toBe(versions[index]! + 1);
        expect(new Date(String((await status(id)).lastRefreshAt)).getTime()).toBeGreaterThan(fixture.clock.now().getTime() - 60_000);
      }
      expect((await status(fresh)).status).toBe('connected');

      // Nothing is due any more: a second run the same day calls Microsoft for nobody.
      const again = await runTimer();
      expect(again).toMatchObject({ due: 0, refreshed: 0, complete: true });
      expect(refreshGrants()).toBe(before + 2);
    } finally {
      fixture.clock.advance(-8 * DAY);
    }
  });

  it('records an expired grant as needs_reauth and counts it by class', async () => {
    const id = await connectMailbox(fixture, 'gone@contoso.example');
    fixture.idp.expireRefreshTokens('gone@contoso.example');
    fixture.clock.advance(8 * DAY);
    try {
      const run = await runTimer();
      expect(run.failed).toMatchObject({ NEEDS_REAUTH: 1 });
      expect(await status(id)).toMatchObject({ status: 'needs_reauth', statusReason: { code: 'AADSTS700082' } });
    } finally {
      fixture.clock.advance(-8 * DAY);
    }
  });

  it('keeps within the Key Vault write budget and resumes a run cut short', async () => {
    const ids: string[] = [];
    for (let index = 0; index < 5; index += 1) ids.push(await connectMailbox(fixture, `budget${index}@contoso.example`));
    fixture.clock.advance(9 * DAY);
    const writes: number[] = [];
    const { services } = fixture.broker;
    // Waiting for budget moves the fake clock instead of the real one.
    const budget = new WriteBudget({ writesPer10s: 2, clock: fixture.clock, sleep: async (ms) => fixture.clock.advance(ms) });
    const spend = budget.spend.bind(budget);
    budget.spend = (deadline, write) =>
      spend(deadline, async () => {
        writes.push(fixture.clock.now().getTime());
        await write();
      });
    const sweep = new RotationSweep({
      tables: services.tables,
      accessTokens: services.accessTokens,
      maintenance: services.maintenance,
      clock: fixture.clock,
      writeBudget: budget,
      refreshMaxAgeDays: 7,
      timeBudgetSeconds: 15,
      concurrency: 1,
      log: () => undefined,
    });
    const start = fixture.clock.now().getTime();
    try {
      const first = await sweep.run();
      expect(first.complete).toBe(false);
      expect(first.skippedForBudget + first.skippedForTime).toBeGreaterThan(0);
      expect(first.refreshed).toBe(4);
      const second = await sweep.run();
      expect(second.refreshed).toBeGreaterThanOrEqual(1);
      expect(second.complete).toBe(true);
      for (const id of ids) {
        expect(new Date(String((await status(id)).lastRefreshAt)).getTime()).toBeGreaterThanOrEqual(start);
      }
      // No 10-second window ever held more than the budget.
      expect(writes).toHaveLength(5);
      for (const at of writes) expect(writes.filter((other) => other > at - 10_000 && other <= at).length).toBeLessThanOrEqual(2);
    } finally {
      fixture.clock.advance(-(fixture.clock.now().getTime() - start) - 9 * DAY);
    }
  });

  it('takes each lease with the listed row, and reads the app and its client secret once per run', async () => {
    const ids = [await connectMailbox(fixture, 'trips1@contoso.example'), await connectMailbox(fixture, 'trips2@contoso.example'), await connectMailbox(fixture, 'trips3@contoso.example')];
    const start = fixture.clock.now().getTime();
    fixture.clock.advance(8 * DAY);
    try {
      const counted = countedSweep({ concurrency: 2 });
      const run = await counted.sweep.run();
      expect(run).toMatchObject({ due: 3, refreshed: 3, failed: {}, complete: true });
      expect(counted.calls('connections.get')).toBe(0);
      expect(counted.calls('connections.replace')).toBe(6); // lease and release
      expect(counted.calls('apps.get')).toBe(1);
      expect(counted.calls(`secrets.get ${secretNames.appClientSecret(fixture.app.id)}`)).toBe(1);
      for (const id of ids) expect(counted.calls(`secrets.get ${secretNames.connectionRefreshToken(id)}`)).toBe(1);
      // A second run reads them afresh: nothing outlives a run.
      fixture.clock.advance(8 * DAY);
      // (Earlier tests' connections are due again by now too.)
      expect((await counted.sweep.run()).refreshed).toBeGreaterThanOrEqual(3);
      expect(counted.calls('apps.get')).toBe(2);
    } finally {
      // Back by as much as was advanced, also when the test failed half-way.
      fixture.clock.advance(start - fixture.clock.now().getTime());
    }
  });

  it('goes by the row as it is at the lease, not as it was listed', async () => {
    const id = await connectMailbox(fixture, 'listed@contoso.example');
    fixture.clock.advance(8 * DAY);
    try {
      const before = refreshGrants();
      // Between the listing and the lease, a token request elsewhere learns that the grant was
      // revoked and marks the row: the listed ETag is stale, so the lease fails, the row is read
      // again, and Microsoft is not asked to redeem a grant known to be dead.
      const counted = countedSweep({
        concurrency: 1,
        beforeLease: async (row) => {
          if (row.id !== id) return;
          const current = await fixture.broker.services.tables.connections.get(id, '');
          const reason = { code: 'AADSTS50173', message: 'The grant was revoked.', fix: 'Send the mailbox owner a new Authorize link.' };
          await fixture.broker.services.tables.connections.replace({ ...current!.value, status: 'needs_reauth', statusReason: reason }, current!.etag);
        },
      });
      const run = await counted.sweep.run();
      expect(run).toMatchObject({ due: 1, refreshed: 0, failed: { NEEDS_REAUTH: 1 } });
      expect(refreshGrants()).toBe(before);
      expect(counted.calls('connections.get')).toBe(1);
      expect(counted.calls('connections.replace')).toBe(1); // the lease that failed
      expect(await status(id)).toMatchObject({ status: 'needs_reauth', statusReason: { code: 'AADSTS50173' } });
    } finally {
      fixture.clock.advance(-8 * DAY);
    }
  });

  it('counts a keep-alive whose refresh failed as failed, even with a valid token at hand', async () => {
    const id = await connectMailbox(fixture, 'stillvalid@contoso.example');
    const { tables } = fixture.broker.services;
    await fixture.broker.services.accessTokens.get((await tables.connections.get(id, ''))!.value);
    // The row holds a valid shared token, but says its last refresh was 8 days ago: due.
    const current = (await tables.connections.get(id, ''))!;
    expect(current.value.accessTokenCipher).not.toBeNull();
    const longAgo = new Date(fixture.clock.now().getTime() - 8 * DAY).toISOString();
    await tables.connections.replace({ ...current.value, lastRefreshAt: longAgo }, current.etag);

    fixture.idp.failNext(1, { status: 503 });
    const run = await countedSweep({ concurrency: 1 }).sweep.run();
    expect(run).toMatchObject({ due: 1, refreshed: 0, failed: { MICROSOFT_UNAVAILABLE: 1 } });
    expect(await status(id)).toMatchObject({ status: 'connected', lastRefreshAt: longAgo });
    // Not due for the tests that follow.
    expect((await fixture.broker.call('DELETE', `/api/manage/connections/${id}`)).status).toBe(204);
  });

  it('marks a refusal it has no rule for as error, and the next run tries that connection again even when it is not stale', async () => {
    const id = await connectMailbox(fixture, 'unruled@contoso.example');
    fixture.clock.advance(8 * DAY);
    try {
      fixture.idp.failNext(1, { refuse: new EntraError(50059, 'invalid_request', 'No tenant-identifying information found in either the request or implied by any provided credentials.') });
      const first = await countedSweep({ concurrency: 1 }).sweep.run();
      expect(first).toMatchObject({ due: 1, refreshed: 0, failed: { MICROSOFT_UNAVAILABLE: 1 } });
      expect(await status(id)).toMatchObject({ status: 'error', statusReason: { code: 'AADSTS50059' } });
    } finally {
      fixture.clock.advance(-8 * DAY);
    }
    // Back to connect time: by age the connection is not due, by its mark it is.
    const second = await countedSweep({ concurrency: 1 }).sweep.run();
    expect(second).toMatchObject({ due: 1, refreshed: 1, failed: {} });
    expect(await status(id)).toMatchObject({ status: 'connected', statusReason: null });
    expect((await fixture.broker.call('DELETE', `/api/manage/connections/${id}`)).status).toBe(204);
  });

  it('does not mark a connection error for a failure on its own side rather than Microsoft\'s answer', async () => {
    const id = await connectMailbox(fixture, 'ownfault@contoso.example');
    const start = fixture.clock.now().getTime();
    fixture.clock.advance(8 * DAY);
    try {
      const run = await countedSweep({
        concurrency: 1,
        afterRefresh: async () => {
          throw new TypeError('a fault in the broker, after Microsoft answered');
        },
      }).sweep.run();
      expect(run).toMatchObject({ due: 1, refreshed: 0 });
      expect(await status(id)).toMatchObject({ status: 'connected', statusReason: null });
    } finally {
      fixture.clock.advance(start - fixture.clock.now().getTime());
    }
    expect((await fixture.broker.call('DELETE', `/api/manage/connections/${id}`)).status).toBe(204);
  });

  it('picks up a client secret rotated during a run', async () => {
    const ids = [await connectMailbox(fixture, 'rot1@contoso.example'), await connectMailbox(fixture, 'rot2@contoso.example'), await connectMailbox(fixture, 'rot3@contoso.example')];
    fixture.clock.advance(8 * DAY);
    const next = `sandbox~rotated-in-run-${Date.now()}`;
    let refreshes = 0;
    try {
      const counted = countedSweep({
        concurrency: 1,
        afterRefresh: async () => {
          refreshes += 1;
          if (refreshes !== 1) return;
          // After the first refresh the operator rotates the secret: Entra forgets the old one.
          const expiresOn = new Date(Math.floor(Date.now() / 1000 + 365 * 86_400) * 1000).toISOString();
          fixture.idp.rotateSecret(fixture.app.clientId, next, new Date(Date.now() + 365 * DAY));
          const patched = await fixture.broker.call('PATCH', `/api/manage/apps/${fixture.app.id}`, { body: { clientSecret: next, clientSecretExpiresOn: expiresOn } });
          expect(patched.status).toBe(200);
        },
      });
      fixture.idp.clearRequests();
      const run = await counted.sweep.run();
      expect(run).toMatchObject({ due: 3, refreshed: 3, failed: {} });
      const refused = fixture.idp.requests().filter((request) => request.grantType === 'refresh_token' && request.aadsts === 7000215);
      // The second refresh tried the remembered secret once, then the stored one; the third used the new one.
      expect(refused).toHaveLength(1);
      expect(counted.calls('apps.get')).toBe(2);
      for (const id of ids) expect((await status(id)).status).toBe('connected');
    } finally {
      fixture.app.clientSecret = next;
      fixture.clock.advance(-8 * DAY);
    }
  });

  describe('a connection made ready ahead of its call to Microsoft', () => {
    /**
     * A keep-alive of a new, due connection whose slot frees up only after `wait` (which moves
     * the clock): the leases written to its row meanwhile (owner, end, when), and the outcome.
     */
    async function keepAliveAfterWait(mailbox: string, wait: (connectionId: string) => Promise<void>, options: { renewalFails?: boolean } = {}) {
      const id = await connectMailbox(fixture, mailbox);
      const start = fixture.clock.now().getTime();
      fixture.clock.advance(8 * DAY);
      const { tables, accessTokens } = fixture.broker.services;
      const connections = tables.connections as { replace: StorageTables['connections']['replace'] };
      const replace = connections.replace;
      const leases: Array<{ owner: string; until: number; at: number }> = [];
      connections.replace = async (value, etag) => {
        if (options.renewalFails && value.leaseOwner && leases.length === 1) {
          throw new BrokerError('STORAGE_UNAVAILABLE', 'Table Storage did not answer as expected; try again.');
        }
        const written = await replace.call(tables.connections, value, etag);
        if (value.leaseOwner) leases.push({ owner: value.leaseOwner, until: Date.parse(value.leaseUntil!), at: fixture.clock.now().getTime() });
        return written;
      };
      const grantsBefore = refreshGrants();
      try {
        const listed = (await tables.connections.get(id, ''))!;
        const [result] = await Promise.allSettled([
          accessTokens.refreshUnlessSince(listed, new Date(fixture.clock.now().getTime() - 7 * DAY), {
            redeemSlot: async (work) => {
              await wait(id);
              return work();
            },
          }),
        ]);
        return { id, result: result!, leases, grants: refreshGrants() - grantsBefore, row: (await tables.connections.get(id, ''))!.value };
      } finally {
        connections.replace = replace;
        fixture.clock.advance(start - fixture.clock.now().getTime());
      }
    }

    it('renews a lease that ran short while it waited for a slot, then calls Microsoft', async () => {
      // The slot frees up 5 s later: the call and a wait for a write slot after it might not fit in what is left.
      const { result, leases, grants, row } = await keepAliveAfterWait('waitedlong@contoso.example', async () => void fixture.clock.advance(5_000));
      expect(result.status).toBe('fulfilled');
      expect(grants).toBe(1);
      expect(leases).toHaveLength(2);
      // Renewed at the call, for a whole lease from then (the test's clock also moves in real time).
      expect(leases[1]!.until - leases[0]!.until).toBeGreaterThanOrEqual(5_000);
      expect(leases[1]!.until - leases[1]!.at).toBeGreaterThan(29_000);
      expect(row).toMatchObject({ status: 'connected', leaseOwner: null });
    });

    it('keeps a lease with enough left as it is', async () => {
      const { result, leases, grants } = await keepAliveAfterWait('waitedshort@contoso.example', async () => void fixture.clock.advance(1_000));
      expect(result.status).toBe('fulfilled');
      expect(grants).toBe(1);
      expect(leases).toHaveLength(1);
    });

    it('renews its lease on a row an operator changed meanwhile, and keeps the change', async () => {
      const { tables } = fixture.broker.services;
      const { result, leases, grants, row } = await keepAliveAfterWait('patched@contoso.example', async (connectionId) => {
        fixture.clock.advance(15_000);
        const current = (await tables.connections.get(connectionId, ''))!;
        await tables.connections.replace({ ...current.value, signInName: 'alias@contoso.example' }, current.etag);
      });
      expect(result.status).toBe('fulfilled');
      expect(grants).toBe(1);
      // The lease, the operator's change (carrying the lease as it was), the renewal.
      expect(leases).toHaveLength(3);
      expect(row).toMatchObject({ status: 'connected', leaseOwner: null, signInName: 'alias@contoso.example' });
    });

    it('does not call Microsoft, nor blame it, when storage fails while the lease is renewed', async () => {
      const { result, grants, row } = await keepAliveAfterWait('renewalfails@contoso.example', async () => void fixture.clock.advance(15_000), { renewalFails: true });
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
      expect(grants).toBe(0);
      // Let go at once, and not marked as a failure of Microsoft's.
      expect(row).toMatchObject({ status: 'connected', statusReason: null, leaseOwner: null });
    });

    it('does not call Microsoft when its lease ran out and another instance took the connection meanwhile', async () => {
      const { tables } = fixture.broker.services;
      let othersLease = '';
      const { id, result, grants, row } = await keepAliveAfterWait('takenover@contoso.example', async (connectionId) => {
        fixture.clock.advance(31_000);
        const current = (await tables.connections.get(connectionId, ''))!;
        othersLease = new Date(fixture.clock.now().getTime() + 30_000).toISOString();
        await tables.connections.replace({ ...current.value, leaseOwner: 'another-instance', leaseUntil: othersLease }, current.etag);
      });
      try {
        expect(result.status).toBe('rejected');
        expect((result as PromiseRejectedResult).reason).toMatchObject({ code: 'REFRESH_IN_PROGRESS' });
        expect(grants).toBe(0);
        // The other instance's lease stands.
        expect(row).toMatchObject({ leaseOwner: 'another-instance', leaseUntil: othersLease });
      } finally {
        const current = (await tables.connections.get(id, ''))!;
        await tables.connections.replace({ ...current.value, leaseOwner: null, leaseUntil: null }, current.etag);
        expect((await fixture.broker.call('DELETE', `/api/manage/connections/${id}`)).status).toBe(204);
      }
    });
  });

  it('needs the operator key to be run on demand', async () => {
    expect((await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST' })).status).toBe(401);
    expect((await fixture.broker.call('GET', '/api/manage/runs', { operator: false })).status).toBe(401);
  });
});
