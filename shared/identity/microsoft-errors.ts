/**
 * The one place Microsoft identity errors are classified: an error thrown by msal-node, a
 * token endpoint error body, or the `error` parameters of an OAuth redirect become a
 * `MicrosoftFailure` that says what broke, who must act and how, in words an M365 admin
 * understands. Callers decide what to do with a class (set `needs_reauth`, alert, back
 * off, render a page); nothing else in the broker reads AADSTS numbers.
 *
 * Microsoft says `error` is the field to react to and `error_description` is for humans, but
 * `error` is nearly always `invalid_grant`, which lumps together "the grant expired" and "the
 * code was replayed"; only the AADSTS number tells them apart, so that decides first.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/reference-error-codes
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.2 token endpoint errors
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2.1 authorization (redirect) errors
 */

export type MicrosoftOperation = 'authorize' | 'code_exchange' | 'refresh' | 'client_credentials' | 'admin_consent';

export const MICROSOFT_ERROR_CLASSES = [
  'reauthorize',
  'restart_flow',
  'interaction_required',
  'consent_required',
  'user_declined',
  'wrong_account',
  'app_credential',
  'app_configuration',
  'transient',
  'loop_detected',
  'unknown',
] as const;

export type MicrosoftErrorClass = (typeof MICROSOFT_ERROR_CLASSES)[number];

/** A classification: plain data, safe to store as `statusReason`, log, or show on a page. */
export interface MicrosoftFailure {
  class: MicrosoftErrorClass;
  /** `AADSTS700082` when Microsoft sent a number, else the OAuth or msal code (`invalid_grant`, `network_error`). */
  code: string;
  aadsts: number | null;
  /** What happened, in plain language for an admin. */
  message: string;
  /** The exact action that fixes it. */
  fix: string;
  /** True when the failure belongs to this one connection (its grant, user or tenant): set its status and tell its admin. */
  blamesMailbox: boolean;
  /** True when the operator must act (app-wide credential or configuration, or something unexplained). */
  operatorAlert: boolean;
  /** Seconds to wait before calling Microsoft again for this connection, when known. */
  retryAfterSeconds: number | null;
  /** True when Microsoft's token endpoint answered with this error; false for msal's own, the network's or the broker's. */
  fromMicrosoft: boolean;
}

export interface MicrosoftErrorOutcome {
  class: MicrosoftErrorClass;
  message: string;
  /** May contain `{redirectUri}`, replaced by the broker's exact callback URL. */
  fix: string;
  /** Defaults to `MICROSOFT_ERROR_CLASS_DEFAULTS[class]`. */
  blamesMailbox?: boolean;
  operatorAlert?: boolean;
}

export interface MicrosoftErrorRule extends MicrosoftErrorOutcome {
  /**
   * `AADSTS…` numbers, OAuth `error` values or msal-node `errorCode`s this rule answers, plus
   * four of the broker's own: `HTTP 429` / `HTTP 5xx` (status known), `throttled` (msal's
   * local replay of a 429/5xx), `access_denied/cancel` (the user pressed Cancel) and
   * `client_configuration` (any msal `ClientConfigurationError`).
   */
  codes: readonly string[];
  /** Where the meaning depends on what was being done (a code vs a refresh token). */
  byOperation?: Partial<Record<MicrosoftOperation, MicrosoftErrorOutcome>>;
}

export interface ClassifyContext {
  /** The broker's redirect URI, so an AADSTS50011 fix can name it exactly. */
  redirectUri?: string;
  /** A Retry-After the caller saw itself; msal-node does not expose it on its errors. */
  retryAfterSeconds?: number;
}

export const MICROSOFT_ERROR_CLASS_DEFAULTS: Readonly<Record<MicrosoftErrorClass, { blamesMailbox: boolean; operatorAlert: boolean }>> = {
  reauthorize: { blamesMailbox: true, operatorAlert: false },
  restart_flow: { blamesMailbox: false, operatorAlert: false },
  interaction_required: { blamesMailbox: true, operatorAlert: false },
  consent_required: { blamesMailbox: true, operatorAlert: false },
  user_declined: { blamesMailbox: false, operatorAlert: false },
  wrong_account: { blamesMailbox: false, operatorAlert: false },
  app_credential: { blamesMailbox: false, operatorAlert: true },
  app_configuration: { blamesMailbox: false, operatorAlert: true },
  transient: { blamesMailbox: false, operatorAlert: false },
  // A loop means the broker itself misbehaved, so the operator hears of it too.
  loop_detected: { blamesMailbox: true, operatorAlert: true },
  unknown: { blamesMailbox: false, operatorAlert: true },
};

