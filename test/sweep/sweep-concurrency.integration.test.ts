import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunRecord } from '../../shared/storage/records.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * BROKER_SWEEP_CONCURRENCY reaches the rotate-tokens timer: with the identity provider slowed
 * down, the number of calls to Microsoft in flight at once never exceeds it, and reaches it.
 * As many connections again are leased ahead of their call, never more, and every lease is
 * let go by the end of the run.
 */

const DAY = 86_400_000;
let fixture: ConnectFixture;

beforeAll(async () => {
  fixture = await startConnectFixture({ env: { BROKER_SWEEP_CONCURRENCY: '3' } });
});

afterAll(async () => {
  await fixture?.close();
});

describe('BROKER_SWEEP_CONCURRENCY', () => {
  it('is how many connections the timer refreshes at once', async () => {
    for (let index = 0; index < 7; index += 1) await connectMailbox(fixture, `parallel${index}@contoso.example`);
    const { services } = fixture.broker;
    // AccessTokens holds this very object, so the refreshes are observed where they are made.
    const identity = services.identity as { refresh: typeof services.identity.refresh };
    const refresh = services.identity.refresh.bind(services.identity);
    let inFlight = 0;
    let most = 0;
    // The leases as the refreshes take and let go of them, on the rows themselves.
    const connections = services.tables.connections as { replace: typeof services.tables.connections.replace };
    const replace = services.tables.connections.replace.bind(services.tables.connections);
    const leased = new Set<string>();
    let mostLeased = 0;
    connections.replace = async (value, etag) => {
      const written = await replace(value, etag);
      if (value.leaseOwner) leased.add(value.id);
      else leased.delete(value.id);
      mostLeased = Math.max(mostLeased, leased.size);
      return written;
    };
    identity.refresh = async (input) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      try {
        return await refresh(input);
      } finally {
        inFlight -= 1;
      }
    };
    // One slow answer per refresh this run makes; none left over for later tests.
    fixture.idp.failNext(7, { delayMs: 150 });
    fixture.clock.advance(8 * DAY);
    try {
      const response = await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_KEY}` } });
      expect(response.status).toBe(202);
      const runs = (await (await fixture.broker.call('GET', '/api/manage/runs?limit=1')).json()) as { items: RunRecord[] };
      expect(runs.items[0]).toMatchObject({ due: 7, refreshed: 7, failed: {} });
      expect(most).toBe(3);
      expect(mostLeased).toBe(6);
      expect(leased.size).toBe(0);
      const rows = await Promise.all(
        (await (await fixture.broker.call('GET', '/api/manage/connections?limit=50')).json() as { items: Array<{ id: string }> }).items.map((item) => services.tables.connections.get(item.id, '')),
      );
      expect(rows.filter((row) => row?.value.leaseOwner)).toEqual([]);
    } finally {
      connections.replace = replace;
      identity.refresh = refresh;
      fixture.clock.advance(-8 * DAY);
    }
  });
});
