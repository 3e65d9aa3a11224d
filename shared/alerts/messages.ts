import type { AppRecord, ConnectionRecord, StatusReason } from '../storage/records.js';
import { SECRET_EXPIRY_THRESHOLDS, daysLeft, type SecretExpiryDue } from './secret-expiry.js';

/*
 * The alert emails. Each is written once as a few blocks and rendered twice, as plain text and
 * as HTML, so both parts always say the same. Every value that came from outside (app names,
 * mailboxes, Microsoft's error text) is escaped in the HTML, and no message ever carries a
 * secret, a token or the operator key: the curl example names `$BROKER_OPERATOR_KEY`.
 */

export interface Email {
  subject: string;
  text: string;
  html: string;
}

type Inline = string | { strong: string } | { code: string };
type Block =
  | { kind: 'p'; parts: Inline[] }
  | { kind: 'heading'; text: string }
  | { kind: 'steps'; items: Inline[][]; start?: number }
  | { kind: 'code'; text: string }
  | { kind: 'button'; label: string; url: string };

const p = (...parts: Inline[]): Block => ({ kind: 'p', parts });
const FOOTER = p('This is an automatic message from the mail OAuth broker; replies to it are not read.');

const escapeHtml = (value: string) =>
  value.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char] ?? char);

/** Control characters would end the Subject header early or fold it oddly. */
const cleanSubject = (value: string) => value.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);

/** `2025-04-12 17:00 UTC`: unambiguous for readers in any time zone. */
export function formatTime(iso: string | Date): string {
  const date = typeof iso === 'string' ? new Date(iso) : iso;
  return Number.isNaN(date.getTime()) ? String(iso) : `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const listOf = (items: string[]) => (items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`);

/** Only the broker's own http(s) links become anchors; anything else is shown as text. */
function safeUrl(url: string): string | null {
  try {
    const parsed = new URL(url);
    const local = parsed.hostname === 'localhost' || parsed.hostname === '127.0.0.1';
    return parsed.protocol === 'https:' || (parsed.protocol === 'http:' && local) ? parsed.toString() : null;
  } catch {
    return null;
  }
}

function inlineText(parts: Inline[]): string {
  return parts.map((part) => (typeof part === 'string' ? part : 'strong' in part ? part.strong : part.code)).join('');
}

function inlineHtml(parts: Inline[]): string {
  return parts
    .map((part) =>
      typeof part === 'string' ? escapeHtml(part) : 'strong' in part ? `<strong>${escapeHtml(part.strong)}</strong>` : `<code>${escapeHtml(part.code)}</code>`,
    )
    .join('');
}

function renderText(blocks: Block[]): string {
  const out = blocks.map((block) => {
    switch (block.kind) {
      case 'p':
        return inlineText(block.parts);
      case 'heading':
        return block.text;
      case 'steps':
        return block.items.map((item, index) => `${(block.start ?? 1) + index}. ${inlineText(item)}`).join('\n');
      case 'code':
        return block.text;
      case 'button':
        return `${block.label}:\n${block.url}`;
    }
  });
  return `${out.join('\n\n')}\n`;
}

function renderHtml(subject: string, blocks: Block[]): string {
  const body = blocks.map((block) => {
    switch (block.kind) {
      case 'p':
        return `<p>${inlineHtml(block.parts)}</p>`;
      case 'heading':
        return `<h2 style="font-size:16px">${escapeHtml(block.text)}</h2>`;
      case 'steps':
        return `<ol${block.start ? ` start="${block.start}"` : ''}>${block.items.map((item) => `<li>${inlineHtml(item)}</li>`).join('')}</ol>`;
      case 'code':
        return `<pre style="background:#f4f4f4;padding:12px;white-space:pre-wrap">${escapeHtml(block.text)}</pre>`;
      case 'button': {
        const url = safeUrl(block.url);
        if (!url) return `<p>${escapeHtml(block.label)}: ${escapeHtml(block.url)}</p>`;
        const style = 'display:inline-block;padding:10px 18px;background:#0f6cbd;color:#ffffff;text-decoration:none;border-radius:4px';
        return `<p><a href="${escapeHtml(url)}" style="${style}">${escapeHtml(block.label)}</a></p><p style="font-size:12px">${escapeHtml(url)}</p>`;
      }
    }
  });
  return [
    '<!DOCTYPE html>',
    `<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head>`,
    `<body style="font-family:Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;line-height:1.5;max-width:640px">`,
    ...body,
    '</body></html>',
    '',
  ].join('\n');
}

function email(subject: string, blocks: Block[]): Email {
  const clean = cleanSubject(subject);
  return { subject: clean, text: renderText(blocks), html: renderHtml(clean, blocks) };
}

export interface SecretExpiryEmailInput {
  app: Pick<AppRecord, 'id' | 'name' | 'clientId'>;
  due: SecretExpiryDue;
  now: Date;
  /** BROKER_PUBLIC_URL, for the PATCH example. */
  publicUrl: string;
}

