import { describe, expect, it } from 'vitest';
import { describeMailFailure } from '../../../shared/verify/mail-answers.js';

/* The one table from a mail server's answer (or a socket error) to code, message and fix. */

const smtp = { host: 'smtp.office365.com', port: 587 };
const imap = { host: 'outlook.office365.com', port: 993 };

describe('describeMailFailure', () => {
  it('reads the enhanced status code of Exchange\'s SMTP answers', () => {
    const disabled = describeMailFailure('smtp', smtp, {
      answer: '535 5.7.139 Authentication unsuccessful, user is locked by your organization\'s security defaults policy. Contact your administrator. [MN2PR05CA0004.namprd05.prod.outlook.com]',
    });
    expect(disabled.code).toBe('535 5.7.139');
    expect(disabled.fix).toMatch(/Authenticated SMTP.*SmtpClientAuthenticationDisabled \$false.*security defaults/s);
    expect(disabled.message).toContain('security defaults policy');

    expect(describeMailFailure('smtp', smtp, { answer: '535 5.7.3 Authentication unsuccessful [SN4PR0601CA0011.namprd06.prod.outlook.com]' }).code).toBe('535 5.7.3');
    const generic = describeMailFailure('smtp', smtp, { answer: '535 5.7.8 Error: authentication failed' });
    expect(generic.code).toBe('535 5.7.8');
    expect(generic.fix).toContain('BROKER_SMTP_HOST (smtp.office365.com:587)');
    expect(describeMailFailure('smtp', smtp, { answer: '454 4.7.0 Temporary authentication failure' }).fix).toContain('verify again');
  });

  it('keeps the server\'s words and status for answers it does not know', () => {
    const unknown = describeMailFailure('smtp', smtp, { answer: '550-5.7.1 Not today' });
    expect(unknown.code).toBe('550 5.7.1');
    expect(unknown.message).toContain('"550-5.7.1 Not today"');
    expect(describeMailFailure('imap', imap, { answer: 'A1 NO [UNAVAILABLE] Try later' }).code).toBe('IMAP refused');
  });

  it('applies an answer rule only to its protocol', () => {
    // "AUTHENTICATE failed" is IMAP's answer; an SMTP server saying it is not Exchange's IMAP refusal.
    expect(describeMailFailure('smtp', smtp, { answer: '535 AUTHENTICATE failed' }).code).toBe('535');
    expect(describeMailFailure('imap', imap, { answer: '3 NO AUTHENTICATE failed.' }).code).toBe('IMAP AUTHENTICATE failed');
  });

  it('names network failures by host:port and the setting to check', () => {
    const refused = describeMailFailure('imap', imap, { errorCodes: ['ESOCKET', 'ECONNREFUSED'] });
    expect(refused).toMatchObject({ code: 'ECONNREFUSED', message: 'Cannot reach outlook.office365.com:993 from the broker: the connection was refused.' });
    expect(refused.fix).toContain('BROKER_IMAP_HOST (outlook.office365.com:993)');
    expect(describeMailFailure('imap', imap, { errorCodes: ['GREETING_TIMEOUT'] }).code).toBe('ETIMEDOUT');
    expect(describeMailFailure('smtp', smtp, { errorCodes: ['EDNS', 'ENOTFOUND'] }).code).toBe('ENOTFOUND');
    expect(describeMailFailure('pop', imap, { errorCodes: ['CERT_HAS_EXPIRED'] }).message).toContain('securely');
    expect(describeMailFailure('imap', imap, { errorCodes: ['ClosedAfterConnectTLS'] }).code).toBe('ECONNRESET');
    expect(describeMailFailure('smtp', smtp, { errorCodes: ['EWHATEVER'], errorMessage: 'odd' })).toMatchObject({ code: 'EWHATEVER', message: expect.stringContaining('odd') });
  });
});
