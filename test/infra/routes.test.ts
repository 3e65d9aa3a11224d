import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HttpRegistration } from '../../functions/http.js';
import { bySpecificity, compileRoute, findRoute, matchRoute, parseTarget, routeTable } from '../../infra/local/routes.js';
import { registrations } from '../../functions/registrations.js';

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

describe('the local host\'s route templates', () => {
  const route = (template: string) => compileRoute({ kind: 'http', name: template, route: template, methods: {} } as HttpRegistration);

  it('match literal segments case-insensitively as toLowerCase compares them, whatever the characters', () => {
    const part = fc.oneof(
      fc.constantFrom('manage', 'MANAGE', 'Manage', 'tenants', 'TeNaNtS', 'keys', '\u212aeys', 'k\u0130ys', 'manag', 'managee', ''),
      fc.string({ unit: 'grapheme', maxLength: 8 }),
    );
    const templates = ['manage/tenants/{id}/keys', 'manage/{*rest}', 'token', 'manage/tenants'].map(route);
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), (parts) => {
        for (const compiled of templates) {
          const segments = compiled.registration.route.split('/');
          // The plain reading of a template, segment by segment.
          let expected: Record<string, string> | null = {};
          for (let index = 0; index < segments.length && expected; index += 1) {
            const segment = segments[index]!;
            const catchAll = /^\{\*(\w+)\}$/.exec(segment);
            if (catchAll) {
              expected[catchAll[1]!] = parts.slice(index).join('/');
              break;
            }
            const given = parts[index];
            const param = /^\{(\w+)\}$/.exec(segment);
            if (given === undefined) expected = null;
            else if (param) expected[param[1]!] = given;
            else if (segment.toLowerCase() !== given.toLowerCase()) expected = null;
            if (index === segments.length - 1 && expected && !compiled.catchAll && parts.length !== segments.length) expected = null;
          }
          if (expected && !compiled.catchAll && parts.length !== segments.length) expected = null;
          expect(matchRoute(compiled, parts), `${compiled.registration.route} ${JSON.stringify(parts)}`).toEqual(expected);
        }
      }),
      { numRuns: 5_000 },
    );
  });
});

describe('the local host\'s route table', () => {
  it('finds the route findRoute finds over the whole sorted list, for the broker\'s own routes', () => {
    const routes = registrations({ rotationSchedule: '0 */5 * * * *' }).filter((registration): registration is HttpRegistration => registration.kind === 'http').map(compileRoute);
    const sorted = [...routes].sort(bySpecificity);
    const find = routeTable(routes);
    const segment = fc.oneof(
      fc.constantFrom(...new Set(routes.flatMap((route) => route.registration.route.split('/')).filter((part) => !part.startsWith('{')))),
      fc.constantFrom('TOKEN', 'Manage', 'x', 'con_1', ''),
      fc.string({ maxLength: 6 }),
    );
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 6 }), (parts) => {
        expect(find(parts)).toEqual(findRoute(sorted, parts));
      }),
      { numRuns: 10_000 },
    );
  });
});
