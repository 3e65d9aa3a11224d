import type { HttpRegistration } from '../../functions/http.js';

/*
 * The Functions host's routing of route templates (`manage/apps/{id}`, `{*path}`), as the
 * local host applies it: literal segments beat parameters, and the catch-all comes last.
 */

export interface CompiledRoute {
  registration: HttpRegistration;
  segments: string[];
  catchAll: boolean;
  literals: number;
}

export function compileRoute(registration: HttpRegistration): CompiledRoute {
  const segments = registration.route.split('/').filter(Boolean);
  return {
    registration,
    segments,
    catchAll: segments.some((segment) => segment.startsWith('{*')),
    literals: segments.filter((segment) => !segment.startsWith('{')).length,
  };
}

export function bySpecificity(a: CompiledRoute, b: CompiledRoute): number {
  return Number(a.catchAll) - Number(b.catchAll) || b.literals - a.literals || b.segments.length - a.segments.length;
}

export function matchRoute(route: CompiledRoute, parts: string[]): Record<string, string> | null {
  const params: Record<string, string> = {};
  for (let index = 0; index < route.segments.length; index += 1) {
    const segment = route.segments[index]!;
    const catchAll = /^\{\*(\w+)\}$/.exec(segment);
    if (catchAll) {
      params[catchAll[1]!] = parts.slice(index).join('/');
      return params;
    }
    const part = parts[index];
    if (part === undefined) return null;
    const param = /^\{(\w+)\}$/.exec(segment);
    if (param) params[param[1]!] = part;
    else if (segment.toLowerCase() !== part.toLowerCase()) return null;
  }
  return parts.length === route.segments.length ? params : null;
}

export function findRoute(routes: readonly CompiledRoute[], parts: string[]): { route: CompiledRoute; params: Record<string, string> } | null {
  for (const route of routes) {
    const params = matchRoute(route, parts);
    if (params) return { route, params };
  }
  return null;
}
