import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { z } from 'zod';
import type { Services } from '../../shared/composition.js';
import { BrokerError } from '../../shared/errors.js';
import type { AppRecord, ConnectionRecord } from '../../shared/storage/records.js';
import { addSandboxDemo, DEMO_CLIENT_ID, DEMO_MAILBOX_UPN, DEMO_TENANT_ID, newDemoClientSecret } from './sandbox-idp/demo.js';
import { startSandboxIdentityProvider, type SandboxIdentityProvider } from './sandbox-idp/index.js';
import { ensureCertificateAuthority, issueServerCertificate, LOOPBACK_HOSTNAMES, type CertificateAuthorityFiles } from './tls.js';

/*
 * The sandbox part of `npm start`: a local certificate authority the broker trusts, the sandbox
 * identity provider served with a certificate from it, and a demo app, tenant and connection
 * seeded through the broker's own services, so a newcomer's first click is a real sign-in.
 */

/** Under the data folder: the CA that signs the sandbox's HTTPS certificate. */
export const SANDBOX_TLS_DIR = 'sandbox-tls';
/** Under the data folder: the demo's ids, so a restart re-creates the same directory and re-uses the rows. */
export const SANDBOX_STATE_FILE = 'sandbox.json';
const EXTRA_CA_BUNDLE_FILE = 'extra-ca-bundle.pem';

export interface SandboxTrust {
  ca: CertificateAuthorityFiles;
  /** Set when this Node cannot change its trust store: start again with NODE_EXTRA_CA_CERTS=<this file>. */
  relaunchWith: string | null;
}

/**
 * Makes this process trust the sandbox's CA (created on first use in `dir`), as the project's
 * rule says for every local HTTPS fake: through the CA, never NODE_TLS_REJECT_UNAUTHORIZED=0.
 *
 * msal-node talks to the authority with global fetch (undici), which builds each TLS
 * connection from Node's default CA list. Node 22.19+ can replace that list at run time
 * (`tls.setDefaultCACertificates`), and connections made afterwards, fetch's included, trust
 * the CA; this runs before the sandbox starts, so before MSAL's first request. The list keeps
 * Node's defaults and NODE_EXTRA_CA_CERTS (a TLS-inspecting proxy's CA, say), so Key Vault and
 * Microsoft stay trusted. On an older Node, whose trust store is fixed once it has started,
 * the caller re-runs the same command with NODE_EXTRA_CA_CERTS naming a bundle of the CAs it
 * already trusted plus this one; in that second process the CA is found there and nothing
 * more is needed.
 */
export async function trustSandboxCertificateAuthority(dir: string): Promise<SandboxTrust> {
  const ca = await ensureCertificateAuthority(dir);
  if (typeof tls.setDefaultCACertificates === 'function' && typeof tls.getCACertificates === 'function') {
    tls.setDefaultCACertificates([...tls.getCACertificates('default'), ...tls.getCACertificates('extra'), ca.certPem]);
    return { ca, relaunchWith: null };
  }
  const inherited = readExtraCaCertificates();
  if (inherited.includes(ca.certPem.trim())) return { ca, relaunchWith: null };
  const bundle = join(dir, EXTRA_CA_BUNDLE_FILE);
  await writeAtomically(bundle, `${inherited.trim() === '' ? '' : `${inherited.trim()}\n`}${ca.certPem}`, 0o644);
  return { ca, relaunchWith: bundle };
}

function readExtraCaCertificates(): string {
  const path = process.env.NODE_EXTRA_CA_CERTS?.trim();
  if (!path) return '';
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return ''; // Node already warned at start-up that it could not read the file.
  }
}

/**
 * Runs this same command again with `NODE_EXTRA_CA_CERTS=extraCaCerts`, passing Ctrl-C on, and
 * resolves with its exit code. Only for a Node without `tls.setDefaultCACertificates`.
 */
export function relaunchTrusting(extraCaCerts: string): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: extraCaCerts },
  });
  const forward = (signal: NodeJS.Signals) => () => void child.kill(signal);
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code ?? 1));
  });
}

/**
 * The sandbox identity provider on free ports: HTTPS (metadata, keys, token) with a fresh
 * certificate from `ca`, http://localhost for the pages a browser sees. Fails, closed, when
 * this process does not trust its certificate, rather than at the first sign-in.
 */
