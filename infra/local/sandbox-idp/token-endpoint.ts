import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Clock } from '../../../shared/clock.js';
import { assertAppServesTenant, tenantLabel } from './authorize.js';
import { REFRESH_INACTIVITY_DAYS, type AppRecord, type Directory, type SandboxUser, type TenantRef } from './directory.js';
import { Aadsts, EntraError, errorBody, type ErrorContext } from './entra-errors.js';
import { basicCredentials, json, type Reply } from './http.js';
import { findResource, GRAPH_RESOURCE, parseAppOnlyScope, parseDelegatedScopes, qualify, singleResource, type DelegatedScopes } from './scopes.js';
import {
  accessTokenLifetime,
  appAccessTokenClaims,
  clientInfo,
  delegatedAccessTokenClaims,
  idTokenClaims,
  type Issuance,
  type TokenSigner,
} from './tokens.js';

/**
 * `POST /{tenant}/oauth2/v2.0/token`: client authentication, then the authorization code,
 * refresh token and client credentials grants, each refusing what Entra refuses with the
 * AADSTS code Entra uses.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#redeem-a-code-for-an-access-token
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
 */

export interface TokenDeps {
  directory: Directory;
  clock: Clock;
  signer: TokenSigner;
  authorityHost: string;
  accessTokenLifetimeSeconds?: number;
  codeLifetimeSeconds: number;
}

interface Request {
  tenant: TenantRef;
  label: string;
  app: AppRecord;
  params: URLSearchParams;
}

export async function handleTokenRequest(
  deps: TokenDeps,
  segment: string,
  req: IncomingMessage,
  params: URLSearchParams,
  context: ErrorContext,
): Promise<Reply> {
  try {
    const tenant = deps.directory.resolveTenant(segment);
    const label = tenantLabel(tenant, segment);
    const grantType = params.get('grant_type');
    if (!grantType) throw Aadsts.missingParameter('grant_type');
    const app = authenticate(deps, req, params, tenant, label);
    const request: Request = { tenant, label, app, params };
    switch (grantType) {
      case 'authorization_code':
        return json(200, await redeemCode(deps, request));
      case 'refresh_token':
        return json(200, await redeemRefreshToken(deps, request));
      case 'client_credentials':
        return json(200, await clientCredentials(deps, request));
      default:
        throw Aadsts.unsupportedGrantType(grantType);
    }
  } catch (error) {
    if (!(error instanceof EntraError)) throw error;
    return { ...json(error.status, errorBody(error, context)), aadsts: error.code };
  }
}

/** RFC 6749 §2.3.1: a secret in the body or in HTTP Basic, never both. */
function authenticate(deps: TokenDeps, req: IncomingMessage, params: URLSearchParams, tenant: TenantRef, label: string): AppRecord {
  const basic = basicCredentials(req);
  if (basic === 'malformed') throw Aadsts.malformed();
  const bodyClientId = params.get('client_id');
  if (basic && ((bodyClientId !== null && bodyClientId !== basic.clientId) || params.has('client_secret'))) throw Aadsts.malformed();
  const clientId = basic?.clientId ?? bodyClientId;
  if (!clientId) throw Aadsts.missingParameter('client_id');
  const app = deps.directory.app(clientId);
  if (!app) throw Aadsts.appNotFound(clientId, label);
  assertAppServesTenant(app, tenant);
  deps.directory.authenticateClient(app, basic?.secret ?? params.get('client_secret') ?? undefined);
  return app;
}

const PKCE_VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;

async function redeemCode(deps: TokenDeps, { tenant, label, app, params }: Request): Promise<Record<string, unknown>> {
  const code = params.get('code');
  if (!code) throw Aadsts.missingParameter('code');
  const grant = deps.directory.findCode(code);
  if (!grant) throw Aadsts.malformedGrant();
  if (grant.clientId !== app.clientId) throw Aadsts.grantInvalid();
  if (grant.redeemed) throw Aadsts.codeRedeemed();
  deps.directory.consumeCode(code);
  if (deps.clock.now().getTime() - grant.issuedAt.getTime() > deps.codeLifetimeSeconds * 1000) throw Aadsts.codeExpired();
  if (tenant.kind === 'tenant' && tenant.tid !== grant.user.tid) throw Aadsts.codeWrongTenant();
  const redirectUri = params.get('redirect_uri');
  if (!redirectUri) throw Aadsts.missingParameter('redirect_uri');
  if (!app.redirectUris.includes(redirectUri)) throw Aadsts.redirectUriNotRegistered(redirectUri, app.clientId);
  if (redirectUri !== grant.redirectUri) throw Aadsts.redirectUriDiffers(redirectUri, grant.redirectUri);
  const verifier = params.get('code_verifier');
  // RFC 7636 §4.6: BASE64URL(SHA256(verifier)) must equal the challenge sent to /authorize.
  if (!verifier || !PKCE_VERIFIER.test(verifier) || createHash('sha256').update(verifier).digest('base64url') !== grant.codeChallenge) {
    throw Aadsts.pkceMismatch();
  }
  const raw = params.get('scope') ?? grant.scopes.join(' ');
  const requested = parseDelegatedScopes(raw, label);
  return issueDelegated(deps, app, grant.user, requested, raw, {
    refreshToken: grant.scopes.includes('offline_access'),
    idToken: grant.scopes.includes('openid'),
    ...(grant.nonce === undefined ? {} : { nonce: grant.nonce }),
    clientInfo: params.get('client_info') === '1',
  });
}

