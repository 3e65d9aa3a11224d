import type { Clock } from '../clock.js';
import type { HostHint } from '../config.js';
import { BrokerError } from '../errors.js';
import type { TenantPrincipal } from '../manage/tenants.js';
import { idPattern } from '../ids.js';
import { connectionModes, mailboxIndexRowKey, type ConnectionRecord } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import type { Versioned } from '../storage/entity-table.js';
import { xoauth2 } from '../verify/xoauth2.js';
import type { AccessToken, AccessTokens } from './access-tokens.js';
import type { AuditEvent } from './audit-log.js';
import { TtlCache } from '../ttl-cache.js';
import type { Span } from '@opentelemetry/api';
import { recordTokenRequest, withSpan } from '../telemetry.js';

/** What `POST /api/token` answers (DESIGN.md, "Resource shapes"). */
export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_at: string;
  expires_in: number;
  scope: string;
  username: string;
  xoauth2: string;
  smtp?: HostHint & { security: 'starttls' };
  imap?: HostHint & { security: 'tls' };
  pop?: HostHint & { security: 'tls' };
}

export interface TokenServiceDeps {
  tables: StorageTables;
  clock: Clock;
  accessTokens: AccessTokens;
  hosts: { smtp: HostHint; imap: HostHint; pop: HostHint };
  /** Throws RATE_LIMITED when the key is over its budget. */
  checkRateLimit: (keyId: string) => void;
  /** Synchronous and cheap: audit events are written off the hot path. */
  audit: (event: AuditEvent) => void;
  touchKey: (tenantId: string, keyId: string) => void;
}

function notFound(): BrokerError {
  return new BrokerError('CONNECTION_NOT_FOUND', 'This key\'s tenant has no such connection.');
}

/** Built once: the token path tests every reference against it. */
const CONNECTION_ID = idPattern('con');

/** Rendered answers kept per instance: the most recently kept, not all of them (each is a few KB). */
const RENDERED_ANSWERS = 256;

/**
 * One connection's answer as JSON text, kept so that a connection asked for again and again
 * is answered without serialising a few KB of JSON and base64-encoding the XOAUTH2 string
 * on every request. Only `expires_in` moves while the token stays the same: it is written
 * into the kept text when the second changes. The text is made by `join`, which builds one
 * flat string: a template literal would give a joined ("cons") string, which Node measures
 * and encodes on a slow path for every write.
 */
interface RenderedAnswer {
  accessToken: string;
  mailbox: string;
  protocols: string;
  body: string;
  /** Where `expires_in`'s digits start in `body`, and the number they say. */
  at: number;
  expiresIn: number;
}

/** How stale the token path's view of a connection (status, protocols) may be. */
const CONNECTION_CACHE_TTL_MS = 5_000;

export class TokenService {
  constructor(private readonly deps: TokenServiceDeps) {
    this.connections = new TtlCache({ ttlMs: CONNECTION_CACHE_TTL_MS, maxEntries: 20_000, clock: deps.clock });
  }

  /**
   * A connection by id or by mailbox, only within the caller's tenant: another tenant's
   * connection is answered exactly like one that does not exist. With it, the row itself when
   * this call had to read it: AccessTokens then starts from that row instead of reading it again.
   */
  private async resolve(principal: TenantPrincipal, reference: string, key: string): Promise<{ connection: ConnectionRecord; row: Versioned<ConnectionRecord> | null }> {
    // A status change (needs_reauth, a deletion) reaches this instance within the TTL; a
    // refresh goes by the row as storage holds it (its lease needs the row's current ETag).
    // The remembered copy leaves out the row's sealed token (most of a row's size): a memory
    // miss goes to AccessTokens, which reads the row itself (or takes the one just read).
    let row: Versioned<ConnectionRecord> | null = null;
    const connection = await this.connections.get(key, async () => {
      row = await this.lookup(principal, reference);
      return { ...row.value, accessTokenCipher: null };
    });
    return { connection, row };
  }

  private readonly connections: TtlCache<string, ConnectionRecord>;

  private connectionKey(principal: TenantPrincipal, reference: string): string {
    return `${principal.tenantId}|${reference.toLowerCase()}`;
  }
  private readonly rendered = new Map<string, RenderedAnswer>();
  /**
   * Connections rendered once in the second `renderedSecond`. Only a second render within the
   * same second keeps the answer: one kept for a connection asked for once in a while would
   * be a few KB that outlive the request for nothing and, under a stream of different
   * connections, fill the heap with answers no one asks for again.
   */
  private readonly renderedOnce = new Set<string>();
  private renderedSecond = -1;

  private async lookup(principal: TenantPrincipal, reference: string): Promise<Versioned<ConnectionRecord>> {
    const { tables } = this.deps;
    if (CONNECTION_ID.test(reference)) {
      const found = await tables.connections.get(reference, '');
      if (!found || found.value.tenantId !== principal.tenantId) throw notFound();
      return found;
    }
    if (!reference.includes('@')) throw notFound();
    for (const mode of connectionModes) {
      const index = await tables.mailboxIndex.get(principal.tenantId, mailboxIndexRowKey(mode, reference));
      if (!index) continue;
      const found = await tables.connections.get(index.value.connectionId, '');
      if (found && found.value.tenantId === principal.tenantId) return found;
    }
    throw notFound();
  }

