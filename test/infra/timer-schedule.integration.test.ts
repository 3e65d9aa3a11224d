import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzuriteTables, type AzuriteTables } from '../../infra/local/azurite.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/* The local host runs timer functions on their NCRONTAB schedule, as the Functions host does. */

let azurite: AzuriteTables;
let broker: TestBroker;
const dataDir = mkdtempSync(join(tmpdir(), 'broker-timer-'));

beforeAll(async () => {
  azurite = await startAzuriteTables();
  broker = await startTestBroker({
    tablesConnection: azurite.connectionString,
    env: { BROKER_ROTATION_SCHEDULE: '*/1 * * * * *', BROKER_LOCAL_DATA_DIR: dataDir },
    runSchedules: true,
  });
});

afterAll(async () => {
  await broker?.close();
  await azurite?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('timer schedules on the local host', () => {
  it('runs rotate-tokens on its schedule and stops with the host', async () => {
    const deadline = Date.now() + 10_000;
    let runs: unknown[] = [];
    while (runs.length < 2 && Date.now() < deadline) {
      await new Promise((done) => setTimeout(done, 250));
      runs = ((await (await broker.call('GET', '/api/manage/runs')).json()) as { items: unknown[] }).items;
    }
    expect(runs.length).toBeGreaterThanOrEqual(2);
  });
});
