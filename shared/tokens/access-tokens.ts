import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { delegatedScopes, type AppOnlyToken, type DelegatedTokens, type IdentityClient } from '../identity/msal-identity.js';
import { classifyMicrosoftError, type MicrosoftFailure } from '../identity/microsoft-errors.js';
import { RememberedAppCredentials, type AppCredentialSource, type AppsService, type AppWithSecret } from '../manage/apps.js';
import { secretNames, type SecretStore } from '../secrets/secret-store.js';
import { StorageConflictError, type Versioned } from '../storage/entity-table.js';
import type { ConnectionRecord, StatusReason } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import { recordRefresh } from '../telemetry.js';
import type { DataKey } from './data-key.js';

/*
 * Fresh access tokens for connections, refreshed once however many ask. The order is the
 * one that holds across instances: the in-process cache, a single flight per connection,
 * then the shared encrypted token in the connection's row, then an ETag lease on that row
 * so exactly one instance calls Microsoft, and a re-read by everyone else.
 */

/** Refresh ahead of expiry: a token with less than this left is not handed out when a refresh can succeed. */
const REFRESH_AHEAD_MS = 5 * 60_000;
const LEASE_MS = 30_000;
/**
 * A call to Microsoft starts with nearly a whole lease ahead of it: what may follow the call
 * (its own 15 s time limit, then the sweep's wait of up to 12 s for a Key Vault write slot)
 * must end before the lease does. A lease taken a while before the call (a connection waiting
 * for a sweep slot, slow storage) is renewed first.
 */
const LEASE_LEFT_FOR_A_CALL_MS = LEASE_MS - 2_000;
/** Connections whose access token one instance keeps in memory (about 2 KB each). */
const MEMORY_LIMIT = 50_000;
/** Key Vault allows ~300 writes per 10 s per vault; a rotated refresh token is written at most once a day. */
const REFRESH_TOKEN_WRITE_INTERVAL_MS = 24 * 3_600_000;

/** Why no call to Microsoft was made for a lease that ran short: another instance holds the row now, or storage failed. */
type NoCall = { taken: true } | { unreadable: unknown };

export interface AccessToken {
  accessToken: string;
  expiresOn: Date;
  scopes: string[];
  source: 'memory' | 'shared' | 'refresh';
}

