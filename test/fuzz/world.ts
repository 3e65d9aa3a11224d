import { TableServiceClient, TableClient } from '@azure/data-tables';
import { newId } from '../../shared/ids.js';
import { secretNames } from '../../shared/secrets/secret-store.js';
import { OPERATOR_KEY } from '../support/broker.js';
import { CUSTOMER_TENANT, connectionWithLink, tenantKey, type ConnectFixture } from '../support/connect-fixture.js';
import { openPage, signInThroughPages } from '../infra/sandbox-idp/support.js';

/*
 * A realistic broker to throw bad requests at: two tenants with keys (one revoked), a
 * connected mailbox in each, a pending one with a live Authorize link and a live sign-in
 * state, dead links (used, expired, orphaned), deleted resources, and real tokens in
 * storage. Everything a request could leak or change is written down here.
 */

export interface World {
  operatorKey: string;
  tenants: { a: string; b: string; deleted: string };
  apps: { inUse: string; unused: string; deleted: string };
  /** Tenant id → key ids of that tenant. */
  keyIds: Map<string, string[]>;
  /** Presented key → tenant id, for the keys that authenticate. */
  tenantKeys: Map<string, string>;
  keys: { a: string; b: string; revoked: string; revokedId: string };
  connections: {
    a: { id: string; mailbox: string };
    b: { id: string; mailbox: string };
    pending: { id: string; mailbox: string };
    deleted: string;
  };
  /** Connected connections: the only ones the token endpoint serves. */
  connected: { id: string; mailbox: string; tenantId: string }[];
  links: { live: string; used: string[]; expired: string; orphaned: string };
  /** The one sign-in that is still open; a request carrying it would consume it, so none does. */
  liveState: string;
  /** Callback URLs (path + query) that already completed: replaying them must fail. */
  usedCallbacks: string[];
  usedStates: string[];
  usedCodes: string[];
  /** Every value that must never appear in an answer. */
  secrets: { name: string; value: string }[];
}

const linkIdOf = (url: string) => new URL(url).pathname.split('/').pop()!;

async function ok(response: Response, what: string): Promise<Response> {
  if (response.status >= 300) throw new Error(`${what}: ${response.status} ${await response.text()}`);
  return response;
}

/** connectMailbox, keeping the callback URL so it can be replayed later. */
async function connectKeepingCallback(fixture: ConnectFixture, mailbox: string, tenantId: string) {
  fixture.idp.addUser({ upn: mailbox, tid: CUSTOMER_TENANT });
  const { connectionId, link } = await connectionWithLink(fixture, mailbox, { tenantId });
  const opened = await openPage(link);
  const back = await signInThroughPages(fixture.idp, opened.location!.toString());
  const callback = back.location!;
  const page = await openPage(callback.toString());
  if (page.status !== 200) throw new Error(`connecting ${mailbox} failed: ${page.status} ${page.html}`);
  return { connectionId, linkId: linkIdOf(link), callback: `${callback.pathname}${callback.search}`, state: callback.searchParams.get('state')!, code: callback.searchParams.get('code')! };
}

