import type { Connected } from '../connect/connect-service.js';
import { BrokerError } from '../errors.js';
import { renderPage } from './pages.js';
import type { PlainResponse } from './problem.js';

/*
 * What a person sees on the browser routes. Like problemResponse for the API, this is the
 * one place a failure becomes a page; the page says what happened and the exact fix.
 */

export function errorPage(error: unknown, log: (message: string, error: unknown) => void): PlainResponse {
  const known = error instanceof BrokerError ? error : null;
  if (!known || known.status >= 500) log(known ? `${known.code}: ${known.message}` : 'unexpected error', error);
  const failure = known ?? new BrokerError('INTERNAL', 'Something went wrong on our side; the error was logged.', { fix: 'Try the link again in a few minutes.' });
  const page = renderPage({
    status: failure.status,
    tone: 'error',
    title: failure.title,
    paragraphs: [failure.message, ...(failure.fix ? [failure.fix] : [])],
    details: [{ label: 'Error code', value: failure.code }],
  });
  const headers: Record<string, string> = { ...page.headers };
  if (failure.retryAfterSeconds !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(failure.retryAfterSeconds)));
  if (failure.allow) headers.allow = failure.allow.join(', ');
  return { ...page, headers };
}

export function renderSuccessPage(connected: Connected): PlainResponse {
  if (connected.adminConsent) return adminConsentPage(connected.mailbox, connected.adminConsent);
  return renderPage({
    status: 200,
    tone: 'success',
    title: connected.reauthorized ? `${connected.mailbox} is connected again` : `${connected.mailbox} is connected`,
    paragraphs: [
      `You signed in as ${connected.signedInAs}. The mail service can now send and read mail for ${connected.mailbox} without asking you again.`,
      'The connection is kept alive automatically. If it ever needs you again, the mailbox\'s contacts get an email with a new link.',
      'You can close this window.',
    ],
  });
}

/**
 * Consent alone does not open a mailbox to an app: Exchange Online also needs the app's
 * service principal and a mailbox permission.
 *
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
 */
function adminConsentPage(mailbox: string, consent: { tenantId: string; clientId: string }): PlainResponse {
  return renderPage({
    status: 200,
    tone: 'success',
    title: `Admin consent granted for ${mailbox}`,
    paragraphs: [
      `Your organisation (directory ${consent.tenantId}) now lets the app use its Exchange Online mail permissions. Two steps remain in Exchange Online PowerShell (Connect-ExchangeOnline as an Exchange administrator):`,
      `1. Register the app in Exchange: New-ServicePrincipal -AppId ${consent.clientId} -ObjectId <the Object ID of this app under Enterprise applications in the Entra admin center>`,
      `2. Give it the mailbox: Add-MailboxPermission -Identity ${mailbox} -User <the service principal's Identity from step 1> -AccessRights FullAccess`,
      'For sending with SMTP, Authenticated SMTP must also be enabled for the mailbox. You can close this window.',
    ],
    details: [
      { label: 'Application (client) ID', value: consent.clientId },
      { label: 'Directory (tenant) ID', value: consent.tenantId },
    ],
  });
}
