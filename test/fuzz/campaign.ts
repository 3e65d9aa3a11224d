import fc from 'fast-check';
import { expect } from 'vitest';
import { errorCodes, problemType, type ErrorCode } from '../../shared/errors.js';
import { PAGE_CONTENT_SECURITY_POLICY } from '../../shared/http/pages.js';
import type { ConnectFixture } from '../support/connect-fixture.js';
import { XSS_MARKER, type Header } from './generators.js';
import { judge, type compileRoutes, type Judgement } from './oracle.js';
import { sendRaw, type RawRequest, type RawResponse } from './raw-http.js';
import { snapshotStorage, storageDiff, type StorageSnapshot, type World } from './world.js';

/*
 * Runs generated requests against the broker and judges every answer. Violations are
 * collected rather than thrown, so one bug does not hide the others and a run always
 * covers all its cases; a campaign ends by asserting that none were found, listing each
 * distinct one with the smallest example per route.
 */

/** Requests generated together and sent at once; storage is compared after each batch. */
const BATCH = 24;
/** Requests in flight at once: enough to keep both cores busy, few enough not to starve Azurite. */
const CONCURRENCY = 8;

const STACK_TRACE = /\bat (?:.+ \()?(?:file:\/\/)?[^\s()]+\.(?:ts|js|mjs|cjs):\d+(?::\d+)?\)?|\n\s+at /;
const CODES = new Set<string>(errorCodes());

export interface CampaignContext {
  fixture: ConnectFixture;
  world: World;
  port: number;
  routes: ReturnType<typeof compileRoutes>;
  seed: number;
  scale: number;
}

/** One kind of wrong answer, with the routes it was seen on and the smallest example on each. */
interface Violation {
  problem: string;
  routes: Map<string, { count: number; request: RawRequest; detail: string }>;
}

export function describeRequest(req: RawRequest): string {
  const body =
    req.body === undefined
      ? 'no body'
      : req.body.kind === 'fill'
        ? `${req.body.size} bytes of ${JSON.stringify(Buffer.from(req.body.pattern).toString('utf8'))} (${req.body.framing})`
        : `${JSON.stringify(Buffer.from(req.body.bytes).toString('utf8').slice(0, 300))} (${req.body.bytes.byteLength} bytes, ${req.body.framing})`;
  const headers = req.headers.map(([name, value]) => `${name}: ${value.slice(0, 120)}`).join(' | ');
  return `${req.method} ${req.target.slice(0, 400)}${req.target.length > 400 ? '…' : ''}\n      headers: ${headers || '(none)'}\n      body: ${body}`;
}

function describeResponse(res: RawResponse): string {
  const headers = Object.entries(res.headers).map(([name, value]) => `${name}: ${value.slice(0, 100)}`).join(' | ');
  return `${res.status}; ${headers}\n      ${JSON.stringify(res.body.toString('utf8').slice(0, 500))}`;
}

function leakedSecrets(world: World, res: RawResponse): string[] {
  const text = `${Object.entries(res.headers).map(([n, v]) => `${n}: ${v}`).join('\n')}\n${res.body.toString('latin1')}\n${res.body.toString('utf8')}`;
  return world.secrets.filter((secret) => text.includes(secret.value) || text.includes(encodeURIComponent(secret.value))).map((secret) => secret.name);
}

function problemJsonFaults(body: string, status: number): string[] {
  let problem: Record<string, unknown>;
  try {
    problem = JSON.parse(body) as Record<string, unknown>;
  } catch {
    return ['problem body is not JSON'];
  }
  const found: string[] = [];
  const code = problem.code;
  if (typeof code !== 'string' || !CODES.has(code)) found.push(`problem code ${JSON.stringify(code)} is not one of the catalogue`);
  else if (problem.type !== problemType(code as ErrorCode)) found.push(`problem type ${JSON.stringify(problem.type)} does not match code ${code}`);
  if (problem.status !== status) found.push(`problem status ${JSON.stringify(problem.status)} ≠ HTTP ${status}`);
  for (const member of ['title', 'detail'] as const) if (typeof problem[member] !== 'string' || problem[member] === '') found.push(`problem without ${member}`);
  return found;
}

