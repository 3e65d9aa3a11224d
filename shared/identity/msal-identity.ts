import type { AuthenticationResult, ConfidentialClientApplication, Configuration } from '@azure/msal-node';
import { z } from 'zod';
import { AuthorityMetadataCache } from './authority-metadata.js';
import type { TimeLimitedNetworkClient } from './network-client.js';
import type { MailProtocol } from '../storage/records.js';

/*
 * The broker's only use of MSAL. Every operation builds a fresh ConfidentialClientApplication
 * with an empty in-memory cache, so one cache never holds two mailboxes' tokens and the
 * refresh token read back is certainly this connection's. What those short-lived clients
 * would each discover again (the authority's OpenID configuration) is kept across them.
 *
 * msal-node is loaded on first use: a process that only serves cached tokens never needs it.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
 */

type Msal = typeof import('@azure/msal-node');

let msalModule: Promise<{ msal: Msal; network: typeof import('./network-client.js') }> | undefined;

/** msal-node and the network client built on it, imported once; a failed import is retried next time. */
function loadMsal(): Promise<{ msal: Msal; network: typeof import('./network-client.js') }> {
  msalModule ??= Promise.all([import('@azure/msal-node'), import('./network-client.js')]).then(
    ([msal, network]) => ({ msal, network }),
    (error: unknown) => {
      msalModule = undefined;
      throw error;
    },
  );
  return msalModule;
}

export interface AppCredentials {
  clientId: string;
  /** Directory tenant GUID, `organizations` or `common`. */
  tenant: string;
  clientSecret: string;
}

export interface SignedInIdentity {
  /** `preferred_username`, `upn` and `email` as Microsoft sent them, in that order, de-duplicated. */
  usernames: string[];
  objectId: string;
  tenantId: string;
  name: string | null;
}

export interface DelegatedTokens {
  accessToken: string;
  expiresOn: Date;
  scopes: string[];
  refreshToken: string;
  identity: SignedInIdentity;
}

export interface AppOnlyToken {
  accessToken: string;
  expiresOn: Date;
  scopes: string[];
}

export interface IdentityClient {
  authorizeUrl(input: { app: AppCredentials; redirectUri: string; scopes: string[]; state: string; codeChallenge: string; loginHint: string }): Promise<string>;
  redeemCode(input: { app: AppCredentials; redirectUri: string; scopes: string[]; code: string; codeVerifier: string }): Promise<DelegatedTokens>;
  refresh(input: { app: AppCredentials; scopes: string[]; refreshToken: string }): Promise<DelegatedTokens>;
  /** Client credentials in the customer's directory (`tenant` is its GUID), scope `{resource}/.default`. */
  clientCredentials(input: { app: AppCredentials; tenant: string; scope: string }): Promise<AppOnlyToken>;
  /** The admin consent URL a customer's admin opens in a browser. */
  adminConsentUrl(input: { app: AppCredentials; redirectUri: string; state: string; scope: string }): Promise<string>;
}

const DELEGATED_SCOPE: Record<MailProtocol, string> = {
  smtp: 'SMTP.Send',
  imap: 'IMAP.AccessAsUser.All',
  pop: 'POP.AccessAsUser.All',
};

/** `offline_access` plus one mail scope per protocol; without `offline_access` there is no refresh token. */
export function delegatedScopes(protocols: readonly MailProtocol[], mailResource: string): string[] {
  return ['offline_access', ...protocols.map((protocol) => `${mailResource}/${DELEGATED_SCOPE[protocol]}`)];
}

export async function newPkcePair(): Promise<{ verifier: string; challenge: string }> {
  const { msal } = await loadMsal();
  return new msal.CryptoProvider().generatePkceCodes();
}

const serializedCache = z.object({
  RefreshToken: z.record(z.string(), z.object({ secret: z.string() })).default({}),
});

const idClaims = z.object({
  preferred_username: z.string().optional(),
  upn: z.string().optional(),
  email: z.string().optional(),
  name: z.string().optional(),
  oid: z.string().optional(),
  tid: z.string().optional(),
});

export class MissingRefreshTokenError extends Error {
  override readonly name = 'MissingRefreshTokenError';
  constructor() {
    super('Microsoft returned no refresh token (was offline_access granted?)');
  }
}

export interface MsalIdentityOptions {
  authorityHost: string;
  networkTimeoutMs?: number;
  log?: (message: string) => void;
  now?: () => number;
}

export class MsalIdentityClient implements IdentityClient {
  private readonly knownAuthority: string;
  private readonly timeoutMs: number;
  private network: TimeLimitedNetworkClient | undefined;
  private readonly metadata: AuthorityMetadataCache;