export async function seedWorld(fixture: ConnectFixture): Promise<World> {
  const { broker } = fixture;
  const call = broker.call.bind(broker);
  const json = async <T>(response: Promise<Response>, what: string) => (await (await ok(await response, what)).json()) as T;

  const tenantA = fixture.tenantId;
  const tenantB = (await json<{ id: string }>(call('POST', '/api/manage/tenants', { body: { name: 'Fabrikam', alertEmails: ['ops@fabrikam.example'] } }), 'tenant B')).id;
  const tenantGone = (await json<{ id: string }>(call('POST', '/api/manage/tenants', { body: { name: 'Gone' } }), 'tenant gone')).id;
  await ok(await call('DELETE', `/api/manage/tenants/${tenantGone}`), 'delete tenant');

  const appBody = (name: string) => ({
    name,
    clientId: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0',
    tenant: 'organizations',
    clientSecret: `unused-app-secret~${newId('run')}`,
    clientSecretExpiresOn: new Date(Date.now() + 200 * 86_400_000).toISOString(),
  });
  const unusedApp = appBody('Unused');
  const appUnused = (await json<{ id: string }>(call('POST', '/api/manage/apps', { body: unusedApp }), 'app unused')).id;
  const goneApp = appBody('Gone');
  const appGone = (await json<{ id: string }>(call('POST', '/api/manage/apps', { body: goneApp }), 'app gone')).id;
  await ok(await call('DELETE', `/api/manage/apps/${appGone}`), 'delete app');

  const keyA = await tenantKey(fixture, tenantA);
  const keyB = await tenantKey(fixture, tenantB);
  const revoked = await json<{ id: string; key: string }>(call('POST', `/api/manage/tenants/${tenantA}/keys`), 'key to revoke');
  await ok(await call('DELETE', `/api/manage/tenants/${tenantA}/keys/${revoked.id}`), 'revoke key');
  const keyList = async (tenantId: string) => (await json<{ items: { id: string }[] }>(call('GET', `/api/manage/tenants/${tenantId}/keys`), 'keys')).items.map((item) => item.id);

  const mailboxA = 'alice.fuzz@contoso.example';
  const mailboxB = 'bob.fuzz@fabrikam.example';
  const a = await connectKeepingCallback(fixture, mailboxA, tenantA);
  const b = await connectKeepingCallback(fixture, mailboxB, tenantB);
  const pendingMailbox = 'pending.fuzz@contoso.example';
  const pending = await connectionWithLink(fixture, pendingMailbox);

  // The live sign-in: opening the link leaves a state behind that nothing may consume.
  const opened = await openPage(pending.link);
  const liveState = new URL(opened.location!.toString()).searchParams.get('state');
  if (!liveState) throw new Error(`opening the live link gave no state: ${opened.status}`);

  const doomed = await connectionWithLink(fixture, 'doomed.fuzz@contoso.example');
  await ok(await call('DELETE', `/api/manage/connections/${doomed.connectionId}`), 'delete connection');

  const now = fixture.clock.now().getTime();
  const expired = newId('lnk');
  await broker.services.tables.links.insert({
    id: expired,
    connectionId: pending.connectionId,
    createdAt: new Date(now - 9 * 86_400_000).toISOString(),
    expiresAt: new Date(now - 2 * 86_400_000).toISOString(),
    completedAt: null,
  });
  // Real tokens in storage, fetched once now so that every later answer can be searched for them.
  const token = async (key: string, connection: string) =>
    (await json<{ access_token: string }>(
      fetch(`${broker.baseUrl}/api/token`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ connection }) }),
      'token',
    )).access_token;
  const accessA = await token(keyA, a.connectionId);
  const accessB = await token(keyB, mailboxB);

  const refresh = (id: string) => fixture.vault.latest(secretNames.connectionRefreshToken(id))?.value;
  const secrets = [
    { name: 'operator key', value: OPERATOR_KEY },
    { name: 'tenant key A', value: keyA },
    { name: 'tenant key B', value: keyB },
    { name: 'revoked tenant key', value: revoked.key },
    { name: 'client secret', value: fixture.app.clientSecret },
    { name: 'unused app client secret', value: unusedApp.clientSecret },
    { name: 'access token A', value: accessA },
    { name: 'access token B', value: accessB },
    { name: 'refresh token A', value: refresh(a.connectionId) ?? '' },
    { name: 'refresh token B', value: refresh(b.connectionId) ?? '' },
    { name: 'data key', value: fixture.vault.latest(secretNames.dataKey())?.value ?? '' },
    { name: 'live sign-in state', value: liveState },
  ];
  for (const secret of secrets) if (secret.value.length < 16) throw new Error(`seeding did not produce the ${secret.name}`);

  // Let the key-usage writes of the two token calls land before anything is snapshotted.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await broker.services.audit.flush();

  const allLinks = await fixture.broker.services.tables.links.page({ limit: 100 });
  const usedLinks = allLinks.items.filter((link) => link.completedAt !== null).map((link) => link.id);
  const live = linkIdOf(pending.link);
  const stillLive = allLinks.items.filter((link) => link.completedAt === null && link.expiresAt > new Date(now).toISOString());
  if (stillLive.some((link) => link.id !== live && link.id !== linkIdOf(doomed.link))) throw new Error('an unexpected live link exists');
  // The link of the deleted connection stays behind: it must lead nowhere.
  const orphaned = linkIdOf(doomed.link);

  return {
    operatorKey: OPERATOR_KEY,
    tenants: { a: tenantA, b: tenantB, deleted: tenantGone },
    apps: { inUse: fixture.app.id, unused: appUnused, deleted: appGone },
    keyIds: new Map([
      [tenantA, await keyList(tenantA)],
      [tenantB, await keyList(tenantB)],
    ]),
    tenantKeys: new Map([
      [keyA, tenantA],
      [keyB, tenantB],
    ]),
    keys: { a: keyA, b: keyB, revoked: revoked.key, revokedId: revoked.id },
    connections: {
      a: { id: a.connectionId, mailbox: mailboxA },
      b: { id: b.connectionId, mailbox: mailboxB },
      pending: { id: pending.connectionId, mailbox: pendingMailbox },
      deleted: doomed.connectionId,
    },
    connected: [
      { id: a.connectionId, mailbox: mailboxA, tenantId: tenantA },
      { id: b.connectionId, mailbox: mailboxB, tenantId: tenantB },
    ],
    links: { live, used: usedLinks, expired, orphaned },
    liveState,
    usedCallbacks: [a.callback, b.callback],
    usedStates: [a.state, b.state],
    usedCodes: [a.code, b.code],
    secrets,
  };
}