/** How long a connection rests after AADSTS50196; Microsoft publishes no number, and its block lasts minutes. */
export const LOOP_PAUSE_SECONDS = 15 * 60;

export const REDIRECT_URI_PLACEHOLDER = '{BROKER_PUBLIC_URL}/api/oauth/callback';

const REAUTHORIZE = 'Send the mailbox owner a new Authorize link.';
const RESTART = 'Open the Authorize link again and finish the sign-in in the same browser tab.';
const ADMIN_CONSENT = "Send the customer's M365 admin the admin consent link for this connection.";
const RETRYING = 'Nothing to do: the broker retries with back-off and keeps serving a still-valid access token.';
const PATCH_APP = 'PATCH /api/manage/apps/{id}';
const MFA_FIX = 'Send the mailbox owner a new Authorize link and have them complete the multi-factor prompt.';

/** Browser flows have a person waiting, so "the broker retries" is the wrong advice there. */
function inBrowser(outcome: MicrosoftErrorOutcome): Partial<Record<MicrosoftOperation, MicrosoftErrorOutcome>> {
  return { authorize: outcome, code_exchange: outcome, admin_consent: outcome };
}

const transientInBrowser = inBrowser({
  class: 'transient',
  message: "Microsoft's sign-in service had a temporary problem.",
  fix: 'Wait a few minutes, then open the link again.',
});

const restartOnCodeExchange = (message: string) => ({ code_exchange: { class: 'restart_flow' as const, message, fix: RESTART } });

