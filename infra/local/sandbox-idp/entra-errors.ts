import { randomUUID } from 'node:crypto';

/**
 * The AADSTS errors the sandbox can produce, worded as Entra ID words them (texts taken from
 * real responses quoted in public issues and from the error code reference), so that code
 * classifying Microsoft's answers is exercised against the real shapes.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/reference-error-codes
 */

export class EntraError extends Error {
  constructor(
    readonly code: number,
    /** The OAuth `error` member (RFC 6749 §5.2), e.g. `invalid_grant`. */
    readonly error: string,
    message: string,
    readonly options: { status?: number; suberror?: string; subcode?: string } = {},
  ) {
    super(message);
  }

  get status(): number {
    return this.options.status ?? (this.error === 'invalid_client' ? 401 : 400);
  }
}

/** What one request contributes to an error's description: Entra echoes `client-request-id`. */
export interface ErrorContext {
  traceId: string;
  correlationId: string;
  now: Date;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isGuid(value: string): boolean {
  return GUID.test(value);
}

export function errorContext(now: Date, clientRequestId?: string | null): ErrorContext {
  return { traceId: randomUUID(), correlationId: clientRequestId && isGuid(clientRequestId) ? clientRequestId.toLowerCase() : randomUUID(), now };
}

/** Entra's timestamps look like `2024-05-23 19:17:36Z`. */
export function entraTimestamp(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** `AADSTSnnnn: text` plus the trace lines Entra appends, with its `\r\n` separators. */
export function describeError(failure: EntraError, context: ErrorContext): string {
  const prefix = failure.code > 0 ? `AADSTS${failure.code}: ` : '';
  return `${prefix}${failure.message}\r\nTrace ID: ${context.traceId}\r\nCorrelation ID: ${context.correlationId}\r\nTimestamp: ${entraTimestamp(context.now)}`;
}

/** The JSON body of a failed token or metadata request. */
export function errorBody(failure: EntraError, context: ErrorContext): Record<string, unknown> {
  return {
    error: failure.error,
    error_description: describeError(failure, context),
    error_codes: failure.code > 0 ? [failure.code] : [],
    timestamp: entraTimestamp(context.now),
    trace_id: context.traceId,
    correlation_id: context.correlationId,
    ...(failure.code > 0 ? { error_uri: errorUri(failure.code) } : {}),
    ...(failure.options.suberror ? { suberror: failure.options.suberror } : {}),
  };
}

/** Points at Microsoft's own explanation of the real code, which is what a newcomer needs. */
export function errorUri(code: number): string {
  return `https://login.microsoftonline.com/error?code=${code}`;
}

const aadsts = (code: number, error: string, message: string, options?: EntraError['options']) => new EntraError(code, error, message, options);

export const Aadsts = {
  missingParameter: (name: string) => aadsts(900144, 'invalid_request', `The request body must contain the following parameter: '${name}'.`),
  malformed: () => aadsts(9002313, 'invalid_request', 'Invalid request. Request is malformed or invalid.'),
  malformedGrant: () => aadsts(9002313, 'invalid_grant', 'Invalid request. Request is malformed or invalid.'),
  tenantNotFound: (tenant: string) =>
    aadsts(90002, 'invalid_tenant', `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`),
  invalidTenantName: (tenant: string) =>
    aadsts(900023, 'invalid_request', `Specified tenant identifier '${tenant}' is neither a valid DNS name, nor a valid external domain.`),
  noTenantInformation: () =>
    aadsts(50059, 'invalid_request', 'No tenant-identifying information found in either the request or implied by any provided credentials.'),
  appNotFound: (clientId: string, tenant: string) =>
    aadsts(700016, 'unauthorized_client', `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`),
  missingClientCredential: () =>
    aadsts(7000218, 'invalid_client', "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
  invalidSecret: (clientId: string) =>
    aadsts(7000215, 'invalid_client', `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`),
  expiredSecret: (clientId: string) =>
    aadsts(7000222, 'invalid_client', `The provided client secret keys for app '${clientId}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.`),
  redirectUriNotRegistered: (redirectUri: string, clientId: string) =>
    aadsts(50011, 'invalid_request', `The redirect URI '${redirectUri}' specified in the request does not match the redirect URIs configured for the application '${clientId}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this.`),
  redirectUriDiffers: (sent: string, original: string) =>
    aadsts(50011, 'invalid_client', `The reply address '${sent}' does not match the reply address '${original}' provided when requesting Authorization code.`),
  unsupportedResponseType: (responseType: string) =>
    aadsts(700054, 'unsupported_response_type', `response_type '${responseType}' is not enabled for the application.`),
  invalidCodeChallengeMethod: () => aadsts(50149, 'invalid_request', 'Invalid Code_Challenge_method parameter.'),
  invalidCodeChallengeSize: () => aadsts(501491, 'invalid_request', 'Invalid size of Code_Challenge parameter.'),
  invalidScope: (scope: string) =>
    aadsts(70011, 'invalid_scope', `The provided value for the input parameter 'scope' is not valid. The scope ${scope} is not valid.`),
  resourceNotFound: (resource: string, tenant: string) =>
    aadsts(500011, 'invalid_resource', `The resource principal named ${resource} was not found in the tenant named ${tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`),
  multipleResources: (scope: string) =>
    aadsts(28000, 'invalid_scope', `Provided value for the input parameter scope is not valid because it contains more than one resource. Scope ${scope} is not valid.`),
  notDefaultScope: (scope: string) =>
    aadsts(1002012, 'invalid_scope', `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`),
  notMultiTenant: (clientId: string, name: string) =>
    aadsts(50194, 'invalid_request', `Application '${clientId}'(${name}) is not configured as a multi-tenant application. Usage of the /common endpoint is not supported for such applications created after '10/15/2018'. Use a tenant-specific endpoint or configure the application to be multi-tenant.`),
  userNotFound: (upn: string, tenant: string) =>
    aadsts(50034, 'invalid_request', `The user account ${upn} does not exist in the ${tenant} directory. To sign into this application, the account must be added to the directory.`),
  userNotInTenant: (upn: string, tenant: string, clientId: string, name: string) =>
    aadsts(50020, 'invalid_request', `User account '${upn}' from identity provider 'https://sts.windows.net/' does not exist in tenant '${tenant}' and cannot access the application '${clientId}'(${name}) in that tenant. The account needs to be added as an external user in the tenant first. Sign out and sign in again with a different Azure Active Directory user account.`),
  adminRequired: () => aadsts(90094, 'access_denied', 'The grant requires admin permission.'),
  loginRequired: () => aadsts(50058, 'login_required', 'A silent sign-in request was sent but no user is signed in.'),
  consentDeclined: () => aadsts(65004, 'access_denied', 'User declined to consent to access the app.', { subcode: 'cancel' }),
  consentMissing: (clientId: string, name: string) =>
    aadsts(65001, 'invalid_grant', `The user or administrator has not consented to use the application with ID '${clientId}' named '${name}'. Send an interactive authorization request for this user and resource.`, { suberror: 'consent_required' }),
  servicePrincipalMissing: (clientId: string, tenant: string) =>
    aadsts(7000229, 'invalid_client', `The client application ${clientId} is missing service principal in the tenant ${tenant}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119`),
  codeRedeemed: () =>
    aadsts(54005, 'invalid_grant', 'OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.'),
  codeExpired: () =>
    aadsts(70008, 'invalid_grant', 'The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.'),
  grantInvalid: () => aadsts(70000, 'invalid_grant', 'Provided grant is invalid or malformed.'),
  codeWrongTenant: () => aadsts(700005, 'invalid_grant', 'Provided Authorization Code is intended to use against other tenant, thus rejected.'),
  pkceMismatch: () => aadsts(501481, 'invalid_grant', 'The Code_Verifier does not match the code_challenge supplied in the authorization request.'),
  grantRevoked: (issuedAt: Date, validFrom: Date) =>
    aadsts(50173, 'invalid_grant', `The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '${issuedAt.toISOString()}' and the TokensValidFrom date (before which tokens are not valid) for this user is '${validFrom.toISOString()}'.`),
  // Real responses carry suberror bad_token here, which makes msal throw InteractionRequiredAuthError.
  refreshTokenExpired: (issuedAt: Date, inactiveDays: number) =>
    aadsts(700082, 'invalid_grant', `The refresh token has expired due to inactivity. The token was issued on ${issuedAt.toISOString()} and was inactive for ${inactiveDays}.00:00:00.`, { suberror: 'bad_token' }),
  unsupportedGrantType: (grantType: string) =>
    aadsts(70003, 'unsupported_grant_type', `The app requested an unsupported grant type '${grantType}'.`),
  methodNotAllowed: (allowed: string, method: string) =>
    aadsts(900561, 'invalid_request', `The endpoint only accepts ${allowed} requests. Received a ${method} request.`, { status: 405 }),
};

/** Token endpoint faults injected by tests: the error members Entra uses for throttling and outages. */
export function faultError(status: 429 | 500 | 503): EntraError {
  if (status === 429) {
    return aadsts(90055, 'temporarily_unavailable', 'TenantThrottlingError - There are too many incoming requests. This exception is thrown for blocked tenants.', { status });
  }
  if (status === 503) return aadsts(90006, 'temporarily_unavailable', 'ExternalServerRetryableError - The service is temporarily unavailable.', { status });
  return aadsts(50000, 'server_error', 'There was an error issuing a token or an issue with our sign-in service.', { status });
}
