import type { SecretStore } from './secrets/secret-store.js';
import type { StorageTables } from './storage/tables.js';

export interface CheckResult {
  ok: boolean;
  detail: string;
}

export interface Readiness {
  ready: boolean;
  checks: {
    tableStorage: CheckResult;
    secretStore: CheckResult;
    alertSender: CheckResult & { configured: boolean };
  };
}

async function probe(run: () => Promise<void>, what: string): Promise<CheckResult> {
  try {
    await run();
    return { ok: true, detail: `${what} answered` };
  } catch {
    // Only the operator sees this, but the SDK's message can carry endpoints and request ids.
    return { ok: false, detail: `${what} did not answer; see the logs` };
  }
}

/** What `GET /api/manage/health` reports; the public liveness route reports nothing of this. */
export async function checkReadiness(deps: {
  tables: StorageTables;
  secrets: SecretStore;
  secretStoreKind: 'key-vault' | 'local';
  alertSender: string | null;
}): Promise<Readiness> {
  const [tableStorage, secretStore] = await Promise.all([
    probe(() => deps.tables.ping(), 'Table Storage'),
    probe(() => deps.secrets.ping(), deps.secretStoreKind === 'key-vault' ? 'Key Vault' : 'The local encrypted secret store'),
  ]);
  const alertSender = deps.alertSender
    ? { ok: true, configured: true, detail: `alerts are sent from ${deps.alertSender}` }
    : { ok: true, configured: false, detail: 'BROKER_ALERT_SENDER is not set: alerts are stored and logged, not emailed' };
  return { ready: tableStorage.ok && secretStore.ok, checks: { tableStorage, secretStore, alertSender } };
}
