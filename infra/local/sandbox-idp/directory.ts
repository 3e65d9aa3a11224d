import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../../shared/clock.js';
import { Aadsts, isGuid } from './entra-errors.js';

/**
 * The sandbox's directory: app registrations, users, consents, and the grants it has issued
 * (authorization codes, refresh tokens). In memory only; secrets and tokens are kept as
 * SHA-256 digests so nothing here can be replayed from a heap dump.
 */

export interface AppRegistration {
  clientId: string;
  clientSecret: string;
  secretExpiresOn: Date;
  redirectUris: string[];
  /** `multi` (default): any organization's users; `single`: only the home tenant's. */
  signInAudience?: 'multi' | 'single';
  homeTenantId?: string;
  displayName?: string;
}

export interface AppRecord {
  clientId: string;
  displayName: string;
  redirectUris: readonly string[];
  signInAudience: 'multi' | 'single';
  homeTenantId: string;
}

export interface UserInput {
  upn: string;
  oid?: string;
  tid: string;
  name?: string;
  email?: string;
  /** May grant tenant-wide admin consent. */
  admin?: boolean;
}

export interface SandboxUser {
  readonly upn: string;
  readonly oid: string;
  readonly tid: string;
  readonly name: string;
  readonly email: string;
  readonly admin: boolean;
}

export type TenantRef = { kind: 'tenant'; tid: string } | { kind: 'common' | 'organizations' };

export interface CodeGrant {
  clientId: string;
  redirectUri: string;
  /** Consent items (OIDC scopes and qualified permissions) the code was issued for. */
  scopes: readonly string[];
  user: SandboxUser;
  codeChallenge: string;
  nonce?: string;
  issuedAt: Date;
}

export interface RefreshGrant {
  clientId: string;
  user: SandboxUser;
  issuedAt: Date;
  serial: number;
}

export type RefreshStatus = { ok: true } | { ok: false; reason: 'revoked'; validFrom: Date } | { ok: false; reason: 'expired' };

interface Secret { digest: Buffer; expiresOn: Date }
interface UserState { user: SandboxUser; revokedThrough: number; validFrom: Date; expiredThrough: number }

