import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseTarget } from '../../infra/local/routes.js';

/** Where `new URL` decides; the local host skips it for targets it would not change. */
function byUrl(target: string): { pathname: string; search: string } | null {
  try {
    const url = new URL(target, 'http://localhost');
    return { pathname: url.pathname, search: url.search };
  } catch {
    return null;
  }
}

const piece = fc.constantFrom(
  ...'abcXYZ019-_~.!$&\'()*+,;=:@/?#%'.split(''),
  ...[' ', '"', '<', '>', '\\', '`', '{', '}', '|', '^', '[', ']', 'ä', '\t', '%2e', '%2E', '%41', '..', './', '//', '?', '??', 'api', 'token'],
);

describe('the local host\'s request target', () => {
  it('is read as new URL reads it, whatever the characters', () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 14 }), fc.boolean(), (pieces, absolute) => {
        const target = `${absolute ? 'http://evil.example' : ''}/${pieces.join('')}`;
        expect(parseTarget(target)).toEqual(byUrl(target));
      }),
      { numRuns: 20_000 },
    );
  });

  it('is read as new URL reads the targets the broker is sent', () => {
    for (const target of ['/api/token', '/api/token?', '/api/manage/connections?limit=10&cursor=abc%3D', '/api/connect/lnk_01?x=1', '/api/./token', '/api/%2e%2e/token', '/api/a/../token', '*', 'http://other.example/api/token']) {
      expect(parseTarget(target), target).toEqual(byUrl(target));
    }
  });
});
