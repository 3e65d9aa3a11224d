import type { AppRecord, TenantRef } from './directory.js';
import { Aadsts, EntraError, type ErrorContext } from './entra-errors.js';
import type { Reply } from './http.js';
import { errorPageFor, redirectError, type FlowDeps } from './interactions.js';
import { signInPage } from './pages.js';
import { parseAdminConsentScope, parseDelegatedScopes } from './scopes.js';

/**
 * The two browser entry points: `/{tenant}/oauth2/v2.0/authorize` and `/{tenant}/v2.0/adminconsent`.
 * Until client and redirect URI are known good, failures are shown as an error page: Entra
 * never redirects to a URI it has not matched exactly against the registration (RFC 9700 §4.1).
 * After that, failures go back to the app as error redirects.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
 * @see https://learn.microsoft.com/entra/identity-platform/v2-admin-consent
 */

interface Client {
  tenant: TenantRef;
  app: AppRecord;
  redirectUri: string;
}

export function tenantLabel(tenant: TenantRef, segment: string): string {
  return tenant.kind === 'tenant' ? tenant.tid : segment;
}

/** A single-tenant app exists only in its home tenant, and Entra refuses it the shared endpoints. */
export function assertAppServesTenant(app: AppRecord, tenant: TenantRef): void {
  if (app.signInAudience !== 'single') return;
  if (tenant.kind !== 'tenant') throw Aadsts.notMultiTenant(app.clientId, app.displayName);
  if (tenant.tid !== app.homeTenantId) throw Aadsts.appNotFound(app.clientId, tenant.tid);
}

function validateClient(deps: FlowDeps, segment: string, query: URLSearchParams): Client {
  const tenant = deps.directory.resolveTenant(segment);
  const clientId = query.get('client_id');
  if (!clientId) throw Aadsts.missingParameter('client_id');
  const app = deps.directory.app(clientId);
  if (!app) throw Aadsts.appNotFound(clientId, tenantLabel(tenant, segment));
  assertAppServesTenant(app, tenant);
  const redirectUri = query.get('redirect_uri');
  if (!redirectUri) throw Aadsts.missingParameter('redirect_uri');
  // Exact string comparison, as Entra does for web redirect URIs: no normalisation, no prefixes.
  if (!app.redirectUris.includes(redirectUri)) throw Aadsts.redirectUriNotRegistered(redirectUri, app.clientId);
  return { tenant, app, redirectUri };
}

function pageErrors<T>(context: ErrorContext, action: () => T): T | Reply {
  try {
    return action();
  } catch (error) {
    if (error instanceof EntraError) return errorPageFor(error, context);
    throw error;
  }
}

const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

export function startAuthorize(deps: FlowDeps, segment: string, query: URLSearchParams, context: ErrorContext): Reply {
  const client = pageErrors(context, () => validateClient(deps, segment, query));
  if ('status' in client) return client;
  const { tenant, app, redirectUri } = client;
  const state = query.get('state') ?? undefined;
  const mode = query.get('response_mode') ?? 'query';
  if (mode !== 'query' && mode !== 'fragment') {
    // Entra also knows form_post; the sandbox posts nothing, so say so instead of pretending.
    const unsupported = new EntraError(0, 'invalid_request', `The sandbox identity provider supports response_mode 'query' and 'fragment' only, not '${mode}'.`);
    return errorPageFor(unsupported, context);
  }
  try {
    const responseType = query.get('response_type');
    if (!responseType) throw Aadsts.missingParameter('response_type');
    if (responseType !== 'code') throw Aadsts.unsupportedResponseType(responseType);
    const scopes = parseDelegatedScopes(query.get('scope'), tenantLabel(tenant, segment));
    // Entra lets confidential clients skip PKCE; the broker never does, so the sandbox insists.
    const codeChallenge = query.get('code_challenge');
    if (!codeChallenge) throw Aadsts.missingParameter('code_challenge');
    if (query.get('code_challenge_method') !== 'S256') throw Aadsts.invalidCodeChallengeMethod();
    if (!S256_CHALLENGE.test(codeChallenge)) throw Aadsts.invalidCodeChallengeSize();
    const prompt = query.get('prompt');
    // The sandbox keeps no browser session, so a silent request can never succeed.
    if (prompt === 'none') throw Aadsts.loginRequired();
    const nonce = query.get('nonce') ?? undefined;
    const loginHint = query.get('login_hint') ?? '';
    const ctx = deps.interactions.create({
      kind: 'authorize',
      segment,
      tenant,
      app,
      redirectUri,
      ...(state === undefined ? {} : { state }),
      loginHint,
      scopes,
      codeChallenge,
      ...(nonce === undefined ? {} : { nonce }),
      clientInfo: query.get('client_info') === '1',
      responseMode: mode,
      forceConsent: prompt === 'consent',
    });
    return signInPage({ ctx, action: `/${segment}/login`, appName: app.displayName, loginHint, admin: false, redirectOrigin: new URL(redirectUri).origin });
  } catch (error) {
    if (error instanceof EntraError) return redirectError({ redirectUri, ...(state === undefined ? {} : { state }), responseMode: mode }, error, context);
    throw error;
  }
}

export function startAdminConsent(deps: FlowDeps, segment: string, query: URLSearchParams, context: ErrorContext): Reply {
  const client = pageErrors(context, () => validateClient(deps, segment, query));
  if ('status' in client) return client;
  const { tenant, app, redirectUri } = client;
  const state = query.get('state') ?? undefined;
  try {
    const resources = parseAdminConsentScope(query.get('scope'), tenantLabel(tenant, segment));
    const ctx = deps.interactions.create({
      kind: 'adminconsent',
      segment,
      tenant,
      app,
      redirectUri,
      ...(state === undefined ? {} : { state }),
      loginHint: query.get('login_hint') ?? '',
      resources,
      scope: query.get('scope')!,
    });
    return signInPage({ ctx, action: `/${segment}/login`, appName: app.displayName, loginHint: query.get('login_hint') ?? '', admin: true, redirectOrigin: new URL(redirectUri).origin });
  } catch (error) {
    if (error instanceof EntraError) return redirectError({ redirectUri, ...(state === undefined ? {} : { state }) }, error, context);
    throw error;
  }
}
