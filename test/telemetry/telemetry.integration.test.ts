import { metrics } from '@opentelemetry/api';
import { MetricReader, type DataPoint, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * The broker's traces and metrics against the real stack, captured by in-memory exporters
 * registered globally before the broker exists: what they say, and that nothing they say
 * contains a token, a key or a secret.
 */

class CollectingReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

const DAY = 86_400_000;
const spans = new InMemorySpanExporter();
const tracerProvider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
const reader = new CollectingReader();
let fixture: ConnectFixture;
let key: string;

beforeAll(async () => {
  tracerProvider.register();
  const { MeterProvider } = await import('@opentelemetry/sdk-metrics');
  expect(metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }))).toBe(true);
  fixture = await startConnectFixture();
  key = await tenantKey(fixture);
});

afterAll(async () => {
  await fixture?.close();
  await tracerProvider.shutdown();
  await reader.shutdown();
});

async function requestToken(connection: string): Promise<{ status: number; body: Record<string, string> }> {
  const response = await fetch(`${fixture.broker.baseUrl}/api/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ connection }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, string> };
}

async function refreshToken(connectionId: string): Promise<string> {
  const stored = await fixture.broker.services.secrets.get(secretNames.connectionRefreshToken(connectionId));
  if (!stored) throw new Error(`no refresh token for ${connectionId}`);
  return stored.value;
}

/** Everything a span exports, as plain data. */
function exported(span: ReadableSpan) {
  return {
    name: span.name,
    attributes: span.attributes,
    status: span.status,
    events: span.events.map((event) => ({ name: event.name, attributes: event.attributes })),
    links: span.links.map((link) => link.attributes),
    resource: span.resource.attributes,
    scope: span.instrumentationScope,
  };
}

function points(collected: ResourceMetrics, name: string): DataPoint<unknown>[] {
  const found = collected.scopeMetrics.flatMap((scope) => scope.metrics).filter((metric) => metric.descriptor.name === name);
  return found.flatMap((metric) => metric.dataPoints as DataPoint<unknown>[]);
}

function valueOf(collected: ResourceMetrics, name: string, attributes: Record<string, string>): unknown {
  const matching = points(collected, name).filter((point) => Object.entries(attributes).every(([k, v]) => point.attributes[k] === v));
  return matching.length === 1 ? matching[0]!.value : matching.length === 0 ? undefined : 'ambiguous';
}

/** The start of a JWT (base64url of `{"`), whole or cut short. */
const JWT = /eyJ[\w-]{10,}/;
/** A leak may be cut short (a prefix "for debugging"): any run of this many characters of a secret counts. */
const WINDOW = 16;

/** Which of the secrets (or any JWT) appear in `text`, whole or in part. */
function leaks(text: string, secrets: Record<string, string>): string[] {
  const found = Object.entries(secrets)
    .filter(([, secret]) => {
      if (secret.length < WINDOW) throw new Error('a secret this short cannot be scanned for');
      for (let start = 0; start + WINDOW <= secret.length; start += 1) if (text.includes(secret.slice(start, start + WINDOW))) return true;
      return false;
    })
    .map(([name]) => name);
  return JWT.test(text) ? [...found, 'a JWT'] : found;
}

describe('telemetry', () => {
  it('traces each token request and sweep, counts cache hits, refreshes and failures, and exports no secret', async () => {
    const sender = await connectMailbox(fixture, 'telemetry@contoso.example');
    const first = await requestToken(sender);
    const second = await requestToken('TELEMETRY@contoso.example');
    // By id again: the connection and its token are both in memory, the quickest way through.
    const third = await requestToken(sender);
    expect([first.status, second.status, third.status]).toEqual([200, 200, 200]);
    expect(second.body.access_token).toBe(first.body.access_token);
    expect(third.body.access_token).toBe(first.body.access_token);

    const revoked = await connectMailbox(fixture, 'telemetry-revoked@contoso.example');
    const revokedRefreshToken = await refreshToken(revoked);
    fixture.idp.revokeRefreshTokens('telemetry-revoked@contoso.example');
    const refused = await requestToken(revoked);
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe('NEEDS_REAUTH');

    const senderRefreshBefore = await refreshToken(sender);
    fixture.clock.advance(8 * DAY);
    let run;
    try {
      run = await fixture.broker.services.sweep.run();
    } finally {
      fixture.clock.advance(-8 * DAY);
    }
    expect(run).toMatchObject({ due: 1, refreshed: 1, complete: true });
    const senderRefreshAfter = await refreshToken(sender);
    expect(senderRefreshAfter).not.toBe(senderRefreshBefore);
    const sweptToken = await fixture.broker.services.accessTokens.get((await fixture.broker.services.tables.connections.get(sender, ''))!.value);

    // Traces: one token.issue per request, with ids, outcome and source only.
    const finished = spans.getFinishedSpans();
    const issues = finished.filter((span) => span.name === 'token.issue').map((span) => span.attributes);
    expect(issues).toEqual([
      { 'broker.tenant_id': fixture.tenantId, 'broker.key_id': expect.stringMatching(/^key_/), 'broker.connection_id': sender, 'broker.outcome': 'issued', 'broker.source': 'refresh' },
      { 'broker.tenant_id': fixture.tenantId, 'broker.key_id': expect.stringMatching(/^key_/), 'broker.connection_id': sender, 'broker.outcome': 'issued', 'broker.source': 'memory' },
      { 'broker.tenant_id': fixture.tenantId, 'broker.key_id': expect.stringMatching(/^key_/), 'broker.connection_id': sender, 'broker.outcome': 'issued', 'broker.source': 'memory' },
      {
        'broker.tenant_id': fixture.tenantId,
        'broker.key_id': expect.stringMatching(/^key_/),
        'broker.connection_id': revoked,
        'broker.outcome': 'refused',
        'broker.source': 'none',
        'error.type': 'NEEDS_REAUTH',
      },
    ]);
    const failedIssue = finished.filter((span) => span.name === 'token.issue').at(-1)!;
    expect(failedIssue.status).toEqual({ code: 2, message: 'NEEDS_REAUTH' });
    expect(failedIssue.events.map((event) => [event.name, event.attributes])).toEqual([['exception', { 'exception.type': 'NEEDS_REAUTH' }]]);

    const sweeps = finished.filter((span) => span.name === 'rotate-tokens.run');
    expect(sweeps).toHaveLength(1);
    expect(sweeps[0]!.attributes).toEqual({
      'broker.run_id': run.id,
      'broker.sweep.due': 1,
      'broker.sweep.refreshed': 1,
      'broker.sweep.failed': 0,
      'broker.sweep.skipped_for_budget': 0,
      'broker.sweep.skipped_for_time': 0,
      'broker.sweep.complete': true,
    });
    expect(finished.every((span) => span.instrumentationScope.name === 'mail-oauth-broker')).toBe(true);

    // Metrics: cache hits vs refreshes, refreshes by outcome and class, days to secret expiry.
    const { resourceMetrics: collected, errors } = await reader.collect();
    expect(errors).toEqual([]);
    expect(valueOf(collected, 'broker.token.requests', { outcome: 'issued', source: 'refresh' })).toBe(1);
    expect(valueOf(collected, 'broker.token.requests', { outcome: 'issued', source: 'memory' })).toBe(2);
    expect(valueOf(collected, 'broker.token.requests', { outcome: 'refused', source: 'none' })).toBe(1);
    // The token request's refresh and the sweep's; the revoked grant failed as `reauthorize`.
    expect(valueOf(collected, 'broker.refresh', { outcome: 'refreshed', class: 'none' })).toBe(2);
    expect(valueOf(collected, 'broker.refresh', { outcome: 'failed', class: 'reauthorize' })).toBe(1);
    expect(points(collected, 'broker.refresh')).toHaveLength(2);
    // The fixture's secret expires 300 days from now; the sweep ran 8 days later.
    expect(valueOf(collected, 'broker.client_secret.days_to_expiry', { app_id: fixture.app.id })).toBe(292);

    // Nothing exported holds a token, a key or a secret: every span, event, status, resource and metric.
    const secrets: Record<string, string> = {
      'the first access token': first.body.access_token!,
      'the XOAUTH2 string': first.body.xoauth2!,
      'the swept access token': sweptToken.accessToken,
      'the tenant key': key,
      'the operator key': OPERATOR_KEY,
      'the client secret': fixture.app.clientSecret,
      'the refresh token before the sweep': senderRefreshBefore,
      'the rotated refresh token': senderRefreshAfter,
      'the revoked grant\'s refresh token': revokedRefreshToken,
    };
    const text = JSON.stringify({ spans: finished.map(exported), metrics: collected });
    // The scan sees what was exported, and would notice a planted secret.
    expect(text).toContain(sender);
    expect(text).toContain(fixture.app.id);
    for (const [name, secret] of Object.entries(secrets)) expect(leaks(`{"x":"${secret.slice(-WINDOW)}"}`, { [name]: secret })).toContain(name);
    expect(leaks(text, secrets)).toEqual([]);
  });
});