export async function startLocalSandbox(ca: CertificateAuthorityFiles): Promise<SandboxIdentityProvider> {
  const certificate = await issueServerCertificate(ca, LOOPBACK_HOSTNAMES);
  const idp = await startSandboxIdentityProvider({ tls: certificate });
  try {
    const response = await fetch(`${idp.authorityHost}/organizations/v2.0/.well-known/openid-configuration`);
    await response.body?.cancel();
    if (!response.ok) throw new Error(`its metadata answered ${response.status}`);
  } catch (error) {
    await idp.close();
    const reason = error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error);
    throw new Error(`the sandbox identity provider at ${idp.authorityHost} is not reachable over trusted HTTPS (${reason}); its CA is ${ca.caCertPath}`);
  }
  return idp;
}

const sandboxState = z.object({
  version: z.literal(1),
  appId: z.string().nullable(),
  tenantId: z.string().nullable(),
  connectionId: z.string().nullable(),
  clientId: z.string(),
  user: z.object({ upn: z.string(), oid: z.string(), tid: z.string() }),
  adminOid: z.string(),
});
type SandboxState = z.infer<typeof sandboxState>;

export interface SandboxDemoSummary {
  appId: string;
  clientId: string;
  tenantId: string;
  connectionId: string;
  /** Whom to sign in as: the demo mailbox's user. */
  upn: string;
  status: ConnectionRecord['status'];
  connectedAt: string | null;
  /** A fresh Authorize link for the demo connection. */
  link: string;
  linkExpiresAt: string;
  /** What this start created, as opposed to re-used. */
  created: { app: boolean; tenant: boolean; connection: boolean };
  /** True when the app's secret was unreadable or near expiry and this start replaced it. */
  secretRotated: boolean;
  statePath: string;
}

const DEMO_PROTOCOLS: ConnectionRecord['protocols'] = ['smtp', 'imap'];
// A secret that expires during this run would stop the demo mid-way: rotate it a day early.
const SECRET_MARGIN_MS = 86_400_000;

/**
 * Registers the demo directory in the (new, empty) sandbox and makes sure the broker has the
 * matching app, tenant and delegated connection. The sandbox forgets everything when it
 * stops, Azurite and the secret store do not: the ids in `sandbox.json` let a restart register
 * the same app (same client id, the secret read back from the broker's store) and the same
 * user (same oid and tid, so a connection bound to that user still accepts its sign-in), and
 * re-use every row that still exists. Whatever is missing is created.
 */
export async function seedSandboxDemo(options: {
  idp: SandboxIdentityProvider;
  services: Services;
  dataDir: string;
}): Promise<SandboxDemoSummary> {
  const { idp, services } = options;
  const statePath = join(options.dataDir, SANDBOX_STATE_FILE);
  const saved = await readState(statePath);
  const clientId = saved?.clientId ?? DEMO_CLIENT_ID;
  const directoryTenantId = saved?.user.tid ?? DEMO_TENANT_ID;
  const upn = saved?.user.upn ?? DEMO_MAILBOX_UPN;

  let app = saved?.appId ? await unlessNotFound(services.apps.get(saved.appId)) : null;
  if (app && app.clientId !== clientId.toLowerCase()) app = null;
  const tenant = saved?.tenantId ? await unlessNotFound(services.tenants.get(saved.tenantId)) : null;
  let connection = saved?.connectionId ? await unlessNotFound(services.connections.get(saved.connectionId)) : null;
  if (connection && (connection.tenantId !== tenant?.id || connection.mode !== 'delegated' || connection.mailbox.toLowerCase() !== upn.toLowerCase())) {
    connection = null;
  }
  if (!connection && tenant) connection = await findDemoConnection(services, tenant.id, upn);

  // A bound connection accepts only the person it was bound to: that oid wins over the file's.
  const boundHere = connection?.boundObjectId && connection.boundTenantId?.toLowerCase() === directoryTenantId.toLowerCase();
  const mailboxOid = boundHere ? connection!.boundObjectId! : (saved?.user.oid ?? randomUUID());
  const adminOid = saved?.adminOid ?? randomUUID();

  const kept = app ? await readableSecret(services, app) : null;
  const credential = kept ?? newDemoClientSecret(services.clock);
  const demo = addSandboxDemo(idp, {
    redirectUri: services.config.redirectUri,
    clock: services.clock,
    tenantId: directoryTenantId,
    clientId,
    clientSecret: credential.clientSecret,
    secretExpiresOn: credential.secretExpiresOn,
    mailboxOid,
    adminOid,
  });

  const created = { app: false, tenant: false, connection: false };
  const secretRotated = app !== null && kept === null;
  const expiry = credential.secretExpiresOn.toISOString();
  if (app && secretRotated) {
    await services.apps.patch(app.id, { clientSecret: credential.clientSecret, clientSecretExpiresOn: expiry });
  } else if (!app) {
    const view = await services.apps.create({
      name: 'Sandbox demo app',
      clientId: demo.clientId,
      tenant: 'organizations',
      clientSecret: credential.clientSecret,
      clientSecretExpiresOn: expiry,
      alertEmails: [],
    });
    app = await services.apps.get(view.id);
    created.app = true;
  }
  const tenantId = tenant?.id ?? (await services.tenants.create({ name: 'Contoso (sandbox demo)', alertEmails: [] })).id;
  created.tenant = tenant === null;

  if (connection && connection.appId !== app.id) {
    // The demo mailbox in the demo tenant, but through an app that is gone: replace it.
    await services.connections.remove(connection);
    connection = null;
  }
  if (!connection) {
    const view = await services.connections.create({ tenantId, appId: app.id, mailbox: demo.mailbox.upn, mode: 'delegated', protocols: DEMO_PROTOCOLS });
    connection = await services.connections.get(view.id);
    created.connection = true;
  }

  await writeState(statePath, {
    version: 1,
    appId: app.id,
    tenantId,
    connectionId: connection.id,
    clientId: demo.clientId,
    user: { upn: demo.mailbox.upn, oid: demo.mailbox.oid, tid: demo.mailbox.tid },
    adminOid: demo.admin.oid,
  });
  const link = await services.connect.createLink(connection);
  return {
    appId: app.id,
    clientId: demo.clientId,
    tenantId,
    connectionId: connection.id,
    upn: demo.mailbox.upn,
    status: connection.status,
    connectedAt: connection.connectedAt,
    link: link.url,
    linkExpiresAt: link.expiresAt,
    created,
    secretRotated,
    statePath,
  };
}

