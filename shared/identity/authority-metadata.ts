import { z } from 'zod';
import { TtlCache } from '../ttl-cache.js';

/*
 * The OpenID configuration of each tenant authority, fetched once a day per process instead
 * of once per MSAL call. msal-node keeps discovered metadata only inside one
 * ConfidentialClientApplication, and the broker builds a new one per call (one token cache per
 * mailbox), so without this every refresh would GET the document again. MSAL takes the
 * document back as `auth.authorityMetadata`.
 *
 * A document that cannot be fetched or does not pass the checks below is not an error here:
 * the caller then lets MSAL discover the authority itself, as it did before this cache, and
 * the failure is remembered for a minute so an outage does not double the calls to the
 * identity provider.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/msal-client-application-configuration
 */

export interface AuthorityDocument {
  /** The document as the authority sent it, for msal's `authorityMetadata`. */
  json: string;
  /** Origin of `authorization_endpoint`: where a browser is sent (admin consent links). */
  authorizationOrigin: string;
}

export interface AuthorityMetadataOptions {
  /** `https://login.microsoftonline.com`, or a sovereign cloud's or a local identity provider's host. */
  authorityHost: string;
  timeoutMs: number;
  now?: () => number;
  log?: (message: string) => void;
}

/** What MSAL requires of a discovery document (`isOpenIdConfigResponse`), as absolute URLs. */
const discoveryDocument = z.object({
  authorization_endpoint: z.url(),
  token_endpoint: z.url({ protocol: /^https$/ }),
  issuer: z.url({ protocol: /^https$/ }),
  jwks_uri: z.url(),
});

export class AuthorityMetadataCache {
  private readonly documents: TtlCache<string, AuthorityDocument | null>;
  private readonly authorityHost: string;

  constructor(private readonly options: AuthorityMetadataOptions) {
    this.authorityHost = new URL(options.authorityHost).host.toLowerCase();
    const now = options.now ?? Date.now;
    this.documents = new TtlCache({
      // A day: Entra's endpoints for a tenant do not move (its signing keys are not part of
      // this). A failed fetch is tried again after a minute.
      ttlMs: (document) => (document ? 24 * 3_600_000 : 60_000),
      // Tenants remembered at once: app-only connections add one per customer directory.
      maxEntries: 1_000,
      clock: { now: () => new Date(now()) },
    });
  }

  /**
   * The tenant's document, or `null` when MSAL should discover the authority by itself.
   * `retryFailure`: a remembered failure is tried again at once, for callers with no fallback
   * (an admin consent link needs the document, and a person is waiting for it).
   */
  async get(tenant: string, options: { retryFailure?: boolean } = {}): Promise<AuthorityDocument | null> {
    const key = tenant.toLowerCase();
    const document = await this.documents.get(key, () => this.fetch(key));
    if (document !== null || !options.retryFailure) return document;
    this.documents.delete(key);
    return this.documents.get(key, () => this.fetch(key));
  }

  private async fetch(tenant: string): Promise<AuthorityDocument | null> {
    // The URL MSAL itself asks for an authority of the default (Entra) type.
    const url = `${this.options.authorityHost}/${encodeURIComponent(tenant)}/v2.0/.well-known/openid-configuration`;
    let text: string;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(this.options.timeoutMs) });
      text = await response.text();
      if (!response.ok) {
        this.options.log?.(`the authority's metadata for ${tenant} answered ${response.status}; MSAL discovers it itself for now`);
        return null;
      }
    } catch (error) {
      this.options.log?.(`the authority's metadata for ${tenant} could not be fetched (${error instanceof Error ? error.name : 'error'}); MSAL discovers it itself for now`);
      return null;
    }
    let parsed: z.infer<typeof discoveryDocument>;
    try {
      parsed = discoveryDocument.parse(JSON.parse(text));
    } catch {
      this.options.log?.(`the authority's metadata for ${tenant} is not an OpenID configuration MSAL can use; MSAL discovers it itself`);
      return null;
    }
    // MSAL checks a fetched issuer against the authority (same https host, or a known
    // authority, which for the broker is that host); a document passed in as configuration is
    // not checked, so the same rule is applied here before MSAL is given it.
    if (new URL(parsed.issuer).host.toLowerCase() !== this.authorityHost) {
      this.options.log?.(`the authority's metadata for ${tenant} names an issuer on another host; MSAL discovers it itself`);
      return null;
    }
    return { json: text, authorizationOrigin: new URL(parsed.authorization_endpoint).origin };
  }
}
