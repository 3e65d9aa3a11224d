import { odata } from '@azure/data-tables';
import { BrokerError } from '../errors.js';
import { idPattern } from '../ids.js';
import type { EntityTable } from '../storage/entity-table.js';
import { connectionModes, mailboxIndexRowKey, type ConnectionRecord, type MailboxIndexRecord } from '../storage/records.js';
import type { AccessToken } from '../tokens/access-tokens.js';
import type { SenderToken } from './alert-mailer.js';

/*
 * BROKER_ALERT_SENDER → the mailbox and a fresh token to send alerts with. The token comes from
 * the broker's own token path (cache, single flight, lease), like any mail sender's would.
 */

export interface AlertSenderDeps {
  connections: Pick<EntityTable<ConnectionRecord>, 'get'>;
  mailboxIndex: Pick<EntityTable<MailboxIndexRecord>, 'scan'>;
  accessTokens: { get(connection: ConnectionRecord): Promise<AccessToken> };
}

const notFound = (setting: string, why: string) =>
  new BrokerError('CONNECTION_NOT_FOUND', `BROKER_ALERT_SENDER (${setting}) ${why}.`, {
    fix: 'Set BROKER_ALERT_SENDER to the id (con_…) of a connected connection with the smtp protocol.',
  });

/** The setting is a connection id, or a mailbox address that only one connection has. */
async function resolve(setting: string, deps: AlertSenderDeps): Promise<string> {
  if (idPattern('con').test(setting)) return setting;
  const ids = new Set<string>();
  for (const mode of connectionModes) {
    for await (const row of deps.mailboxIndex.scan(odata`RowKey eq ${mailboxIndexRowKey(mode, setting)}`)) ids.add(row.value.connectionId);
  }
  const [only, ...others] = [...ids];
  if (!only) throw notFound(setting, 'names no connection');
  if (others.length > 0) throw notFound(setting, `matches ${ids.size} connections (one per tenant or mode); use the connection id`);
  return only;
}

export function alertSenderTokens(setting: string, deps: AlertSenderDeps): () => Promise<SenderToken> {
  // The setting does not change while the process runs; the lookup is repeated only after a failure.
  let connectionId: Promise<string> | undefined;
  return async () => {
    connectionId ??= resolve(setting, deps).catch((error: unknown) => {
      connectionId = undefined;
      throw error;
    });
    const id = await connectionId;
    const row = await deps.connections.get(id, '');
    if (!row) throw notFound(setting, `names connection ${id}, which does not exist`);
    if (!row.value.protocols.includes('smtp')) {
      // Without SMTP.Send in the token Exchange would only answer 535; say what to change instead.
      throw new BrokerError('INVALID_REQUEST', `The alert sender ${row.value.mailbox} (${id}) has no smtp protocol, so its token cannot send mail.`, {
        fix: `PATCH /api/manage/connections/${id} with "protocols" including "smtp", then re-authorize it.`,
      });
    }
    const token = await deps.accessTokens.get(row.value);
    return { mailbox: row.value.mailbox, accessToken: token.accessToken };
  };
}
