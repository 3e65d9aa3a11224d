import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { registrations } from '../functions/registrations.js';
import type { HttpRegistration } from '../functions/http.js';
import { BrokerError, errorCodes, problemType } from '../shared/errors.js';
import {
  createAppInput,
  createConnectionInput,
  createTenantInput,
  listConnectionsQuery,
  listQuery,
  patchAppInput,
  patchConnectionInput,
  patchTenantInput,
} from '../shared/manage/inputs.js';
import { tokenRequestInput } from '../shared/tokens/inputs.js';

/*
 * openapi.json is hand-maintained; these checks keep it honest against the registration
 * table, the error catalogue and the zod request schemas, so it cannot silently drift.
 */

type Json = Record<string, any>;

const doc = JSON.parse(readFileSync(new URL('../openapi.json', import.meta.url), 'utf8')) as Json;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

const http = registrations({ rotationSchedule: '0 */30 * * * *' }).filter(
  (registration): registration is HttpRegistration => registration.kind === 'http',
);
const isCatchAll = (route: string) => route.includes('{*');
/** Azure route template → OpenAPI path: `manage/apps/{id:alpha?}` → `/manage/apps/{id}`. */
const toPath = (route: string) => `/${route.replace(/^\/+/, '').replace(/\{([^}:?]+)(?::[^}]*)?\??\}/g, '{$1}')}`;

interface Operation {
  path: string;
  method: string;
  operation: Json;
  pathItem: Json;
}
const operations: Operation[] = Object.entries(doc.paths as Json).flatMap(([path, pathItem]) =>
  Object.entries(pathItem as Json)
    .filter(([method]) => METHODS.includes(method))
    .map(([method, operation]) => ({ path, method, operation: operation as Json, pathItem: pathItem as Json })),
);
const key = (method: string, path: string) => `${method.toUpperCase()} ${path}`;

/** Follows local `$ref`s (`#/components/...`). */
function resolve(node: Json): Json {
  let current = node;
  for (let hops = 0; typeof current?.$ref === 'string'; hops++) {
    if (hops > 10) throw new Error(`$ref loop at ${node.$ref}`);
    const ref: string = current.$ref;
    if (!ref.startsWith('#/')) throw new Error(`non-local $ref ${ref}`);
    current = ref
      .slice(2)
      .split('/')
      .reduce<Json | undefined>((at, part) => at?.[part.replaceAll('~1', '/').replaceAll('~0', '~')], doc) as Json;
    if (current === undefined) throw new Error(`unresolved $ref ${ref}`);
  }
  return current;
}

function operationOf(path: string, method: string): Json {
  const found = operations.find((entry) => entry.path === path && entry.method === method);
  if (!found) throw new Error(`${key(method, path)} is not documented`);
  return found.operation;
}

