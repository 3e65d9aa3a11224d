import { odata } from '@azure/data-tables';
import type { Clock } from '../clock.js';
import { BrokerError } from '../errors.js';
import { newId } from '../ids.js';
import { secretNames, type SecretStore } from '../secrets/secret-store.js';
import type { Page } from '../storage/entity-table.js';
import type { AppRecord } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';
import { isId, type CreateAppInput, type ListQuery, type PatchAppInput } from './inputs.js';

export interface AppView {
  id: string;
  name: string;
  clientId: string;
  tenant: string;
  clientSecretExpiresOn: string | null;
  alertEmails: string[];
  redirectUri: string;
  createdAt: string;
  updatedAt: string;
}

export interface AppsDeps {
  tables: StorageTables;
  secrets: SecretStore;
  clock: Clock;
  redirectUri: string;
  /** Throws when Microsoft refuses a new client secret; the old one is then kept. */
  checkClientSecret?: (app: AppRecord, clientSecret: string) => Promise<void>;
}

function notFound(): BrokerError {
  return new BrokerError('APP_NOT_FOUND', 'No app with this id exists.');
}

// Key Vault keeps `exp` as 32-bit Unix seconds: whole seconds, and nothing past January 2038.
const LATEST_EXPIRY = Date.UTC(2038, 0, 19, 3, 14, 7);

function futureExpiry(iso: string, now: Date): Date {
  const expiresOn = new Date(Math.floor(new Date(iso).getTime() / 1000) * 1000);
  if (expiresOn.getTime() <= now.getTime()) {
    throw new BrokerError('INVALID_REQUEST', 'The client secret has already expired: create a new one in Entra ID.', {
      fields: [{ field: 'clientSecretExpiresOn', message: 'must be in the future' }],
    });
  }
  if (expiresOn.getTime() > LATEST_EXPIRY) {
    throw new BrokerError('INVALID_REQUEST', 'Key Vault cannot record an expiry after 2038-01-19T03:14:07Z.', {
      fields: [{ field: 'clientSecretExpiresOn', message: 'must be before 2038-01-19T03:14:07Z' }],
    });
  }
  return expiresOn;
}

/** App registrations. The client secret is write-only: it goes to the secret store with its expiry and never comes back out of this API. */
export class AppsService {
  constructor(private readonly deps: AppsDeps) {}

  view(app: AppRecord): AppView {
    return {
      id: app.id,
      name: app.name,
      clientId: app.clientId,
      tenant: app.tenant,
      clientSecretExpiresOn: app.clientSecretExpiresOn,
      alertEmails: app.alertEmails,
      redirectUri: this.deps.redirectUri,
      createdAt: app.createdAt,
      updatedAt: app.updatedAt,
    };
  }

  async create(input: CreateAppInput): Promise<AppView> {
    const now = this.deps.clock.now();
    const expiresOn = futureExpiry(input.clientSecretExpiresOn, now);
    const id = newId('app');
    // Secret first: a row that points at a missing secret would be a broken app, while a
    // secret without a row is never read (and its name is never reused).
    const secret = await this.deps.secrets.set(secretNames.appClientSecret(id), input.clientSecret, {
      expiresOn,
      contentType: 'client-secret',
      tags: { appId: id, clientId: input.clientId },
    });
    const record: AppRecord = {
      id,
      name: input.name,
      clientId: input.clientId.toLowerCase(),
      tenant: input.tenant.toLowerCase(),
      clientSecretExpiresOn: expiresOn.toISOString(),
      clientSecretVersion: secret.version,
      alertEmails: input.alertEmails,
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
    };
    try {
      await this.deps.tables.apps.insert(record);
    } catch (error) {
      await this.deps.secrets.delete(secretNames.appClientSecret(id)).catch(() => undefined);
      throw error;
    }
    return this.view(record);
  }

  async get(id: string | undefined): Promise<AppRecord> {
    if (!isId('app', id)) throw notFound();
    const found = await this.deps.tables.apps.get(id, '');
    if (!found) throw notFound();
    return found.value;
  }

  async list(query: ListQuery): Promise<Page<AppView>> {
    const page = await this.deps.tables.apps.page({ limit: query.limit, cursor: query.cursor });
    return { items: page.items.map((app) => this.view(app)), next: page.next };
  }