/** Everything wrong with one answer; empty when it is what the design asks for. */
export function problemsWith(world: World, req: RawRequest, judgement: Judgement, res: RawResponse): string[] {
  const found: string[] = [];
  const head = req.method === 'HEAD';
  const body = res.body.toString('utf8');
  const type = res.headers['content-type'] ?? '';
  if (res.status >= 500) found.push(`${res.status} server error`);
  else if (judgement.verdict === 'reject' && (res.status < 400 || res.status > 499)) found.push(`not refused: ${res.status}`);
  for (const name of leakedSecrets(world, res)) found.push(`secret echoed: ${name}`);
  if (STACK_TRACE.test(body)) found.push('stack trace in body');

  if (res.status >= 400 && judgement.kind === 'page') {
    if (!/^text\/html\b/i.test(type)) found.push(`browser route answered ${type || 'no content type'} instead of an HTML page`);
    else {
      if (res.headers['content-security-policy'] !== PAGE_CONTENT_SECURITY_POLICY) found.push('page without the content security policy');
      if (!head && !body.startsWith('<!doctype html>')) found.push('page body is not an HTML document');
      if (body.includes(XSS_MARKER) || /<script/i.test(body)) found.push('unescaped markup from the request in the page');
    }
  } else if (res.status >= 400) {
    if (!/^application\/problem\+json\s*(;|$)/i.test(type)) found.push(`content type ${type || '(none)'} instead of application/problem+json`);
    else if (!head) found.push(...problemJsonFaults(body, res.status));
  } else if (!/^application\/json\b/i.test(type)) {
    found.push(`successful read answered ${type || '(no content type)'}`);
  }
  // RFC 9110 §15.5.6 and §11.6.1: a 405 names what is allowed, a 401 how to authenticate.
  if (res.status === 405 && !res.headers.allow) found.push('405 without Allow');
  if (res.status === 401 && !res.headers['www-authenticate']) found.push('401 without WWW-Authenticate');
  return found;
}

async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/** Node refuses request heads over 16 KB before the broker sees them; that is the protocol property's business. */
function cap(req: RawRequest): RawRequest {
  return { ...req, target: req.target.slice(0, 6000), headers: req.headers.map(([name, value]): Header => [name, value.slice(0, 1500)]) };
}

const size = (r: RawRequest) => r.target.length + r.headers.length * 20 + (r.body?.kind === 'bytes' ? r.body.bytes.byteLength : (r.body?.size ?? 0));

function report(violations: Map<string, Violation>): string[] {
  const count = (v: Violation) => [...v.routes.values()].reduce((sum, example) => sum + example.count, 0);
  return [...violations.values()]
    .sort((a, b) => count(b) - count(a))
    .map((v) => {
      const where = [...v.routes].map(([route, example]) => `${route} ${example.count}×`).join(', ');
      // The smallest example of up to four routes, the host's own answers first: one cause per route is the common case.
      const examples = [...v.routes]
        .sort(([routeA, a], [routeB, b]) => Number(!routeA.startsWith('(')) - Number(!routeB.startsWith('(')) || size(a.request) - size(b.request))
        .slice(0, 4)
        .map(([, example]) => example);
      return `  ✗ ${v.problem} (${count(v)}×: ${where})${examples.map((e) => `\n      e.g. ${describeRequest(e.request)}\n      → ${e.detail}`).join('')}`;
    });
}

export class Campaigns {
  readonly totals = { cases: 0, refused: 0, ms: 0, perRoute: new Map<string, number>() };
  private last: StorageSnapshot | undefined;

  constructor(private readonly ctx: CampaignContext) {}

