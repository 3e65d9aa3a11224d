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
  if (failure.retryAfterSeconds !== undefined) page.headers['retry-after'] = String(Math.max(1, Math.ceil(failure.retryAfterSeconds)));
  return page;
}

export function renderSuccessPage(connected: Connected): PlainResponse {
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