// Entra's refresh tokens die after 90 days without use; each redemption starts a new 90 days.
export const REFRESH_INACTIVITY_DAYS = 90;
const DAY_MS = 86_400_000;

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export class Directory {
  private readonly apps = new Map<string, AppRecord>();
  private readonly secrets = new Map<string, Secret[]>();
  private readonly users = new Map<string, UserState>();
  private readonly tenants = new Set<string>();
  private readonly userConsents = new Map<string, Set<string>>();
  private readonly adminConsents = new Map<string, Set<string>>();
  private readonly codes = new Map<string, CodeGrant & { redeemed: boolean }>();
  private readonly refreshTokens = new Map<string, RefreshGrant>();
  // A counter orders grants against revocations even when a fake clock stands still.
  private serial = 0;
  /** The tenant of apps registered without one, like a publisher's own directory. */
  readonly publisherTenantId = randomUUID();

  constructor(private readonly clock: Clock) {
    this.tenants.add(this.publisherTenantId);
  }

  registerApp(app: AppRegistration): void {
    if (!isGuid(app.clientId)) throw new TypeError(`clientId must be a GUID, got '${app.clientId}'`);
    if (app.redirectUris.length === 0) throw new TypeError('an app needs at least one redirect URI');
    for (const uri of app.redirectUris) assertRedirectUri(uri);
    const homeTenantId = (app.homeTenantId ?? this.publisherTenantId).toLowerCase();
    if (!isGuid(homeTenantId)) throw new TypeError(`homeTenantId must be a GUID, got '${app.homeTenantId}'`);
    const clientId = app.clientId.toLowerCase();
    this.tenants.add(homeTenantId);
    this.apps.set(clientId, {
      clientId,
      displayName: app.displayName ?? 'Sandbox app',
      redirectUris: [...app.redirectUris],
      signInAudience: app.signInAudience ?? 'multi',
      homeTenantId,
    });
    this.secrets.set(clientId, [{ digest: digest(app.clientSecret), expiresOn: app.secretExpiresOn }]);
  }

  /** Adds a credential beside the existing ones, as the portal does during a rotation. */
  addSecret(clientId: string, secret: string, expiresOn: Date): void {
    this.requireApp(clientId);
    this.secrets.get(clientId.toLowerCase())!.push({ digest: digest(secret), expiresOn });
  }

  /** Replaces every credential of the app with this one. */
  rotateSecret(clientId: string, secret: string, expiresOn: Date): void {
    this.requireApp(clientId);
    this.secrets.set(clientId.toLowerCase(), [{ digest: digest(secret), expiresOn }]);
  }

  app(clientId: string): AppRecord | undefined {
    return this.apps.get(clientId.toLowerCase());
  }

  /** Client secret authentication, worded as Entra words each way it fails. */
  authenticateClient(app: AppRecord, secret: string | undefined): void {
    if (secret === undefined || secret === '') throw Aadsts.missingClientCredential();
    const presented = digest(secret);
    const match = this.secrets.get(app.clientId)!.find((candidate) => timingSafeEqual(candidate.digest, presented));
    if (!match) throw Aadsts.invalidSecret(app.clientId);
    if (match.expiresOn.getTime() <= this.clock.now().getTime()) throw Aadsts.expiredSecret(app.clientId);
  }

  addUser(input: UserInput): SandboxUser {
    const tid = input.tid.toLowerCase();
    if (!isGuid(tid)) throw new TypeError(`tid must be a GUID, got '${input.tid}'`);
    if (!/^[^@\s]+@[^@\s]+$/.test(input.upn)) throw new TypeError(`upn must look like user@domain, got '${input.upn}'`);
    const key = input.upn.toLowerCase();
    if (this.users.has(key)) throw new TypeError(`a user ${input.upn} already exists`);
    const user: SandboxUser = Object.freeze({
      upn: input.upn,
      oid: (input.oid ?? randomUUID()).toLowerCase(),
      tid,
      name: input.name ?? input.upn.split('@')[0]!,
      email: input.email ?? input.upn,
      admin: input.admin ?? false,
    });
    this.tenants.add(tid);
    this.users.set(key, { user, revokedThrough: 0, validFrom: new Date(0), expiredThrough: 0 });
    return user;
  }

  user(upn: string): SandboxUser | undefined {
    return this.users.get(upn.trim().toLowerCase())?.user;
  }

  /** Like revoking sessions (or a password reset): every refresh token issued so far fails with 50173. */
  revokeRefreshTokens(upn: string): void {
    const state = this.requireUser(upn);
    state.revokedThrough = this.serial;
    state.validFrom = this.clock.now();
  }

  /** As if 90 days passed unused: every refresh token issued so far fails with 700082. */
  expireRefreshTokens(upn: string): void {
    this.requireUser(upn).expiredThrough = this.serial;
  }

  resolveTenant(segment: string): TenantRef {
    const lower = segment.toLowerCase();
    if (lower === 'common' || lower === 'organizations') return { kind: lower };
    if (isGuid(lower)) {
      if (!this.tenants.has(lower)) throw Aadsts.tenantNotFound(lower);
      return { kind: 'tenant', tid: lower };
    }
    // The sandbox has no personal accounts and no verified domain names, only tenant ids.
    if (lower === 'consumers' || lower.includes('.')) throw Aadsts.tenantNotFound(segment);
    throw Aadsts.invalidTenantName(segment);
  }

  userConsent(user: SandboxUser, clientId: string): ReadonlySet<string> {
    return this.userConsents.get(`${user.oid}|${clientId}`) ?? new Set();
  }

  addUserConsent(user: SandboxUser, clientId: string, items: readonly string[]): void {
    const key = `${user.oid}|${clientId}`;
    const consented = this.userConsents.get(key) ?? new Set<string>();
    for (const item of items) consented.add(item);
    this.userConsents.set(key, consented);
  }

  /** Resources whose application permissions an admin granted to the app in a tenant. */
  adminConsent(tid: string, clientId: string): ReadonlySet<string> | undefined {
    return this.adminConsents.get(`${tid}|${clientId}`);
  }

  addAdminConsent(tid: string, clientId: string, resources: readonly string[]): void {
    const key = `${tid.toLowerCase()}|${clientId.toLowerCase()}`;
    const granted = this.adminConsents.get(key) ?? new Set<string>();
    for (const resource of resources) granted.add(resource);
    this.adminConsents.set(key, granted);
  }

  issueCode(grant: CodeGrant): string {
    const code = randomBytes(48).toString('base64url');
    this.codes.set(digest(code).toString('hex'), { ...grant, redeemed: false });
    return code;
  }

  findCode(code: string): Readonly<CodeGrant & { redeemed: boolean }> | undefined {
    const entry = this.codes.get(digest(code).toString('hex'));
    return entry && { ...entry };
  }

  /** From the first redemption attempt on, even a failed one: a code is never worth two tries. */
  consumeCode(code: string): void {
    const entry = this.codes.get(digest(code).toString('hex'));
    if (entry) entry.redeemed = true;
  }

  issueRefreshToken(clientId: string, user: SandboxUser): string {
    const token = randomBytes(64).toString('base64url');
    this.serial += 1;
    this.refreshTokens.set(digest(token).toString('hex'), { clientId, user, issuedAt: this.clock.now(), serial: this.serial });
    return token;
  }

  refreshGrant(token: string): RefreshGrant | undefined {
    return this.refreshTokens.get(digest(token).toString('hex'));
  }

  refreshStatus(grant: RefreshGrant): RefreshStatus {
    const state = this.users.get(grant.user.upn.toLowerCase());
    if (!state) return { ok: false, reason: 'revoked', validFrom: this.clock.now() };
    if (grant.serial <= state.revokedThrough) return { ok: false, reason: 'revoked', validFrom: state.validFrom };
    const idleMs = this.clock.now().getTime() - grant.issuedAt.getTime();
    if (grant.serial <= state.expiredThrough || idleMs > REFRESH_INACTIVITY_DAYS * DAY_MS) return { ok: false, reason: 'expired' };
    return { ok: true };
  }

  private requireApp(clientId: string): AppRecord {
    const app = this.app(clientId);
    if (!app) throw new TypeError(`no app ${clientId} is registered`);
    return app;
  }

  private requireUser(upn: string): UserState {
    const state = this.users.get(upn.toLowerCase());
    if (!state) throw new TypeError(`no user ${upn}`);
    return state;
  }
}

/** Entra accepts https redirect URIs, and plain http only for the loopback host. */
function assertRedirectUri(uri: string): void {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new TypeError(`redirect URI '${uri}' is not an absolute URL`);
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '127.0.0.1' || url.hostname === '[::1]';
  if (url.hash !== '') throw new TypeError(`redirect URI '${uri}' must not contain a fragment`);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new TypeError(`redirect URI '${uri}' must use https (http is allowed only for localhost)`);
  }
}