  /**
   * The token endpoint: rate limit, issue, and an audit line, a span and a count for every
   * outcome. Answers the `TokenResponse` as JSON text. A connection this instance knows with a
   * fresh token in memory (nearly every request) is answered without waiting for anything.
   */
  issueFor(principal: TenantPrincipal, reference: string): Promise<string> {
    // The reference may be a mailbox: only ids go on the span.
    return withSpan('token.issue', { 'broker.tenant_id': principal.tenantId, 'broker.key_id': principal.keyId }, (span) => {
      this.deps.touchKey(principal.tenantId, principal.keyId);
      try {
        this.deps.checkRateLimit(principal.keyId);
        const key = this.connectionKey(principal, reference);
        const known = this.connections.peek(key);
        const token = known && this.deps.accessTokens.fromMemory(known);
        if (known && token) return Promise.resolve(this.issued(principal, known, token, span));
        return this.issueAfterLookup(principal, reference, key, span);
      } catch (error) {
        return Promise.reject(this.refused(principal, reference, error, span));
      }
    });
  }

  private async issueAfterLookup(principal: TenantPrincipal, reference: string, key: string, span: Span): Promise<string> {
    try {
      const { connection, row } = await this.resolve(principal, reference, key);
      return this.issued(principal, connection, await this.deps.accessTokens.get(connection, row), span);
    } catch (error) {
      throw this.refused(principal, reference, error, span);
    }
  }

  private issued(principal: TenantPrincipal, connection: ConnectionRecord, token: AccessToken, span: Span): string {
    const { source } = token;
    const response = this.render(connection, token);
    this.deps.audit({ tenantId: principal.tenantId, keyId: principal.keyId, connectionId: connection.id, outcome: 'issued', source });
    if (span.isRecording()) span.setAttributes({ 'broker.connection_id': connection.id, 'broker.outcome': 'issued', 'broker.source': source });
    recordTokenRequest('issued', source);
    return response;
  }

  /** Counts and audits a failed request; answers the error to throw. */
  private refused(principal: TenantPrincipal, reference: string, error: unknown, span: Span): unknown {
    const code = error instanceof BrokerError ? error.code : 'INTERNAL';
    const outcome = error instanceof BrokerError && error.status < 500 ? 'refused' : 'failed';
    const connectionId = CONNECTION_ID.test(reference) ? reference : null;
    this.deps.audit({ tenantId: principal.tenantId, keyId: principal.keyId, connectionId, outcome, code });
    span.setAttributes({ 'broker.outcome': outcome, 'broker.source': 'none', ...(connectionId ? { 'broker.connection_id': connectionId } : {}) });
    recordTokenRequest(outcome, 'none');
    return error;
  }

  /** The answer for one connection and token, as an object (what `issueFor` renders). */
  answer(connection: ConnectionRecord, token: AccessToken): TokenResponse {
    const { smtp, imap, pop } = this.deps.hosts;
    return {
      access_token: token.accessToken,
      token_type: 'Bearer',
      expires_at: token.expiresOn.toISOString(),
      expires_in: this.expiresIn(token),
      scope: token.scopes.join(' '),
      username: connection.mailbox,
      xoauth2: xoauth2(connection.mailbox, token.accessToken),
      ...(connection.protocols.includes('smtp') ? { smtp: { ...smtp, security: 'starttls' as const } } : {}),
      ...(connection.protocols.includes('imap') ? { imap: { ...imap, security: 'tls' as const } } : {}),
      ...(connection.protocols.includes('pop') ? { pop: { ...pop, security: 'tls' as const } } : {}),
    };
  }

  private expiresIn(token: AccessToken, nowMs = this.deps.clock.now().getTime()): number {
    return Math.max(0, Math.floor((token.expiresOn.getTime() - nowMs) / 1000));
  }

  /** `answer` as JSON text; kept for a connection asked for more than once in a second. */
  render(connection: ConnectionRecord, token: AccessToken): string {
    const nowMs = this.deps.clock.now().getTime();
    const expiresIn = this.expiresIn(token, nowMs);
    const protocols = connection.protocols.join(' ');
    const kept = this.rendered.get(connection.id);
    if (kept && kept.accessToken === token.accessToken && kept.mailbox === connection.mailbox && kept.protocols === protocols) {
      if (kept.expiresIn !== expiresIn) {
        const { body, at } = kept;
        kept.body = [body.slice(0, at), expiresIn, body.slice(at + String(kept.expiresIn).length)].join('');
        kept.expiresIn = expiresIn;
      }
      return kept.body;
    }
    const { access_token, token_type, expires_at, expires_in: _moving, ...rest } = this.answer(connection, token);
    // Both halves are non-empty objects: drop the closing and the opening brace.
    const head = `${JSON.stringify({ access_token, token_type, expires_at }).slice(0, -1)},"expires_in":`;
    const body = [head, expiresIn, `,${JSON.stringify(rest).slice(1)}`].join('');
    if (kept || this.askedBeforeThisSecond(connection.id, nowMs)) {
      this.rendered.delete(connection.id);
      this.rendered.set(connection.id, { accessToken: token.accessToken, mailbox: connection.mailbox, protocols, body, at: head.length, expiresIn });
      if (this.rendered.size > RENDERED_ANSWERS) this.rendered.delete(this.rendered.keys().next().value!);
    }
    return body;
  }

  /** Whether `id` was rendered earlier in this second; notes it when not. */
  private askedBeforeThisSecond(id: string, nowMs: number): boolean {
    const second = Math.floor(nowMs / 1000);
    if (second !== this.renderedSecond) {
      this.renderedSecond = second;
      this.renderedOnce.clear();
    }
    if (this.renderedOnce.has(id)) return true;
    this.renderedOnce.add(id);
    return false;
  }
}
