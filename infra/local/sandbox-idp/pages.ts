import { createHash } from 'node:crypto';
import type { Reply } from './http.js';

/**
 * The browser-facing pages: plain HTML, every value escaped, no script, a strict CSP. They
 * are served on http://localhost so a newcomer's browser shows no certificate warning.
 */

const STYLE = [
  'body{font-family:system-ui,sans-serif;background:#f2f2f2;margin:0;padding:2rem}',
  'main{max-width:26rem;margin:2rem auto;background:#fff;padding:2rem;border:1px solid #ddd}',
  'h1{font-size:1.4rem;margin:.2rem 0 1rem}',
  '.brand{color:#555;font-size:.85rem;margin:0}',
  '.error{color:#a80000;border-left:3px solid #a80000;padding-left:.6rem}',
  '.note,.trace{color:#555;font-size:.8rem}',
  'label{display:block;margin:.8rem 0 .3rem}',
  'input[type=text]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}',
  '.actions{margin-top:1.2rem;display:flex;gap:.6rem;justify-content:flex-end}',
  'button{padding:.5rem 1.2rem;font-size:1rem}',
  'ul{padding-left:1.2rem}',
].join('');
const STYLE_HASH = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

const PERMISSION_TEXT: Record<string, string> = {
  openid: 'Sign you in',
  profile: 'View your basic profile',
  email: 'View your email address',
  offline_access: 'Maintain access to data you have given it access to',
  'SMTP.Send': 'Send emails from mailboxes using SMTP AUTH',
  'IMAP.AccessAsUser.All': 'Read and write access to mailboxes via IMAP',
  'POP.AccessAsUser.All': 'Read and write access to mailboxes via POP',
};

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Browsers apply `form-action` to the redirect that follows a form post too, so the origin of
 * the (registered, exactly matched) redirect URI has to be allowed beside 'self'.
 */
function page(status: number, title: string, content: string, formRedirectOrigin?: string): Reply {
  const formAction = formRedirectOrigin ? `'self' ${formRedirectOrigin}` : `'self'`;
  const csp = `default-src 'none'; style-src ${STYLE_HASH}; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`;
  const body =
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><main>` +
    `<p class="brand">Sandbox identity provider (local, not Microsoft)</p>${content}</main></body></html>`;
  return {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': csp,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    },
    body,
  };
}

export interface SignInPage {
  ctx: string;
  action: string;
  appName: string;
  loginHint: string;
  admin: boolean;
  message?: string;
  redirectOrigin: string;
}

export function signInPage(view: SignInPage): Reply {
  const heading = view.admin ? 'Sign in as an administrator' : 'Sign in';
  const content =
    `<h1>${heading}</h1><p>to continue to <strong>${escapeHtml(view.appName)}</strong></p>` +
    (view.message ? `<p class="error" role="alert">${escapeHtml(view.message)}</p>` : '') +
    `<form method="post" action="${escapeHtml(view.action)}">` +
    `<input type="hidden" name="ctx" value="${escapeHtml(view.ctx)}">` +
    `<label for="login">Email, phone, or Skype</label>` +
    `<input type="text" id="login" name="login" autocomplete="username" required autofocus value="${escapeHtml(view.loginHint)}">` +
    `<div class="actions"><button type="submit" name="action" value="cancel" formnovalidate>Cancel</button>` +
    `<button type="submit" name="action" value="signin">Sign in</button></div></form>` +
    `<p class="note">No password is needed here: this sandbox signs in any user it was given.</p>`;
  return page(view.message ? 400 : 200, heading, content, view.redirectOrigin);
}

export interface ConsentPage {
  ctx: string;
  action: string;
  appName: string;
  upn: string;
  permissions: readonly string[];
  admin: boolean;
  redirectOrigin: string;
}

export function consentPage(view: ConsentPage): Reply {
  const heading = view.admin ? `Grant admin consent for ${view.appName}?` : 'Permissions requested';
  const items = view.permissions.map((permission) => {
    const short = permission.slice(permission.lastIndexOf('/') + 1);
    const text = PERMISSION_TEXT[short];
    return `<li>${escapeHtml(text ? `${text} (${permission})` : permission)}</li>`;
  });
  const lead = view.admin
    ? `<p><strong>${escapeHtml(view.appName)}</strong> will get these permissions for everyone in your organization:</p>`
    : `<p><strong>${escapeHtml(view.appName)}</strong> would like to:</p>`;
  const content =
    `<h1>${escapeHtml(heading)}</h1><p class="note">Signed in as ${escapeHtml(view.upn)}</p>${lead}<ul>${items.join('')}</ul>` +
    `<form method="post" action="${escapeHtml(view.action)}">` +
    `<input type="hidden" name="ctx" value="${escapeHtml(view.ctx)}">` +
    `<div class="actions"><button type="submit" name="action" value="cancel">Cancel</button>` +
    `<button type="submit" name="action" value="accept">Accept</button></div></form>`;
  return page(200, heading, content, view.redirectOrigin);
}

/** Entra's "Sorry, but we're having trouble signing you in" page, shown when it must not redirect. */
export function errorPage(status: number, description: string): Reply {
  const [first, ...trace] = description.split('\r\n');
  const content =
    `<h1>Sorry, but we're having trouble signing you in.</h1><p class="error" role="alert">${escapeHtml(first ?? '')}</p>` +
    `<p class="trace">${trace.map(escapeHtml).join('<br>')}</p>`;
  return page(status, 'Sign in', content);
}

export function signedOutPage(): Reply {
  return page(200, 'Signed out', '<h1>You signed out of your account</h1><p>It\'s a good idea to close all browser windows.</p>');
}