/** Exported so the documentation of every code and its fix is generated from the same data. */
export const MICROSOFT_ERROR_TABLE: readonly MicrosoftErrorRule[] = [
  // Expired or revoked grants: the mailbox owner must sign in again.
  {
    codes: ['AADSTS700082'],
    class: 'reauthorize',
    message: 'The refresh token expired after 90 days without use.',
    fix: `${REAUTHORIZE} Check that the rotate-tokens timer runs: it refreshes tokens long before 90 days.`,
  },
  {
    codes: ['AADSTS70008'],
    class: 'reauthorize',
    message: 'The sign-in grant expired after a long time without use.',
    fix: REAUTHORIZE,
    // On the callback it is the authorization code that expired (they live about 10 minutes).
    byOperation: restartOnCodeExchange('The sign-in code expired before the broker could redeem it.'),
  },
  {
    codes: ['AADSTS50173'],
    class: 'reauthorize',
    message: "The mailbox owner's sign-in was revoked, usually because the password was changed or reset or an admin revoked their sessions.",
    fix: REAUTHORIZE,
  },
  {
    codes: ['AADSTS70043'],
    class: 'reauthorize',
    message: 'A Conditional Access sign-in frequency policy requires the mailbox owner to sign in again.',
    fix: `${REAUTHORIZE} If it keeps happening, ask the customer's M365 admin to review the sign-in frequency policy for this app.`,
  },
  {
    codes: ['AADSTS70000'],
    class: 'reauthorize',
    message: 'Microsoft rejected the stored grant as invalid, revoked or malformed.',
    fix: REAUTHORIZE,
    byOperation: restartOnCodeExchange('Microsoft rejected the sign-in code as invalid.'),
  },
  {
    codes: ['AADSTS50057'],
    class: 'reauthorize',
    message: "The mailbox owner's user account is disabled in Entra ID.",
    fix: 'Re-enable the account (or connect a different mailbox), then send the mailbox owner a new Authorize link.',
  },
  // The user must pass MFA or Conditional Access in a browser.
  {
    codes: ['AADSTS50076'],
    class: 'interaction_required',
    message: 'Multi-factor authentication is now required for this mailbox, and the stored sign-in does not satisfy it.',
    fix: MFA_FIX,
  },
  {
    codes: ['AADSTS50078'],
    class: 'interaction_required',
    message: "The mailbox owner's multi-factor authentication expired under their organisation's policy.",
    fix: MFA_FIX,
  },
  {
    codes: ['AADSTS50079'],
    class: 'interaction_required',
    message: 'The mailbox owner must register for multi-factor authentication before signing in.',
    fix: 'Have the mailbox owner register at https://aka.ms/mysecurityinfo, then send them a new Authorize link.',
  },
  {
    codes: ['AADSTS53003'],
    class: 'interaction_required',
    message: 'A Conditional Access policy blocks this sign-in.',
    fix: "Ask the customer's M365 admin to check the Entra sign-in logs for this user and app and adjust the Conditional Access policy, then send a new Authorize link.",
    byOperation: {
      // App-only has no user to interact: the policy targets the app's service principal.
      client_credentials: {
        class: 'app_configuration',
        message: "A Conditional Access policy for workload identities blocks the app in the customer's tenant.",
        fix: "Ask the customer's M365 admin to check the service principal sign-in logs and adjust the Conditional Access policy for this app.",
        blamesMailbox: true,
      },
    },
  },
  {
    codes: ['AADSTS50055', 'AADSTS50144'],
    class: 'interaction_required',
    message: "The mailbox owner's password has expired.",
    fix: 'Have the mailbox owner change their password, then send them a new Authorize link.',
  },
  // Consent.
  {
    codes: ['AADSTS65001'],
    class: 'consent_required',
    message: "The mail permissions the broker needs have not been granted (or were removed) in the customer's tenant.",
    fix: `${ADMIN_CONSENT} Or have the mailbox owner open a new Authorize link and accept the permissions.`,
  },
  {
    codes: ['AADSTS90094'],
    class: 'consent_required',
    message: 'Only an administrator can grant the permissions this app requests in this organisation.',
    fix: `${ADMIN_CONSENT} After they accept, open the Authorize link again.`,
  },
  {
    codes: ['AADSTS7000229'],
    class: 'consent_required',
    message: 'The app has no service principal in this tenant: admin consent was never granted there.',
    fix: ADMIN_CONSENT,
  },
  {
    codes: ['AADSTS65004'],
    class: 'user_declined',
    message: 'The person signing in declined the requested permissions.',
    fix: "Open the Authorize link again and select Accept. If users may not consent in this organisation, its M365 admin can use the admin consent link.",
  },
  // Wrong person or wrong credentials at the sign-in page.
  {
    codes: ['AADSTS50020'],
    class: 'wrong_account',
    message: "The account used to sign in does not belong to the app's tenant (a personal account or another organisation's).",
    fix: "Open the Authorize link in a private browser window and sign in with the mailbox's work account. If the mailbox is in another organisation, the app registration must be multi-tenant and its tenant set to organizations.",
  },
  {
    codes: ['AADSTS50034'],
    class: 'wrong_account',
    message: 'The account name entered does not exist in that directory.',
    fix: "Open the Authorize link again and sign in with the mailbox's exact sign-in name (UPN).",
  },
  {
    codes: ['AADSTS50126'],
    class: 'restart_flow',
    message: 'The username or password entered was wrong.',
    fix: "Open the Authorize link again and sign in with the mailbox's correct password.",
  },
  // The browser flow itself went wrong: start it again.
  {
    codes: ['AADSTS54005'],
    class: 'restart_flow',
    message: 'The sign-in code was already used, usually because the return page was reloaded or opened twice.',
    fix: RESTART,
  },
  {
    codes: ['AADSTS501481'],
    class: 'restart_flow',
    message: 'The sign-in answer did not match the request the broker started (PKCE verifier mismatch), usually because the sign-in was started again in another tab.',
    fix: RESTART,
  },
  {
    codes: ['AADSTS9002313'],
    class: 'restart_flow',
    message: 'Microsoft rejected the sign-in request as malformed.',
    fix: `${RESTART} If it fails again, report it to the broker's operator.`,
    byOperation: {
      refresh: {
        class: 'reauthorize',
        message: 'Microsoft rejected the refresh request as malformed; the stored refresh token may be damaged.',
        fix: `${REAUTHORIZE} If other mailboxes fail the same way, report it to the broker's operator.`,
        operatorAlert: true,
      },
    },
  },
  // The app's credential: app-wide, never the mailbox's fault.
  {
    codes: ['AADSTS7000222'],
    class: 'app_credential',
    message: "The app's client secret has expired.",
    fix: `In Entra ID open App registrations > the app > Certificates & secrets, create a new client secret, and save its Value and expiry on the app with ${PATCH_APP}.`,
  },
  {
    codes: ['AADSTS7000215'],
    class: 'app_credential',
    message: "Microsoft rejected the app's client secret; often the secret's ID was saved instead of its value.",
    fix: `In Certificates & secrets copy the secret's Value, not its Secret ID (the value is shown only when the secret is created, so create a new one if needed), and save it with ${PATCH_APP}.`,
  },
  {
    codes: ['AADSTS7000218'],
    class: 'app_credential',
    message: 'The token request carried no client secret or certificate.',
    fix: `Set the app's client secret and its expiry with ${PATCH_APP}.`,
  },
  {
    codes: ['AADSTS700027'],
    class: 'app_credential',
    message: "Microsoft could not validate the app's certificate credential.",
    fix: "Upload the broker's current certificate to the app registration (Certificates & secrets), or replace the certificate the broker uses.",
  },
  // The app registration or the broker's settings.
  {
    codes: ['AADSTS700016'],
    class: 'app_configuration',
    message: 'No app with this client ID exists in the directory Microsoft was asked.',
    fix: "Check that the app's clientId and tenant on the broker match the Overview page of the app registration in Entra ID.",
    byOperation: {
      // Against a customer's directory this means the app was never installed there.
      client_credentials: {
        class: 'consent_required',
        message: "The app is not installed in the customer's tenant: admin consent was never granted there.",
        fix: ADMIN_CONSENT,
      },
    },
  },
  {
    codes: ['AADSTS90002'],
    class: 'app_configuration',
    message: 'The tenant the broker signed in to was not found.',
    fix: "Check the app's tenant (a directory GUID, organizations or common) and that BROKER_AUTHORITY_HOST is the Microsoft cloud the tenant lives in.",
  },
  {
    codes: ['AADSTS50011'],
    class: 'app_configuration',
    message: 'The redirect URI the broker sent is not registered on the app.',
    fix: 'In Entra ID open App registrations > the app > Authentication and add {redirectUri} as a Web redirect URI, exactly as written.',
  },
  {
    codes: ['AADSTS500011'],
    class: 'app_configuration',
    message: "Exchange Online (the mail resource) was not found in the customer's tenant: it has no Exchange Online subscription, or the broker asked the wrong Microsoft cloud.",
    fix: 'Check that the tenant has Exchange Online mailboxes and that BROKER_MAIL_RESOURCE and BROKER_MAIL_APP_RESOURCE match its cloud.',
  },
  {
    codes: ['AADSTS70011', 'invalid_scope'],
    class: 'app_configuration',
    message: 'Microsoft rejected the requested scope.',
    fix: 'Check BROKER_MAIL_RESOURCE (delegated scopes look like https://outlook.office.com/SMTP.Send) and BROKER_MAIL_APP_RESOURCE.',
  },
  {
    codes: ['AADSTS1002012'],
    class: 'app_configuration',
    message: 'An app-only token request used a scope that does not end in /.default.',
    fix: 'Set BROKER_MAIL_APP_RESOURCE to the bare resource (https://outlook.office365.com); app-only requests ask for <resource>/.default.',
  },
  {
    codes: ['AADSTS7000112'],
    class: 'app_configuration',
    message: 'The app is disabled in Entra ID.',
    fix: 'In Entra ID open Enterprise applications > the app > Properties and set "Enabled for users to sign-in" to Yes.',
  },
  {
    codes: ['AADSTS50194'],
    class: 'app_configuration',
    message: 'The app registration is single-tenant, so it cannot sign in through the organizations or common endpoint.',
    fix: "Set the app's tenant to its directory GUID, or make the app registration multi-tenant (Authentication > Supported account types).",
  },
  {
    codes: ['AADSTS50196'],
    class: 'loop_detected',
    message: 'Microsoft stopped the requests because the broker sent too many identical token requests in a short time.',
    fix: `Nothing for the mailbox owner: the broker pauses this connection for ${LOOP_PAUSE_SECONDS / 60} minutes. If it happens again, the operator should check that tokens are cached.`,
    byOperation: inBrowser({
      class: 'loop_detected',
      message: 'Microsoft stopped the sign-in because too many identical requests arrived in a short time.',
      fix: `Wait ${LOOP_PAUSE_SECONDS / 60} minutes, then open the link again.`,
    }),
  },
  // Microsoft's own retryable failures.
  {
    codes: ['AADSTS50033', 'AADSTS50087', 'AADSTS90006', 'AADSTS90024', 'AADSTS90033', 'AADSTS90055', 'AADSTS90090', 'temporarily_unavailable', 'server_error', 'HTTP 429', 'HTTP 5xx'],
    class: 'transient',
    message: "Microsoft's sign-in service had a temporary problem.",
    fix: RETRYING,
    byOperation: transientInBrowser,
  },
  // OAuth `error` values without a more specific AADSTS number.
  {
    codes: ['invalid_grant'],
    class: 'reauthorize',
    message: 'Microsoft rejected the stored refresh token (expired, revoked or invalid).',
    fix: REAUTHORIZE,
    byOperation: restartOnCodeExchange('Microsoft rejected the sign-in code (expired, already used or issued for another request).'),
  },
  {
    codes: ['interaction_required', 'login_required'],
    class: 'interaction_required',
    message: 'Microsoft requires the mailbox owner to sign in again interactively.',
    fix: REAUTHORIZE,
  },
  {
    codes: ['consent_required'],
    class: 'consent_required',
    message: "The mail permissions the broker needs have not been granted in the customer's tenant.",
    fix: `${ADMIN_CONSENT} Or have the mailbox owner open a new Authorize link and accept the permissions.`,
  },
  {
    codes: ['access_denied'],
    class: 'user_declined',
    message: 'The sign-in or the requested permissions were refused.',
    fix: "Open the link again and accept the permissions, or ask the organisation's M365 admin to use the admin consent link.",
  },
  {
    codes: ['access_denied/cancel'],
    class: 'user_declined',
    message: 'The sign-in was cancelled before it finished.',
    fix: 'Open the link again and complete the sign-in.',
  },
  {
    codes: ['invalid_client', 'invalid_client_credential', 'invalid_assertion'],
    class: 'app_credential',
    message: "Microsoft rejected the app's credentials.",
    fix: `Check the app's client secret: save the secret's Value (not its Secret ID) and its expiry with ${PATCH_APP}.`,
  },
  {
    codes: ['unauthorized_client'],
    class: 'app_configuration',
    message: 'The app is not allowed to use this sign-in flow, or it is disabled or missing in this tenant.',
    fix: "Check the app's clientId and that the app registration is enabled and has a Web platform.",
  },
  {
    codes: ['invalid_resource'],
    class: 'app_configuration',
    message: "The mail resource was not found in the customer's tenant.",
    fix: 'Check that the tenant has Exchange Online and that BROKER_MAIL_RESOURCE and BROKER_MAIL_APP_RESOURCE match its cloud.',
  },
  // msal-node's own codes (no answer from Microsoft, or one it could not use).
  {
    codes: ['network_error', 'no_network_connectivity', 'post_request_failed'],
    class: 'transient',
    message: "The broker could not reach Microsoft's sign-in service (network error or timeout).",
    fix: RETRYING,
    byOperation: transientInBrowser,
  },
  {
    codes: ['token_parsing_error'],
    class: 'transient',
    message: "Microsoft's sign-in service returned an unreadable answer, often an outage page from a proxy.",
    fix: RETRYING,
    byOperation: transientInBrowser,
  },
  {
    codes: ['throttled'],
    class: 'transient',
    message: 'The broker is holding back requests because Microsoft recently answered "too many requests" or "unavailable".',
    fix: RETRYING,
    byOperation: transientInBrowser,
  },
  {
    // Either the network or a wrong tenant/authority: retry, but let the operator look.
    codes: ['openid_config_error', 'endpoints_resolution_error'],
    class: 'transient',
    message: "The broker could not load Microsoft's sign-in metadata for the app's authority.",
    fix: "The broker retries. If it persists, check the app's tenant (directory GUID, organizations or common), BROKER_AUTHORITY_HOST, and outbound HTTPS from the Function App.",
    operatorAlert: true,
  },
  {
    codes: ['no_tokens_found', 'refresh_token_expired'],
    class: 'reauthorize',
    message: 'The broker holds no usable refresh token for this mailbox.',
    fix: REAUTHORIZE,
  },
  {
    codes: ['state_mismatch', 'state_not_found', 'invalid_state', 'nonce_mismatch', 'authorization_code_missing_from_server_response'],
    class: 'restart_flow',
    message: 'The sign-in answer did not match the request the broker started.',
    fix: RESTART,
  },
  {
    codes: ['client_configuration'],
    class: 'app_configuration',
    message: "The broker's Microsoft sign-in settings are invalid.",
    fix: "Check BROKER_AUTHORITY_HOST (it must be https), BROKER_PUBLIC_URL, and the app's tenant and clientId.",
  },
];