/** The lines `npm start` prints about the sandbox, ending with the link to click. */
export function describeSandbox(idp: SandboxIdentityProvider, ca: CertificateAuthorityFiles, demo: SandboxDemoSummary): string[] {
  const rows = (what: keyof SandboxDemoSummary['created']) => (demo.created[what] ? 'created' : 're-used');
  const status =
    demo.status === 'connected'
      ? `already connected (since ${demo.connectedAt}); the link below re-authorizes it`
      : demo.status === 'pending'
        ? 'pending: not connected yet'
        : `${demo.status}: the link below connects it again`;
  return [
    `Sandbox identity provider: ${idp.authorityHost} (sign-in pages on ${idp.signInHost})`,
    `  its HTTPS certificate comes from the local CA ${ca.caCertPath}, which this process trusts`,
    `Sandbox demo (ids in ${demo.statePath}):`,
    `  app ${demo.appId} (client id ${demo.clientId}, ${rows('app')}${demo.secretRotated ? ', new client secret' : ''})`,
    `  tenant ${demo.tenantId} (${rows('tenant')})`,
    `  connection ${demo.connectionId} for ${demo.upn}, smtp+imap (${rows('connection')}): ${status}`,
    `Connect the demo mailbox: open ${demo.link} and sign in as ${demo.upn}`,
  ];
}

async function unlessNotFound<T>(lookup: Promise<T>): Promise<T | null> {
  try {
    return await lookup;
  } catch (error) {
    if (error instanceof BrokerError && error.code.endsWith('_NOT_FOUND')) return null;
    throw error;
  }
}

async function findDemoConnection(services: Services, tenantId: string, upn: string): Promise<ConnectionRecord | null> {
  let cursor: string | undefined;
  do {
    const page = await services.connections.list({ limit: 100, tenantId, ...(cursor ? { cursor } : {}) });
    const found = page.items.find((item) => item.mode === 'delegated' && item.mailbox.toLowerCase() === upn.toLowerCase());
    if (found) return services.connections.get(found.id);
    cursor = page.next ?? undefined;
  } while (cursor);
  return null;
}

/** The secret the broker holds for the app, while it has more than a day left; else null. */
async function readableSecret(services: Services, app: AppRecord): Promise<{ clientSecret: string; secretExpiresOn: Date } | null> {
  if (!app.clientSecretExpiresOn) return null;
  const secretExpiresOn = new Date(app.clientSecretExpiresOn);
  if (secretExpiresOn.getTime() - services.clock.now().getTime() < SECRET_MARGIN_MS) return null;
  try {
    return { clientSecret: await services.apps.clientSecret(app), secretExpiresOn };
  } catch (error) {
    if (error instanceof BrokerError && error.code === 'INTERNAL') return null; // missing from the store
    throw error;
  }
}

async function readState(path: string): Promise<SandboxState | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const result = sandboxState.safeParse(parsed);
  if (!result.success) throw new Error(`${path} is not a sandbox state file; delete it to seed a new demo`);
  return result.data;
}

async function writeState(path: string, state: SandboxState): Promise<void> {
  await writeAtomically(path, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, content, { mode });
  await rename(temp, path);
}
