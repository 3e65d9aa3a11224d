import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../../../shared/clock.js';
import type { SandboxIdentityProvider, SandboxUser } from './index.js';

/**
 * The directory `npm start` gives a newcomer: one multi-tenant app (the broker's), a customer
 * tenant with a mailbox user and an admin. Ids are fixed so links survive a restart; the
 * secret is new at every start, since the sandbox forgets everything when it stops.
 */

export const DEMO_TENANT_ID = '6f0c8d2e-3b1a-4c5d-9e7f-a1b2c3d4e5f6';
export const DEMO_CLIENT_ID = 'b7e6d5c4-a3b2-4c1d-8e0f-123456789abc';

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

export function addSandboxDemo(idp: SandboxIdentityProvider, options: { redirectUri: string; clock?: Clock }): SandboxDemo {
  const clock = options.clock ?? systemClock;
  const clientSecret = `sbx~${randomBytes(24).toString('base64url')}`;
  const secretExpiresOn = new Date(clock.now().getTime() + 180 * 86_400_000);
  idp.registerApp({ clientId: DEMO_CLIENT_ID, clientSecret, secretExpiresOn, redirectUris: [options.redirectUri], displayName: 'Mail OAuth Broker (sandbox)' });
  const mailbox = idp.addUser({ upn: 'megan.bowen@contoso.example', tid: DEMO_TENANT_ID, name: 'Megan Bowen' });
  const admin = idp.addUser({ upn: 'admin@contoso.example', tid: DEMO_TENANT_ID, name: 'Contoso Admin', admin: true });
  return { tenantId: DEMO_TENANT_ID, clientId: DEMO_CLIENT_ID, clientSecret, secretExpiresOn, mailbox, admin };
}