async function redeemRefreshToken(deps: TokenDeps, { tenant, label, app, params }: Request): Promise<Record<string, unknown>> {
  const token = params.get('refresh_token');
  if (!token) throw Aadsts.missingParameter('refresh_token');
  const grant = deps.directory.refreshGrant(token);
  if (!grant) throw Aadsts.malformedGrant();
  if (grant.clientId !== app.clientId || (tenant.kind === 'tenant' && tenant.tid !== grant.user.tid)) throw Aadsts.grantInvalid();
  const status = deps.directory.refreshStatus(grant);
  if (!status.ok && status.reason === 'revoked') throw Aadsts.grantRevoked(grant.issuedAt, status.validFrom);
  if (!status.ok) throw Aadsts.refreshTokenExpired(grant.issuedAt, REFRESH_INACTIVITY_DAYS);
  const raw = params.get('scope');
  if (!raw) throw Aadsts.missingParameter('scope');
  const requested = parseDelegatedScopes(raw, label);
  // Redemption rotates: a new refresh token every time, while the old one stays valid.
  return issueDelegated(deps, app, grant.user, requested, raw, {
    refreshToken: true,
    idToken: requested.oidc.has('openid'),
    clientInfo: params.get('client_info') === '1',
  });
}

async function issueDelegated(
  deps: TokenDeps,
  app: AppRecord,
  user: SandboxUser,
  requested: DelegatedScopes,
  raw: string,
  include: { refreshToken: boolean; idToken: boolean; nonce?: string; clientInfo: boolean },
): Promise<Record<string, unknown>> {
  const consented = deps.directory.userConsent(user, app.clientId);
  for (const [resource, permissions] of requested.permissions) {
    for (const permission of permissions) if (!consented.has(qualify(resource, permission))) throw Aadsts.consentMissing(app.clientId, app.displayName);
  }
  const resourceId = singleResource(requested, raw) ?? GRAPH_RESOURCE;
  const resource = findResource(resourceId)!;
  // The token carries everything the user consented to on that resource, not only what was asked.
  const permissions = resource.delegated.filter((permission) => consented.has(qualify(resource.id, permission)));
  const oidcPermissions = resource.id === GRAPH_RESOURCE ? ['openid', 'profile', 'email'].filter((scope) => requested.oidc.has(scope)) : [];
  const lifetime = accessTokenLifetime(deps.accessTokenLifetimeSeconds);
  const at: Issuance = { authorityHost: deps.authorityHost, now: deps.clock.now() };
  const accessToken = await deps.signer.sign(
    delegatedAccessTokenClaims(at, app, user, { resource: resource.id, permissions: [...oidcPermissions, ...permissions], lifetime }),
  );
  const idToken = include.idToken
    ? await deps.signer.sign(idTokenClaims(at, app, user, { ...(include.nonce === undefined ? {} : { nonce: include.nonce }), email: requested.oidc.has('email') }))
    : undefined;
  return {
    token_type: 'Bearer',
    // Resource-qualified, without offline_access, as Entra answers.
    scope: [...oidcPermissions, ...permissions.map((permission) => qualify(resource.id, permission))].join(' '),
    expires_in: lifetime,
    ext_expires_in: lifetime,
    access_token: accessToken,
    ...(include.refreshToken ? { refresh_token: deps.directory.issueRefreshToken(app.clientId, user) } : {}),
    ...(idToken ? { id_token: idToken } : {}),
    ...(include.clientInfo ? { client_info: clientInfo(user) } : {}),
  };
}

async function clientCredentials(deps: TokenDeps, { tenant, app, params }: Request): Promise<Record<string, unknown>> {
  // `common` and `organizations` name no directory to issue an app token in.
  if (tenant.kind !== 'tenant') throw Aadsts.noTenantInformation();
  const resource = parseAppOnlyScope(params.get('scope'), tenant.tid);
  // The home tenant always has the app's service principal; other tenants get one by admin consent.
  const granted = deps.directory.adminConsent(tenant.tid, app.clientId);
  if (!granted && tenant.tid !== app.homeTenantId) throw Aadsts.servicePrincipalMissing(app.clientId, tenant.tid);
  const roles = granted?.has(resource.id) ? resource.roles : [];
  const lifetime = accessTokenLifetime(deps.accessTokenLifetimeSeconds);
  const at: Issuance = { authorityHost: deps.authorityHost, now: deps.clock.now() };
  const accessToken = await deps.signer.sign(appAccessTokenClaims(at, app, { tid: tenant.tid, resource: resource.id, roles, lifetime }));
  // Client credentials answers carry neither scope nor refresh token.
  return { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: accessToken };
}