/** (a) The client secret expires in N days, or has expired: which app, when, and how to replace it. */
export function secretExpiryEmail({ app, due, now, publicUrl }: SecretExpiryEmailInput): Email {
  const which = `the Microsoft app "${app.name}" (client ID ${app.clientId}, broker app ${app.id})`;
  const when = due.expiresOn ? formatTime(due.expiresOn) : null;
  const expired = due.threshold === 0;
  const days = due.expiresOn ? daysLeft(due.expiresOn, now) : 0;
  const example = `${new Date(now.getTime() + 365 * 86_400_000).toISOString().slice(0, 10)}T00:00:00Z`;
  const curl = [
    `curl -X PATCH "${publicUrl}/api/manage/apps/${app.id}" \\`,
    '  -H "Authorization: Bearer $BROKER_OPERATOR_KEY" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d '{"clientSecret": "<the Value you copied>", "clientSecretExpiresOn": "<the Expires date, e.g. ${example}>"}'`,
  ].join('\n');

  const intro: Block[] = expired
    ? [
        due.source === 'microsoft'
          ? p(`Microsoft refused the client secret of ${which} as expired (AADSTS7000222)`, when ? `; the broker had it on record as expiring on ${when}.` : '.')
          : p(`The client secret of ${which} expired on ${when ?? 'its expiry date'}.`),
        p('The broker can no longer get tokens for the mailboxes that use this app: mail through them stops as their current access tokens run out, within the hour. Add a new secret now.'),
      ]
    : [
        p(`The client secret of ${which} expires in ${plural(days, 'day')}, on ${when ?? 'its expiry date'}.`),
        p('When it expires, Microsoft refuses the broker\'s token requests for every mailbox that uses this app, and sending and reading mail through them stops. A new secret added now avoids that: the old one keeps working until the new one is in place.'),
      ];
  const later = SECRET_EXPIRY_THRESHOLDS.filter((threshold) => threshold > 0 && threshold < due.threshold);
  const schedule = expired
    ? []
    : [
        p(
          `This is the ${due.threshold}-day warning. `,
          later.length > 0 ? `Further warnings follow ${listOf(later.map(String))} day(s) before expiry and once it has expired` : 'A last one follows once it has expired',
          ', unless the broker is given a new secret first.',
        ),
      ];

  return email(expired ? `Urgent: the client secret of "${app.name}" has expired` : `Action needed: the client secret of "${app.name}" expires in ${plural(days, 'day')}`, [
    ...intro,
    { kind: 'heading', text: 'Add a new client secret' },
    {
      kind: 'steps',
      items: [
        ['Sign in to the Microsoft Entra admin center, https://entra.microsoft.com, as an Application Administrator or an owner of the app.'],
        ['Go to Entra ID → App registrations → All applications and open "', { strong: app.name }, '" (search for the client ID ', { code: app.clientId }, ').'],
        ['Select Certificates & secrets → Client secrets → New client secret, enter a description, choose when it expires, and select Add.'],
        ['Copy the new secret\'s ', { strong: 'Value' }, ' straight away: Microsoft shows it only this once. Do not copy the ', { strong: 'Secret ID' }, ', which is only its name. Note the date in the Expires column.'],
        ['Give the broker the Value and the expiry date with ', { code: `PATCH /api/manage/apps/${app.id}` }, '. The broker tries the new secret with Microsoft first and keeps the old one if Microsoft refuses it:'],
      ],
    },
    { kind: 'code', text: curl },
    {
      kind: 'steps',
      start: 6,
      items: [['When the broker has accepted it (200), delete the old secret under Client secrets.']],
    },
    p('If you do not operate the broker yourself, send the new Value to whoever does through a secure channel, never by email.'),
    ...schedule,
    FOOTER,
  ]);
}

export interface ReauthEmailInput {
  connection: Pick<ConnectionRecord, 'id' | 'mailbox' | 'mode' | 'signInName'>;
  tenant: { name: string };
  reason: StatusReason;
  link: { url: string; expiresAt: string };
}

/** (b) A connection needs re-authorization: which mailbox, why in plain words, and a fresh one-click link. */
export function needsReauthEmail({ connection, tenant, reason, link }: ReauthEmailInput): Email {
  const expected = connection.signInName ?? connection.mailbox;
  const appOnly = connection.mode === 'app_only';
  return email(`Action needed: re-authorize the mailbox ${connection.mailbox}`, [
    p(
      `The mail connection of ${connection.mailbox} (${tenant.name}) has stopped working. Microsoft no longer accepts the authorization it was given, `,
      'so mail can be neither sent nor read through it until it is authorized again.',
    ),
    p({ strong: 'What happened: ' }, `${reason.message} (${reason.code})`),
    p({ strong: 'What fixes it: ' }, reason.fix),
    appOnly
      ? p(`An administrator of the Microsoft 365 organisation of ${connection.mailbox} opens this link, signs in and accepts the permissions again (admin consent):`)
      : p(`Open this link and sign in as ${expected}, the same account that connected the mailbox before:`),
    { kind: 'button', label: `Re-authorize ${connection.mailbox}`, url: link.url },
    p(`The link works until ${formatTime(link.expiresAt)} and stops working once the mailbox is connected again.`),
    ...(appOnly ? [] : [p(`If Microsoft signs you in as someone other than ${expected}, open the link in a private browser window.`)]),
    p('You get this email once per incident, and a short notice when the mailbox works again.'),
    FOOTER,
  ]);
}

export interface ReconnectedEmailInput {
  connection: Pick<ConnectionRecord, 'mailbox'>;
  tenant: { name: string };
  /** When the incident began: the needs_reauth alert's creation. */
  since: string;
  now: Date;
}

/** (c) The recovery notice: the mailbox works again. */
export function reconnectedEmail({ connection, tenant, since, now }: ReconnectedEmailInput): Email {
  return email(`Resolved: the mailbox ${connection.mailbox} is connected again`, [
    p(`The mail connection of ${connection.mailbox} (${tenant.name}) works again since ${formatTime(now)}. It had needed re-authorization since ${formatTime(since)}.`),
    p('Nothing more needs to be done.'),
    FOOTER,
  ]);
}
