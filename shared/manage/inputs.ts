import { z } from 'zod';
import { idPattern } from '../ids.js';
import { connectionModes, connectionStatuses, mailProtocols } from '../storage/records.js';

/*
 * The operator API's request bodies and queries. Strict: an unknown or misspelt field is
 * a 400 naming it, not silently ignored. The OpenAPI document describes the same shapes.
 */

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const name = z.string().trim().min(1).max(200);
const email = z.email().max(320);
const alertEmails = z.array(email).max(20);
const isoDateTime = z.iso.datetime({ offset: true });
const guid = (what: string) => z.string().regex(GUID, `must be a GUID (${what})`);

export const appTenant = z.union([z.literal('organizations'), z.literal('common'), guid('directory tenant id')], {
  error: 'must be a directory tenant GUID, "organizations" or "common"',
});

export const createAppInput = z
  .object({
    name,
    clientId: guid('the application (client) id'),
    tenant: appTenant,
    clientSecret: z.string().min(1).max(1024),
    clientSecretExpiresOn: isoDateTime,
    alertEmails: alertEmails.default([]),
  })
  .strict();
export type CreateAppInput = z.infer<typeof createAppInput>;

export const patchAppInput = z
  .object({
    name: name.optional(),
    tenant: appTenant.optional(),
    clientSecret: z.string().min(1).max(1024).optional(),
    clientSecretExpiresOn: isoDateTime.optional(),
    alertEmails: alertEmails.optional(),
  })
  .strict()
  .refine((patch) => (patch.clientSecret === undefined) === (patch.clientSecretExpiresOn === undefined), {
    message: 'clientSecret and clientSecretExpiresOn are rotated together',
    path: ['clientSecretExpiresOn'],
  });
export type PatchAppInput = z.infer<typeof patchAppInput>;

export const createTenantInput = z.object({ name, alertEmails: alertEmails.default([]) }).strict();
export type CreateTenantInput = z.infer<typeof createTenantInput>;

export const patchTenantInput = z.object({ name: name.optional(), alertEmails: alertEmails.optional() }).strict();
export type PatchTenantInput = z.infer<typeof patchTenantInput>;

const protocols = z
  .array(z.enum(mailProtocols))
  .min(1)
  .max(mailProtocols.length)
  .refine((list) => new Set(list).size === list.length, 'must not repeat a protocol');

export const createConnectionInput = z
  .object({
    tenantId: z.string().regex(idPattern('tnt'), 'must be a tenant id (tnt_…)'),
    appId: z.string().regex(idPattern('app'), 'must be an app id (app_…)'),
    mailbox: email,
    mode: z.enum(connectionModes).default('delegated'),
    protocols: protocols.default(['smtp']),
    signInName: email.optional(),
  })
  .strict()
  .refine((input) => input.mode === 'delegated' || input.signInName === undefined, {
    message: 'signInName applies to delegated connections only',
    path: ['signInName'],
  });
export type CreateConnectionInput = z.infer<typeof createConnectionInput>;

export const patchConnectionInput = z
  .object({
    protocols: protocols.optional(),
    signInName: email.nullable().optional(),
  })
  .strict();
export type PatchConnectionInput = z.infer<typeof patchConnectionInput>;

const limit = z.coerce.number().int().min(1).max(100).default(50);
const cursor = z.string().min(1).max(2048).optional();

export const listQuery = z.object({ limit, cursor }).strict();
export type ListQuery = z.infer<typeof listQuery>;

export const listConnectionsQuery = z
  .object({
    limit,
    cursor,
    tenantId: z.string().regex(idPattern('tnt'), 'must be a tenant id (tnt_…)').optional(),
    status: z.enum(connectionStatuses).optional(),
  })
  .strict();
export type ListConnectionsQuery = z.infer<typeof listConnectionsQuery>;

/** Route ids are checked before any storage call: a malformed id is simply not found. */
export function isId(prefix: Parameters<typeof idPattern>[0], value: string | undefined): value is string {
  return value !== undefined && idPattern(prefix).test(value);
}
