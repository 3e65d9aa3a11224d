import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { RotationSweep } from '../../shared/sweep/rotation-sweep.js';
import { WriteBudget } from '../../shared/sweep/write-budget.js';
import type { RunRecord } from '../../shared/storage/records.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

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

const refreshGrants = () => fixture.idp.requests().filter((request) => request.grantType === 'refresh_token').length;

async function runTimer(): Promise<RunRecord> {
  const response = await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
  expect(response.status).toBe(202);
  const runs = (await (await fixture.broker.call('GET', '/api/manage/runs?limit=1')).json()) as { items: RunRecord[] };
  return runs.items[0]!;
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
    const reservations: number[] = [];
    const { services } = fixture.broker;
    // Waiting for budget moves the fake clock instead of the real one.
    const budget = new WriteBudget({ writesPer10s: 2, clock: fixture.clock, sleep: async (ms) => fixture.clock.advance(ms) });
    const reserve = budget.reserve.bind(budget);
    budget.reserve = async (deadline) => {
      const granted = await reserve(deadline);
      if (granted) reservations.push(fixture.clock.now().getTime());
      return granted;
    };
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
      for (const at of reservations) expect(reservations.filter((other) => other > at - 10_000 && other <= at).length).toBeLessThanOrEqual(2);
    } finally {
      fixture.clock.advance(-(fixture.clock.now().getTime() - start) - 9 * DAY);
    }
  });

  it('needs the operator key to be run on demand', async () => {
    expect((await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST' })).status).toBe(401);
    expect((await fixture.broker.call('GET', '/api/manage/runs', { operator: false })).status).toBe(401);
  });
});
