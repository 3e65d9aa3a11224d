import { createHash, randomBytes } from 'node:crypto';
import { addHours, addMinutes, type Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { newId } from '../ids.js';
import { delegatedScopes, newPkcePair, type DelegatedTokens, type IdentityClient } from '../identity/msal-identity.js';
import { classifyMicrosoftError, classifyRedirectError, type MicrosoftFailure } from '../identity/microsoft-errors.js';
import type { AppsService } from '../manage/apps.js';
import { isId } from '../manage/inputs.js';
import { secretNames, type SecretStore } from '../secrets/secret-store.js';
import { StorageConflictError } from '../storage/entity-table.js';
import type { AuthRequestRecord, ConnectionRecord, LinkRecord } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';

/*
 * The one-click Authorize link and the OAuth redirect. RFC 9700 is the checklist: PKCE S256
 * always, a random single-use state that expires after 10 minutes, the exact redirect URI,
 * and no redirect anywhere but to the configured authority.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9700
 * @see https://www.rfc-editor.org/rfc/rfc7636
 */

const STATE_LIFETIME_MINUTES = 10;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface ConnectDeps {
  tables: StorageTables;
  secrets: SecretStore;
  clock: Clock;
  identity: IdentityClient;
  apps: AppsService;
  publicUrl: string;
  redirectUri: string;
  linkTtlHours: number;
  mailResource: string;
  mailAppResource: string;
  /** Told, without waiting, when a mailbox that needed re-authorization works again. */
  events?: { reconnected(connection: ConnectionRecord): Promise<void> };
}

export interface AuthorizeLink {
  url: string;
  expiresAt: string;
  /** app_only: the same one-click link, which leads the customer's admin to Microsoft's admin consent. */
  adminConsentUrl?: string;
}

export interface CallbackQuery {
  state?: string | undefined;
  code?: string | undefined;
  error?: string | undefined;
  error_description?: string | undefined;
  error_subcode?: string | undefined;
  admin_consent?: string | undefined;
  tenant?: string | undefined;
}

export interface Connected {
  mailbox: string;
  signedInAs: string;
  reauthorized: boolean;
  /** app_only: what the customer must still do in Exchange Online needs these. */
  adminConsent?: { tenantId: string; clientId: string };
}

const hashState = (state: string) => createHash('sha256').update(state, 'utf8').digest('hex');

/** A Microsoft failure as the broker's typed error, with Microsoft's code and fix for the page. */
function fromMicrosoft(failure: MicrosoftFailure): BrokerError {
  const code =
    failure.class === 'transient'
      ? 'MICROSOFT_UNAVAILABLE'
      : failure.class === 'app_credential' || failure.class === 'app_configuration'
        ? 'APP_MISCONFIGURED'
        : 'SIGN_IN_FAILED';
  return new BrokerError(code, `${failure.message} (${failure.code})`, {
    fix: failure.fix,
    ...(failure.retryAfterSeconds === null ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
  });
}

function sameAddress(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

export class ConnectService {
  constructor(private readonly deps: ConnectDeps) {}

  /** A fresh link for a connection: reusable until the connection succeeds through it, then dead. */
  async createLink(connection: ConnectionRecord): Promise<AuthorizeLink> {
    const now = this.deps.clock.now();
    const link: LinkRecord = {
      id: newId('lnk'),
      connectionId: connection.id,
      createdAt: now.toISOString(),
      expiresAt: addHours(now, this.deps.linkTtlHours).toISOString(),
      completedAt: null,
    };
    await this.deps.tables.links.insert(link);
    const url = `${this.deps.publicUrl}/api/connect/${link.id}`;
    return { url, expiresAt: link.expiresAt, ...(connection.mode === 'app_only' ? { adminConsentUrl: url } : {}) };
  }

  /**
   * Opening a link starts a new sign-in every time, with its own state and PKCE pair: an
   * email scanner that opens the link first only leaves behind a request that expires.
   */
  async openLink(linkId: string | undefined): Promise<string> {
    const now = this.deps.clock.now();
    const link = isId('lnk', linkId) ? await this.deps.tables.links.get(linkId, '') : null;
    if (!link) throw new BrokerError('LINK_NOT_FOUND', 'This Authorize link does not exist.', { fix: 'Ask your provider for a new Authorize link.' });
    if (link.value.completedAt) {
      throw new BrokerError('LINK_USED', 'This link was already used to connect the mailbox; it works only once.', {
        fix: 'Nothing to do if the mailbox works. To connect it again, ask your provider for a new link.',
      });
    }
    if (link.value.expiresAt <= now.toISOString()) {
      throw new BrokerError('LINK_EXPIRED', `This Authorize link expired on ${link.value.expiresAt}.`, { fix: 'Ask your provider for a new Authorize link.' });
    }
    const connection = await this.deps.tables.connections.get(link.value.connectionId, '');
    if (!connection) throw new BrokerError('LINK_NOT_FOUND', 'The mailbox connection behind this link no longer exists.', { fix: 'Ask your provider for a new Authorize link.' });
    const app = await this.deps.apps.get(connection.value.appId);

    const state = randomBytes(32).toString('base64url');
    const appOnly = connection.value.mode === 'app_only';
    const pkce = appOnly ? null : await newPkcePair();
    const expectedMailbox = connection.value.signInName ?? connection.value.mailbox;
    const request: AuthRequestRecord = {
      stateHash: hashState(state),
      connectionId: connection.value.id,
      linkId: link.value.id,
      kind: appOnly ? 'admin_consent' : 'authorize',
      codeVerifier: pkce?.verifier ?? null,
      expectedMailbox,
      createdAt: now.toISOString(),
      expiresAt: addMinutes(now, STATE_LIFETIME_MINUTES).toISOString(),
    };
    await this.deps.tables.authRequests.insert(request);
    try {
      const credentials = { clientId: app.clientId, tenant: app.tenant, clientSecret: await this.deps.apps.clientSecret(app) };
      if (!pkce) {
        return await this.deps.identity.adminConsentUrl({ app: credentials, redirectUri: this.deps.redirectUri, state, scope: this.appOnlyScope() });
      }
      return await this.deps.identity.authorizeUrl({
        app: credentials,
        redirectUri: this.deps.redirectUri,
        scopes: delegatedScopes(connection.value.protocols, this.deps.mailResource),
        state,
        codeChallenge: pkce.challenge,
        loginHint: expectedMailbox,
      });
    } catch (error) {
      throw fromMicrosoft(classifyMicrosoftError(error, 'authorize', { redirectUri: this.deps.redirectUri }));
    }
  }

  /** The single use of a state: read, then delete under its ETag, so two callbacks cannot both win. */
  private async consumeState(state: string | undefined): Promise<AuthRequestRecord> {
    const expired = () =>
      new BrokerError('SIGN_IN_EXPIRED', 'This sign-in was already completed, took longer than 10 minutes, or did not start here.', {
        fix: 'Open the Authorize link again and finish signing in within 10 minutes.',
      });
    if (!state || state.length > 512) {
      throw new BrokerError('SIGN_IN_INCOMPLETE', 'The answer from Microsoft did not include the sign-in state.', {
        fix: 'Open the Authorize link again instead of bookmarking or reloading this page.',
      });
    }
    const found = await this.deps.tables.authRequests.get(hashState(state), '');
    if (!found) throw expired();
    if (!(await this.deps.tables.authRequests.delete(found.value.stateHash, '', found.etag))) throw expired();
    if (found.value.expiresAt <= this.deps.clock.now().toISOString()) throw expired();
    return found.value;
  }

  private appOnlyScope(): string {
    return `${this.deps.mailAppResource}/.default`;
  }

  async callback(query: CallbackQuery): Promise<Connected> {
    const request = await this.consumeState(query.state);
    const operation = request.kind === 'admin_consent' ? 'admin_consent' : 'authorize';
    if (query.error) throw fromMicrosoft(classifyRedirectError({ error: query.error, error_description: query.error_description, error_subcode: query.error_subcode }, operation, { redirectUri: this.deps.redirectUri }));
    if (request.kind === 'admin_consent') return this.adminConsented(request, query);
    if (!query.code) {
      throw new BrokerError('SIGN_IN_INCOMPLETE', 'Microsoft sent neither a code nor an error.', { fix: 'Open the Authorize link again.' });
    }
    const connection = await this.deps.tables.connections.get(request.connectionId, '');
    if (!connection) throw new BrokerError('LINK_NOT_FOUND', 'The mailbox connection behind this link no longer exists.', { fix: 'Ask your provider for a new Authorize link.' });
    const app = await this.deps.apps.get(connection.value.appId);

    let tokens: DelegatedTokens;
    try {
      tokens = await this.deps.identity.redeemCode({
        app: { clientId: app.clientId, tenant: app.tenant, clientSecret: await this.deps.apps.clientSecret(app) },
        redirectUri: this.deps.redirectUri,
        scopes: delegatedScopes(connection.value.protocols, this.deps.mailResource),
        code: query.code,
        codeVerifier: request.codeVerifier ?? '',
      });
    } catch (error) {
      throw fromMicrosoft(classifyMicrosoftError(error, 'code_exchange', { redirectUri: this.deps.redirectUri }));
    }

    this.checkIdentity(request.expectedMailbox, connection.value, app.tenant, tokens);
    const signedInAs = tokens.identity.usernames[0] ?? tokens.identity.objectId;
    // The new refresh token is stored before anything points at it being there.
    await this.deps.secrets.set(secretNames.connectionRefreshToken(connection.value.id), tokens.refreshToken, {
      contentType: 'refresh-token',
      tags: { connectionId: connection.value.id },
    });
    const reauthorized = connection.value.boundObjectId !== null;
    await this.markConnected(connection.value.id, tokens);
    if (connection.value.status === 'needs_reauth') void this.deps.events?.reconnected(connection.value);
    if (request.linkId) await this.completeLink(request.linkId);
    return { mailbox: connection.value.mailbox, signedInAs, reauthorized };
  }

  /**
   * The customer's admin granted the app's application permissions in their directory
   * (`admin_consent=True&tenant=…`); from now on tokens come from client credentials there.
   */
  private async adminConsented(request: AuthRequestRecord, query: CallbackQuery): Promise<Connected> {
    const tenant = query.tenant?.toLowerCase();
    if (query.admin_consent?.toLowerCase() !== 'true' || !tenant || !GUID.test(tenant)) {
      throw new BrokerError('SIGN_IN_INCOMPLETE', 'Microsoft did not confirm the admin consent.', { fix: 'Open the link again and select Accept as an administrator of the organisation.' });
    }
    const connection = await this.deps.tables.connections.get(request.connectionId, '');
    if (!connection) throw new BrokerError('LINK_NOT_FOUND', 'The mailbox connection behind this link no longer exists.', { fix: 'Ask your provider for a new Authorize link.' });
    const app = await this.deps.apps.get(connection.value.appId);
    if (GUID.test(app.tenant) && app.tenant !== tenant) {
      throw new BrokerError('WRONG_ACCOUNT', `The consent came from directory ${tenant}, but this app belongs to directory ${app.tenant}.`, {
        fix: 'Sign in as an administrator of the directory the app is registered in.',
      });
    }
    if (connection.value.customerTenantId !== null && connection.value.customerTenantId !== tenant) {
      throw new BrokerError('DIFFERENT_PERSON', `${connection.value.mailbox} was connected for directory ${connection.value.customerTenantId}, not ${tenant}.`, {
        fix: 'An administrator of the original directory must grant the consent, or your provider recreates the connection.',
      });
    }
    await this.update(connection.value.id, (current, now) => ({
      ...current,
      status: 'connected',
      statusReason: null,
      connectedAt: now,
      customerTenantId: tenant,
      accessTokenCipher: null,
      accessTokenExpiresAt: null,
      updatedAt: now,
    }));
    if (request.linkId) await this.completeLink(request.linkId);
    return { mailbox: connection.value.mailbox, signedInAs: `an administrator of directory ${tenant}`, reauthorized: false, adminConsent: { tenantId: tenant, clientId: app.clientId } };
  }

  private checkIdentity(expected: string, connection: ConnectionRecord, appTenant: string, tokens: DelegatedTokens): void {
    const { identity } = tokens;
    const signedInAs = identity.usernames[0] ?? 'an account without a user name';
    if (!identity.usernames.some((name) => sameAddress(name, expected))) {
      throw new BrokerError('WRONG_ACCOUNT', `You signed in as ${signedInAs} but this link connects ${expected}.`, {
        fix: `Open the link in a private window, or sign out of ${signedInAs} first, then sign in as ${expected}.`,
      });
    }
    const singleTenant = appTenant !== 'organizations' && appTenant !== 'common';
    if (singleTenant && !sameAddress(identity.tenantId, appTenant)) {
      throw new BrokerError('WRONG_ACCOUNT', `${signedInAs} belongs to directory ${identity.tenantId}, but this app only accepts directory ${appTenant}.`, {
        fix: 'Sign in with an account of the directory the app is registered in, or ask your provider to make the app multi-tenant.',
      });
    }
    if (connection.boundObjectId !== null && (connection.boundObjectId !== identity.objectId || connection.boundTenantId !== identity.tenantId)) {
      throw new BrokerError('DIFFERENT_PERSON', `${expected} was connected by a different person than the one who just signed in.`, {
        fix: 'The person who first connected this mailbox must re-authorize it, or your provider deletes and recreates the connection.',
      });
    }
  }

  private markConnected(connectionId: string, tokens: DelegatedTokens): Promise<void> {
    return this.update(connectionId, (current, now) => ({
      ...current,
      status: 'connected',
      statusReason: null,
      connectedAt: now,
      lastRefreshAt: now,
      refreshTokenUpdatedAt: now,
      boundObjectId: tokens.identity.objectId,
      boundTenantId: tokens.identity.tenantId,
      // A token cached for the previous grant must not outlive it.
      accessTokenCipher: null,
      accessTokenExpiresAt: null,
      retryNotBefore: null,
      updatedAt: now,
    }));
  }

  /** Conditional on the row's ETag, re-read on conflict: a concurrent writer's fields survive. */
  private async update(connectionId: string, change: (current: ConnectionRecord, now: string) => ConnectionRecord): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const current = await this.deps.tables.connections.get(connectionId, '');
      if (!current) return;
      try {
        await this.deps.tables.connections.replace(change(current.value, this.deps.clock.now().toISOString()), current.etag);
        return;
      } catch (error) {
        if (!(error instanceof StorageConflictError)) throw error;
      }
    }
    throw new BrokerError('CONFLICT', 'The connection kept changing while it was being saved; open the link again.');
  }

  private async completeLink(linkId: string): Promise<void> {
    const link = await this.deps.tables.links.get(linkId, '');
    if (!link || link.value.completedAt) return;
    await this.deps.tables.links.replace({ ...link.value, completedAt: this.deps.clock.now().toISOString() }, link.etag).catch((error: unknown) => {
      if (!(error instanceof StorageConflictError)) throw error;
    });
  }
}