/** Every id that exists, by kind; a request naming one of these may succeed. */
export function existingIds(world: World): { apps: Set<string>; tenants: Set<string>; connections: Set<string>; links: Set<string> } {
  return {
    apps: new Set([world.apps.inUse, world.apps.unused]),
    tenants: new Set([world.tenants.a, world.tenants.b]),
    connections: new Set([world.connections.a.id, world.connections.b.id, world.connections.pending.id]),
    links: new Set([world.links.live]),
  };
}

export interface StorageSnapshot {
  rows: Map<string, string>;
  audit: Map<string, Record<string, unknown>>;
  vault: Map<string, string>;
}

/**
 * Every row of every table (with its ETag, so a rewrite of the same values counts as a
 * change) and every Key Vault secret name with its version count. The audit table is kept
 * apart: refused token requests are audited by design.
 */
const clients = new Map<string, TableClient | TableServiceClient>();

/** One client per table for the whole run: the snapshot runs after every batch. */
function tableClient(connection: string, name: string): TableClient {
  const key = `${connection}\n${name}`;
  if (!clients.has(key)) clients.set(key, TableClient.fromConnectionString(connection, name, { allowInsecureConnection: true }));
  return clients.get(key) as TableClient;
}

export async function snapshotStorage(fixture: ConnectFixture): Promise<StorageSnapshot> {
  const connection = fixture.azurite.connectionString;
  if (!clients.has(connection)) clients.set(connection, TableServiceClient.fromConnectionString(connection, { allowInsecureConnection: true }));
  const service = clients.get(connection) as TableServiceClient;
  const names: string[] = [];
  for await (const table of service.listTables()) if (table.name) names.push(table.name);
  const rows = new Map<string, string>();
  const audit = new Map<string, Record<string, unknown>>();
  await Promise.all(
    names.map(async (name) => {
      for await (const entity of tableClient(connection, name).listEntities<Record<string, unknown>>()) {
        const key = `${name}/${entity.partitionKey}/${entity.rowKey}`;
        if (name.endsWith('audit')) audit.set(key, entity);
        else rows.set(key, JSON.stringify(entity));
      }
    }),
  );
  const vault = new Map<string, string>();
  for (const name of fixture.vault.liveSecretNames()) vault.set(`live/${name}`, String(fixture.vault.versionCount(name)));
  for (const name of fixture.vault.deletedSecretNames()) vault.set(`deleted/${name}`, String(fixture.vault.versionCount(name)));
  return { rows, audit, vault };
}

/** What changed between two snapshots, one line per row or secret; empty when nothing did. */
export function storageDiff(before: StorageSnapshot, after: StorageSnapshot): string[] {
  const lines: string[] = [];
  const compare = (what: string, left: Map<string, string>, right: Map<string, string>) => {
    for (const [key, value] of left) {
      if (!right.has(key)) lines.push(`${what} removed: ${key}`);
      else if (right.get(key) !== value) lines.push(`${what} changed: ${key}\n    before ${value.slice(0, 400)}\n    after  ${right.get(key)!.slice(0, 400)}`);
    }
    for (const [key, value] of right) if (!left.has(key)) lines.push(`${what} added: ${key} ${value.slice(0, 400)}`);
  };
  compare('table row', before.rows, after.rows);
  compare('key vault secret', before.vault, after.vault);
  return lines;
}