  constructor(private readonly options: MsalIdentityOptions) {
    // Naming the host as known stops MSAL from asking login.microsoftonline.com for instance
    // discovery, which sovereign clouds and local identity providers need.
    this.knownAuthority = new URL(options.authorityHost).host;
    this.timeoutMs = options.networkTimeoutMs ?? 15_000;
    this.metadata = new AuthorityMetadataCache({
      authorityHost: options.authorityHost,
      timeoutMs: this.timeoutMs,
      ...(options.now ? { now: options.now } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
  }

  private async client(app: AppCredentials): Promise<{ msal: Msal; client: ConfidentialClientApplication }> {
    const [{ msal, network }, document] = await Promise.all([loadMsal(), this.metadata.get(app.tenant)]);
    this.network ??= new network.TimeLimitedNetworkClient(this.timeoutMs);
    const log = this.options.log;
    const configuration: Configuration = {
      auth: {
        clientId: app.clientId,
        clientSecret: app.clientSecret,
        authority: `${this.options.authorityHost}/${app.tenant}`,
        knownAuthorities: [this.knownAuthority],
        // Without it each new client GETs the document again. Cloud discovery needs no
        // document: the authority's host is in knownAuthorities, which MSAL trusts as it is.
        ...(document ? { authorityMetadata: document.json } : {}),
      },
      system: {
        networkClient: this.network,
        loggerOptions: {
          piiLoggingEnabled: false,
          logLevel: msal.LogLevel.Warning,
          loggerCallback: (_level, message, containsPii) => {
            if (!containsPii) log?.(message);
          },
        },
      },
    };
    return { msal, client: new msal.ConfidentialClientApplication(configuration) };
  }

  async authorizeUrl(input: Parameters<IdentityClient['authorizeUrl']>[0]): Promise<string> {
    const { client } = await this.client(input.app);
    return client.getAuthCodeUrl({
      scopes: input.scopes,
      redirectUri: input.redirectUri,
      state: input.state,
      codeChallenge: input.codeChallenge,
      codeChallengeMethod: 'S256',
      loginHint: input.loginHint,
      responseMode: 'query',
    });
  }

  async redeemCode(input: Parameters<IdentityClient['redeemCode']>[0]): Promise<DelegatedTokens> {
    const { msal, client } = await this.client(input.app);
    const result = await client.acquireTokenByCode({
      code: input.code,
      codeVerifier: input.codeVerifier,
      redirectUri: input.redirectUri,
      scopes: input.scopes,
    });
    return this.tokens(msal, client, result);
  }

  async refresh(input: Parameters<IdentityClient['refresh']>[0]): Promise<DelegatedTokens> {
    const { msal, client } = await this.client(input.app);
    const result = await client.acquireTokenByRefreshToken({ refreshToken: input.refreshToken, scopes: input.scopes, forceCache: true });
    if (!result) throw new MissingRefreshTokenError();
    return this.tokens(msal, client, result);
  }

  async clientCredentials(input: Parameters<IdentityClient['clientCredentials']>[0]): Promise<AppOnlyToken> {
    const { msal, client } = await this.client({ ...input.app, tenant: input.tenant });
    const result = await client.acquireTokenByClientCredential({ scopes: [input.scope], skipCache: true });
    if (!result?.accessToken) {
      throw new msal.ServerError('temporarily_unavailable', result?.correlationId ?? '', 'Microsoft answered without an access token.');
    }
    return { accessToken: result.accessToken, expiresOn: result.expiresOn ?? new Date(0), scopes: result.scopes };
  }

  /**
   * `{authority}/{tenant}/v2.0/adminconsent`. The browser-facing host is the one of the
   * authority's authorization endpoint, which for Microsoft is the authority itself and for
   * the local sandbox is its plain-http sign-in host.
   *
   * @see https://learn.microsoft.com/entra/identity-platform/v2-admin-consent
   */
  async adminConsentUrl(input: Parameters<IdentityClient['adminConsentUrl']>[0]): Promise<string> {
    const document = await this.metadata.get(input.app.tenant, { retryFailure: true });
    if (!document) {
      const { msal } = await loadMsal();
      throw new msal.ServerError('temporarily_unavailable', '', "The authority's metadata could not be read; try again shortly.");
    }
    const url = new URL(`${document.authorizationOrigin}/${encodeURIComponent(input.app.tenant)}/v2.0/adminconsent`);
    url.searchParams.set('client_id', input.app.clientId);
    url.searchParams.set('redirect_uri', input.redirectUri);
    url.searchParams.set('state', input.state);
    url.searchParams.set('scope', input.scope);
    return url.toString();
  }

  /** The refresh token never appears in an AuthenticationResult; it is in the (private, per-call) cache. */
  private tokens(msal: Msal, client: ConfidentialClientApplication, result: AuthenticationResult): DelegatedTokens {
    // msal resolves with an empty token when a 429/5xx body carries no `error` member.
    if (!result.accessToken) {
      throw new msal.ServerError('temporarily_unavailable', result.correlationId, 'Microsoft answered without an access token.');
    }
    const cache = serializedCache.parse(JSON.parse(client.getTokenCache().serialize()));
    const refreshToken = Object.values(cache.RefreshToken)[0]?.secret;
    if (!refreshToken) throw new MissingRefreshTokenError();
    const claims = idClaims.parse(result.idTokenClaims ?? {});
    const usernames = [claims.preferred_username, claims.upn, claims.email, result.account?.username].filter(
      (value, index, all): value is string => typeof value === 'string' && value !== '' && all.indexOf(value) === index,
    );
    return {
      accessToken: result.accessToken,
      // No expiry means we cannot know: treat it as expired so the next call refreshes.
      expiresOn: result.expiresOn ?? new Date(0),
      scopes: result.scopes,
      refreshToken,
      identity: {
        usernames,
        objectId: claims.oid ?? result.account?.localAccountId ?? result.uniqueId,
        tenantId: claims.tid ?? result.account?.tenantId ?? result.tenantId,
        name: claims.name ?? null,
      },
    };
  }
}