  async patch(id: string | undefined, patch: PatchAppInput): Promise<AppView> {
    const current = await this.get(id);
    const now = this.deps.clock.now();
    const next: AppRecord = {
      ...current,
      name: patch.name ?? current.name,
      tenant: patch.tenant?.toLowerCase() ?? current.tenant,
      alertEmails: patch.alertEmails ?? current.alertEmails,
      updatedAt: now.toISOString(),
    };
    if (patch.clientSecret !== undefined && patch.clientSecretExpiresOn !== undefined) {
      const expiresOn = futureExpiry(patch.clientSecretExpiresOn, now);
      await this.deps.checkClientSecret?.(current, patch.clientSecret);
      const secret = await this.deps.secrets.set(secretNames.appClientSecret(current.id), patch.clientSecret, {
        expiresOn,
        contentType: 'client-secret',
        tags: { appId: current.id, clientId: current.clientId },
      });
      next.clientSecretExpiresOn = expiresOn.toISOString();
      next.clientSecretVersion = secret.version;
    }
    await this.deps.tables.apps.replace(next);
    return this.view(next);
  }

  async delete(id: string | undefined): Promise<void> {
    const app = await this.get(id);
    for await (const connection of this.deps.tables.connections.scan(odata`appId eq ${app.id}`)) {
      throw new BrokerError('APP_IN_USE', `Connection ${connection.value.id} still uses this app: delete or move its connections first.`);
    }
    await this.deps.secrets.delete(secretNames.appClientSecret(app.id));
    await this.deps.tables.apps.delete(app.id, '');
  }

  /** The client secret for MSAL; never leaves the process. */
  async clientSecret(app: AppRecord): Promise<string> {
    const secret = await this.deps.secrets.get(secretNames.appClientSecret(app.id));
    if (!secret) throw new BrokerError('INTERNAL', `The client secret of app ${app.id} is missing from the secret store.`);
    return secret.value;
  }

  /** The app and its client secret, as stored now. */
  async credentials(id: string): Promise<AppWithSecret> {
    const app = await this.get(id);
    return { app, clientSecret: await this.clientSecret(app) };
  }
}

export interface AppWithSecret {
  app: AppRecord;
  clientSecret: string;
}

/** Where a refresh gets its app's credentials from. */
export interface AppCredentialSource {
  get(appId: string): Promise<AppWithSecret>;
  /**
   * Called when Microsoft refused the credentials `used`: the ones stored now if they differ
   * (the secret was rotated meanwhile), else `null`.
   */
  newerThan(used: AppWithSecret): Promise<AppWithSecret | null>;
}

/**
 * The app and its client secret remembered for one sweep, so 10,000 refreshes of one app's
 * mailboxes cost one Table read and one Key Vault read instead of 10,000 of each. A run lasts
 * minutes at most (BROKER_SWEEP_TIME_BUDGET_S), and a secret rotated meanwhile is picked up as
 * soon as Microsoft refuses the remembered one, so nothing waits for the next run. Failed
 * loads are not remembered.
 */
export class RememberedAppCredentials implements AppCredentialSource {
  private readonly known = new Map<string, Promise<AppWithSecret>>();

  constructor(private readonly apps: Pick<AppsService, 'credentials'>) {}

  get(appId: string): Promise<AppWithSecret> {
    let found = this.known.get(appId);
    if (!found) {
      found = this.apps.credentials(appId);
      this.known.set(appId, found);
      found.catch(() => {
        if (this.known.get(appId) === found) this.known.delete(appId);
      });
    }
    return found;
  }

  async newerThan(used: AppWithSecret): Promise<AppWithSecret | null> {
    const appId = used.app.id;
    const remembered = this.known.get(appId);
    // Another refresh of this run may have reloaded it already; else reload once for all of them.
    if (remembered && (await remembered.catch(() => null)) === used && this.known.get(appId) === remembered) this.known.delete(appId);
    const current = await this.get(appId);
    const changed = current.app.clientSecretVersion !== used.app.clientSecretVersion || current.clientSecret !== used.clientSecret;
    return changed ? current : null;
  }
}