describe('openapi.json', () => {
  it('is an OpenAPI 3.1 document served under /api', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(doc.servers).toEqual([expect.objectContaining({ url: '/api' })]);
    expect(doc.info.description).toContain('POST /admin/functions/');
  });

  it('documents exactly the registered HTTP routes and methods (the catch-all aside)', () => {
    const registered = http
      .filter((registration) => !isCatchAll(registration.route))
      .flatMap((registration) => Object.keys(registration.methods).map((method) => key(method, toPath(registration.route))));
    const documented = operations.map((entry) => key(entry.method, entry.path));
    expect(registered.length).toBeGreaterThan(0);
    expect(http.some((registration) => isCatchAll(registration.route))).toBe(true);
    expect([...documented].sort()).toEqual([...new Set(registered)].sort());
    expect(documented.some((entry) => entry.includes('{*'))).toBe(false);
  });

  it('declares every path template parameter, and no others', () => {
    for (const { path, method, operation, pathItem } of operations) {
      const params = [...(pathItem.parameters ?? []), ...(operation.parameters ?? [])].map(resolve);
      const declared = params.filter((param) => param.in === 'path').map((param) => param.name as string);
      const inTemplate = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]);
      expect(declared.sort(), key(method, path)).toEqual(inTemplate.sort());
      for (const param of params.filter((entry) => entry.in === 'path')) expect(param.required, `${key(method, path)} ${param.name}`).toBe(true);
    }
  });

  it('gives every operation a unique operationId', () => {
    const ids = operations.map(({ operation, path, method }) => {
      expect(operation.operationId, key(method, path)).toMatch(/^[A-Za-z][A-Za-z0-9]*$/);
      return operation.operationId as string;
    });
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('protects every operator operation with the bearer scheme and documents its 401', () => {
    const schemes = doc.components.securitySchemes as Json;
    const bearer = Object.keys(schemes).filter((name) => schemes[name].type === 'http' && schemes[name].scheme?.toLowerCase() === 'bearer');
    expect(bearer.length).toBeGreaterThan(0);
    const operatorOps = operations.filter(({ path }) => path.startsWith('/manage/'));
    expect(operatorOps.length).toBeGreaterThan(0);
    for (const { path, method, operation } of operatorOps) {
      const security = (operation.security ?? doc.security) as Json[] | undefined;
      expect(security, key(method, path)).toBeDefined();
      // Every alternative must require a bearer scheme; an empty requirement would mean "anonymous allowed".
      expect(security!.length, key(method, path)).toBeGreaterThan(0);
      for (const requirement of security!) {
        expect(Object.keys(requirement).some((name) => bearer.includes(name)), key(method, path)).toBe(true);
      }
      const unauthorized = resolve(operation.responses?.['401'] ?? {});
      expect(unauthorized.content?.['application/problem+json'], `${key(method, path)} 401`).toBeDefined();
    }
  });

  it('leaves the public liveness route open', () => {
    expect(operationOf('/health', 'get').security).toEqual([]);
  });

  it('answers every error as a problem referencing the shared Problem schema', () => {
    for (const { path, method, operation } of operations) {
      for (const [status, response] of Object.entries(operation.responses as Json)) {
        if (Number(status) < 400) continue;
        // Readiness answers 503 with its own JSON document, by design.
        if (path === '/manage/health' && status === '503') continue;
        const content = resolve(response as Json).content as Json | undefined;
        // Browser routes answer people, with HTML result pages.
        if (operation.tags?.includes('browser')) {
          expect(Object.keys(content ?? {}), `${key(method, path)} ${status}`).toEqual(['text/html']);
          continue;
        }
        expect(Object.keys(content ?? {}), `${key(method, path)} ${status}`).toEqual(['application/problem+json']);
        expect(content!['application/problem+json'].schema, `${key(method, path)} ${status}`).toEqual({ $ref: '#/components/schemas/Problem' });
      }
    }
  });

  it('resolves every $ref', () => {
    const refs: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === 'object') {
        for (const [name, value] of Object.entries(node)) {
          if (name === '$ref' && typeof value === 'string') refs.push(value);
          else walk(value);
        }
      }
    };
    walk(doc);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) expect(() => resolve({ $ref: ref }), ref).not.toThrow();
  });

  it('lists every error code in the Problem schema, with its status and type', () => {
    const problem = doc.components.schemas.Problem as Json;
    const documented = problem.properties.code.enum as string[];
    expect([...documented].sort()).toEqual([...errorCodes()].sort());
    expect(new Set(documented).size).toBe(documented.length);
    expect(problem.required).toEqual(expect.arrayContaining(['type', 'code', 'title', 'status', 'detail']));
    for (const code of errorCodes()) {
      const { status } = new BrokerError(code, '');
      expect(problem.description, code).toContain(`| \`${code}\` | ${status} | \`${problemType(code)}\` |`);
      expect(problemType(code)).toMatch(new RegExp(problem.properties.type.pattern as string));
    }
  });

  it('pages lists with limit/cursor and answers { items, next }', () => {
    const lists = operations.filter(({ method, path }) => method === 'get' && /^\/manage\/(apps|tenants|connections|tenants\/\{id\}\/keys)$/.test(path));
    expect(lists).toHaveLength(4);
    for (const { path, operation } of lists) {
      const query = (operation.parameters ?? []).map(resolve).filter((param: Json) => param.in === 'query');
      const limit = query.find((param: Json) => param.name === 'limit');
      expect(limit?.schema, path).toMatchObject({ type: 'integer', minimum: 1, maximum: 100, default: 50 });
      expect(query.some((param: Json) => param.name === 'cursor'), path).toBe(true);
      const page = resolve(operation.responses['200'].content['application/json'].schema);
      expect(page.required, path).toEqual(['items', 'next']);
      expect(page.properties.next.type, path).toEqual(['string', 'null']);
    }
  });

  describe('mirrors the zod request schemas', () => {
    /**
     * The comparable facts of a schema: types, limits, formats, defaults, enum values and
     * strictness, per property path. Patterns are left out (zod's email and date-time
     * regexes are implementation details; `format` stands for them).
     */
    function facts(schema: Json, at = '', out = new Set<string>()): Set<string> {
      // A `$ref` may carry siblings (3.1), e.g. a `default` next to a shared enum.
      const { $ref, ...siblings } = schema;
      const node = $ref === undefined ? schema : { ...resolve({ $ref }), ...siblings };
      const types = node.type === undefined ? [] : Array.isArray(node.type) ? node.type : [node.type];
      for (const type of types) out.add(`${at} type=${type}`);
      for (const name of ['minLength', 'maxLength', 'minItems', 'maxItems', 'minimum', 'maximum', 'format', 'additionalProperties']) {
        if (node[name] !== undefined) out.add(`${at} ${name}=${JSON.stringify(node[name])}`);
      }
      if (node.default !== undefined) out.add(`${at} default=${JSON.stringify(node.default)}`);
      for (const value of node.enum ?? []) out.add(`${at} value=${JSON.stringify(value)}`);
      if (node.const !== undefined) out.add(`${at} value=${JSON.stringify(node.const)}`);
      for (const required of node.required ?? []) out.add(`${at} required=${required}`);
      for (const branch of [...(node.anyOf ?? []), ...(node.oneOf ?? []), ...(node.allOf ?? [])]) facts(branch, at, out);
      if (node.items) facts(node.items, `${at}[]`, out);
      for (const [name, property] of Object.entries((node.properties ?? {}) as Json)) facts(property, `${at}.${name}`, out);
      return out;
    }
    const zodFacts = (schema: z.ZodType) => facts(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json);
    const sorted = (set: Set<string>) => [...set].sort();

    const bodies: [string, string, z.ZodType][] = [
      ['/manage/apps', 'post', createAppInput],
      ['/manage/apps/{id}', 'patch', patchAppInput],
      ['/manage/tenants', 'post', createTenantInput],
      ['/manage/tenants/{id}', 'patch', patchTenantInput],
      ['/manage/connections', 'post', createConnectionInput],
      ['/manage/connections/{id}', 'patch', patchConnectionInput],
      ['/token', 'post', tokenRequestInput],
    ];
    it.each(bodies)('%s %s body', (path, method, schema) => {
      const operation = operationOf(path, method);
      expect(operation.requestBody.required).toBe(true);
      expect(Object.keys(operation.requestBody.content)).toEqual(['application/json']);
      const documented = facts(operation.requestBody.content['application/json'].schema);
      expect(sorted(documented)).toEqual(sorted(zodFacts(schema)));
      expect(documented.has(' additionalProperties=false')).toBe(true);
      for (const status of ['400', '413', '415']) expect(operation.responses[status], `${method} ${path} ${status}`).toBeDefined();
    });

    const queries: [string, z.ZodType][] = [
      ['/manage/apps', listQuery],
      ['/manage/tenants', listQuery],
      ['/manage/tenants/{id}/keys', listQuery],
      ['/manage/connections', listConnectionsQuery],
    ];
    it.each(queries)('GET %s query', (path, schema) => {
      const operation = operationOf(path, 'get');
      const params = (operation.parameters ?? []).map(resolve).filter((param: Json) => param.in === 'query');
      for (const param of params) expect(param.required ?? false, param.name).toBe(false);
      const asObject = {
        type: 'object',
        additionalProperties: false,
        properties: Object.fromEntries(params.map((param: Json) => [param.name, param.schema])),
      };
      expect(sorted(facts(asObject))).toEqual(sorted(zodFacts(schema)));
      expect(operation.responses['400'], `GET ${path} 400`).toBeDefined();
    });

    it('documents no request body where the route reads none', () => {
      const withBody = new Set(bodies.map(([path, method]) => key(method, path)));
      for (const { path, method, operation } of operations) {
        if (!withBody.has(key(method, path))) expect(operation.requestBody, key(method, path)).toBeUndefined();
      }
    });
  });
});
