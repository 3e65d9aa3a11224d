import { Buffer } from 'node:buffer';
import { BrokerError } from '../errors.js';

// The payload's fields are framed by \x01, so a control character inside a value would end the
// field early and smuggle in fields of its own (RFC 7628 section 3.1 allows none in a value).
const CONTROL_CHARACTERS = /[\x00-\x1f\x7f]/;

/**
 * The SASL XOAUTH2 initial response for SMTP `AUTH XOAUTH2`, IMAP `AUTHENTICATE XOAUTH2` and
 * POP `AUTH XOAUTH2`: `base64("user=" + mailbox + "\x01auth=Bearer " + token + "\x01\x01")`.
 * The result contains the token: never log it.
 *
 * @see https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth#sasl-xoauth2
 * @see https://developers.google.com/workspace/gmail/imap/xoauth2-protocol
 */
export function xoauth2(username: string, accessToken: string): string {
  if (username === '' || CONTROL_CHARACTERS.test(username)) {
    throw new BrokerError('INVALID_REQUEST', 'The mailbox name is empty or contains control characters.');
  }
  if (accessToken === '' || CONTROL_CHARACTERS.test(accessToken)) {
    // The message names the problem, never the value.
    throw new BrokerError('INVALID_REQUEST', 'The access token is empty or contains control characters.');
  }
  return Buffer.from(`user=${username}\x01auth=Bearer ${accessToken}\x01\x01`, 'utf8').toString('base64');
}
