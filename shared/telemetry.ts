import { INVALID_SPAN_CONTEXT, metrics, ProxyTracerProvider, SpanStatusCode, trace, type Attributes, type Counter, type Gauge, type Meter, type Span } from '@opentelemetry/api';
import { daysLeft } from './alerts/secret-expiry.js';
import { BrokerError } from './errors.js';
import { TupleMap } from './tuple-map.js';
import type { AppRecord } from './storage/records.js';
import type { AccessToken } from './tokens/access-tokens.js';

/*
 * The broker's traces and metrics, through the OpenTelemetry API only: with no SDK registered
 * every call is a no-op, so tests and the local host pay nothing, and the Functions entry
 * (functions/index.ts) decides where they go. Attribute values are ids, codes, classes and
 * counts only: never a token, a key, a secret, a mailbox or an error message (messages from
 * Microsoft and the SDKs may quote a URL or a request body).
 */

export const TELEMETRY_NAME = 'mail-oauth-broker';

/** Only what is safe to export: ids, codes, classes, counts. */
export type TelemetryAttributes = Record<string, string | number | boolean>;

/** The stable code of an error; anything that is not a BrokerError is INTERNAL. */
export function errorCode(error: unknown): string {
  return error instanceof BrokerError ? error.code : 'INTERNAL';
}

/** Where every tracer goes while no SDK is registered (the API's own no-op provider). */
const NO_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate();
/** What a no-op tracer's spans are: they record nothing. */
const NOT_RECORDING = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** True while no SDK is registered, as in tests and the local host: a span would record nothing. */
function tracingOff(): boolean {
  const provider = trace.getTracerProvider();
  return provider instanceof ProxyTracerProvider && provider.getDelegate() === NO_TRACER_PROVIDER;
}

/**
 * Runs `work` inside an active span. A failure is recorded by its code alone, not with
 * `span.recordException`, which would export the message and the stack. Without an SDK,
 * `work` gets a span that records nothing and no context is made for it: the API's no-op
 * tracer would build one per call (a copied context map and a span) on the token path.
 */
export function withSpan<T>(name: string, attributes: TelemetryAttributes, work: (span: Span) => Promise<T>): Promise<T> {
  if (tracingOff()) return work(NOT_RECORDING);
  return trace.getTracer(TELEMETRY_NAME).startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      const code = errorCode(error);
      span.setAttribute('error.type', code);
      span.addEvent('exception', { 'exception.type': code });
      span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      throw error;
    } finally {
      span.end();
    }
  });
}

interface Instruments {
  meter: Meter;
  tokenRequests: Counter;
  refreshes: Counter;
  daysToExpiry: Gauge;
}

let instruments: Instruments | undefined;

/*
 * Unlike the tracer, a meter taken before a MeterProvider is registered stays a no-op for
 * good, so the instruments are (re)made whenever the global meter changes.
 */
function current(): Instruments {
  const meter = metrics.getMeter(TELEMETRY_NAME);
  if (instruments?.meter !== meter) {
    instruments = {
      meter,
      tokenRequests: meter.createCounter('broker.token.requests', {
        description: 'Token requests by outcome and by where the token came from (memory and shared are cache hits).',
      }),
      refreshes: meter.createCounter('broker.refresh', { description: 'Calls to Microsoft for a token, by outcome and failure class.' }),
      daysToExpiry: meter.createGauge('broker.client_secret.days_to_expiry', { description: 'Whole days until an app\'s client secret expires.', unit: 'd' }),
    };
  }
  return instruments;
}

export type TokenRequestOutcome = 'issued' | 'refused' | 'failed';
type TokenSource = AccessToken['source'] | 'none';

/** One attributes object per outcome and source, made once: the token path counts every request. */
const tokenRequestAttributes = new TupleMap<[TokenRequestOutcome, TokenSource], Attributes>();

/** One `POST /api/token`; `source` is `none` when no token was issued. */
export function recordTokenRequest(outcome: TokenRequestOutcome, source: TokenSource): void {
  const key: [TokenRequestOutcome, TokenSource] = [outcome, source];
  let attributes = tokenRequestAttributes.get(key);
  if (attributes === undefined) {
    attributes = Object.freeze({ outcome, source });
    tokenRequestAttributes.set(key, attributes);
  }
  current().tokenRequests.add(1, attributes);
}

/** One call to Microsoft for a token; `failureClass` is the MicrosoftFailure class, `none` on success. */
export function recordRefresh(outcome: 'refreshed' | 'failed', failureClass = 'none'): void {
  current().refreshes.add(1, { outcome, class: failureClass });
}

/** Each app's client secret days-to-expiry, for apps that recorded an expiry date. */
export function recordSecretDaysToExpiry(apps: readonly Pick<AppRecord, 'id' | 'clientSecretExpiresOn'>[], now: Date): void {
  const { daysToExpiry } = current();
  for (const app of apps) {
    const expiresOn = app.clientSecretExpiresOn ? new Date(app.clientSecretExpiresOn) : null;
    if (expiresOn && !Number.isNaN(expiresOn.getTime())) daysToExpiry.record(daysLeft(expiresOn, now), { app_id: app.id });
  }
}
