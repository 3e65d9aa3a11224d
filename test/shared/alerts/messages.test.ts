import { describe, expect, it } from 'vitest';
import { needsReauthEmail, reconnectedEmail, secretExpiryEmail } from '../../../shared/alerts/messages.js';
import { secretExpiredNow, secretExpiryDue } from '../../../shared/alerts/secret-expiry.js';
import type { AppRecord } from '../../../shared/storage/records.js';

/* The alert emails: what they say, in both parts, and what they never contain. */

const NOW = new Date('2025-06-01T09:30:00.000Z');
const DAY = 86_400_000;

const app: AppRecord = {
  id: 'app_aaaaaaaaaaaaaaaaaaaaaaaaaa',
  name: 'Contoso <Mail> & "Co"',
  clientId: '11111111-2222-4333-8444-555555555555',
  tenant: 'organizations',
  clientSecretExpiresOn: new Date(NOW.getTime() + 7 * DAY).toISOString(),
  clientSecretVersion: 'v1',
  alertEmails: [],
  createdAt: NOW.toISOString(),
  updatedAt: NOW.toISOString(),
};

const connection = { id: 'con_aaaaaaaaaaaaaaaaaaaaaaaaaa', mailbox: 'alice@contoso.example', mode: 'delegated' as const, signInName: null };
const link = { url: 'https://broker.example/api/connect/lnk_bbbbbbbbbbbbbbbbbbbbbbbbbb', expiresAt: '2025-06-08T09:30:00.000Z' };

describe('client secret expiring', () => {
  const email = secretExpiryEmail({ app, due: secretExpiryDue(app, NOW)!, now: NOW, publicUrl: 'https://broker.example' });

  it('says which app and when, in the subject and the body', () => {
    expect(email.subject).toBe('Action needed: the client secret of "Contoso <Mail> & "Co"" expires in 7 days');
    expect(email.text).toContain('client ID 11111111-2222-4333-8444-555555555555');
    expect(email.text).toContain('on 2025-06-08 09:30 UTC');
    expect(email.text).toContain('This is the 7-day warning. Further warnings follow 3 and 1 day(s) before expiry and once it has expired, unless');
  });

  it('gives the exact steps, Value not Secret ID, and the PATCH as curl with a placeholder for the operator key', () => {
    for (const part of [email.text, email.html]) {
      for (const step of ['https://entra.microsoft.com', 'App registrations', 'Certificates &amp; secrets', 'New client secret', 'Secret ID']) {
        expect(part).toContain(part === email.text ? step.replace('&amp;', '&') : step);
      }
    }
    expect(email.text).toContain("Copy the new secret's Value straight away");
    expect(email.html).toContain('<strong>Value</strong>');
    expect(email.text).toContain('curl -X PATCH "https://broker.example/api/manage/apps/app_aaaaaaaaaaaaaaaaaaaaaaaaaa"');
    expect(email.text).toContain('Authorization: Bearer $BROKER_OPERATOR_KEY');
    expect(email.text).toContain('"clientSecret": "<the Value you copied>"');
    expect(email.text).toMatch(/^6\. When the broker has accepted it/m);
  });

  it('escapes everything that came from outside in the HTML', () => {
    expect(email.html).toContain('Contoso &lt;Mail&gt; &amp; &quot;Co&quot;');
    expect(email.html).not.toContain('<Mail>');
    expect(email.html).toContain('&lt;the Value you copied&gt;');
  });
});

describe('client secret expired', () => {
  it('on schedule, says it expired and that mail stops', () => {
    const expired = { ...app, clientSecretExpiresOn: new Date(NOW.getTime() - DAY).toISOString() };
    const email = secretExpiryEmail({ app: expired, due: secretExpiryDue(expired, NOW)!, now: NOW, publicUrl: 'https://broker.example' });
    expect(email.subject).toBe('Urgent: the client secret of "Contoso <Mail> & "Co"" has expired');
    expect(email.text).toContain('expired on 2025-05-31 09:30 UTC');
    expect(email.text).toContain('mail through them stops');
    expect(email.text).not.toContain('Further warnings');
  });

  it('from Microsoft (AADSTS7000222), says so even when the recorded date is later', () => {
    const email = secretExpiryEmail({ app, due: secretExpiredNow(app), now: NOW, publicUrl: 'https://broker.example' });
    expect(email.subject).toContain('has expired');
    expect(email.text).toContain('as expired (AADSTS7000222); the broker had it on record as expiring on 2025-06-08 09:30 UTC.');
  });
});

describe('needs re-authorization', () => {
  const reason = { code: 'AADSTS50173', message: 'The grant was revoked <script>alert(1)</script>', fix: 'Sign in again.' };
  const email = needsReauthEmail({ connection, tenant: { name: 'Contoso' }, reason, link });

  it('names the mailbox, the reason and the fix, and carries the link in both parts', () => {
    expect(email.subject).toBe('Action needed: re-authorize the mailbox alice@contoso.example');
    expect(email.text).toContain('What happened: The grant was revoked <script>alert(1)</script> (AADSTS50173)');
    expect(email.text).toContain('What fixes it: Sign in again.');
    expect(email.text).toContain(`Re-authorize alice@contoso.example:\n${link.url}`);
    expect(email.text).toContain('sign in as alice@contoso.example');
    expect(email.text).toContain('2025-06-08 09:30 UTC');
    expect(email.html).toContain(`<a href="${link.url}"`);
    expect(email.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(email.html).not.toContain('<script>');
  });

  it('for app-only connections, asks an administrator for admin consent', () => {
    const appOnly = needsReauthEmail({ connection: { ...connection, mode: 'app_only' }, tenant: { name: 'Contoso' }, reason, link });
    expect(appOnly.text).toContain('An administrator of the Microsoft 365 organisation');
    expect(appOnly.text).toContain('admin consent');
    expect(appOnly.text).not.toContain('private browser window');
  });

  it('makes an anchor only of an http(s) link, and keeps line breaks out of the subject', () => {
    const odd = needsReauthEmail({ connection: { ...connection, mailbox: 'a@b.example\r\nBcc: x@y.example' }, tenant: { name: 'T' }, reason, link: { ...link, url: 'javascript:alert(1)' } });
    expect(odd.html).not.toContain('href="javascript');
    expect(odd.subject).not.toMatch(/[\r\n]/);
  });
});

describe('recovery notice', () => {
  it('says the mailbox works again and since when it did not', () => {
    const email = reconnectedEmail({ connection, tenant: { name: 'Contoso' }, since: '2025-05-30T08:00:00.000Z', now: NOW });
    expect(email.subject).toBe('Resolved: the mailbox alice@contoso.example is connected again');
    expect(email.text).toContain('works again since 2025-06-01 09:30 UTC');
    expect(email.text).toContain('since 2025-05-30 08:00 UTC');
    expect(email.html).toContain('<p>');
  });
});