const rulesByCode = new Map<string, MicrosoftErrorRule>(MICROSOFT_ERROR_TABLE.flatMap((rule) => rule.codes.map((code) => [code, rule] as const)));

/** The broker's own table keys: chosen from facts, never looked up from an `error` string someone sent. */
const PSEUDO_CODES = new Set(['HTTP 429', 'HTTP 5xx', 'throttled', 'access_denied/cancel', 'client_configuration']);

/** What the classifier needs from any of the error shapes it accepts. */
interface RawError {
  kind: 'server' | 'interaction' | 'client_configuration' | 'msal' | 'body' | 'redirect' | 'foreign';
  code: string;
  /** Microsoft's `error_description` (or msal's own message). */
  description: string;
  subError: string;
  errorNumbers: number[];
  status: number | null;
  /** msal-common replays a remembered 429/5xx locally instead of calling Microsoft. */
  throttled: boolean;
  retryAfterSeconds: number | null;
}

/**
 * Classifies an error thrown by msal-node (or a token endpoint error body) for `operation`.
 * Never throws; anything unrecognised is `unknown`.
 */
export function classifyMicrosoftError(error: unknown, operation: MicrosoftOperation, context: ClassifyContext = {}): MicrosoftFailure {
  return classify(readError(error), operation, context);
}