export interface AccessTokenDeps {
  tables: StorageTables;
  secrets: SecretStore;
  clock: Clock;
  identity: IdentityClient;
  apps: AppsService;
  dataKey: DataKey;
  mailResource: string;
  mailAppResource: string;
  redirectUri: string;
  log: (message: string, detail?: unknown) => void;
  /** Told, without waiting, when a refresh changes what people must do (alerts). */
  events?: {
    needsReauth(connection: ConnectionRecord, reason: StatusReason): Promise<void>;
    appFailure(connection: ConnectionRecord, failure: MicrosoftFailure): Promise<void>;
  };
  /** How long a waiting instance polls the row for the lease holder's token. */
  leaseWaitMs?: number;
  leasePollMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

/** What the sweep hands a keep-alive refresh besides the connection. */
export interface KeepAliveOptions {
  /**
   * Runs the Key Vault write of the rotated refresh token when the write budget allows;
   * `false` when it did not run (the previous token stays in use).
   */
  writeGate?: (write: () => Promise<void>) => Promise<boolean>;
  /** The app's credentials as the caller remembers them (for one run); by default read per refresh. */
  credentials?: AppCredentialSource;
  /**
   * Takes the last write of a successful keep-alive (the outcome and the lease's release)
   * instead of waiting for it: the sweep's slot starts its next refresh meanwhile and the run
   * awaits these before it ends. The refresh token is already stored by then; if the write
   * fails, the connection stays due and its lease runs out by itself.
   */
  settleLater?: (settled: Promise<void>) => void;
  /**
   * Runs each call to Microsoft when the caller has room for it. The sweep takes leases and
   * reads refresh tokens for more connections than it redeems at once, so that a slot goes
   * from one call to Microsoft to the next without waiting for storage in between.
   */
  redeemSlot?: <T>(call: () => Promise<T>) => Promise<T>;
}

const sealedToken = z.object({ accessToken: z.string(), expiresOn: z.string(), scopes: z.array(z.string()) });

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class AccessTokens {
  private readonly memory = new Map<string, AccessToken>();
  private readonly flights = new Map<string, Promise<AccessToken>>();
  /** Identifies this instance as a lease owner. */
  private readonly instance = randomUUID();
  /** Token requests read the app and its secret on every refresh, so a rotation applies at once. */
  private readonly appCredentials: AppCredentialSource = {
    get: (appId) => this.deps.apps.credentials(appId),
    newerThan: async () => null,
  };

  constructor(private readonly deps: AccessTokenDeps) {}

  private fresh(token: AccessToken | null | undefined): token is AccessToken {
    return !!token && token.expiresOn.getTime() - this.deps.clock.now().getTime() > REFRESH_AHEAD_MS;
  }

  private usable(token: AccessToken | null | undefined): token is AccessToken {
    return !!token && token.expiresOn.getTime() > this.deps.clock.now().getTime() + 30_000;
  }

  /**
   * A token with more than five minutes left, refreshing if needed; one refresh per connection
   * at a time. `justRead`: the connection's row as the caller read it a moment ago, used
   * instead of reading it again (a lease still goes by its ETag, so a stale one only costs a read).
   */
  async get(connection: ConnectionRecord, justRead: Versioned<ConnectionRecord> | null = null): Promise<AccessToken> {
    const cached = this.memory.get(connection.id);
    return this.fromMemory(connection, cached) ?? this.fly(connection.id, cached, null, justRead, {});
  }

  /**
   * `get` when this instance holds a fresh token, answered at once; `undefined` when it would
   * have to fetch one. Throws as `get` does for a connection that cannot be served.
   */
  fromMemory(connection: ConnectionRecord, cached = this.memory.get(connection.id)): AccessToken | undefined {
    assertServable(connection);
    return this.fresh(cached) ? { ...cached, source: 'memory' } : undefined;
  }

  /**
   * The sweep's keep-alive: redeem the refresh token unless someone did since `before`.
   * It shares the flight and the lease with token requests, so the two never refresh the
   * same connection twice. `row` is the connection's row as the sweep just listed it: the
   * lease is taken with its ETag, so an unchanged row is not read again (a changed one fails
   * the ETag and is read).
   */
  async refreshUnlessSince(row: Versioned<ConnectionRecord>, before: Date, options: KeepAliveOptions = {}): Promise<AccessToken> {
    const id = row.value.id;
    return this.fly(id, this.memory.get(id), before.toISOString(), row, options);
  }

  /** App credentials remembered for one sweep run; see RememberedAppCredentials. */
  appCredentialsForRun(): AppCredentialSource {
    return new RememberedAppCredentials(this.deps.apps);
  }

  private fly(
    connectionId: string,
    cached: AccessToken | undefined,
    refreshedBefore: string | null,
    listed: Versioned<ConnectionRecord> | null,
    options: KeepAliveOptions,
  ): Promise<AccessToken> {
    let flight = this.flights.get(connectionId);
    if (!flight) {
      flight = this.acquire(connectionId, cached, refreshedBefore, listed, options).finally(() => this.flights.delete(connectionId));
      this.flights.set(connectionId, flight);
    }
    return flight;
  }

  forget(connectionId: string): void {
    this.memory.delete(connectionId);
  }

  private remember(connectionId: string, token: AccessToken): AccessToken {
    this.memory.delete(connectionId);
    // Bounded: past the limit the least recently refreshed token goes; it is only a cache.
    if (this.memory.size >= MEMORY_LIMIT) this.memory.delete(this.memory.keys().next().value as string);
    this.memory.set(connectionId, token);
    return token;
  }

  private async shared(row: ConnectionRecord): Promise<AccessToken | null> {
    if (!row.accessTokenCipher) return null;
    try {
      const plain = await this.deps.dataKey.decrypt(row.accessTokenCipher, row.id);
      const parsed = plain === null ? null : sealedToken.safeParse(JSON.parse(plain));
      if (!parsed?.success) return null;
      return { accessToken: parsed.data.accessToken, expiresOn: new Date(parsed.data.expiresOn), scopes: parsed.data.scopes, source: 'shared' };
    } catch (error) {
      this.deps.log('the shared token could not be read; refreshing instead', error);
      return null;
    }
  }

  private async acquire(
    connectionId: string,
    stale: AccessToken | undefined,
    refreshedBefore: string | null,
    listed: Versioned<ConnectionRecord> | null,
    options: KeepAliveOptions,
  ): Promise<AccessToken> {
    const { clock, tables } = this.deps;
    const deadline = clock.now().getTime() + (this.deps.leaseWaitMs ?? 20_000);
    const sleep = this.deps.sleep ?? defaultSleep;
    let lastSeen: AccessToken | null = stale ?? null;
    let given = listed;
    for (;;) {
      const fromList = given !== null;
      const row = given ?? (await tables.connections.get(connectionId, ''));
      given = null;
      if (!row) throw new BrokerError('CONNECTION_NOT_FOUND', 'No connection with this id exists.');
      // The caller's copy of the connection may be a few seconds old; the row decides.
      assertServable(row.value);
      const shared = await this.shared(row.value);
      const recentEnough = refreshedBefore === null || (row.value.lastRefreshAt ?? '') >= refreshedBefore;
      if (this.fresh(shared) && recentEnough) return this.remember(connectionId, shared);
      if (this.usable(shared)) lastSeen = shared;
      // What may be served if no new token can be had. Not to a keep-alive: it wants to know
      // that the refresh failed, and would count an old token as the connection kept alive.
      const fallback = refreshedBefore === null ? lastSeen : null;

      const now = clock.now();
      const heldByOther = row.value.leaseOwner !== null && row.value.leaseOwner !== this.instance && (row.value.leaseUntil ?? '') > now.toISOString();
      if (!heldByOther) {
        // A row just listed or read is usually unchanged, so its lease succeeds: the refresh
        // token is read alongside the lease instead of after it. Reading is harmless if the lease
        // fails, and if it succeeds nobody can have stored a newer token since the row was read.
        // Not for a connection Microsoft asked to pause: no refresh follows.
        const paused = row.value.retryNotBefore !== null && row.value.retryNotBefore > now.toISOString();
        const prefetched = fromList && row.value.mode === 'delegated' && !paused ? this.deps.secrets.get(secretNames.connectionRefreshToken(connectionId)) : null;
        prefetched?.catch(() => undefined);
        const leased = await this.takeLease(row, now);
        if (leased) return this.refreshHolding(leased, fallback, options, prefetched);
        // The row changed since it was listed or read: read it now rather than wait a poll.
        if (fromList) continue;
      }
      if (now.getTime() > deadline) {
        if (this.usable(fallback)) return this.remember(connectionId, fallback);
        // Not Microsoft's fault as far as this instance knows: the holder may be slow, or gone
        // with its lease standing until it expires (a crash, a failed write to storage).
        throw new BrokerError('REFRESH_IN_PROGRESS', 'Another instance is refreshing this token and has not finished; try again shortly.', {
          retryAfterSeconds: 5,
        });
      }
      await sleep(this.deps.leasePollMs ?? 100);
    }
  }

  private async takeLease(row: Versioned<ConnectionRecord>, now: Date): Promise<Versioned<ConnectionRecord> | null> {
    try {
      return await this.deps.tables.connections.replace(
        { ...row.value, leaseOwner: this.instance, leaseUntil: new Date(now.getTime() + LEASE_MS).toISOString() },
        row.etag,
      );
    } catch (error) {
      if (error instanceof StorageConflictError) return null;
      throw error;
    }
  }

  /**
   * The lease with enough time left for a call to Microsoft: as it is, or renewed. A row changed
   * meanwhile by an operator still carries this instance's lease, which is renewed on it; a row
   * another instance leased after this lease ran out is left to that instance.
   */
  private async leaseForCall(leased: Versioned<ConnectionRecord>): Promise<{ leased: Versioned<ConnectionRecord> } | NoCall> {
    const now = this.deps.clock.now();
    if (Date.parse(leased.value.leaseUntil ?? '') - now.getTime() >= LEASE_LEFT_FOR_A_CALL_MS) return { leased };
    try {
      const renewed = await this.takeLease(leased, now);
      if (renewed) return { leased: renewed };
      const current = await this.deps.tables.connections.get(leased.value.id, '');
      const again = current?.value.leaseOwner === this.instance ? await this.takeLease(current, now) : null;
      return again ? { leased: again } : { taken: true };
    } catch (error) {
      return { unreadable: error };
    }
  }

  /** The lease could not be kept for a call to Microsoft, so none was made: nothing was redeemed. */
  private async withoutCall(leased: Versioned<ConnectionRecord>, lastSeen: AccessToken | null, reason: NoCall): Promise<AccessToken> {
    if ('unreadable' in reason) return this.letGo(leased, lastSeen, 'its lease could not be renewed', reason.unreadable);
    this.deps.log(`refreshing ${leased.value.id}: its lease ran out before the call and the row is another's now; not calling Microsoft`);
    if (this.usable(lastSeen)) return this.remember(leased.value.id, lastSeen);
    throw new BrokerError('REFRESH_IN_PROGRESS', 'Another instance is refreshing this token; try again shortly.', { retryAfterSeconds: 5 });
  }

  /** Only the lease holder gets here: it calls Microsoft, stores what came back, and lets go. */
  private async refreshHolding(
    leased: Versioned<ConnectionRecord>,
    lastSeen: AccessToken | null,
    options: KeepAliveOptions,
    prefetched: ReturnType<SecretStore['get']> | null = null,
  ): Promise<AccessToken> {
    const connection = leased.value;
    const now = this.deps.clock.now();
    if (connection.retryNotBefore && connection.retryNotBefore > now.toISOString()) {
      await this.release(leased, {});
      if (this.usable(lastSeen)) return this.remember(connection.id, lastSeen);
      const wait = Math.ceil((new Date(connection.retryNotBefore).getTime() - now.getTime()) / 1000);
      throw new BrokerError('MICROSOFT_UNAVAILABLE', 'Microsoft asked the broker to pause calls for this mailbox.', { retryAfterSeconds: wait });
    }
    if (connection.mode === 'app_only') return this.clientCredentialsHolding(leased, lastSeen);
    let stored: Awaited<ReturnType<SecretStore['get']>>;
    try {
      stored = await (prefetched ?? this.deps.secrets.get(secretNames.connectionRefreshToken(connection.id)));
    } catch (error) {
      return this.letGo(leased, lastSeen, 'its refresh token could not be read', error);
    }
    if (!stored) {
      const reason = { code: 'NO_REFRESH_TOKEN', message: 'No refresh token is stored for this mailbox.', fix: 'Send the mailbox owner a new Authorize link.' };
      await this.release(leased, { status: 'needs_reauth', statusReason: reason });
      void this.deps.events?.needsReauth({ ...connection, status: 'needs_reauth', statusReason: reason }, reason);
      throw needsReauth(connection.id, reason.message, reason.fix);
    }
    const source = options.credentials ?? this.appCredentials;
    const scopes = delegatedScopes(connection.protocols, this.deps.mailResource);
    // Each call waits for the caller's slot (the sweep's), then makes sure of the lease.
    const inSlot = <T>(work: () => Promise<T>) => (options.redeemSlot ? options.redeemSlot(work) : work());
    const redeem = (credentials: AppWithSecret) =>
      inSlot(async (): Promise<{ tokens: DelegatedTokens } | { refused: unknown } | { notCalled: NoCall }> => {
        const kept = await this.leaseForCall(leased);
        if (!('leased' in kept)) return { notCalled: kept };
        leased = kept.leased;
        try {
          return {
            tokens: await this.deps.identity.refresh({
              app: { clientId: credentials.app.clientId, tenant: credentials.app.tenant, clientSecret: credentials.clientSecret },
              scopes,
              refreshToken: stored.value,
            }),
          };
        } catch (refused) {
          return { refused };
        }
      });
    let credentials: AppWithSecret;
    try {
      credentials = await source.get(connection.appId);
    } catch (error) {
      return this.letGo(leased, lastSeen, 'its app or client secret could not be read', error);
    }
    const classify = (error: unknown) => classifyMicrosoftError(error, 'refresh', { redirectUri: this.deps.redirectUri });
    let redeemed = await redeem(credentials);
    if ('refused' in redeemed) {
      // Remembered credentials may predate a secret rotation: a refused secret is retried
      // once with the stored one if it is newer. The refresh token was not redeemed. If the
      // stored one cannot be read now, Microsoft's refusal is the answer.
      const failure = classify(redeemed.refused);
      const newer = failure.class === 'app_credential' ? await source.newerThan(credentials).catch(() => null) : null;
      if (!newer) return this.failed(leased, failure, lastSeen);
      redeemed = await redeem(newer);
      if ('refused' in redeemed) return this.failed(leased, classify(redeemed.refused), lastSeen);
    }
    if ('notCalled' in redeemed) return this.withoutCall(leased, lastSeen, redeemed.notCalled);
    const { tokens } = redeemed;
    recordRefresh('refreshed');

    // The new refresh token is stored before the row says so; if the write fails the old one,
    // which Microsoft does not revoke on redemption, stays in use.
    let refreshTokenUpdatedAt = connection.refreshTokenUpdatedAt;
    const writeDue = !refreshTokenUpdatedAt || now.getTime() - new Date(refreshTokenUpdatedAt).getTime() >= REFRESH_TOKEN_WRITE_INTERVAL_MS;
    // The sweep's Key Vault write budget is taken here, at the write itself, so that no
    // 10-second window ever holds more writes than the budget allows.
    if (writeDue && tokens.refreshToken !== stored.value) {
      const write = async () => {
        try {
          await this.deps.secrets.set(secretNames.connectionRefreshToken(connection.id), tokens.refreshToken, {
            contentType: 'refresh-token',
            tags: { connectionId: connection.id },
          });
          refreshTokenUpdatedAt = now.toISOString();
        } catch (error) {
          this.deps.log('storing the rotated refresh token failed; the previous one stays in use', error);
        }
      };
      if (!options.writeGate) await write();
      else if (!(await options.writeGate(write))) this.deps.log(`the write budget is used up: ${connection.id} keeps its previous refresh token for now`);
    }
    const token: AccessToken = { accessToken: tokens.accessToken, expiresOn: tokens.expiresOn, scopes: tokens.scopes, source: 'refresh' };
    const shared = await this.sealed(connection.id, token);
    const settled = this.release(leased, {
      status: 'connected',
      statusReason: null,
      lastRefreshAt: now.toISOString(),
      refreshTokenUpdatedAt,
      retryNotBefore: null,
      ...shared,
    });
    if (options.settleLater) options.settleLater(settled);
    else await settled;
    return this.remember(connection.id, token);
  }

  /** app_only: a token from client credentials in the customer's directory; there is no refresh token to keep. */
  private async clientCredentialsHolding(leased: Versioned<ConnectionRecord>, lastSeen: AccessToken | null): Promise<AccessToken> {
    const connection = leased.value;
    if (!connection.customerTenantId) {
      await this.release(leased, {});
      throw new BrokerError('NOT_CONNECTED', `No administrator of ${connection.mailbox}'s organisation has granted admin consent yet.`, {
        fix: 'Send the admin consent link (POST /api/manage/connections/{id}/authorize-link) to an administrator of the organisation.',
      });
    }
    let credentials: AppWithSecret;
    try {
      credentials = await this.appCredentials.get(connection.appId);
    } catch (error) {
      return this.letGo(leased, lastSeen, 'its app or client secret could not be read', error);
    }
    const kept = await this.leaseForCall(leased);
    if (!('leased' in kept)) return this.withoutCall(leased, lastSeen, kept);
    leased = kept.leased;
    let result: AppOnlyToken;
    try {
      result = await this.deps.identity.clientCredentials({
        app: { clientId: credentials.app.clientId, tenant: connection.customerTenantId, clientSecret: credentials.clientSecret },
        tenant: connection.customerTenantId,
        scope: `${this.deps.mailAppResource}/.default`,
      });
    } catch (error) {
      return this.failed(leased, classifyMicrosoftError(error, 'client_credentials', { redirectUri: this.deps.redirectUri }), lastSeen);
    }
    recordRefresh('refreshed');
    const token: AccessToken = { accessToken: result.accessToken, expiresOn: result.expiresOn, scopes: result.scopes, source: 'refresh' };
    await this.release(leased, { status: 'connected', statusReason: null, lastRefreshAt: this.deps.clock.now().toISOString(), retryNotBefore: null, ...(await this.sealed(connection.id, token)) });
    return this.remember(connection.id, token);
  }

  /**
   * What the broker itself could not read before calling Microsoft (Key Vault, Table Storage):
   * nothing was redeemed, so the lease is let go at once (other instances need not wait it out)
   * and a still-valid token is served; without one the caller gets the error as it is, never
   * one that blames Microsoft.
   */
  private async letGo(leased: Versioned<ConnectionRecord>, lastSeen: AccessToken | null, what: string, error: unknown): Promise<AccessToken> {
    await this.release(leased, {});
    if (!this.usable(lastSeen)) throw error;
    this.deps.log(`refreshing ${leased.value.id}: ${what}; serving the still-valid token`, error);
    return this.remember(leased.value.id, lastSeen);
  }

  /** The row's copy of a token, for the other instances; without the data key, no copy. */
  private async sealed(connectionId: string, token: AccessToken): Promise<Pick<ConnectionRecord, 'accessTokenCipher' | 'accessTokenExpiresAt'>> {
    try {
      const plain = JSON.stringify({ accessToken: token.accessToken, expiresOn: token.expiresOn.toISOString(), scopes: token.scopes });
      return { accessTokenCipher: await this.deps.dataKey.encrypt(plain, connectionId), accessTokenExpiresAt: token.expiresOn.toISOString() };
    } catch (error) {
      this.deps.log('the data key is unavailable; the token is not shared with other instances', error);
      return { accessTokenCipher: null, accessTokenExpiresAt: null };
    }
  }

  private async failed(leased: Versioned<ConnectionRecord>, failure: MicrosoftFailure, lastSeen: AccessToken | null): Promise<AccessToken> {
    recordRefresh('failed', failure.class);
    const connection = leased.value;
    const reason = { code: failure.code, message: failure.message, fix: failure.fix };
    const now = this.deps.clock.now();
    const pause = failure.retryAfterSeconds ? new Date(now.getTime() + failure.retryAfterSeconds * 1000).toISOString() : null;
    switch (failure.class) {
      case 'reauthorize':
      case 'interaction_required':
      case 'consent_required':
        this.forget(connection.id);
        await this.release(leased, { status: 'needs_reauth', statusReason: reason, accessTokenCipher: null, accessTokenExpiresAt: null });
        void this.deps.events?.needsReauth({ ...connection, status: 'needs_reauth', statusReason: reason }, reason);
        throw needsReauth(connection.id, failure.message, failure.fix, failure.code);
      case 'app_credential':
      case 'app_configuration':
        // App-wide: the mailbox is not to blame, so its status stays as it is.
        this.deps.log(`operator action needed for app ${connection.appId}: ${failure.code} ${failure.message}`);
        void this.deps.events?.appFailure(connection, failure);
        await this.release(leased, {});
        if (this.usable(lastSeen)) return this.remember(connection.id, lastSeen);
        throw new BrokerError('APP_MISCONFIGURED', `${failure.message} (${failure.code})`, { fix: failure.fix });
      case 'loop_detected':
        await this.release(leased, { statusReason: reason, retryNotBefore: pause });
        break;
      case 'unknown':
        // A refusal from Microsoft the broker has no rule for: shown on the connection with
        // Microsoft's code and words (status `error`), still served and retried, cleared by the
        // next success. An unexplained failure on this side (msal, the broker) does not mark it.
        await this.release(leased, failure.fromMicrosoft ? { status: 'error', statusReason: reason, retryNotBefore: null } : { retryNotBefore: null });
        break;
      default:
        await this.release(leased, { retryNotBefore: failure.class === 'transient' ? pause : null });
    }
    if (this.usable(lastSeen)) return this.remember(connection.id, lastSeen);
    throw new BrokerError('MICROSOFT_UNAVAILABLE', `Microsoft could not refresh the token: ${failure.message} (${failure.code})`, {
      fix: failure.fix,
      retryAfterSeconds: failure.retryAfterSeconds ?? 30,
    });
  }

  /** Writes the outcome and drops the lease, re-reading if someone else (an operator PATCH) wrote meanwhile. */
  private async release(leased: Versioned<ConnectionRecord>, changes: Partial<ConnectionRecord>): Promise<void> {
    let current: Versioned<ConnectionRecord> | null = leased;
    for (let attempt = 0; current && attempt < 5; attempt += 1) {
      const next: ConnectionRecord = { ...current.value, ...changes, leaseOwner: null, leaseUntil: null, updatedAt: this.deps.clock.now().toISOString() };
      try {
        await this.deps.tables.connections.replace(next, current.etag);
        return;
      } catch (error) {
        if (!(error instanceof StorageConflictError)) throw error;
        current = await this.deps.tables.connections.get(leased.value.id, '');
      }
    }
    if (current) this.deps.log(`the outcome of refreshing ${leased.value.id} could not be written after 5 conflicts; its lease expires by itself`);
  }
}

function needsReauth(connectionId: string, message: string, fix: string, code?: string): BrokerError {
  return new BrokerError('NEEDS_REAUTH', code ? `${message} (${code})` : message, {
    fix,
    extensions: { connectionStatus: 'needs_reauth', reauthorizeLinkPath: `/api/manage/connections/${connectionId}/authorize-link` },
  });
}

/** Only a connected mailbox (or one marked for retry) gets tokens; the others need a person first. */
function assertServable(connection: ConnectionRecord): void {
  if (connection.status === 'pending') {
    throw new BrokerError('NOT_CONNECTED', `${connection.mailbox} has not been connected yet.`, {
      fix: 'Send the mailbox owner the Authorize link (POST /api/manage/connections/{id}/authorize-link).',
      extensions: { connectionStatus: 'pending', reauthorizeLinkPath: `/api/manage/connections/${connection.id}/authorize-link` },
    });
  }
  if (connection.status === 'needs_reauth' || connection.status === 'revoked') {
    throw new BrokerError('NEEDS_REAUTH', connection.statusReason?.message ?? `${connection.mailbox} must be authorized again.`, {
      fix: connection.statusReason?.fix ?? 'Send the mailbox owner a new Authorize link.',
      extensions: { connectionStatus: connection.status, reauthorizeLinkPath: `/api/manage/connections/${connection.id}/authorize-link` },
    });
  }
}
