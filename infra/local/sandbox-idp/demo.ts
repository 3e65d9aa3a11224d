import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../../../shared/clock.js';
import type { SandboxIdentityProvider, SandboxUser } from './index.js';

/**
 * The directory `npm start` gives a newcomer: one multi-tenant app (the broker's), a customer
 * tenant with a mailbox user and an admin. Ids are fixed so links survive a restart; the
 * secret is new at every start unless the caller passes the one the broker already holds,
 * since the sandbox forgets everything when it stops.
 */

export const DEMO_TENANT_ID = '6f0c8d2e-3b1a-4c5d-9e7f-a1b2c3d4e5f6';
export const DEMO_CLIENT_ID = 'b7e6d5c4-a3b2-4c1d-8e0f-123456789abc';
export const DEMO_MAILBOX_UPN = 'megan.bowen@contoso.example';
export const DEMO_ADMIN_UPN = 'admin@contoso.example';

const DEMO_SECRET_DAYS = 180;

export interface SandboxDemo {
  tenantId: string;
  clientId: string;
  clientSecret: string;
  secretExpiresOn: Date;
  /** A mailbox user for the delegated connect flow. */
  mailbox: SandboxUser;
  /** A tenant admin, for the app-only admin consent flow. */
  admin: SandboxUser;
}

export interface SandboxDemoOptions {
  redirectUri: string;
  clock?: Clock;
  /** To re-create the same directory after a restart: what the previous start registered. */
  tenantId?: string;
  clientId?: string;
  clientSecret?: string;
  secretExpiresOn?: Date;
  mailboxOid?: string;
  adminOid?: string;
}

/** A secret in the shape Entra issues (a short prefix with `~`, then random characters). */
export function newDemoClientSecret(clock: Clock = systemClock): { clientSecret: string; secretExpiresOn: Date } {
  return {
    clientSecret: `sbx~${randomBytes(24).toString('base64url')}`,
    // Whole seconds: the broker's secret store keeps expiries in seconds.
    secretExpiresOn: new Date(Math.floor((clock.now().getTime() + DEMO_SECRET_DAYS * 86_400_000) / 1000) * 1000),
  };
}

export function addSandboxDemo(idp: SandboxIdentityProvider, options: SandboxDemoOptions): SandboxDemo {
  const fresh = newDemoClientSecret(options.clock);
  const clientSecret = options.clientSecret ?? fresh.clientSecret;
  const secretExpiresOn = options.secretExpiresOn ?? fresh.secretExpiresOn;
  const tenantId = (options.tenantId ?? DEMO_TENANT_ID).toLowerCase();
  const clientId = (options.clientId ?? DEMO_CLIENT_ID).toLowerCase();
  idp.registerApp({ clientId, clientSecret, secretExpiresOn, redirectUris: [options.redirectUri], displayName: 'Mail OAuth Broker (sandbox)' });
  const mailbox = idp.addUser({ upn: DEMO_MAILBOX_UPN, tid: tenantId, name: 'Megan Bowen', ...(options.mailboxOid ? { oid: options.mailboxOid } : {}) });
  const admin = idp.addUser({ upn: DEMO_ADMIN_UPN, tid: tenantId, name: 'Contoso Admin', admin: true, ...(options.adminOid ? { oid: options.adminOid } : {}) });
  return { tenantId, clientId, clientSecret, secretExpiresOn, mailbox, admin };
}