  /**
   * `runs` generated requests through fc.assert, in batches sent CONCURRENCY at a time;
   * every answer is judged and storage compared after every batch. Fails with the
   * distinct violations found.
   */
  async run(name: string, arbitrary: fc.Arbitrary<RawRequest>, runs: number, options: { judge?: (req: RawRequest) => Judgement; raw?: boolean } = {}): Promise<void> {
    const { fixture, world, port, routes } = this.ctx;
    const started = Date.now();
    const tally = { sent: 0, refused: 0, safeReads: 0, skipped: 0, statuses: new Map<number, number>() };
    const violations = new Map<string, Violation>();
    const note = (problem: string, route: string, req: RawRequest, detail: string) => {
      const seen = violations.get(problem) ?? { problem, routes: new Map() };
      violations.set(problem, seen);
      const example = seen.routes.get(route);
      if (!example) seen.routes.set(route, { count: 1, request: req, detail });
      else {
        example.count += 1;
        if (size(req) < size(example.request)) Object.assign(example, { request: req, detail });
      }
    };
    const idpBefore = fixture.idp.requests().length;
    const judgeOf = options.judge ?? ((req: RawRequest) => judge(req, routes, world));
    this.last ??= await snapshotStorage(fixture);

    await fc.assert(
      fc.asyncProperty(fc.array(options.raw ? arbitrary : arbitrary.map(cap), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const judged = batch.map((req) => ({ req, judgement: judgeOf(req) }));
        const sendable = judged.filter(({ judgement }) => judgement.verdict !== 'skip');
        tally.skipped += judged.length - sendable.length;
        await pool(sendable, CONCURRENCY, async ({ req, judgement }) => {
          tally.sent += 1;
          if (judgement.verdict === 'reject') tally.refused += 1;
          else tally.safeReads += 1;
          this.totals.perRoute.set(judgement.route, (this.totals.perRoute.get(judgement.route) ?? 0) + 1);
          let res: RawResponse;
          try {
            res = await sendRaw(port, req);
          } catch (error) {
            note(`no answer (${(error as Error).message.split(':')[0]})`, judgement.route, req, (error as Error).message);
            return;
          }
          tally.statuses.set(res.status, (tally.statuses.get(res.status) ?? 0) + 1);
          const problems = problemsWith(world, req, judgement, res);
          // A 5xx makes every other check on that answer moot; TRACE fails for a reason of its own.
          const serverError = problems.find((problem) => problem.endsWith('server error'));
          for (const problem of serverError ? [`${serverError}${req.method === 'TRACE' ? ' on TRACE' : ''}`] : problems) {
            note(problem, judgement.route, req, describeResponse(res));
          }
        });
        // Compared with the previous batch, so a change is reported once, with the batch that made it.
        const now = await snapshotStorage(fixture);
        const diff = storageDiff(this.last!, now);
        this.last = now;
        if (diff.length > 0) {
          const requests = sendable.map(({ req }) => describeRequest(req)).join('\n      ');
          note('storage changed by a batch of refused requests', sendable.map(({ judgement }) => judgement.route).join(' '), sendable[0]?.req ?? batch[0]!, `${diff.join('\n      ')}\n      batch:\n      ${requests}`);
        }
      }),
      { numRuns: Math.max(1, Math.ceil((runs * this.ctx.scale) / BATCH)), seed: (this.ctx.seed + [...name].reduce((hash, c) => (hash * 31 + c.charCodeAt(0)) | 0, 0)) | 0, endOnFailure: true },
    );

    const idpCalls = fixture.idp.requests().length - idpBefore;
    const ms = Date.now() - started;
    this.totals.cases += tally.sent;
    this.totals.refused += tally.refused;
    this.totals.ms += ms;
    const statuses = [...tally.statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${status}×${n}`).join(' ');
    console.log(
      `fuzz ${name}: ${tally.sent} cases (${tally.refused} must be refused, ${tally.safeReads} harmless reads), ${tally.skipped} generated but not sent (could succeed), ${ms} ms; statuses ${statuses}${violations.size ? `; ${violations.size} distinct violations` : ''}`,
    );

    const lines = report(violations);
    if (idpCalls > 0) lines.push(`  ✗ refused requests made ${idpCalls} calls to the identity provider`);
    expect(lines.length, `${name}: ${lines.length} distinct violations (FUZZ_SEED=${this.ctx.seed})\n${lines.join('\n')}\n`).toBe(0);
    expect(tally.refused).toBeGreaterThan(0);
  }
}
