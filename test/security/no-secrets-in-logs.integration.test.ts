import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { openPage, signInThroughPages } from '../infra/sandbox-idp/support.js';
import { connectMailbox, connectionWithLink, CUSTOMER_TENANT, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * Real tokens and secrets go through every path that logs — success, Microsoft failures,
 * Key Vault failures, wrong users, the sweep — and no log line may contain any of them.
 */

let fixture: ConnectFixture;
const secrets = new Set<string>();

beforeAll(async () => {
  fixture = await startConnectFixture();
});

afterAll(async () => {
  await fixture?.close();
});

async function requestToken(connection: string, key: string): Promise<Response> {
  return fetch(`${fixture.broker.baseUrl}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
}

describe('logs', () => {
  it('never contain a token, a key or a secret, whatever happens', async () => {
    const key = await tenantKey(fixture);
    secrets.add(key).add(fixture.app.clientSecret);
    const { services } = fixture.broker;

    // Success: a connect and tokens served from refresh and from cache.
    const ok = await connectMailbox(fixture, 'logs-ok@contoso.example');
    const issued = (await (await requestToken(ok, key)).json()) as { access_token: string; xoauth2: string };
    secrets.add(issued.access_token).add(issued.xoauth2);
    secrets.add((await services.secrets.get(secretNames.connectionRefreshToken(ok)))!.value);
    await requestToken(ok, key);

    // Key Vault refusing the rotated refresh token a day later.
    fixture.clock.advance(25 * 3_600_000);
    try {
      services.accessTokens.forget(ok);
      const row = await services.tables.connections.get(ok, '');
      await services.tables.connections.replace({ ...row!.value, accessTokenCipher: null });
      fixture.vault.failNext(20, { status: 500, method: 'PUT' });
      const during = (await (await requestToken(ok, key)).json()) as { access_token: string };
      secrets.add(during.access_token);
    } finally {
      fixture.vault.clearFaults();
      fixture.clock.advance(-25 * 3_600_000);
    }

    // Microsoft failing: an outage, then a revoked grant.
    const down = await connectMailbox(fixture, 'logs-down@contoso.example');
    secrets.add((await services.secrets.get(secretNames.connectionRefreshToken(down)))!.value);
    fixture.idp.failNext(1, { status: 500 });
    expect((await requestToken(down, key)).status).toBe(503);
    fixture.idp.revokeRefreshTokens('logs-down@contoso.example');
    expect((await requestToken(down, key)).status).toBe(409);

    // A wrong user at the callback, and a forged callback carrying a code.
    fixture.idp.addUser({ upn: 'logs-wrong@contoso.example', tid: CUSTOMER_TENANT });
    const { link } = await connectionWithLink(fixture, 'logs-wrong@contoso.example');
    const opened = await openPage(link);
    const back = await signInThroughPages(fixture.idp, opened.location!.toString(), { login: 'bob@contoso.example' });
    const code = back.location!.searchParams.get('code')!;
    secrets.add(code);
    expect((await openPage(back.location!.toString())).status).toBe(403);
    await openPage(`${fixture.broker.baseUrl}/api/oauth/callback?code=${encodeURIComponent(code)}&state=forged`);

    // Bad keys and the sweep.
    await requestToken(ok, `${key.slice(0, -2)}xx`);
    await fetch(`${fixture.broker.baseUrl}/admin/functions/rotate-tokens`, { method: 'POST', headers: { authorization: `Bearer ${'x'.repeat(40)}` } });
    await services.sweep.run();

    expect(fixture.logs.length).toBeGreaterThan(0);
    const everything = fixture.logs.join('\n');
    // Any JWT at all (access or id token, from any path), not only the ones the test saw.
    expect(everything).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
    for (const secret of secrets) {
      expect(secret.length).toBeGreaterThan(8);
      expect(everything.includes(secret), `a log line contains a secret starting ${secret.slice(0, 6)}…`).toBe(false);
    }
  });
});
