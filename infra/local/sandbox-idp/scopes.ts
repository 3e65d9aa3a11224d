import { Aadsts } from './entra-errors.js';

/**
 * The resources the sandbox knows, with the permissions Microsoft publishes for them. Entra
 * refuses scopes of resources or permissions it does not know, so the sandbox does too.
 */

export interface ResourceDefinition {
  /** Application ID URI, as scopes are qualified with it. */
  id: string;
  delegated: readonly string[];
  /** Application permissions (app roles), granted by admin consent for client credentials. */
  roles: readonly string[];
}

const EXCHANGE_DELEGATED = ['SMTP.Send', 'IMAP.AccessAsUser.All', 'POP.AccessAsUser.All', 'EWS.AccessAsUser.All', 'Mail.Send', 'Mail.Read'];
const EXCHANGE_ROLES = ['SMTP.SendAsApp', 'IMAP.AccessAsApp', 'POP.AccessAsApp', 'full_access_as_app'];

export const GRAPH_RESOURCE = 'https://graph.microsoft.com';

export const RESOURCES: readonly ResourceDefinition[] = [
  // Exchange Online answers to both names: delegated mail scopes use the first, app-only the second.
  { id: 'https://outlook.office.com', delegated: EXCHANGE_DELEGATED, roles: EXCHANGE_ROLES },
  { id: 'https://outlook.office365.com', delegated: EXCHANGE_DELEGATED, roles: EXCHANGE_ROLES },
  { id: GRAPH_RESOURCE, delegated: ['User.Read', 'Mail.Send', 'Mail.Read', 'Mail.ReadWrite'], roles: ['Mail.Send', 'Mail.Read', 'User.Read.All'] },
];

/** OpenID Connect scopes: not permissions of a resource, but consented to like them. */
export const OIDC_SCOPES: readonly string[] = ['openid', 'profile', 'email', 'offline_access'];

export interface DelegatedScopes {
  /** Lower-case OIDC scopes that were asked for. */
  oidc: Set<string>;
  /** Resource id → canonical permission names. */
  permissions: Map<string, Set<string>>;
}

export function findResource(id: string): ResourceDefinition | undefined {
  const wanted = id.replace(/\/+$/, '').toLowerCase();
  return RESOURCES.find((resource) => resource.id.toLowerCase() === wanted);
}

export function qualify(resource: string, permission: string): string {
  return `${resource}/${permission}`;
}

export function splitScopes(raw: string | null | undefined): string[] {
  return (raw ?? '').split(/\s+/).filter((scope) => scope !== '');
}

/** Parses a delegated scope parameter; `tenantName` only words the error for an unknown resource. */
export function parseDelegatedScopes(raw: string | null | undefined, tenantName: string): DelegatedScopes {
  const scopes = splitScopes(raw);
  if (scopes.length === 0) throw Aadsts.missingParameter('scope');
  const result: DelegatedScopes = { oidc: new Set(), permissions: new Map() };
  for (const scope of scopes) {
    const lower = scope.toLowerCase();
    if (OIDC_SCOPES.includes(lower)) {
      result.oidc.add(lower);
      continue;
    }
    // A scope without a resource is a Microsoft Graph scope, as on Entra.
    const slash = scope.lastIndexOf('/');
    const resourceId = slash < 0 ? GRAPH_RESOURCE : scope.slice(0, slash);
    const name = slash < 0 ? scope : scope.slice(slash + 1);
    const resource = findResource(resourceId);
    if (!resource) throw Aadsts.resourceNotFound(resourceId, tenantName);
    const granted = result.permissions.get(resource.id) ?? new Set<string>();
    if (name === '.default') {
      for (const permission of resource.delegated) granted.add(permission);
    } else {
      const permission = resource.delegated.find((candidate) => candidate.toLowerCase() === name.toLowerCase());
      if (!permission) throw Aadsts.invalidScope(scope);
      granted.add(permission);
    }
    result.permissions.set(resource.id, granted);
  }
  return result;
}

/** Tokens are issued for one resource at a time; Entra refuses a token request naming two. */
export function singleResource(scopes: DelegatedScopes, raw: string): string | null {
  const resources = [...scopes.permissions.keys()];
  if (resources.length > 1) throw Aadsts.multipleResources(raw);
  return resources[0] ?? null;
}

/** Every consentable string a delegated request names: OIDC scopes and qualified permissions. */
export function consentItems(scopes: DelegatedScopes): string[] {
  const items = [...scopes.oidc];
  for (const [resource, permissions] of scopes.permissions) {
    for (const permission of permissions) items.push(qualify(resource, permission));
  }
  return items;
}

/** Client credentials: exactly one `{resource}/.default` scope. */
export function parseAppOnlyScope(raw: string | null | undefined, tenantName: string): ResourceDefinition {
  const scopes = splitScopes(raw);
  if (scopes.length === 0) throw Aadsts.missingParameter('scope');
  const offending = scopes.find((scope) => !scope.toLowerCase().endsWith('/.default'));
  if (offending !== undefined) throw Aadsts.notDefaultScope(offending);
  if (scopes.length > 1) throw Aadsts.invalidScope(scopes.join(' '));
  const resourceId = scopes[0]!.slice(0, -'/.default'.length);
  const resource = findResource(resourceId);
  if (!resource) throw Aadsts.resourceNotFound(resourceId, tenantName);
  return resource;
}

/** The v2 admin consent endpoint requires `scope`: the `.default` scopes of the resources to grant. */
export function parseAdminConsentScope(raw: string | null | undefined, tenantName: string): ResourceDefinition[] {
  const scopes = splitScopes(raw);
  if (scopes.length === 0) throw Aadsts.missingParameter('scope');
  return scopes.map((scope) => {
    if (!scope.toLowerCase().endsWith('/.default')) throw Aadsts.invalidScope(scope);
    const resourceId = scope.slice(0, -'/.default'.length);
    const resource = findResource(resourceId);
    if (!resource) throw Aadsts.resourceNotFound(resourceId, tenantName);
    return resource;
  });
}