export interface RedirectErrorParams {
  error: string;
  error_description?: string;
  error_subcode?: string;
  /** Microsoft's lookup link, `https://login.microsoftonline.com/error?code=65004`; a fallback source of the number. */
  error_uri?: string;
}

/**
 * Classifies the `error` query parameters Microsoft sends back to the callback. They arrive
 * from the browser, so anyone can forge them: the result only explains, it grants nothing.
 */
export function classifyRedirectError(params: RedirectErrorParams, operation: 'authorize' | 'admin_consent', context: ClassifyContext = {}): MicrosoftFailure {
  const fromUri = /[?&]code=(\d{1,9})\b/.exec(params.error_uri ?? '');
  return classify(
    {
      kind: 'redirect',
      code: params.error,
      description: params.error_description ?? '',
      subError: params.error_subcode ?? '',
      errorNumbers: fromUri ? [Number(fromUri[1])] : [],
      status: null,
      throttled: false,
      retryAfterSeconds: null,
    },
    operation,
    context,
  );
}

/** Reads a Retry-After header (delta-seconds or HTTP-date) for callers that see raw responses. */
export function parseRetryAfter(value: string, nowMs: number): number | null {
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - nowMs) / 1000));
}

function classify(raw: RawError, operation: MicrosoftOperation, context: ClassifyContext): MicrosoftFailure {
  const aadsts = aadstsNumber(raw);
  const code = aadsts !== null ? `AADSTS${aadsts}` : safeCode(raw);
  const rule = overridingRule(raw) ?? (aadsts !== null ? rulesByCode.get(`AADSTS${aadsts}`) : undefined) ?? fallbackRule(raw);
  if (!rule) return unknownFailure(raw, code, aadsts, context);
  const outcome = rule.byOperation?.[operation] ?? rule;
  const defaults = MICROSOFT_ERROR_CLASS_DEFAULTS[outcome.class];
  // A generic rule (plain invalid_grant, say) knows less than Microsoft's own sentence: keep it.
  const sentence = aadsts !== null && !rule.codes.includes(code) ? trustedSentence(raw) : '';
  return {
    class: outcome.class,
    code,
    aadsts,
    message: sentence ? `${outcome.message} Microsoft said: "${sentence}"` : outcome.message,
    fix: outcome.fix.replaceAll('{redirectUri}', context.redirectUri ?? REDIRECT_URI_PLACEHOLDER),
    blamesMailbox: outcome.blamesMailbox ?? defaults.blamesMailbox,
    operatorAlert: outcome.operatorAlert ?? defaults.operatorAlert,
    retryAfterSeconds: retryAfter(outcome.class, raw, context),
    fromMicrosoft: answeredByMicrosoft(raw),
  };
}

