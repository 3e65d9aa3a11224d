import { odata } from '@azure/data-tables';
import { BrokerError } from '../errors.js';
import { classifyMicrosoftError } from '../identity/microsoft-errors.js';
import type { IdentityClient } from '../identity/msal-identity.js';
import type { AppRecord } from '../storage/records.js';
import type { StorageTables } from '../storage/tables.js';

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Rotating a client secret without downtime: the new one is tried against Microsoft (a
 * client-credentials request in a directory the app works in) before it replaces the old
 * one, so a mistyped value, or the secret's ID pasted instead of its value, is refused
 * while the old secret keeps working.
 */
export function clientSecretChecker(deps: { tables: StorageTables; identity: IdentityClient; mailAppResource: string }) {
  async function directoryOf(app: AppRecord): Promise<string | null> {
    if (GUID.test(app.tenant)) return app.tenant;
    // A multi-tenant app is tried where one of its connections lives; with none, nothing can break.
    for await (const row of deps.tables.connections.scan(odata`appId eq ${app.id}`)) {
      const tenant = row.value.customerTenantId ?? row.value.boundTenantId;
      if (tenant && GUID.test(tenant)) return tenant;
    }
    return null;
  }

  return async (app: AppRecord, clientSecret: string): Promise<void> => {
    const tenant = await directoryOf(app);
    if (!tenant) return;
    try {
      await deps.identity.clientCredentials({ app: { clientId: app.clientId, tenant, clientSecret }, tenant, scope: `${deps.mailAppResource}/.default` });
    } catch (error) {
      const failure = classifyMicrosoftError(error, 'client_credentials');
      if (failure.class === 'app_credential') {
        throw new BrokerError('INVALID_REQUEST', `Microsoft refused the new client secret: ${failure.message} (${failure.code}). The old secret stays in use.`, {
          fix: failure.fix,
          fields: [{ field: 'clientSecret', message: `refused by Microsoft (${failure.code})` }],
        });
      }
      if (failure.class === 'transient') {
        throw new BrokerError('MICROSOFT_UNAVAILABLE', 'Microsoft could not check the new client secret; the old one stays in use. Try again shortly.', {
          retryAfterSeconds: failure.retryAfterSeconds ?? 30,
        });
      }
      // Anything else (no admin consent there, no permissions) means the credential itself was accepted.
    }
  };
}
