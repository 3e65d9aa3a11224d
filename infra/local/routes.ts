import type { HttpRegistration } from '../../functions/http.js';

/*
 * The Functions host's routing of route templates (`manage/apps/{id}`, `{*path}`), as the
 * local host applies it: literal segments beat parameters, and the catch-all comes last.
 */

/**
 * A request target with nothing WHATWG URL parsing would change: a path of unreserved
 * characters, sub-delimiters, ":", "@" and "/" without an authority, dot segments or escapes, and a query
 * without characters it encodes. Parsing a `URL` costs about 0.5 µs per request; most
 * targets (`/api/token`) are of this kind.
 */
const PLAIN_TARGET = /^(\/[\w\-.~!$&'()*+,;=:@/]*)(\?[\w\-.~!$&()*+,;=:@/?%]*)?$/;

/** The path and query of a request target as `new URL(target, base)` reads them; null when it cannot be parsed. */
export function parseTarget(target: string): { pathname: string; search: string } | null {
  const plain = PLAIN_TARGET.exec(target);
  // "//host/…" names an authority, and "/." may start a dot segment: both are left to URL.
  if (plain && !plain[1]!.startsWith('//') && !plain[1]!.includes('/.')) {
    const query = plain[2];
    // An empty query ("?" alone) is no query to URL.
    return { pathname: plain[1]!, search: query === undefined || query.length === 1 ? '' : query };
  }
  try {
    // Only the path and query count; an absolute-form target's host is not ours to honour.
    const url = new URL(target, 'http://localhost');
    return { pathname: url.pathname, search: url.search };
  } catch {
    return null;
  }
}

/** One segment of a template, read once when the route is compiled rather than on every request. */
type Segment = { kind: 'literal'; lowerCase: string } | { kind: 'param'; name: string } | { kind: 'catchAll'; name: string };

export interface CompiledRoute {
  registration: HttpRegistration;
  segments: Segment[];
  catchAll: boolean;
  literals: number;
}

function segmentOf(template: string): Segment {
  const catchAll = /^\{\*(\w+)\}$/.exec(template);
  if (catchAll) return { kind: 'catchAll', name: catchAll[1]! };
  const param = /^\{(\w+)\}$/.exec(template);
  return param ? { kind: 'param', name: param[1]! } : { kind: 'literal', lowerCase: template.toLowerCase() };
}

export function compileRoute(registration: HttpRegistration): CompiledRoute {
  const segments = registration.route.split('/').filter(Boolean).map(segmentOf);
  return {
    registration,
    segments,
    catchAll: segments.some((segment) => segment.kind === 'catchAll'),
    literals: segments.filter((segment) => segment.kind === 'literal').length,
  };
}

export function bySpecificity(a: CompiledRoute, b: CompiledRoute): number {
  return Number(a.catchAll) - Number(b.catchAll) || b.literals - a.literals || b.segments.length - a.segments.length;
}

export function matchRoute(route: CompiledRoute, parts: string[]): Record<string, string> | null {
  const { segments } = route;
  // Only a catch-all takes more parts than the template has segments.
  if (parts.length > segments.length && !route.catchAll) return null;
  const params: Record<string, string> = {};
  for (let index = 0; index < segments.length; index += 1) {
    const segment = segments[index]!;
    if (segment.kind === 'catchAll') {
      params[segment.name] = parts.slice(index).join('/');
      return params;
    }
    const part = parts[index];
    if (part === undefined) return null;
    if (segment.kind === 'param') params[segment.name] = part;
    // Lower-casing only when it could matter: a part of another length never lower-cases to
    // an ASCII literal (what grows under toLowerCase is not ASCII).
    else if (segment.lowerCase !== part && (segment.lowerCase.length !== part.length || segment.lowerCase !== part.toLowerCase())) return null;
  }
  // Every part was matched: fewer would have met an undefined part, more were refused above.
  return params;
}

export function findRoute(routes: readonly CompiledRoute[], parts: string[]): { route: CompiledRoute; params: Record<string, string> } | null {
  for (const route of routes) {
    const params = matchRoute(route, parts);
    if (params) return { route, params };
  }
  return null;
}

/**
 * `findRoute` over a fixed table, without trying every route: a template without a catch-all
 * matches only paths of its own length, so each request tries the routes of its length (in
 * specificity order) and then the catch-alls, which come last in that order anyway.
 */
export function routeTable(routes: readonly CompiledRoute[]): (parts: string[]) => ReturnType<typeof findRoute> {
  const sorted = [...routes].sort(bySpecificity);
  const byLength = new Map<number, CompiledRoute[]>();
  for (const route of sorted) {
    if (route.catchAll) continue;
    const sameLength = byLength.get(route.segments.length) ?? [];
    sameLength.push(route);
    byLength.set(route.segments.length, sameLength);
  }
  const catchAlls = sorted.filter((route) => route.catchAll);
  return (parts) => findRoute(byLength.get(parts.length) ?? [], parts) ?? findRoute(catchAlls, parts);
}
