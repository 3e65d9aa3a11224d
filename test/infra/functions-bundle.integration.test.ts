import type { Metafile } from 'esbuild';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registrations } from '../../functions/registrations.js';
import { runtimeManifest } from '../../infra/azure/package.mjs';
import { BUNDLE_DIR, bundleFunctions } from '../../scripts/bundle.mjs';
import { OPERATOR_KEY } from '../support/broker.js';
import { connectMailbox, sharedBrokerEnv, refreshGrants as grantsAnswered, startConnectFixture, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * The deployed app, as the Functions worker runs it. The esbuild bundle is built into a
 * folder outside the repository, beside the package.json the deployment stages (so no
 * node_modules can be found from there), then test/support/functions-worker.mjs loads it the
 * way the Node.js worker does: `@azure/functions-core` answered through
 * Module.prototype.require, package.json "main" imported, invocations run through the
 * programming model the app registered. The tsc output (the local host's code) gets the same
 * checks on which SDKs load.
 *
 * The token path must not load what it does not use: a token served from the connection's
 * shared row or from memory needs Table Storage and the data key (Key Vault), never
 * @azure/identity (the vault here is an emulator), MSAL, nodemailer or imapflow.
 */

const root = fileURLToPath(new URL('../..', import.meta.url));
const worker = join(root, 'test', 'support', 'functions-worker.mjs');
const appDir = mkdtempSync(join(tmpdir(), 'broker-bundle-'));
const manifest = runtimeManifest(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<string, unknown>);

/** Loaded only on the paths that need them: none at start-up, only Key Vault for a cached token. */
const LAZY = ['@azure/identity', '@azure/keyvault-secrets', '@azure/msal-node', 'nodemailer', 'imapflow', '@azure/monitor-opentelemetry'];

let fixture: ConnectFixture;
let metafile: Metafile;
let key: string;
let connectionId: string;

beforeAll(async () => {
  const built = bundleFunctions({ root, outdir: join(appDir, BUNDLE_DIR) });
  fixture = await startConnectFixture();
  [metafile, key, connectionId] = await Promise.all([built, tenantKey(fixture), connectMailbox(fixture, 'bundle@contoso.example')]);
  writeFileSync(join(appDir, 'package.json'), JSON.stringify(manifest));
  // The first token refreshes and leaves the access token, encrypted, in the connection's row.
  const first = await fixture.broker.call('POST', '/api/token', { body: { connection: connectionId }, headers: { authorization: `Bearer ${key}` } });
  expect(first.status).toBe(200);
}, 120_000);

afterAll(async () => {
  await fixture?.close();
  rmSync(appDir, { recursive: true, force: true });
});

interface WorkerReport {
  importMs: number;
  functions: { name: string; bindings: Record<string, { type: string; direction: string; route?: string; methods?: string[]; schedule?: string }> }[];
  hooks: string[];
  programmingModel: { name: string; version: string } | null;
  answers: { function: string; status: number; body: string }[];
  logs: string[];
  loaded: { atStart: string[]; afterImport: string[]; afterInvocations: string[] };
}

interface Invocation {
  function: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: unknown;
}

async function runWorker(app: string, invocations: Invocation[] = []): Promise<WorkerReport> {
  const { PORT: _port, ...env } = sharedBrokerEnv(fixture, 0);
  const child = spawn(process.execPath, [worker, app, JSON.stringify(invocations)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((done) => child.on('exit', done));
  const line = output.split('\n').find((text) => text.startsWith('WORKER_REPORT '));
  if (code !== 0 || !line) throw new Error(`the worker exited with ${code}:\n${output}`);
  return JSON.parse(line.slice('WORKER_REPORT '.length)) as WorkerReport;
}

const packageOf = (path: string) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path)?.[1];

/** npm packages behind the resolved URLs: from the path in node_modules, or from the bundle's metafile. */
function packagesLoaded(urls: string[]): Set<string> {
  const outputs = new Map(Object.entries(metafile.outputs).map(([file, output]) => [resolve(root, file), output]));
  const packages = new Set<string>();
  for (const url of urls.filter((candidate) => candidate.startsWith('file:'))) {
    const path = fileURLToPath(url);
    const direct = packageOf(path);
    if (direct) packages.add(direct);
    for (const input of Object.keys(outputs.get(path)?.inputs ?? {})) {
      const name = packageOf(input);
      if (name) packages.add(name);
    }
  }
  return packages;
}

const tokenCalls = (): Invocation[] =>
  [1, 2].map(() => ({
    function: 'token',
    method: 'POST',
    path: '/api/token',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: { connection: connectionId },
  }));

const refreshGrants = () => grantsAnswered(fixture);

describe('the deployed bundle under the Functions worker', () => {
  it('registers every function of the registration table, and the terminate hook, from a folder without node_modules', async () => {
    const report = await runWorker(appDir);
    expect(manifest.main).toBe(`${BUNDLE_DIR}/index.js`);
    expect(report.programmingModel?.name).toBe('@azure/functions');
    const expected = registrations({ rotationSchedule: '0 */30 * * * *' });
    expect(report.functions.map((fn) => fn.name)).toEqual(expected.map((registration) => registration.name));
    for (const registration of expected) {
      const triggers = Object.values(report.functions.find((fn) => fn.name === registration.name)!.bindings).filter((binding) => binding.direction === 'in');
      if (registration.kind === 'http') {
        expect(triggers).toMatchObject([{ type: 'httpTrigger', route: registration.route, methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] }]);
      } else {
        expect(triggers).toMatchObject([{ type: 'timerTrigger', schedule: registration.schedule }]);
      }
    }
    expect(report.hooks).toEqual(['appTerminate']);
    // Everything comes from the bundle's folder or from Node itself.
    const files = report.loaded.afterImport.filter((url) => !url.startsWith('node:'));
    expect(files.length).toBeGreaterThan(1);
    for (const url of files) expect(fileURLToPath(url).startsWith(appDir), url).toBe(true);
    const atImport = packagesLoaded(report.loaded.afterImport);
    expect([...atImport]).toEqual(expect.arrayContaining(['@azure/functions', '@azure/data-tables', 'zod']));
    for (const name of LAZY) expect(atImport.has(name), `${name} loaded at import`).toBe(false);
  });

  it('answers liveness, two token requests and readiness, loading Key Vault on the first secret read and never the others', async () => {
    const before = refreshGrants();
    const report = await runWorker(appDir, [
      { function: 'health', method: 'GET', path: '/api/health' },
      ...tokenCalls(),
      { function: 'manage-health', method: 'GET', path: '/api/manage/health', headers: { authorization: `Bearer ${OPERATOR_KEY}` } },
    ]);
    const [health, first, second, readiness] = report.answers;
    expect(health).toMatchObject({ status: 200, body: '{"status":"ok"}' });
    expect(first?.status).toBe(200);
    expect(second?.status).toBe(200);
    const tokens = [first, second].map((answer) => (JSON.parse(answer!.body) as { access_token: string; username: string }));
    expect(tokens[0]).toMatchObject({ username: 'bundle@contoso.example' });
    expect(tokens[1]!.access_token).toBe(tokens[0]!.access_token);
    expect(refreshGrants()).toBe(before);
    expect(readiness?.status).toBe(200);
    expect(JSON.parse(readiness!.body)).toMatchObject({ ready: true, checks: { tableStorage: { ok: true }, secretStore: { ok: true } } });

    expect(packagesLoaded(report.loaded.afterImport).has('@azure/keyvault-secrets')).toBe(false);
    const used = packagesLoaded(report.loaded.afterInvocations);
    expect(used.has('@azure/keyvault-secrets')).toBe(true);
    for (const name of LAZY.filter((lazy) => lazy !== '@azure/keyvault-secrets')) expect(used.has(name), `${name} loaded`).toBe(false);
  });
});

describe('the tsc output (npm start, tests) loads the same way', () => {
  it('imports without the lazy SDKs and serves cached tokens without @azure/identity, MSAL or the mail clients', async () => {
    const entry = join(root, 'dist', 'functions', 'index.js');
    const before = refreshGrants();
    const report = await runWorker(entry, tokenCalls());
    expect(report.functions.map((fn) => fn.name)).toContain('token');
    expect(report.answers.map((answer) => answer.status)).toEqual([200, 200]);
    expect(refreshGrants()).toBe(before);
    const atImport = packagesLoaded(report.loaded.afterImport);
    expect(atImport.has('@azure/data-tables')).toBe(true);
    for (const name of LAZY) expect(atImport.has(name), `${name} loaded at import`).toBe(false);
    const used = packagesLoaded(report.loaded.afterInvocations);
    expect(used.has('@azure/keyvault-secrets')).toBe(true);
    for (const name of LAZY.filter((lazy) => lazy !== '@azure/keyvault-secrets')) expect(used.has(name), `${name} loaded`).toBe(false);
  });
});
