import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../infra/local/free-port.js';
import { killBrokerProcesses, portOpen, startBrokerProcess, waitForOutput } from '../support/broker-process.js';

/*
 * `npm start` as a user runs it: the compiled entry point (npm test builds it first), no
 * settings but a port and a data folder, then plain HTTP calls. The test's
 * NODE_EXTRA_CA_CERTS is not passed on: the broker trusts what it starts by itself.
 * (The sandbox's demo and sign-in: sandbox-start.integration.test.ts.)
 */

const dataDir = mkdtempSync(join(tmpdir(), 'broker-start-'));

afterAll(() => {
  killBrokerProcesses();
  rmSync(dataDir, { recursive: true, force: true });
});

const start = (env: Record<string, string>) => startBrokerProcess(env);
const waitFor = waitForOutput;

describe('npm start', () => {
  it('serves the API with Azurite and a generated operator key, stops cleanly, and keeps data across restarts', async () => {
    const port = await freePort();
    const first = start({ PORT: String(port), BROKER_LOCAL_DATA_DIR: dataDir });
    await waitFor(first, `listening on http://localhost:${port}/api`);
    // The notes that follow (operator key, Azurite, sandbox) can reach the pipe in later chunks.
    await waitFor(first, 'Press Ctrl-C to stop.');

    const operatorKey = readFileSync(join(dataDir, 'operator-key'), 'utf8').trim();
    expect(first.output()).toContain(operatorKey);
    const azuritePort = Number(/Azurite on 127\.0\.0\.1:(\d+)/.exec(first.output())?.[1]);
    expect(azuritePort).toBeGreaterThan(0);
    // BROKER_AUTHORITY_HOST is unset, so the sandbox runs by default.
    await waitFor(first, 'Connect the demo mailbox: open ');
    const sandboxPorts = [...first.output().matchAll(/Sandbox identity provider: https:\/\/localhost:(\d+) \(sign-in pages on http:\/\/localhost:(\d+)\)/g)]
      .flatMap((match) => [Number(match[1]), Number(match[2])]);
    expect(sandboxPorts).toHaveLength(2);

    const base = `http://localhost:${port}`;
    const auth = { authorization: `Bearer ${operatorKey}` };
    expect(await (await fetch(`${base}/api/health`)).json()).toEqual({ status: 'ok' });
    const created = await fetch(`${base}/api/manage/tenants`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Survivor' }),
    });
    expect(created.status).toBe(201);
    const tenant = (await created.json()) as { id: string };
    const readiness = await fetch(`${base}/api/manage/health`, { headers: auth });
    expect(readiness.status).toBe(200);
    expect(await readiness.json()).toMatchObject({ ready: true });
    expect((await fetch(`${base}/admin/functions/rotate-tokens`, { method: 'POST', headers: auth })).status).toBe(202);
    expect((await fetch(`${base}/api/manage/tenants`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);

    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    expect(await portOpen(azuritePort)).toBe(false);
    expect(await portOpen(port)).toBe(false);
    for (const sandboxPort of sandboxPorts) expect(await portOpen(sandboxPort)).toBe(false);

    const second = start({ PORT: String(port), BROKER_LOCAL_DATA_DIR: dataDir });
    await waitFor(second, `listening on http://localhost:${port}/api`);
    await waitFor(second, 'Press Ctrl-C to stop.');
    expect(second.output()).not.toContain(operatorKey);
    const again = await fetch(`${base}/api/manage/tenants/${tenant.id}`, { headers: auth });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ id: tenant.id, name: 'Survivor' });
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('leaves no Azurite behind and keeps what was written when it is killed outright', async () => {
    const killedDir = mkdtempSync(join(tmpdir(), 'broker-start-killed-'));
    try {
      const port = await freePort();
      const env = { PORT: String(port), BROKER_LOCAL_DATA_DIR: killedDir, BROKER_SANDBOX: 'false' };
      const first = start(env);
      await waitFor(first, 'Press Ctrl-C to stop.');
      const azuritePort = Number(/Azurite on 127\.0\.0\.1:(\d+)/.exec(first.output())?.[1]);
      expect(azuritePort).toBeGreaterThan(0);
      expect(await portOpen(azuritePort)).toBe(true);
      const auth = { authorization: `Bearer ${readFileSync(join(killedDir, 'operator-key'), 'utf8').trim()}` };
      const created = await fetch(`http://localhost:${port}/api/manage/tenants`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Killed' }),
      });
      const tenant = (await created.json()) as { id: string };

      // No SIGINT handler runs: only Azurite's own watch on its parent can stop it.
      first.child.kill('SIGKILL');
      await first.exited;
      await expect.poll(() => portOpen(azuritePort), { timeout: 15_000, interval: 200 }).toBe(false);

      const second = start(env);
      await waitFor(second, 'Press Ctrl-C to stop.');
      const again = await fetch(`http://localhost:${port}/api/manage/tenants/${tenant.id}`, { headers: auth });
      expect(await again.json()).toMatchObject({ id: tenant.id, name: 'Killed' });
      second.child.kill('SIGINT');
      expect(await second.exited).toBe(0);
    } finally {
      rmSync(killedDir, { recursive: true, force: true });
    }
  });

  it('stops with one line naming a malformed setting, before creating anything', async () => {
    const untouched = join(dataDir, 'never-created');
    const started = start({ PORT: String(await freePort()), BROKER_LOCAL_DATA_DIR: untouched, BROKER_PUBLIC_URL: 'ftp://broker.example.com' });
    expect(await started.exited).toBe(1);
    const lines = started.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/^Invalid setting BROKER_PUBLIC_URL: must be https/);
    expect(started.output()).not.toMatch(/\n\s+at /);
    expect(existsSync(untouched)).toBe(false);
  });

  it('refuses BROKER_SANDBOX=true next to a real BROKER_AUTHORITY_HOST with one line', async () => {
    const started = start({
      PORT: String(await freePort()),
      BROKER_LOCAL_DATA_DIR: join(dataDir, 'never-created'),
      BROKER_SANDBOX: 'true',
      BROKER_AUTHORITY_HOST: 'https://login.microsoftonline.us',
    });
    expect(await started.exited).toBe(1);
    expect(started.output().trim()).toMatch(/^Invalid setting BROKER_SANDBOX: [^\n]*BROKER_AUTHORITY_HOST[^\n]*$/);
  });

  it('starts no sandbox with BROKER_SANDBOX=false', async () => {
    const plainDir = mkdtempSync(join(tmpdir(), 'broker-start-plain-'));
    try {
      const port = await freePort();
      const started = start({ PORT: String(port), BROKER_LOCAL_DATA_DIR: plainDir, BROKER_SANDBOX: 'false' });
      await waitFor(started, 'Press Ctrl-C to stop.');
      expect(started.output()).toContain(`listening on http://localhost:${port}/api`);
      expect(started.output()).not.toContain('Sandbox');
      expect(started.output()).not.toContain('Connect the demo mailbox');
      expect(readdirSync(plainDir)).not.toContain('sandbox-tls');
      expect(readdirSync(plainDir)).not.toContain('sandbox.json');
      expect(await (await fetch(`http://localhost:${port}/api/health`)).json()).toEqual({ status: 'ok' });
      started.child.kill('SIGINT');
      expect(await started.exited).toBe(0);
    } finally {
      rmSync(plainDir, { recursive: true, force: true });
    }
  });
});
