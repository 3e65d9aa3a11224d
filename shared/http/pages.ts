import { createHash } from 'node:crypto';
import { BrokerError } from '../errors.js';
import type { PlainResponse } from './problem.js';

/**
 * The HTML result pages of the browser routes (`/api/connect/{linkId}`, `/api/oauth/callback`).
 * Every string is escaped; the only style is one fixed stylesheet allowed by its hash, so
 * the CSP forbids everything else (no scripts, no inline styles, no frames, no forms).
 *
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-4.11 open redirectors
 * @see https://www.w3.org/TR/CSP3/#grammardef-hash-source
 */

export type PageTone = 'success' | 'error' | 'info';

export interface PageDetail {
  label: string;
  value: string;
}

export interface PageAction {
  label: string;
  /** An `https:` URL or a same-origin path (`/api/connect/…`); anything else is refused. */
  href: string;
}

export interface PageOptions {
  status: number;
  tone: PageTone;
  title: string;
  paragraphs: string[];
  details?: PageDetail[];
  actions?: PageAction[];
}

// Fixed text: its hash goes into the CSP, so a change here changes the header with it.
const STYLESHEET = [
  ':root{color-scheme:light dark;--fg:#1b1b1b;--bg:#f5f5f5;--card:#fff;--muted:#555;--accent:#0f6cbd}',
  '@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#1b1b1b;--card:#262626;--muted:#bbb;--accent:#6cb8f6}}',
  'body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}',
  'main{max-width:40rem;margin:2rem auto;padding:1.5rem;background:var(--card);border-top:6px solid var(--accent);border-radius:6px}',
  '.success main{border-top-color:#107c10}.error main{border-top-color:#c50f1f}',
  '.tone{margin:0;font-size:.85rem;font-weight:600;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}',
  'h1{font-size:1.5rem;line-height:1.25;margin:.25rem 0 1rem;overflow-wrap:anywhere}',
  'p,dd{overflow-wrap:anywhere}',
  'dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:1rem 0}',
  'dt{font-weight:600}dd{margin:0;font-family:ui-monospace,Consolas,monospace;font-size:.9rem}',
  'ul{list-style:none;padding:0;margin:1.5rem 0 0;display:flex;flex-wrap:wrap;gap:.75rem}',
  'a{display:inline-block;padding:.6rem 1rem;border-radius:4px;background:var(--accent);color:#fff;text-decoration:none;font-weight:600}',
  'a:focus-visible{outline:3px solid var(--fg);outline-offset:2px}',
  '@media (max-width:30rem){main{margin:0;border-radius:0}dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}}',
].join('');

const STYLE_HASH = `'sha256-${createHash('sha256').update(STYLESHEET, 'utf8').digest('base64')}'`;

export const PAGE_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `style-src ${STYLE_HASH}`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TONE_LABEL: Record<PageTone, string> = { success: 'Done', error: 'Something went wrong', info: 'Information' };

/** Renders one result page. Throws `BrokerError('INTERNAL')` for an action link that is not allowed. */
export function renderPage(options: PageOptions): PlainResponse {
  // 3xx would make browsers look for a Location header instead of showing the page.
  if (!Number.isInteger(options.status) || options.status < 200 || options.status > 599 || (options.status >= 300 && options.status < 400)) {
    throw new BrokerError('INTERNAL', `A result page needs a 2xx, 4xx or 5xx status, got ${String(options.status)}.`);
  }
  const actions = (options.actions ?? []).map((action) => ({ label: action.label, href: safeActionHref(action.href) }));
  const details = options.details ?? [];
  const body = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="robots" content="noindex">',
    `<title>${escapeHtml(options.title)} - Mail OAuth Broker</title>`,
    `<style>${STYLESHEET}</style>`,
    '</head>',
    `<body class="${options.tone}">`,
    '<main>',
    `<p class="tone">${TONE_LABEL[options.tone]}</p>`,
    `<h1>${escapeHtml(options.title)}</h1>`,
    ...options.paragraphs.map((paragraph) => `<p>${escapeHtml(paragraph)}</p>`),
    ...(details.length
      ? ['<dl>', ...details.map((detail) => `<dt>${escapeHtml(detail.label)}</dt><dd>${escapeHtml(detail.value)}</dd>`), '</dl>']
      : []),
    ...(actions.length
      ? ['<ul>', ...actions.map((action) => `<li><a href="${escapeHtml(action.href)}">${escapeHtml(action.label)}</a></li>`), '</ul>']
      : []),
    '</main>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
  return { status: options.status, headers: pageHeaders(), body };
}

/** A fresh object each time: callers may add headers (Retry-After) to the page they got. */
export function pageHeaders(): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': PAGE_CONTENT_SECURITY_POLICY,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
  };
}

/**
 * Whether a link may appear on a page: `https:` without credentials in the URL, or a path on
 * this origin. No `http:`, `javascript:`, `data:`, scheme-relative `//host` or `/\host`
 * (browsers treat a backslash as a slash), so a page can never become an open redirector.
 */
export function isSafeActionHref(href: string): boolean {
  if (href === '' || /[\u0000-\u0020\u007f\\]/.test(href)) return false;
  if (href.startsWith('/')) {
    if (href.startsWith('//')) return false;
    const base = 'https://broker.invalid';
    try {
      return new URL(href, base).origin === base;
    } catch {
      return false;
    }
  }
  try {
    const url = new URL(href);
    return url.protocol === 'https:' && url.hostname !== '' && url.username === '' && url.password === '';
  } catch {
    return false;
  }
}

function safeActionHref(href: string): string {
  if (!isSafeActionHref(href)) {
    // The href itself is left out of the message: it may be hostile and messages reach logs.
    throw new BrokerError('INTERNAL', 'A result page action link must be an https URL or a path on this site.');
  }
  return href.startsWith('/') ? href : new URL(href).href;
}

/** Escapes text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`).replaceAll('\u0000', '\uFFFD');
}
