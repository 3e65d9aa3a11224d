import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BrokerError } from '../../../shared/errors.js';
import { PAGE_CONTENT_SECURITY_POLICY, escapeHtml, isSafeActionHref, renderPage, type PageOptions } from '../../../shared/http/pages.js';

const HOSTILE = `"><script>alert('x')</script><img src=x onerror=alert(1)>&amp;`;

function page(overrides: Partial<PageOptions> = {}) {
  return renderPage({
    status: 200,
    tone: 'success',
    title: 'contoso@fabrikam.com is connected',
    paragraphs: ['You signed in as contoso@fabrikam.com.'],
    ...overrides,
  });
}

function header(response: { headers: Record<string, string> }, name: string): string | undefined {
  return Object.entries(response.headers).find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1];
}

function directives(csp: string): Map<string, string> {
  return new Map(csp.split(';').map((part) => {
    const [name = '', ...values] = part.trim().split(/\s+/);
    return [name, values.join(' ')] as const;
  }));
}

describe('renderPage', () => {
  it('answers with the status and the security headers', () => {
    const response = page({ status: 409 });
    expect(response.status).toBe(409);
    expect(header(response, 'Content-Type')).toBe('text/html; charset=utf-8');
    expect(header(response, 'Cache-Control')).toBe('no-store');
    expect(header(response, 'X-Content-Type-Options')).toBe('nosniff');
    expect(header(response, 'Referrer-Policy')).toBe('no-referrer');
    expect(header(response, 'X-Frame-Options')).toBe('DENY');
    expect(header(response, 'Content-Security-Policy')).toBe(PAGE_CONTENT_SECURITY_POLICY);
  });

  it('has a CSP that allows only its own stylesheet, by hash', () => {
    const csp = directives(header(page(), 'Content-Security-Policy') ?? '');
    expect(csp.get('default-src')).toBe("'none'");
    expect(csp.get('frame-ancestors')).toBe("'none'");
    expect(csp.get('form-action')).toBe("'none'");
    expect(csp.get('base-uri')).toBe("'none'");
    expect(csp.has('script-src')).toBe(false);
    expect(PAGE_CONTENT_SECURITY_POLICY).not.toContain('unsafe-inline');
    expect(PAGE_CONTENT_SECURITY_POLICY).not.toContain('unsafe-eval');

    const body = page().body;
    const styles = [...body.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((match) => match[1] ?? '');
    expect(styles).toHaveLength(1);
    const hash = createHash('sha256').update(styles[0] ?? '', 'utf8').digest('base64');
    expect(csp.get('style-src')).toBe(`'sha256-${hash}'`);
  });

  it('has no script, no inline style attribute and no event handler', () => {
    const body = page({
      actions: [{ label: 'Open Microsoft sign-in', href: 'https://login.microsoftonline.com/common/oauth2/v2.0/authorize?client_id=1&state=a"b' }],
      details: [{ label: 'Mailbox', value: 'contoso@fabrikam.com' }],
    }).body;
    expect(body).not.toMatch(/<script/i);
    expect(body).not.toMatch(/\sstyle=/i);
    expect(body).not.toMatch(/\son[a-z]+=/i);
  });

  it('is an accessible, mobile-friendly document', () => {
    const body = page().body;
    expect(body.startsWith('<!doctype html>')).toBe(true);
    expect(body).toContain('<html lang="en">');
    expect(body).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(body.match(/<h1>/g)).toHaveLength(1);
    expect(body).toContain('<main>');
    expect(body).toContain('<title>contoso@fabrikam.com is connected - Mail OAuth Broker</title>');
  });

  it('escapes hostile strings in every field', () => {
    const body = renderPage({
      status: 403,
      tone: 'error',
      title: HOSTILE,
      paragraphs: [HOSTILE, `second ${HOSTILE}`],
      details: [{ label: HOSTILE, value: HOSTILE }],
      actions: [{ label: HOSTILE, href: `/api/connect/lnk_1?next="><script>alert(1)</script>` }],
    }).body;
    expect(body).not.toContain('<script>');
    expect(body).not.toContain('<img');
    expect(body).not.toContain('"><');
    // Already-escaped input is escaped again, never passed through.
    expect(body).toContain('&#38;amp;');
    expect(body).toContain('&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;');
    expect(body).toContain('href="/api/connect/lnk_1?next=&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;"');
    // Title, h1, two paragraphs, dt, dd and link text: seven escaped copies.
    expect(body.split('&#60;img src=x onerror=alert(1)&#62;').length - 1).toBe(7);
  });

  it('renders details and actions', () => {
    const body = page({
      details: [{ label: 'Error code', value: 'AADSTS700082' }],
      actions: [
        { label: 'Try again', href: '/api/connect/lnk_abc' },
        { label: 'Microsoft sign-in logs', href: 'https://entra.microsoft.com/#view/Microsoft_AAD_IAM/SignInLogs' },
      ],
    }).body;
    expect(body).toContain('<dt>Error code</dt><dd>AADSTS700082</dd>');
    expect(body).toContain('<li><a href="/api/connect/lnk_abc">Try again</a></li>');
    expect(body).toContain('<a href="https://entra.microsoft.com/#view/Microsoft_AAD_IAM/SignInLogs">');
  });

  it('says the tone in words, not only in colour', () => {
    expect(page({ tone: 'success' }).body).toContain('<body class="success">');
    expect(page({ tone: 'error' }).body).toContain('<p class="tone">Something went wrong</p>');
    expect(page({ tone: 'info' }).body).toContain('<p class="tone">Information</p>');
  });

  it('gives each response its own headers object', () => {
    const first = page();
    (first.headers as Record<string, string>)['retry-after'] = '30';
    expect(page().headers['retry-after']).toBeUndefined();
  });

  it.each([
    'javascript:alert(1)',
    'JavaScript:alert(1)',
    ' javascript:alert(1)',
    'java\tscript:alert(1)',
    'data:text/html,<script>alert(1)</script>',
    'vbscript:msgbox(1)',
    'http://evil.example/',
    '//evil.example/',
    '/\\evil.example/',
    '\\\\evil.example',
    'https://user:pass@evil.example/',
    'relative/path',
    '?next=x',
    '',
  ])('refuses the action link %j', (href) => {
    expect(isSafeActionHref(href)).toBe(false);
    expect(() => page({ actions: [{ label: 'Go', href }] })).toThrow(BrokerError);
  });

  it('allows https links and same-origin paths', () => {
    for (const href of ['https://login.microsoftonline.com/common/adminconsent?client_id=1', '/api/connect/lnk_1', '/']) {
      expect(isSafeActionHref(href)).toBe(true);
    }
  });

  it('refuses a status that is not a page status', () => {
    expect(() => page({ status: 503 })).not.toThrow();
    expect(() => page({ status: 302 })).toThrow(BrokerError);
    expect(() => page({ status: 99 })).toThrow(BrokerError);
    expect(() => page({ status: 200.5 })).toThrow(BrokerError);
  });
});

describe('escapeHtml', () => {
  it('escapes the five HTML-significant characters', () => {
    expect(escapeHtml(`<a href="x" title='y'>&</a>`)).toBe('&#60;a href=&#34;x&#34; title=&#39;y&#39;&#62;&#38;&#60;/a&#62;');
  });
});
