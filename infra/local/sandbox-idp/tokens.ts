import { Buffer } from 'node:buffer';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import type { AppRecord, SandboxUser } from './directory.js';

/**
 * Token minting: RS256 JWTs signed with a key generated at start (published in the JWKS), with
 * the claims Entra puts in v2 id tokens and in the v1-style access tokens Exchange receives.
 * Access tokens carry identities and permissions only, never a secret.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference
 * @see https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
 */

export interface TokenSigner {
  jwks(): { keys: JWK[] };
  sign(claims: Record<string, unknown>): Promise<string>;
}

export async function createTokenSigner(): Promise<TokenSigner> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const published: JWK = { kty: 'RSA', use: 'sig', kid, n: jwk.n!, e: jwk.e! };
  return {
    jwks: () => ({ keys: [{ ...published }] }),
    sign: (claims) => new SignJWT(claims).setProtectedHeader({ typ: 'JWT', alg: 'RS256', kid }).sign(privateKey),
  };
}

export interface Issuance {
  /** `https://localhost:<port>`: issuers are minted on the sandbox's own host, never Microsoft's. */
  authorityHost: string;
  now: Date;
}

const seconds = (date: Date) => Math.floor(date.getTime() / 1000);

export function issuer(authorityHost: string, tid: string): string {
  return `${authorityHost}/${tid}/v2.0`;
}

/** Entra hands out access tokens for a random 60–90 minutes, so nobody can rely on exactly one hour. */
export function accessTokenLifetime(fixedSeconds: number | undefined): number {
  return fixedSeconds ?? randomInt(3600, 5400);
}

export function idTokenClaims(at: Issuance, app: AppRecord, user: SandboxUser, extra: { nonce?: string; email: boolean }): Record<string, unknown> {
  const iat = seconds(at.now);
  return {
    aud: app.clientId,
    iss: issuer(at.authorityHost, user.tid),
    iat,
    nbf: iat,
    exp: iat + 3600,
    ...(extra.email ? { email: user.email } : {}),
    name: user.name,
    ...(extra.nonce ? { nonce: extra.nonce } : {}),
    oid: user.oid,
    preferred_username: user.upn,
    // `sub` is pairwise in Entra: the same user has a different one in every app.
    sub: pairwise(user.oid, app.clientId),
    tid: user.tid,
    uti: randomBytes(16).toString('base64url'),
    ver: '2.0',
  };
}

// Exchange Online receives v1 access tokens, which name the user by `upn` and `unique_name`.
/** The claims every v1 access token for a resource carries, delegated or app-only. */
function accessTokenEnvelope(at: Issuance, app: AppRecord, tid: string, grant: { resource: string; lifetime: number }): Record<string, unknown> {
  const iat = seconds(at.now);
  return {
    aud: grant.resource,
    iss: `${at.authorityHost}/${tid}/`,
    iat,
    nbf: iat,
    exp: iat + grant.lifetime,
    app_displayname: app.displayName,
    appid: app.clientId,
  };
}

export function delegatedAccessTokenClaims(
  at: Issuance,
  app: AppRecord,
  user: SandboxUser,
  grant: { resource: string; permissions: readonly string[]; lifetime: number },
): Record<string, unknown> {
  return {
    ...accessTokenEnvelope(at, app, user.tid, grant),
    idtyp: 'user',
    name: user.name,
    oid: user.oid,
    scp: grant.permissions.join(' '),
    sub: pairwise(user.oid, app.clientId),
    tid: user.tid,
    unique_name: user.upn,
    upn: user.upn,
    uti: randomBytes(16).toString('base64url'),
    ver: '1.0',
  };
}

export function appAccessTokenClaims(
  at: Issuance,
  app: AppRecord,
  grant: { tid: string; resource: string; roles: readonly string[]; lifetime: number },
): Record<string, unknown> {
  const servicePrincipal = servicePrincipalId(grant.tid, app.clientId);
  return {
    ...accessTokenEnvelope(at, app, grant.tid, grant),
    idtyp: 'app',
    oid: servicePrincipal,
    // Entra omits `roles` entirely when nothing was granted; the resource then refuses the token.
    ...(grant.roles.length > 0 ? { roles: [...grant.roles] } : {}),
    sub: servicePrincipal,
    tid: grant.tid,
    uti: randomBytes(16).toString('base64url'),
    ver: '1.0',
  };
}

/** `client_info`: base64url JSON of the user's home object id and tenant, which msal keys accounts by. */
export function clientInfo(user: SandboxUser): string {
  return Buffer.from(JSON.stringify({ uid: user.oid, utid: user.tid }), 'utf8').toString('base64url');
}

function pairwise(oid: string, clientId: string): string {
  return createHash('sha256').update(`${oid}|${clientId}`).digest('base64url').slice(0, 43);
}

/** A stable object id for the app's service principal in a tenant. */
function servicePrincipalId(tid: string, clientId: string): string {
  const hex = createHash('sha256').update(`sp|${tid}|${clientId}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
