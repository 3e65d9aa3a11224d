import type { HostHint } from '../config.js';
import type { MailProtocol } from '../storage/records.js';

/**
 * The one place a mail server's refusal (or a network failure on the way to it) becomes a
 * `{ code, message, fix }` an M365 admin can act on. Exchange Online says little in its
 * answers ("5.7.3 Authentication unsuccessful" covers a wrong token, a wrong mailbox and a
 * missing permission alike), so the fixes name every setting that produces the answer.
 *
 * @see https://learn.microsoft.com/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
 * @see https://www.rfc-editor.org/rfc/rfc4954#section-6 SMTP AUTH status codes
 */

/** What went wrong, as the verifier saw it: a server's answer line, or a socket error's codes. */
export interface MailFailure {
  /** The server's refusal, e.g. `535 5.7.3 Authentication unsuccessful [...]` or `-ERR ...`. */
  answer?: string;
  /** Node / library error codes found on the error and its causes (`ECONNREFUSED`, `ETIMEDOUT`, `CERT_HAS_EXPIRED`). */
  errorCodes?: readonly string[];
  /** The error's own message, for the fallback. Must already be free of the token. */
  errorMessage?: string;
}

export interface MailFailureReport {
  code: string;
  message: string;
  fix: string;
}

interface Rule {
  protocols: readonly MailProtocol[];
  /** Matched against the server's answer. */
  answer?: RegExp;
  /** Matched against the error's codes. */
  errorCodes?: (code: string) => boolean;
  code: string | ((matchedErrorCode: string) => string);
  /** `{target}` becomes `host:port`, `{setting}` the app setting naming that host, `{protocol}` SMTP/IMAP/POP. */
  message: string;
  fix: string;
}

const TLS_ERROR = /^(CERT_|ERR_TLS_|ERR_SSL_|ETLS$|EPROTO$|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|UNABLE_TO_)/;
const is = (...codes: string[]) => (code: string) => codes.includes(code);

const REACH_FIX =
  'Check {setting} ({target}) and that the Function App may open outbound connections to {target} (firewall, VNet NSG, proxy); Microsoft 365 listens on smtp.office365.com:587, outlook.office365.com:993 and :995.';

// Order matters: the first rule that matches wins, so the specific answers come before the generic ones.
const RULES: readonly Rule[] = [
  {
    protocols: ['smtp'],
    answer: /^535[ -]5\.7\.139\b/,
    code: '535 5.7.139',
    message: 'Exchange Online accepted the token but refuses SMTP AUTH for this mailbox: it is turned off for the mailbox or the tenant, or blocked by security defaults.',
    fix: 'Enable Authenticated SMTP for the mailbox in the Microsoft 365 admin center (Users > Active users > the mailbox > Mail > Manage email apps > Authenticated SMTP, or Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false), make sure the tenant has not turned SMTP AUTH off (Set-TransportConfig -SmtpClientAuthenticationDisabled $false), and check security defaults / Conditional Access. This is an admin setting: retrying will not help.',
  },
  {
    protocols: ['smtp'],
    answer: /^535[ -]5\.7\.3\b/,
    code: '535 5.7.3',
    message: 'Exchange Online did not accept the access token for this mailbox: the token, the mailbox name or a permission is wrong.',
    fix: 'Delegated: the person who signed in must be this mailbox (or its signInName) and the token must carry SMTP.Send; re-authorize the connection if it still fails after one refresh. App-only: grant SMTP.SendAsApp with admin consent, register the app in Exchange (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object id>) and give it the mailbox (Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess).',
  },
  {
    protocols: ['smtp'],
    answer: /^535[ -]5\.7\.8\b/,
    code: '535 5.7.8',
    message: 'The SMTP server says the credentials are invalid (RFC 4954 5.7.8). Exchange Online answers 5.7.3 for a refused token, so this server is probably not Microsoft 365.',
    fix: 'Check that {setting} ({target}) points at smtp.office365.com:587 (or your cloud\'s SMTP host) and not at a relay or another provider; if it does, re-authorize the connection.',
  },
  {
    protocols: ['smtp'],
    answer: /^454[ -]4\.7\.0\b/,
    code: '454 4.7.0',
    message: 'Exchange Online had a temporary authentication failure.',
    fix: 'Nothing to change: verify again in a few minutes.',
  },
  {
    protocols: ['smtp'],
    answer: /^504[ -]5\.7\.4\b/,
    code: '504 5.7.4',
    message: 'The SMTP server does not offer XOAUTH2.',
    fix: 'Check that {setting} ({target}) points at smtp.office365.com:587 (or your cloud\'s SMTP host); Exchange Online offers AUTH XOAUTH2 after STARTTLS.',
  },
  {
    protocols: ['imap'],
    answer: /User is authenticated but not connected/i,
    code: 'IMAP not connected',
    message: 'Exchange Online accepted the token but does not connect it to this mailbox.',
    fix: 'App-only: give the app\'s Exchange service principal the mailbox (Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess). Delegated: the signed-in user must own the mailbox, and the mailbox must exist in Exchange Online.',
  },
  {
    protocols: ['imap'],
    answer: /AUTHENTICATE failed/i,
    code: 'IMAP AUTHENTICATE failed',
    message: 'Exchange Online refused the IMAP login: IMAP is disabled for the mailbox, or the token lacks the IMAP permission or belongs to another mailbox.',
    fix: 'Enable IMAP for the mailbox (Microsoft 365 admin center > the mailbox > Mail > Manage email apps > IMAP, or Set-CASMailbox -Identity <mailbox> -ImapEnabled $true). Delegated: the connection needs IMAP.AccessAsUser.All and a sign-in as this mailbox (re-authorize). App-only: IMAP.AccessAsApp with admin consent, New-ServicePrincipal and Add-MailboxPermission.',
  },
  {
    protocols: ['pop'],
    answer: /^-ERR Authentication failure/i,
    code: 'POP Authentication failure',
    message: 'Exchange Online refused the POP login: POP is disabled for the mailbox, or the token lacks the POP permission or belongs to another mailbox.',
    fix: 'Enable POP for the mailbox (Microsoft 365 admin center > the mailbox > Mail > Manage email apps > POP, or Set-CASMailbox -Identity <mailbox> -PopEnabled $true). Delegated: the connection needs POP.AccessAsUser.All and a sign-in as this mailbox (re-authorize). App-only: POP.AccessAsApp with admin consent, New-ServicePrincipal and Add-MailboxPermission.',
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    errorCodes: is('ECONNREFUSED'),
    code: 'ECONNREFUSED',
    message: 'Cannot reach {target} from the broker: the connection was refused.',
    fix: REACH_FIX,
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    errorCodes: is('ENOTFOUND', 'EAI_AGAIN'),
    code: 'ENOTFOUND',
    message: 'Cannot reach {target} from the broker: the host name does not resolve.',
    fix: 'Check the spelling of {setting} ({target}) and the Function App\'s DNS.',
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    errorCodes: (code) => TLS_ERROR.test(code),
    code: (found) => found,
    message: 'Cannot reach {target} from the broker securely: the TLS handshake failed or the server\'s certificate is not trusted for that name.',
    fix: 'Check that {setting} ({target}) names the server exactly as its certificate does (smtp.office365.com, outlook.office365.com); a TLS-inspecting proxy must be trusted through NODE_EXTRA_CA_CERTS. The broker never turns certificate checks off.',
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    // Node's, nodemailer's (ETIMEDOUT) and imapflow's own names for a deadline that passed.
    errorCodes: is('ETIMEDOUT', 'ETIMEOUT', 'CONNECT_TIMEOUT', 'GREETING_TIMEOUT', 'UPGRADE_TIMEOUT'),
    code: 'ETIMEDOUT',
    message: 'Cannot reach {target} from the broker: no answer within the time limit.',
    fix: REACH_FIX,
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    errorCodes: is('ECONNRESET', 'EPIPE', 'ECONNECTION', 'EConnectionClosed', 'ClosedAfterConnectText', 'ClosedAfterConnectTLS', 'NoConnection'),
    code: 'ECONNRESET',
    message: 'Cannot talk to {target} from the broker: the server closed the connection before the login finished.',
    fix: REACH_FIX,
  },
  {
    protocols: ['smtp', 'imap', 'pop'],
    errorCodes: is('EHOSTUNREACH', 'ENETUNREACH'),
    code: (found) => found,
    message: 'Cannot reach {target} from the broker: there is no network route to it.',
    fix: REACH_FIX,
  },
];

