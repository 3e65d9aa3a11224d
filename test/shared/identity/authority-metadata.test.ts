import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthorityMetadataCache } from '../../../shared/identity/authority-metadata.js';
import { issueTestServerCertificate } from '../../support/test-ca.js';

/*
 * MSAL does not check a discovery document handed to it as configuration, so the broker
 * checks it before handing it over: each tenant path of this HTTPS authority serves a
 * different document, and only the sound one may come back.
 */

let server: Server;
let authorityHost: string;
const gets = new Map<string, number>();

function documentFor(tenant: string, host: string): { status: number; body: string } {
  const sound = {
    authorization_endpoint: `https://${host}/${tenant}/oauth2/v2.0/authorize`,
    token_endpoint: `https://${host}/${tenant}/oauth2/v2.0/token`,
    issuer: `https://${host}/${tenant}/v2.0`,
    jwks_uri: `https://${host}/${tenant}/discovery/v2.0/keys`,
  };
  switch (tenant) {
    case 'sound':
      return { status: 200, body: JSON.stringify(sound) };
    case 'foreign-issuer':
      return { status: 200, body: JSON.stringify({ ...sound, issuer: 'https://login.attacker.example/sound/v2.0' }) };
    case 'plain-http-token':
      return { status: 200, body: JSON.stringify({ ...sound, token_endpoint: `http://${host}/${tenant}/oauth2/v2.0/token` }) };
    case 'missing-jwks':
      return { status: 200, body: JSON.stringify({ ...sound, jwks_uri: undefined }) };
    case 'truncated':
      return { status: 200, body: JSON.stringify(sound).slice(0, 40) };
    default:
      return { status: 400, body: JSON.stringify({ error: 'invalid_tenant' }) };
  }
}

beforeAll(async () => {
  const tls = await issueTestServerCertificate(['localhost']);
  server = createServer({ cert: tls.certPem, key: tls.keyPem }, (request, response) => {
    const tenant = (request.url ?? '').split('/')[1] ?? '';
    gets.set(tenant, (gets.get(tenant) ?? 0) + 1);
    const answer = documentFor(tenant, request.headers.host ?? '');
    response.writeHead(answer.status, { 'content-type': 'application/json' });
    response.end(answer.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  authorityHost = `https://localhost:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

describe('AuthorityMetadataCache', () => {
  it('hands over a sound document with the origin browsers are sent to', async () => {
    const cache = new AuthorityMetadataCache({ authorityHost, timeoutMs: 5_000 });
    const document = await cache.get('sound');
    expect(document?.authorizationOrigin).toBe(authorityHost);
    expect(JSON.parse(document!.json)).toMatchObject({ issuer: `${authorityHost}/sound/v2.0` });
  });

  it.each(['foreign-issuer', 'plain-http-token', 'missing-jwks', 'truncated', 'unknown-tenant'])('lets MSAL discover by itself instead of trusting a %s document, and says why', async (tenant) => {
    const logged: string[] = [];
    let now = 0;
    const cache = new AuthorityMetadataCache({ authorityHost, timeoutMs: 5_000, now: () => now, log: (message) => logged.push(message) });
    expect(await cache.get(tenant)).toBeNull();
    expect(logged.join('\n')).toContain(tenant);
    // The refusal is remembered for a minute, then the document is fetched again.
    const before = gets.get(tenant);
    expect(await cache.get(tenant)).toBeNull();
    expect(gets.get(tenant)).toBe(before);
    now += 61_000;
    await cache.get(tenant);
    expect(gets.get(tenant)).toBe(before! + 1);
  });
});
