import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { systemClock, type Clock } from '../../../shared/clock.js';
import { startAdminConsent, startAuthorize } from './authorize.js';
import { Directory, type AppRegistration, type SandboxUser, type TenantRef, type UserInput } from './directory.js';
import { Aadsts, EntraError, errorBody, errorContext, faultError, type ErrorContext } from './entra-errors.js';
import { BodyTooLarge, formParameters, json, readBody, redirect, write, type Reply } from './http.js';
import { InteractionStore, type FlowDeps } from './interactions.js';
import { signedOutPage } from './pages.js';
import { findResource } from './scopes.js';
import { submitConsent, submitSignIn } from './sign-in.js';
import { handleTokenRequest, type TokenDeps } from './token-endpoint.js';
import { createTokenSigner } from './tokens.js';

/**
 * A local identity provider speaking Entra ID v2's wire format, for `npm start` and for tests
 * that run the real msal-node against it. Metadata, keys and tokens are served over HTTPS
 * (msal refuses http authorities); the pages a browser sees are on http://localhost, which
 * msal accepts as `authorization_endpoint`, so a newcomer meets no certificate warning.
 */

export type { AppRegistration, SandboxUser, UserInput } from './directory.js';

export interface SandboxIdentityProviderOptions {
  /** Certificate for `localhost` that clients trust (see infra/local/tls.ts). */
  tls: { certPem: string; keyPem: string };
  clock?: Clock;
  /** 0 or absent: a free port. */
  httpsPort?: number;
  httpPort?: number;
  /** Fixed access token lifetime; by default a random 60–90 minutes, as Entra does. */
  accessTokenLifetimeSeconds?: number;
  /** Authorization code lifetime (Entra: about 10 minutes). */
  codeLifetimeSeconds?: number;
}

export type SandboxEndpoint = 'openid-configuration' | 'keys' | 'token' | 'authorize' | 'adminconsent' | 'login' | 'consent' | 'logout' | 'unknown';

export interface SandboxRequest {
  endpoint: SandboxEndpoint;
  method: string;
  /** The tenant path segment as sent. */
  tenant?: string;
  grantType?: string;
  status: number;
  aadsts?: number;
}

export interface TokenFault {
  /** Which endpoint's next request it hits: the token endpoint unless said otherwise. */
  endpoint?: 'token' | 'openid-configuration';
  /** Without a status or a broken answer the request is answered normally, after `delayMs`. */
  status?: 429 | 500 | 503;
  retryAfterSeconds?: number;
  /** A slow identity provider: the answer comes this much later. */
  delayMs?: number;
  /**
   * `reset`: the connection is dropped without an answer. `truncated-json`: 200 with a JSON
   * body cut off mid-way, as a proxy that lost the upstream connection can send.
   */
  broken?: 'reset' | 'truncated-json';
  /** A refusal in Entra's own shape, for one the broker may not know (`new EntraError(50059, 'invalid_request', …)`). */
  refuse?: EntraError;
}

export interface SandboxIdentityProvider {
  /** `https://localhost:<port>`: the value for BROKER_AUTHORITY_HOST. */
  authorityHost: string;
  /** `localhost:<port>`: for msal's `knownAuthorities`, so it never asks login.microsoftonline.com. */
  knownAuthority: string;
  /** `http://localhost:<port>`: where the sign-in and consent pages are. */
  signInHost: string;
  registerApp(app: AppRegistration): void;
  addSecret(clientId: string, secret: string, expiresOn: Date): void;
  rotateSecret(clientId: string, secret: string, expiresOn: Date): void;
  addUser(user: UserInput): SandboxUser;
  /** Grants application permissions on resources (`https://outlook.office365.com`) without the pages. */
  grantAdminConsent(tenantId: string, clientId: string, resources: readonly string[]): void;
  /** The user's next refresh fails with invalid_grant AADSTS50173. */
  revokeRefreshTokens(upn: string): void;
  /** The user's next refresh fails with invalid_grant AADSTS700082. */
  expireRefreshTokens(upn: string): void;
  /** Every request so far; never a secret, code or token. */
  requests(): readonly SandboxRequest[];
  clearRequests(): void;
  /** The next `count` requests to the fault's endpoint (the token endpoint by default) fail with `fault`. */
  failNext(count: number, fault: TokenFault): void;
  close(): Promise<void>;
}

interface Route {
  endpoint: SandboxEndpoint;
  method: 'GET' | 'POST';
  handle(segment: string, url: URL, req: IncomingMessage, context: ErrorContext, record: SandboxRequest): Promise<Reply>;
}

const DEFAULT_CODE_LIFETIME_SECONDS = 600;