/** Facts that outrank the AADSTS number: the HTTP status, and a user who pressed Cancel on the sign-in page. */
function overridingRule(raw: RawError): MicrosoftErrorRule | undefined {
  // msal-node keeps the status only for client credentials; a 429/5xx is transient whatever the body says.
  if (raw.status === 429) return rulesByCode.get('HTTP 429');
  if (raw.status !== null && raw.status >= 500 && raw.status <= 599) return rulesByCode.get('HTTP 5xx');
  // A declined consent also arrives as access_denied/cancel, but with AADSTS65004: that says more.
  if (raw.kind === 'redirect' && raw.code === 'access_denied' && raw.subError === 'cancel' && aadstsNumber(raw) === null) {
    return rulesByCode.get('access_denied/cancel');
  }
  return undefined;
}

function fallbackRule(raw: RawError): MicrosoftErrorRule | undefined {
  if (raw.throttled) return rulesByCode.get('throttled');
  if (raw.subError === 'consent_required') return rulesByCode.get('consent_required');
  // msal raised InteractionRequiredAuthError because the answer said so (sub-error `basic_action` and the like).
  if (raw.kind === 'interaction' && raw.code === 'invalid_grant') return rulesByCode.get('interaction_required');
  if (raw.kind === 'client_configuration') return rulesByCode.get('client_configuration');
  return PSEUDO_CODES.has(raw.code) ? undefined : rulesByCode.get(raw.code);
}