const SETTINGS: Record<MailProtocol, string> = { smtp: 'BROKER_SMTP_HOST', imap: 'BROKER_IMAP_HOST', pop: 'BROKER_POP_HOST' };
const NAMES: Record<MailProtocol, string> = { smtp: 'SMTP', imap: 'IMAP', pop: 'POP' };

function fill(text: string, protocol: MailProtocol, target: HostHint): string {
  return text
    .replaceAll('{target}', `${target.host}:${target.port}`)
    .replaceAll('{setting}', SETTINGS[protocol])
    .replaceAll('{protocol}', NAMES[protocol]);
}

/** Classifies one protocol's failure by the table above; unknown answers keep the server's words. */
export function describeMailFailure(protocol: MailProtocol, target: HostHint, failure: MailFailure): MailFailureReport {
  const answer = failure.answer?.trim();
  const codes = failure.errorCodes ?? [];
  for (const rule of RULES) {
    if (!rule.protocols.includes(protocol)) continue;
    let matchedCode: string | undefined;
    if (rule.answer) {
      if (answer === undefined || !rule.answer.test(answer)) continue;
    } else if (rule.errorCodes) {
      matchedCode = codes.find(rule.errorCodes);
      if (matchedCode === undefined) continue;
    }
    const said = answer === undefined ? '' : ` ${NAMES[protocol]} answered: "${answer}"`;
    return {
      code: typeof rule.code === 'string' ? rule.code : rule.code(matchedCode ?? ''),
      message: fill(rule.message, protocol, target) + said,
      fix: fill(rule.fix, protocol, target),
    };
  }
  if (answer !== undefined) {
    return {
      code: /^\d{3}(?:[ -]\d\.\d{1,3}\.\d{1,3})?/.exec(answer)?.[0].replace('-', ' ') ?? `${NAMES[protocol]} refused`,
      message: `${NAMES[protocol]} at ${target.host}:${target.port} refused the login: "${answer}"`,
      fix: `Check that ${SETTINGS[protocol]} points at Microsoft 365 and that the connection has the ${NAMES[protocol]} permission; re-authorize if the answer stays.`,
    };
  }
  return {
    code: codes[0] ?? 'UNKNOWN',
    message: `The ${NAMES[protocol]} check against ${target.host}:${target.port} failed: ${failure.errorMessage ?? 'no details'}`,
    fix: fill(REACH_FIX, protocol, target),
  };
}