export async function startSandboxIdentityProvider(options: SandboxIdentityProviderOptions): Promise<SandboxIdentityProvider> {
  const clock = options.clock ?? systemClock;
  const directory = new Directory(clock);
  const signer = await createTokenSigner();
  const flows: FlowDeps = { directory, clock, interactions: new InteractionStore(clock) };
  const log: SandboxRequest[] = [];
  const faults: TokenFault[] = [];
  const hosts = { authority: '', signIn: '' };
  /** The first queued fault for this endpoint, taken off the queue; faults for the others stay. */
  const takeFault = (endpoint: NonNullable<TokenFault['endpoint']>): TokenFault | undefined => {
    const index = faults.findIndex((fault) => (fault.endpoint ?? 'token') === endpoint);
    return index < 0 ? undefined : faults.splice(index, 1)[0];
  };
  /** What a fault answers instead of the endpoint, or nothing when the endpoint answers (after any delay). */
  const faultReply = async (endpoint: NonNullable<TokenFault['endpoint']>, context: ErrorContext): Promise<Reply | null> => {
    const fault = takeFault(endpoint);
    if (fault?.delayMs) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
    if (fault?.broken === 'reset') return { status: 0, headers: {}, body: '', reset: true };
    if (fault?.broken === 'truncated-json') {
      const cut = endpoint === 'token' ? '{"token_type":"Bearer","scope":"https://outlook.office.com/SMTP.Send","expires_in":3599,"access_tok' : `{"token_endpoint":"${hosts.authority}/organizations/oauth2/v2.0/tok`;
      return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: cut };
    }
    const failure = fault?.refuse ?? (fault?.status ? faultError(fault.status) : undefined);
    if (!fault || !failure) return null;
    const headers: Record<string, string> = fault.retryAfterSeconds === undefined ? {} : { 'retry-after': String(fault.retryAfterSeconds) };
    return { ...json(failure.status, errorBody(failure, context), headers), aadsts: failure.code };
  };

  const tokenDeps = (): TokenDeps => ({
    directory,
    clock,
    signer,
    authorityHost: hosts.authority,
    codeLifetimeSeconds: options.codeLifetimeSeconds ?? DEFAULT_CODE_LIFETIME_SECONDS,
    ...(options.accessTokenLifetimeSeconds === undefined ? {} : { accessTokenLifetimeSeconds: options.accessTokenLifetimeSeconds }),
  });

  const metadata = (tenant: TenantRef, segment: string) => {
    const path = tenant.kind === 'tenant' ? tenant.tid : segment.toLowerCase();
    return {
      token_endpoint: `${hosts.authority}/${path}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
      jwks_uri: `${hosts.authority}/${path}/discovery/v2.0/keys`,
      response_modes_supported: ['query', 'fragment'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      // Like Entra, the shared endpoints publish a placeholder issuer; each token names its tenant.
      issuer: `${hosts.authority}/${tenant.kind === 'tenant' ? tenant.tid : '{tenantid}'}/v2.0`,
      request_uri_parameter_supported: false,
      authorization_endpoint: `${hosts.signIn}/${path}/oauth2/v2.0/authorize`,
      end_session_endpoint: `${hosts.signIn}/${path}/oauth2/v2.0/logout`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nonce', 'preferred_username', 'name', 'tid', 'ver', 'oid', 'email'],
      code_challenge_methods_supported: ['S256'],
    };
  };

  const apiRoutes: Record<string, Route> = {
    'v2.0/.well-known/openid-configuration': {
      endpoint: 'openid-configuration',
      method: 'GET',
      handle: async (segment, _url, _req, context) =>
        (await faultReply('openid-configuration', context)) ?? json(200, metadata(directory.resolveTenant(segment), segment)),
    },
    'discovery/v2.0/keys': {
      endpoint: 'keys',
      method: 'GET',
      handle: async (segment) => {
        directory.resolveTenant(segment);
        return json(200, signer.jwks());
      },
    },
    'oauth2/v2.0/token': {
      endpoint: 'token',
      method: 'POST',
      handle: async (segment, _url, req, context, record) => {
        const params = formParameters(req, await readBody(req));
        record.grantType = params.get('grant_type') ?? undefined;
        return (await faultReply('token', context)) ?? handleTokenRequest(tokenDeps(), segment, req, params, context);
      },
    },
  };
  // Links built by hand from the authority host (an admin consent link, say) land on the pages.
  const toPages = (endpoint: SandboxEndpoint): Route => ({ endpoint, method: 'GET', handle: async (_s, url) => redirect(`${hosts.signIn}${url.pathname}${url.search}`) });
  apiRoutes['oauth2/v2.0/authorize'] = toPages('authorize');
  apiRoutes['v2.0/adminconsent'] = toPages('adminconsent');
  apiRoutes['oauth2/v2.0/logout'] = toPages('logout');

  const pageRoutes: Record<string, Route> = {
    'oauth2/v2.0/authorize': { endpoint: 'authorize', method: 'GET', handle: async (segment, url, _r, context) => startAuthorize(flows, segment, url.searchParams, context) },
    'v2.0/adminconsent': { endpoint: 'adminconsent', method: 'GET', handle: async (segment, url, _r, context) => startAdminConsent(flows, segment, url.searchParams, context) },
    login: { endpoint: 'login', method: 'POST', handle: async (segment, _u, req, context) => submitSignIn(flows, segment, formParameters(req, await readBody(req)), context) },
    consent: { endpoint: 'consent', method: 'POST', handle: async (segment, _u, req, context) => submitConsent(flows, segment, formParameters(req, await readBody(req)), context) },
    'oauth2/v2.0/logout': { endpoint: 'logout', method: 'GET', handle: async () => signedOutPage() },
  };

  const handler = (routes: Record<string, Route>) => async (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://localhost');
    const [segment, ...rest] = url.pathname.split('/').filter((part) => part !== '');
    const route = segment === undefined ? undefined : routes[rest.join('/')];
    const record: SandboxRequest = { endpoint: route?.endpoint ?? 'unknown', method, status: 0, ...(segment && route ? { tenant: segment } : {}) };
    log.push(record);
    const context = errorContext(clock.now(), url.searchParams.get('client-request-id') ?? headerValue(req, 'client-request-id'));
    let reply: Reply;
    try {
      if (!route || segment === undefined) {
        reply = json(404, errorBody(new EntraError(0, 'invalid_request', `The sandbox identity provider has no endpoint at '${url.pathname}'.`), context));
      } else if (method !== route.method) {
        const failure = Aadsts.methodNotAllowed(route.method, method);
        reply = { ...json(405, errorBody(failure, context), { allow: route.method }), aadsts: failure.code };
      } else {
        reply = await route.handle(segment, url, req, context, record);
      }
    } catch (error) {
      if (error instanceof EntraError) reply = { ...json(error.status, errorBody(error, context)), aadsts: error.code };
      else if (error instanceof BodyTooLarge) reply = json(413, errorBody(new EntraError(0, 'invalid_request', 'The request body is too large.'), context));
      else reply = json(500, errorBody(new EntraError(50000, 'server_error', `The sandbox failed: ${String(error)}`), context));
    }
    record.status = reply.status;
    if (reply.aadsts) record.aadsts = reply.aadsts;
    if (reply.reset) {
      req.socket.destroy();
      return;
    }
    write(res, reply);
  };

  const serve = <T extends Server>(server: T, routes: Record<string, Route>): T => {
    const handle = handler(routes);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(error));
      });
    });
    return server;
  };
  const api = serve(createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem }), apiRoutes);
  const pages = serve(createHttpServer(), pageRoutes);
  const [apiPort, pagesPort] = await Promise.all([listen(api, options.httpsPort ?? 0), listen(pages, options.httpPort ?? 0)]).catch(async (error: unknown) => {
    await Promise.all([stop(api), stop(pages)]);
    throw error;
  });
  hosts.authority = `https://localhost:${apiPort}`;
  hosts.signIn = `http://localhost:${pagesPort}`;

  return {
    authorityHost: hosts.authority,
    knownAuthority: `localhost:${apiPort}`,
    signInHost: hosts.signIn,
    registerApp: (app) => directory.registerApp(app),
    addSecret: (clientId, secret, expiresOn) => directory.addSecret(clientId, secret, expiresOn),
    rotateSecret: (clientId, secret, expiresOn) => directory.rotateSecret(clientId, secret, expiresOn),
    addUser: (user) => directory.addUser(user),
    grantAdminConsent(tenantId, clientId, resources) {
      directory.resolveTenant(tenantId);
      const ids = resources.map((id) => {
        const resource = findResource(id);
        if (!resource) throw new TypeError(`unknown resource ${id}`);
        return resource.id;
      });
      directory.addAdminConsent(tenantId, clientId, ids);
    },
    revokeRefreshTokens: (upn) => directory.revokeRefreshTokens(upn),
    expireRefreshTokens: (upn) => directory.expireRefreshTokens(upn),
    requests: () => log.map((entry) => ({ ...entry })),
    clearRequests: () => void log.splice(0),
    failNext(count, fault) {
      for (let i = 0; i < count; i += 1) faults.push({ ...fault });
    },
    close: async () => {
      await Promise.all([stop(api), stop(pages)]);
    },
  };
}

function headerValue(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  return typeof value === 'string' ? value : null;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function stop(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
