import type { HostHint } from '../config.js';
import type { ConnectionRecord } from '../storage/records.js';
import type { AccessTokens } from '../tokens/access-tokens.js';
import { verifyMailLogin, type VerifyReport } from './mail-verifier.js';

export interface ConnectionCheck extends VerifyReport {
  connectionId: string;
  mailbox: string;
  checkedAt: string;
}

/**
 * `POST /api/manage/connections/{id}/verify`: a real XOAUTH2 login with the connection's
 * current token against each of its protocols' hosts, and Microsoft's answer with its fix.
 */
export async function verifyConnection(
  connection: ConnectionRecord,
  deps: { accessTokens: AccessTokens; hosts: Record<'smtp' | 'imap' | 'pop', HostHint>; now: () => Date; timeoutMs?: number },
): Promise<ConnectionCheck> {
  const token = await deps.accessTokens.get(connection);
  const report = await verifyMailLogin({
    protocols: connection.protocols,
    username: connection.mailbox,
    accessToken: token.accessToken,
    hosts: deps.hosts,
    ...(deps.timeoutMs ? { timeoutMs: deps.timeoutMs } : {}),
  });
  return { connectionId: connection.id, mailbox: connection.mailbox, checkedAt: deps.now().toISOString(), ...report };
}
