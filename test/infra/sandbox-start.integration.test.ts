import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../infra/local/free-port.js';
import { killBrokerProcesses, portOpen, startBrokerProcess, waitForOutput } from '../support/broker-process.js';
import type { SandboxIdentityProvider } from '../../infra/local/sandbox-idp/index.js';
import { openPage, signInThroughPages } from './sandbox-idp/support.js';

/*
 * `npm start` with nothing configured, as a newcomer meets it: the printed Authorize link,
 * the sandbox's http sign-in pages, the broker's success page; then a restart that re-uses
 * the demo. The broker must trust its own sandbox CA: the test's NODE_EXTRA_CA_CERTS (which
 * trusts only the test CA) is not passed on.
 */

const dataDir = mkdtempSync(join(tmpdir(), 'broker-sandbox-start-'));

afterAll(() => {
  killBrokerProcesses();
  rmSync(dataDir, { recursive: true, force: true });
});

const start = (env: Record<string, string>) => startBrokerProcess(env);
const waitFor = waitForOutput;

interface Printed {
  authorityHost: string;
  signInHost: string;
  connectionId: string;
  link: string;
  upn: string;
}

/** What a newcomer reads off the console. */
function printed(output: string): Printed {
  const hosts = /^Sandbox identity provider: (https:\/\/localhost:\d+) \(sign-in pages on (http:\/\/localhost:\d+)\)$/m.exec(output);
  const link = /^Connect the demo mailbox: open (\S+) and sign in as (\S+)$/m.exec(output);
  const connection = /^ {2}connection (con_\w+) for /m.exec(output);
  if (!hosts || !link || !connection) throw new Error(`no sandbox lines in:\n${output}`);
  return { authorityHost: hosts[1]!, signInHost: hosts[2]!, link: link[1]!, upn: link[2]!, connectionId: connection[1]! };
}

/** Click the link, sign in as the printed user on the sandbox's pages, land on the broker. */
async function connectThroughLink(base: string, demo: Printed): Promise<string> {
  const opened = await openPage(demo.link);
  expect(opened.status).toBe(302);
  const authorize = opened.location!;
  expect(authorize.origin).toBe(demo.signInHost);
  expect(authorize.protocol).toBe('http:');
  // signInThroughPages needs only where the pages are.
  const pages = { signInHost: demo.signInHost } as SandboxIdentityProvider;
  const back = await signInThroughPages(pages, authorize.toString(), { login: demo.upn });
  expect(back.status).toBe(302);
  expect(back.location!.origin + back.location!.pathname).toBe(`${base}/api/oauth/callback`);
  const page = await openPage(back.location!.toString());
  expect(page.status, page.html).toBe(200);
  return page.html;
}

describe('npm start with the sandbox identity provider', () => {
  it('prints a ready Authorize link that connects the demo mailbox, and re-uses the demo after a restart', { timeout: 180_000 }, async () => {
    const port = await freePort();
    const base = `http://localhost:${port}`;
    const env = { PORT: String(port), BROKER_LOCAL_DATA_DIR: dataDir };

    const first = start(env);
    await waitFor(first, 'Connect the demo mailbox: open ');
    const demo = printed(first.output());
    expect(demo.link).toMatch(new RegExp(`^${base}/api/connect/lnk_[a-z2-7]{26}$`));
    expect(demo.upn).toBe('megan.bowen@contoso.example');
    expect(first.output()).toMatch(/connection con_\w+ for megan\.bowen@contoso\.example, smtp\+imap \(created\): pending/);
    expect(existsSync(join(dataDir, 'sandbox-tls', 'ca.crt'))).toBe(true);
    const state = JSON.parse(readFileSync(join(dataDir, 'sandbox.json'), 'utf8')) as Record<string, unknown>;
    expect(state).toMatchObject({ connectionId: demo.connectionId, user: { upn: demo.upn } });

    const operatorKey = readFileSync(join(dataDir, 'operator-key'), 'utf8').trim();
    const auth = { authorization: `Bearer ${operatorKey}` };
    const connection = async (id: string) => (await (await fetch(`${base}/api/manage/connections/${id}`, { headers: auth })).json()) as Record<string, unknown>;

    const html = await connectThroughLink(base, demo);
    expect(html).toContain(`${demo.upn} is connected`);
    expect(html).toContain(`You signed in as ${demo.upn}`);
    expect(await connection(demo.connectionId)).toMatchObject({ status: 'connected', mailbox: demo.upn, protocols: ['smtp', 'imap'] });

    // Ctrl-C stops the sandbox too.
    const sandboxPorts = [new URL(demo.authorityHost).port, new URL(demo.signInHost).port].map(Number);
    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    for (const sandboxPort of sandboxPorts) expect(await portOpen(sandboxPort)).toBe(false);

    const second = start(env);
    await waitFor(second, 'Connect the demo mailbox: open ');
    const again = printed(second.output());
    expect(again.connectionId).toBe(demo.connectionId);
    expect(again.link).not.toBe(demo.link);
    expect(second.output()).toMatch(/^ {2}app app_\w+ \(client id [0-9a-f-]{36}, re-used\)$/m);
    expect(second.output()).toMatch(/^ {2}tenant tnt_\w+ \(re-used\)$/m);
    expect(second.output()).toContain('(re-used): already connected');
    expect(JSON.parse(readFileSync(join(dataDir, 'sandbox.json'), 'utf8'))).toEqual(state);

    // The same person (same oid and tid in the new sandbox) re-authorizes through the new link.
    expect(await connectThroughLink(base, again)).toContain(`${demo.upn} is connected again`);
    expect(await connection(demo.connectionId)).toMatchObject({ status: 'connected' });
    const apps = (await (await fetch(`${base}/api/manage/apps`, { headers: auth })).json()) as { items: unknown[] };
    const tenants = (await (await fetch(`${base}/api/manage/tenants`, { headers: auth })).json()) as { items: unknown[] };
    expect(apps.items).toHaveLength(1);
    expect(tenants.items).toHaveLength(1);

    // What is missing is created again; what exists is re-used.
    expect((await fetch(`${base}/api/manage/connections/${demo.connectionId}`, { method: 'DELETE', headers: auth })).status).toBe(204);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const third = start(env);
    await waitFor(third, 'Connect the demo mailbox: open ');
    const recreated = printed(third.output());
    expect(recreated.connectionId).not.toBe(demo.connectionId);
    expect(third.output()).toMatch(/^ {2}tenant tnt_\w+ \(re-used\)$/m);
    expect(third.output()).toContain('(created): pending');
    expect(await connectThroughLink(base, recreated)).toContain(`${demo.upn} is connected`);
    expect(await connection(recreated.connectionId)).toMatchObject({ status: 'connected' });
    third.child.kill('SIGINT');
    expect(await third.exited).toBe(0);
  });
});
