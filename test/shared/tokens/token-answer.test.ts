import { describe, expect, it, vi } from 'vitest';
import { newConnectionRecord } from '../../../shared/manage/connections.js';
import type { StorageTables } from '../../../shared/storage/tables.js';
import type { AccessToken, AccessTokens } from '../../../shared/tokens/access-tokens.js';
import { TokenService } from '../../../shared/tokens/token-service.js';

/* The token answer is kept for connections asked for often; what callers read must not change. */

let now = Date.parse('2026-03-01T12:00:00.000Z');
const clock = { now: () => new Date(now) };

const service = new TokenService({
  // Rendering never reads storage or issues tokens.
  tables: {} as StorageTables,
  accessTokens: {} as AccessTokens,
  clock,
  hosts: {
    smtp: { host: 'smtp.office365.com', port: 587 },
    imap: { host: 'outlook.office365.com', port: 993 },
    pop: { host: 'outlook.office365.com', port: 995 },
  },
  checkRateLimit: () => undefined,
  audit: () => undefined,
  touchKey: () => undefined,
});

function connection(overrides: { mailbox?: string; protocols?: ('smtp' | 'imap' | 'pop')[] } = {}) {
  return newConnectionRecord(
    {
      id: 'con_answer1',
      tenantId: 'tnt_a',
      appId: 'app_a',
      mailbox: overrides.mailbox ?? 'sender@contoso.example',
      mode: 'delegated',
      protocols: overrides.protocols ?? ['smtp'],
      signInName: null,
    },
    new Date(now).toISOString(),
  );
}

function token(accessToken: string, minutes = 60): AccessToken {
  return { accessToken, expiresOn: new Date(now + minutes * 60_000), scopes: ['https://outlook.office.com/SMTP.Send'], source: 'memory' };
}

describe('TokenService.render', () => {
  it('renders exactly the answer object, for every set of protocols and awkward mailbox names', () => {
    for (const protocols of [[], ['smtp'], ['smtp', 'imap', 'pop'], ['pop']] as const) {
      for (const mailbox of ['sender@contoso.example', 'Zoë "Q" O\'Brien\\x@contoso.example']) {
        const record = connection({ mailbox, protocols: [...protocols] });
        const issued = token(`eyJ.${protocols.length}.${mailbox.length}`);
        expect(JSON.parse(service.render(record, issued))).toEqual(service.answer(record, issued));
      }
    }
  });

  it('moves expires_in with the clock and renders anew when the token, mailbox or protocols change', () => {
    const record = connection();
    const first = token('eyJ.first');
    expect(JSON.parse(service.render(record, first))).toMatchObject({ access_token: 'eyJ.first', expires_in: 3600 });
    now += 61_000;
    expect(JSON.parse(service.render(record, first))).toMatchObject({ access_token: 'eyJ.first', expires_in: 3539 });

    const second = token('eyJ.second', 90);
    const renewed = JSON.parse(service.render(record, second)) as Record<string, unknown>;
    expect(renewed).toMatchObject({ access_token: 'eyJ.second', expires_in: 5400, expires_at: second.expiresOn.toISOString() });
    expect(Buffer.from(String(renewed.xoauth2), 'base64').toString()).toBe('user=sender@contoso.example\x01auth=Bearer eyJ.second\x01\x01');

    const moved = connection({ mailbox: 'renamed@contoso.example', protocols: ['imap'] });
    const answer = JSON.parse(service.render(moved, second)) as Record<string, unknown>;
    expect(answer).toMatchObject({ username: 'renamed@contoso.example', imap: { host: 'outlook.office365.com', port: 993, security: 'tls' } });
    expect(answer).not.toHaveProperty('smtp');
  });

  it('keeps the answer of a connection asked for twice within a second, not of one asked for once', () => {
    const answer = vi.spyOn(service, 'answer');
    try {
      now = Math.ceil(now / 1000) * 1000 + 100;
      const issued = token('eyJ.kept');
      const once = { ...connection(), id: 'con_askedonce' };
      service.render(once, issued);
      // Once a second, each second: never kept.
      for (let second = 1; second < 3; second += 1) {
        now += 1000;
        service.render(once, issued);
      }
      expect(answer).toHaveBeenCalledTimes(3);

      const hot = { ...connection(), id: 'con_askedtwice' };
      const first = service.render(hot, issued);
      expect(service.render(hot, issued)).toBe(first);
      expect(answer).toHaveBeenCalledTimes(5);
      const kept = service.render(hot, issued);
      expect(kept).toBe(first);
      expect(answer).toHaveBeenCalledTimes(5);

      // Connections asked for once do not push a kept answer out; 256 asked for twice do.
      for (let index = 0; index < 300; index += 1) service.render({ ...connection(), id: `con_cold${index}` }, issued);
      answer.mockClear();
      expect(service.render(hot, issued)).toBe(kept);
      expect(answer).not.toHaveBeenCalled();
      for (let index = 0; index < 256; index += 1) {
        const other = { ...connection(), id: `con_other${index}` };
        service.render(other, issued);
        service.render(other, issued);
      }
      answer.mockClear();
      service.render(hot, issued);
      expect(answer).toHaveBeenCalledTimes(1);
    } finally {
      answer.mockRestore();
    }
  });

  it('writes the moving expires_in into a kept answer, also when its number of digits changes', () => {
    const answer = vi.spyOn(service, 'answer');
    try {
      const record = { ...connection(), id: 'con_keptmoving' };
      const issued = token('eyJ.moving', 170);
      service.render(record, issued);
      service.render(record, issued);
      answer.mockClear();
      for (const step of [0, 1_000, 59_000, 30_000, 3_600_000, 6_190_000, 9_000, 1_000, 500_000]) {
        now += step;
        const rendered = JSON.parse(service.render(record, issued)) as Record<string, unknown>;
        const expected = { ...service.answer(record, issued) };
        expect(rendered).toEqual(expected);
      }
      // Each `answer` call above is the test's own expectation: render itself made none.
      expect(answer).toHaveBeenCalledTimes(9);
    } finally {
      answer.mockRestore();
    }
  });

  it('refuses a token with control characters rather than render it', () => {
    expect(() => service.render(connection(), token('eyJ\x01auth=Bearer forged'))).toThrow(/control characters/);
  });
});
