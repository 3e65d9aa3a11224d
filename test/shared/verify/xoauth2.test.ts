import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { BrokerError } from '../../../shared/errors.js';
import { xoauth2 } from '../../../shared/verify/xoauth2.js';

describe('xoauth2', () => {
  it('is base64 of user=…^Aauth=Bearer …^A^A, as Microsoft documents it', () => {
    // The example from Microsoft's "Authenticate an IMAP, POP or SMTP connection using OAuth".
    expect(xoauth2('test@contoso.onmicrosoft.com', 'EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA')).toBe(
      'dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==',
    );
    expect(Buffer.from(xoauth2('ada@contoso.example', 'eyJ.a.b'), 'base64').toString('utf8')).toBe('user=ada@contoso.example\x01auth=Bearer eyJ.a.b\x01\x01');
  });

  it('refuses values that would break the \\x01 framing, without echoing the token', () => {
    expect(() => xoauth2('ada@contoso.example\x01auth=Bearer x', 'token')).toThrow(BrokerError);
    expect(() => xoauth2('', 'token')).toThrow(BrokerError);
    let thrown: unknown;
    try {
      xoauth2('ada@contoso.example', 'secret-token\r\nQUIT');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(BrokerError);
    expect((thrown as BrokerError).code).toBe('INVALID_REQUEST');
    expect((thrown as BrokerError).message).not.toContain('secret-token');
  });
});