/**
 * Microsoft's words, only when they came from the token endpoint over TLS. Redirect
 * parameters can be forged by anyone who sends a link, so they are never echoed.
 */
function trustedSentence(raw: RawError): string {
  return answeredByMicrosoft(raw) ? firstSentence(raw.description) : '';
}

/** An error body from the token endpoint (as msal raised it, or read directly), not a redirect, msal or the broker. */
function answeredByMicrosoft(raw: RawError): boolean {
  return raw.kind === 'server' || raw.kind === 'interaction' || raw.kind === 'body';
}

function unknownFailure(raw: RawError, code: string, aadsts: number | null, context: ClassifyContext): MicrosoftFailure {
  const sentence = trustedSentence(raw);
  return {
    class: 'unknown',
    code,
    aadsts,
    message: sentence || (aadsts !== null ? `Microsoft refused the request with ${code}.` : 'The Microsoft sign-in failed with an unrecognised error.'),
    fix:
      aadsts !== null
        ? `Look up ${code} at https://login.microsoftonline.com/error?code=${aadsts} and check the Entra sign-in logs for this app.`
        : "Check the broker's logs around this time and report the error if it repeats.",
    ...MICROSOFT_ERROR_CLASS_DEFAULTS.unknown,
    retryAfterSeconds: retryAfter('unknown', raw, context),
    fromMicrosoft: answeredByMicrosoft(raw),
  };
}

function retryAfter(errorClass: MicrosoftErrorClass, raw: RawError, context: ClassifyContext): number | null {
  const told = raw.retryAfterSeconds ?? context.retryAfterSeconds ?? null;
  if (errorClass === 'loop_detected') return Math.max(LOOP_PAUSE_SECONDS, told ?? 0);
  return errorClass === 'transient' && told !== null && told >= 0 ? Math.ceil(told) : null;
}

function aadstsNumber(raw: RawError): number | null {
  const inText = /AADSTS(\d{1,9})\b/.exec(raw.description);
  if (inText) return Number(inText[1]);
  return raw.errorNumbers.find((n) => Number.isSafeInteger(n) && n > 0) ?? null;
}

/** Redirect parameters are attacker-controlled: only a plain token may become a stored code. */
function safeCode(raw: RawError): string {
  if (raw.throttled) return 'throttled';
  if (/^[A-Za-z0-9_.-]{1,64}$/.test(raw.code)) return raw.code;
  if (raw.code === '' && raw.status !== null) return `http_${raw.status}`;
  return raw.kind === 'foreign' ? 'unexpected_error' : 'unrecognised_error';
}

