import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionRecord } from '../../shared/storage/records.js';
import { newId } from '../../shared/ids.js';
import { OPERATOR_KEY } from '../../test/support/broker.js';
import { sharedBrokerEnv, startConnectFixture, type ConnectFixture } from '../../test/support/connect-fixture.js';
import { childPids, onCleanup } from './procs.js';

/*
 * The real stack of the integration tests (test/support/connect-fixture.ts): Azurite's Table
 * service (a child process, in memory), the Key Vault fake behind the real SecretClient, the
 * sandbox identity provider behind the real msal-node, and one broker in this process used
 * only to set things up (app, tenant, key, connected mailboxes). The brokers under load run
 * as separate processes (`node dist/infra/local/start.js`) against the same storage, so the
 * load generator and the fakes in this process do not share an event loop with them.
 */

export interface Stack extends ConnectFixture {
  /** Azurite's process, for its CPU time. */
  azuritePid: number | undefined;
  /** Settings for a broker process on this stack; `extra` wins. */
  brokerEnv(extra?: Record<string, string>): NodeJS.ProcessEnv;
}

export async function startStack(options: { env?: Record<string, string> } = {}): Promise<Stack> {
  const before = new Set(childPids(process.pid, /azurite/));
  const fixture = await startConnectFixture(options);
  // Idempotent: a benchmark may stop the stack itself (to have Azurite write its profile).
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= fixture.close());
  onCleanup(close);
  const azuritePid = childPids(process.pid, /azurite/).find((pid) => !before.has(pid));
  const dataDir = mkdtempSync(join(tmpdir(), 'broker-bench-'));
  onCleanup(async () => rmSync(dataDir, { recursive: true, force: true }));
  return {
    ...fixture,
    close,
    azuritePid,
    brokerEnv: (extra = {}) => ({
      ...process.env,
      ...sharedBrokerEnv(fixture, 0),
      // One key sends all the load; the limiter is still on the path, just not in the way.
      BROKER_TOKEN_RATE_LIMIT: '1000000',
      BROKER_LOCAL_DATA_DIR: dataDir,
      ...extra,
    }),
  };
}

export { OPERATOR_KEY };

/** POST /api/token with a tenant key. */
export async function postToken(baseUrl: string, key: string, connection: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${baseUrl}/api/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
  return { status: response.status, body: await response.text() };
}

/** Runs `task` over `items` with at most `limit` at a time, in order of start. */
export async function inPool<T>(items: readonly T[], limit: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next;
      next += 1;
      await task(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** A connected delegated connection row as the callback leaves it, for seeding storage directly. */
export function connectedRow(input: { tenantId: string; appId: string; mailbox: string; at: string } & Partial<ConnectionRecord>): ConnectionRecord {
  const { tenantId, appId, mailbox, at, ...overrides } = input;
  return {
    id: newId('con'),
    tenantId,
    appId,
    mailbox,
    mode: 'delegated',
    protocols: ['smtp', 'imap'],
    signInName: null,
    status: 'connected',
    statusReason: null,
    connectedAt: at,
    lastRefreshAt: at,
    boundObjectId: null,
    boundTenantId: null,
    customerTenantId: null,
    refreshTokenUpdatedAt: at,
    accessTokenCipher: null,
    accessTokenExpiresAt: null,
    leaseOwner: null,
    leaseUntil: null,
    retryNotBefore: null,
    createdAt: at,
    updatedAt: at,
    ...overrides,
  };
}

/** A progress line on stderr, so stdout stays the report. */
export function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}
