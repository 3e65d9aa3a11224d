import type { AlertSenderStatus } from './alerts/alert-mailer.js';
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
    alertSender: CheckResult & { configured: boolean; queued?: number; failed?: number };
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
  alerts: { status(options?: { probe?: boolean }): Promise<AlertSenderStatus> };
}): Promise<Readiness> {
  const [tableStorage, secretStore] = await Promise.all([
    probe(() => deps.tables.ping(), 'Table Storage'),
    probe(() => deps.secrets.ping(), deps.secretStoreKind === 'key-vault' ? 'Key Vault' : 'The local encrypted secret store'),
  ]);
  // The alert sender is reported but does not make the broker unready: tokens still flow.
  const sender = await deps.alerts.status({ probe: true }).catch(() => null);
  const alertSender = sender
    ? { ok: sender.ok, configured: sender.configured, detail: sender.detail, queued: sender.queued, failed: sender.failed }
    : { ok: false, configured: false, detail: 'the alert store did not answer; see the logs' };
  return { ready: tableStorage.ok && secretStore.ok, checks: { tableStorage, secretStore, alertSender } };
}