/**
 * The first sentence of Microsoft's description, without the `AADSTS…:` prefix and the
 * Trace ID / Correlation ID / Timestamp tail (useless to an admin, noisy in alerts).
 */
function firstSentence(description: string): string {
  const text = description
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .replace(/^\s*AADSTS\d+:\s*/, '')
    .replace(/\s*\b(Trace ID|Correlation ID|Timestamp):.*$/, '')
    // Descriptions never carry tokens; if a forged redirect does, it is not repeated.
    .replace(/\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*/g, '[redacted]')
    .trim();
  const sentence = /^.*?[.!?](?=\s|$)/.exec(text)?.[0] ?? text;
  return sentence.length > 300 ? `${sentence.slice(0, 297)}...` : sentence;
}

function readError(error: unknown): RawError {
  const raw: RawError = { kind: 'foreign', code: '', description: '', subError: '', errorNumbers: [], status: null, throttled: false, retryAfterSeconds: null };
  if (typeof error !== 'object' || error === null) return raw;
  const fields = error as Record<string, unknown>;
  if (typeof fields.errorCode === 'string') return readMsalError(fields, raw);
  if (typeof fields.error === 'string') {
    // A token endpoint error body: {"error","error_description","error_codes",...}.
    return {
      ...raw,
      kind: 'body',
      code: fields.error,
      description: text(fields.error_description),
      subError: text(fields.suberror),
      errorNumbers: numbers(fields.error_codes),
      status: typeof fields.status === 'number' ? fields.status : null,
    };
  }
  return raw;
}

function readMsalError(fields: Record<string, unknown>, raw: RawError): RawError {
  const errorCode = text(fields.errorCode);
  const errorMessage = text(fields.errorMessage);
  const name = text(fields.name);
  // By name, not instanceof: msal-common sets `name` in each error class (none of them is
  // subclassed), and reading it keeps msal-node out of the token path, which classifies
  // failures but must not load MSAL to do so.
  const kind: RawError['kind'] =
    name === 'InteractionRequiredAuthError' ? 'interaction' : name === 'ServerError' ? 'server' : name === 'ClientConfigurationError' ? 'client_configuration' : 'msal';
  // ResponseHandler.validateTokenResponse wraps the server's answer as
  // "Error(s): … - Timestamp: … - Description: <error_description> - Correlation ID: … - Trace ID: …".
  const wrapped = /^Error\(s\):.*? - Description: ([\s\S]*?)(?: - Correlation ID: [\s\S]*)?$/.exec(errorMessage);
  // ThrottlingUtils.preProcess throws ServerError(error_codes.join(" "), …) with the raw description,
  // so a ServerError whose code is only digits (or empty) is msal replaying an earlier 429/5xx.
  const throttled = kind === 'server' && /^[\d ]*$/.test(errorCode) && !wrapped && fields.status === undefined && fields.errorNo === undefined;
  return {
    ...raw,
    kind,
    code: errorCode,
    description: wrapped?.[1] ?? errorMessage,
    subError: text(fields.subError),
    errorNumbers: [...numbers([fields.errorNo]), ...(throttled ? numbers(errorCode.split(' ')) : [])],
    status: typeof fields.status === 'number' ? fields.status : null,
    throttled,
    retryAfterSeconds: retryAfterHeader(fields.responseHeaders),
  };
}

/** msal's NetworkError carries response headers; msal-common unwraps it before callers see it, but a custom network client may not. */
function retryAfterHeader(headers: unknown): number | null {
  if (typeof headers !== 'object' || headers === null) return null;
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() === 'retry-after' && typeof value === 'string' && /^\s*\d+\s*$/.test(value)) return Number(value);
  }
  return null;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** `errorNo` is typed as a string by msal but is the JSON number at run time; accept both. */
function numbers(value: unknown): number[] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((item: unknown) => {
    const n = typeof item === 'number' ? item : typeof item === 'string' && /^\d{1,9}$/.test(item.trim()) ? Number(item) : NaN;
    return Number.isSafeInteger(n) && n > 0 ? [n] : [];
  });
}
