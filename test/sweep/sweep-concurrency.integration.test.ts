import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunRecord } from '../../shared/storage/records.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * BROKER_SWEEP_CONCURRENCY reaches the rotate-tokens timer: with the identity provider slowed
 * down, the number of refreshes in flight at once never exceeds it, and reaches it.
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
    } finally {
      identity.refresh = refresh;
      fixture.clock.advance(-8 * DAY);
    }
  });
});
