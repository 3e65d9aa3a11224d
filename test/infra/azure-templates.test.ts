import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { funcignoreMatcher, STAGE_DIR } from '../../infra/azure/package.mjs';
import { loadConfig } from '../../shared/config.js';
import { delegatedScopes } from '../../shared/identity/msal-identity.js';

/*
 * Keeps infra/azure (Bicep), azure.yaml, docs/ and the code honest with each other without
 * the Bicep or azd binaries (they cannot be installed here): the templates are read as text
 * with a small brace-aware parser, good enough for the way these files are written.
 */

const root = fileURLToPath(new URL('../..', import.meta.url));
const infraDir = join(root, 'infra', 'azure');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

// ---------------------------------------------------------------- Bicep text parsing

/** Removes // and /* *\/ comments, keeping strings (and newlines) intact. */
function stripComments(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i]!;
    if (char === "'") {
      const end = stringEnd(text, i);
      out += text.slice(i, end + 1);
      i = end;
    } else if (text.startsWith('//', i)) {
      while (i < text.length && text[i] !== '\n') i += 1;
      out += '\n';
    } else if (text.startsWith('/*', i)) {
      const end = text.indexOf('*/', i + 2);
      out += text.slice(i, end + 2).replace(/[^\n]/g, ' ');
      i = end + 1;
    } else {
      out += char;
    }
  }
  return out;
}

/** Index of the closing quote of the Bicep string opening at `start` ('...' or '''...'''). */
function stringEnd(text: string, start: number): number {
  if (text.startsWith("'''", start)) return text.indexOf("'''", start + 3) + 2;
  for (let i = start + 1; i < text.length; i += 1) {
    if (text[i] === '\\') i += 1;
    else if (text[i] === "'") return i;
  }
  throw new Error(`unterminated string at ${start}`);
}

/** Index of the bracket closing the one at `open`, skipping strings. */
function closing(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i += 1) {
    const char = code[i]!;
    if (char === "'") i = stringEnd(code, i);
    else if ('{[('.includes(char)) depth += 1;
    else if ('}])'.includes(char) && --depth === 0) return i;
  }
  throw new Error(`unbalanced bracket at ${open}`);
}

/** Depth-1 entries of an object literal `{ ... }`: key -> value text. */
function entries(objectText: string): Map<string, string> {
  const result = new Map<string, string>();
  const body = objectText.trim();
  if (!body.startsWith('{')) return result;
  let i = 1;
  const end = closing(body, 0);
  while (i < end) {
    while (i < end && /[\s,]/.test(body[i]!)) i += 1;
    if (i >= end) break;
    const key = /^(?:'([^']*)'|([A-Za-z_][\w]*))\s*:/.exec(body.slice(i));
    if (!key) throw new Error(`cannot read an object entry near: ${body.slice(i, i + 40)}`);
    i += key[0].length;
    const start = i;
    let depth = 0;
    for (; i < end; i += 1) {
      const char = body[i]!;
      if (char === "'") i = stringEnd(body, i);
      else if ('{[('.includes(char)) depth += 1;
      else if ('}])'.includes(char)) depth -= 1;
      else if (depth === 0 && (char === '\n' || char === ',')) break;
    }
    result.set(key[1] ?? key[2]!, body.slice(start, i).trim());
  }
  return result;
}

/** The value at a property path of an object literal, or undefined. */
function at(objectText: string, ...path: string[]): string | undefined {
  let current: string | undefined = objectText;
  for (const key of path) current = current === undefined ? undefined : entries(current).get(key);
  return current;
}

interface Resource {
  symbol: string;
  type: string;
  apiVersion: string;
  existing: boolean;
  condition: string | null;
  body: string;
  file: string;
}

interface Param {
  name: string;
  type: string;
  hasDefault: boolean;
  decorators: string;
}

interface BicepFile {
  path: string;
  code: string;
  raw: string;
  params: Map<string, Param>;
  vars: Map<string, string>;
  outputs: Map<string, string>;
  resources: Resource[];
  modules: { symbol: string; target: string; body: string }[];
}

function parseBicep(path: string): BicepFile {
  const raw = read(path);
  const code = stripComments(raw);
  const block = (index: number) => code.slice(index, closing(code, index) + 1);

  const params = new Map<string, Param>();
  for (const match of code.matchAll(/^param\s+(\w+)\s+(\w+)(\s*=)?/gm)) {
    const before = code.slice(0, match.index).split('\n');
    const decorators: string[] = [];
    for (let line = before.length - 2; line >= 0; line -= 1) {
      const text = before[line]!.trim();
      if (text === '' || text.startsWith('param ') || text.startsWith('var ') || text.startsWith('resource ')) break;
      decorators.unshift(text);
    }
    params.set(match[1]!, { name: match[1]!, type: match[2]!, hasDefault: Boolean(match[3]), decorators: decorators.join('\n') });
  }

  const vars = new Map<string, string>();
  for (const match of code.matchAll(/^var\s+(\w+)\s*=\s*/gm)) {
    const start = match.index + match[0].length;
    const lineEnd = code.indexOf('\n', start);
    const firstLine = code.slice(start, lineEnd);
    const lastBrace = firstLine.lastIndexOf('{');
    // An initializer continues on the next lines while a bracket it opened is still open.
    const value = lastBrace >= 0 && !firstLine.slice(lastBrace).includes('}') ? code.slice(start, closing(code, start + lastBrace) + 1) : firstLine;
    vars.set(match[1]!, value.trim());
  }

  const outputs = new Map<string, string>();
  for (const match of code.matchAll(/^output\s+(\w+)\s+\w+\s*=\s*(.+)$/gm)) outputs.set(match[1]!, match[2]!.trim());

  const resources: Resource[] = [];
  for (const match of code.matchAll(/^resource\s+(\w+)\s+'([^'@]+)@([^']+)'\s+(existing\s+)?=\s*(?:if\s*\((.*)\)\s*)?\{/gm)) {
    resources.push({
      symbol: match[1]!,
      type: match[2]!,
      apiVersion: match[3]!,
      existing: Boolean(match[4]),
      condition: match[5] ?? null,
      body: block(match.index + match[0].length - 1),
      file: path,
    });
  }

  const modules: BicepFile['modules'] = [];
  for (const match of code.matchAll(/^module\s+(\w+)\s+'([^']+)'\s*=\s*(?:if\s*\(.*\)\s*)?\{/gm)) {
    modules.push({ symbol: match[1]!, target: match[2]!, body: block(match.index + match[0].length - 1) });
  }

  return { path, code, raw, params, vars, outputs, resources, modules };
}

const unquote = (value: string | undefined) => value?.replace(/^'(.*)'$/s, '$1');

const bicepPaths = [
  'infra/azure/main.bicep',
  ...readdirSync(join(infraDir, 'modules'))
    .filter((name) => name.endsWith('.bicep'))
    .map((name) => `infra/azure/modules/${name}`),
];
const files = new Map(bicepPaths.map((path) => [path, parseBicep(path)]));
const main = files.get('infra/azure/main.bicep')!;
const moduleFile = (name: string) => files.get(`infra/azure/modules/${name}.bicep`)!;
const allResources = [...files.values()].flatMap((file) => file.resources);
const created = (type: string) => allResources.filter((resource) => resource.type === type && !resource.existing);
/** The one resource of `type` the templates create (throws, failing its suite, otherwise). */
const one = (type: string) => {
  const found = created(type);
  if (found.length !== 1) throw new Error(`expected exactly one ${type} in infra/azure, found ${found.length}`);
  return found[0]!;
};
const moduleCall = (name: string) => main.modules.find((module) => module.target === `modules/${name}.bicep`)!;

// ---------------------------------------------------------------- what the code reads

/** Every setting shared/config.ts reads: its 'BROKER_…' literals and PORT. */
const codeSettings = [...new Set([...read('shared/config.ts').matchAll(/'(BROKER_[A-Z0-9_]+|PORT)'/g)].map((match) => match[1]!))].sort();

/** Settings Azure leaves to the code's defaults, each with the reason. */
const optionalInAzure: Record<string, string> = {
  BROKER_TABLES_CONNECTION: 'connection strings need account keys, which the storage account refuses; Azure uses BROKER_TABLES_URL with the managed identity',
  BROKER_KEY_VAULT_EMULATOR: 'only for a local Key Vault-compatible server',
  BROKER_LOCAL_SECRETS_KEY: 'the local encrypted store is refused in Azure (BROKER_KEY_VAULT_URL is set)',
  BROKER_LOCAL_DATA_DIR: 'the local store and generated keys are for local runs only',
  BROKER_AUTHORITY_HOST: 'defaults to https://login.microsoftonline.com; set it only for a sovereign cloud',
  BROKER_MAIL_RESOURCE: 'defaults to https://outlook.office.com (public cloud)',
  BROKER_MAIL_APP_RESOURCE: 'defaults to https://outlook.office365.com (public cloud)',
  BROKER_SMTP_HOST: 'defaults to smtp.office365.com:587',
  BROKER_IMAP_HOST: 'defaults to outlook.office365.com:993',
  BROKER_POP_HOST: 'defaults to outlook.office365.com:995',
  BROKER_SANDBOX: 'false by default in Azure, and true is refused there',
  BROKER_ROTATION_SCHEDULE: 'defaults to every 30 minutes',
  BROKER_REFRESH_MAX_AGE_DAYS: 'defaults to 7 days',
  BROKER_KV_WRITE_BUDGET: 'defaults to 250 writes per 10 s, under the vault limit of 300',
  BROKER_SWEEP_TIME_BUDGET_S: 'defaults to 240 s',
  BROKER_SWEEP_CONCURRENCY: 'defaults to 16 refreshes at once, enough for the default write budget at Entra latencies',
  BROKER_TOKEN_RATE_LIMIT: 'defaults to 600 requests per key per minute',
  BROKER_LINK_TTL_HOURS: 'defaults to 168 hours (7 days)',
  BROKER_AUDIT_RETENTION_DAYS: 'defaults to 90 days',
  PORT: 'the port of the local host (npm start); the Functions host ignores it',
};

/** Settings the code requires when it runs in Azure (loadConfig refuses to start without them). */
const requiredInAzure = ['BROKER_PUBLIC_URL', 'BROKER_OPERATOR_KEY', 'BROKER_TABLES_URL', 'BROKER_KEY_VAULT_URL'];

/** Settings that must never be set in Azure. */
const forbiddenInAzure = [
  'BROKER_TABLES_CONNECTION',
  'BROKER_KEY_VAULT_EMULATOR',
  'BROKER_LOCAL_SECRETS_KEY',
  'BROKER_SANDBOX',
  'AzureWebJobsStorage', // a connection string with an account key
  'FUNCTIONS_WORKER_RUNTIME', // Flex Consumption: functionAppConfig.runtime
  'FUNCTIONS_EXTENSION_VERSION',
  'WEBSITE_RUN_FROM_PACKAGE',
  'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING',
  'WEBSITE_CONTENTSHARE',
  'WEBSITE_NODE_DEFAULT_VERSION',
];

/** The Functions platform's own settings, unknown to shared/config.ts by design. */
const platformSetting = /^(AzureWebJobs|AzureFunctionsJobHost__|APPLICATIONINSIGHTS_|FUNCTIONS_|WEBSITE_)/;

const appSettingsFile = moduleFile('app-settings');
const appSettingsResource = appSettingsFile.resources.find((resource) => resource.type === 'Microsoft.Web/sites/config')!;
const settingVars = [...appSettingsFile.vars.keys()].filter((name) => name.endsWith('Settings'));
/** Every app setting the Bicep sets: name -> value expression. */
const bicepSettings = new Map(
  settingVars.flatMap((name) => {
    const initializer = appSettingsFile.vars.get(name)!;
    // `cond ? {} : { KEY: value }` or a plain object literal.
    const literal = initializer.slice(initializer.lastIndexOf('{', initializer.length - 2));
    return [...entries(initializer.startsWith('{') ? initializer : literal)];
  }),
);

// ---------------------------------------------------------------- tests

describe('Bicep modules', () => {
  it('main.bicep composes modules that exist, passing every required parameter and no unknown one', () => {
    expect(main.code).toMatch(/^targetScope = 'subscription'$/m);
    expect(main.modules.length).toBeGreaterThan(0);
    const used = new Set<string>();
    for (const file of files.values()) {
      for (const module of file.modules) {
        const target = relative(root, join(root, dirname(file.path), module.target)).split('\\').join('/');
        expect(existsSync(join(root, target)), `${file.path}: module ${module.symbol} -> ${target}`).toBe(true);
        used.add(target);
        const callee = files.get(target)!;
        const passed = [...entries(at(module.body, 'params') ?? '{}').keys()];
        for (const name of passed) expect(callee.params.has(name), `${target} declares param ${name}`).toBe(true);
        for (const param of callee.params.values()) {
          if (!param.hasDefault) expect(passed, `${module.symbol} passes required ${param.name}`).toContain(param.name);
        }
        expect(at(module.body, 'scope'), `${module.symbol} is deployed to the resource group`).toBe('rg');
      }
    }
    const orphans = bicepPaths.filter((path) => path !== main.path && !used.has(path));
    expect(orphans, 'every module file is used').toEqual([]);
  });

  it('every resource uses a GA API version, one version per resource type', () => {
    const versions = new Map<string, Set<string>>();
    for (const resource of allResources) {
      expect(resource.apiVersion, `${resource.file}: ${resource.type}`).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      versions.set(resource.type, (versions.get(resource.type) ?? new Set()).add(resource.apiVersion));
    }
    for (const [type, set] of versions) expect([...set], type).toHaveLength(1);
  });

  it('secrets are secure parameters and never outputs', () => {
    for (const file of files.values()) {
      const secret = file.params.get('operatorKey');
      if (secret) expect(secret.decorators, `${file.path}: operatorKey`).toContain('@secure()');
      for (const [name, value] of file.outputs) expect(`${name} ${value}`, file.path).not.toMatch(/operatorKey\b|listKeys|\.value\b/);
    }
  });
});

describe('Flex Consumption function app', () => {
  const plan = one('Microsoft.Web/serverfarms');
  const site = one('Microsoft.Web/sites');

  it('runs on the FC1 plan, on Linux', () => {
    expect(unquote(at(plan.body, 'sku', 'name'))).toBe('FC1');
    expect(unquote(at(plan.body, 'sku', 'tier'))).toBe('FlexConsumption');
    expect(at(plan.body, 'properties', 'reserved')).toBe('true');
    expect(unquote(at(site.body, 'kind'))).toBe('functionapp,linux');
    expect(at(site.body, 'properties', 'serverFarmId')).toBe(`${plan.symbol}.id`);
  });

  it('runs Node 22, the major version package.json requires', () => {
    const runtime = at(site.body, 'properties', 'functionAppConfig', 'runtime')!;
    expect(unquote(at(runtime, 'name'))).toBe('node');
    const version = unquote(at(runtime, 'version'));
    expect(version).toBe('22');
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
    expect(engines).toMatch(new RegExp(`^>=${version}\\.`));
  });

  it('has a system-assigned identity that also pulls its deployment packages', () => {
    expect(unquote(at(site.body, 'identity', 'type'))).toBe('SystemAssigned');
    const storage = at(site.body, 'properties', 'functionAppConfig', 'deployment', 'storage')!;
    expect(unquote(at(storage, 'type'))).toBe('blobContainer');
    expect(unquote(at(storage, 'authentication', 'type'))).toBe('SystemAssignedIdentity');
    expect(at(moduleCall('function-app').body, 'params', 'deploymentContainerUrl')).toBe('storage.outputs.deploymentContainerUrl');
    const scale = at(site.body, 'properties', 'functionAppConfig', 'scaleAndConcurrency')!;
    expect([...entries(scale).keys()].sort()).toEqual(['instanceMemoryMB', 'maximumInstanceCount']);
  });

  it('is HTTPS only with TLS 1.2+, no FTP and no basic publishing credentials', () => {
    expect(at(site.body, 'properties', 'httpsOnly')).toBe('true');
    expect(unquote(at(site.body, 'properties', 'siteConfig', 'minTlsVersion'))).toBe('1.2');
    expect(unquote(at(site.body, 'properties', 'siteConfig', 'ftpsState'))).toBe('Disabled');
    const policies = created('Microsoft.Web/sites/basicPublishingCredentialsPolicies');
    expect(policies.map((policy) => unquote(at(policy.body, 'name'))).sort()).toEqual(['ftp', 'scm']);
    for (const policy of policies) expect(at(policy.body, 'properties', 'allow')).toBe('false');
  });

  it('sets app settings in one place only', () => {
    expect(at(site.body, 'properties', 'siteConfig', 'appSettings')).toBeUndefined();
    expect(created('Microsoft.Web/sites/config')).toHaveLength(1);
    expect(unquote(at(appSettingsResource.body, 'name'))).toBe('appsettings');
    // The settings module waits for the role assignments (Key Vault reference, host storage).
    expect(at(moduleCall('app-settings').body, 'dependsOn')).toMatch(/\broles\b/);
  });
});

describe('Storage account and Key Vault', () => {
  it('storage is reached with Microsoft Entra ID only, over HTTPS and TLS 1.2', () => {
    const storage = one('Microsoft.Storage/storageAccounts');
    expect(at(storage.body, 'properties', 'allowSharedKeyAccess')).toBe('false');
    expect(at(storage.body, 'properties', 'allowBlobPublicAccess')).toBe('false');
    expect(at(storage.body, 'properties', 'supportsHttpsTrafficOnly')).toBe('true');
    expect(unquote(at(storage.body, 'properties', 'minimumTlsVersion'))).toBe('TLS1_2');
    const container = one('Microsoft.Storage/storageAccounts/blobServices/containers');
    expect(unquote(at(container.body, 'properties', 'publicAccess'))).toBe('None');
  });

  it('Key Vault uses RBAC, soft delete and purge protection; public access is a parameter', () => {
    const vault = one('Microsoft.KeyVault/vaults');
    const file = files.get(vault.file)!;
    expect(at(vault.body, 'properties', 'enableRbacAuthorization')).toBe('true');
    expect(at(vault.body, 'properties', 'enableSoftDelete')).toBe('true');
    expect(at(vault.body, 'properties', 'enablePurgeProtection')).toBe('true');
    expect(at(vault.body, 'properties', 'accessPolicies')).toBeUndefined();
    const publicAccess = at(vault.body, 'properties', 'publicNetworkAccess')!;
    expect(file.params.has(publicAccess), `publicNetworkAccess comes from a parameter, got ${publicAccess}`).toBe(true);
    expect(at(moduleCall('key-vault').body, 'params', 'publicNetworkAccess')).toBe('keyVaultPublicNetworkAccess');
  });

  it('Application Insights is workspace-based and takes Entra-authenticated telemetry', () => {
    const workspace = one('Microsoft.OperationalInsights/workspaces');
    const insights = one('Microsoft.Insights/components');
    expect(at(insights.body, 'properties', 'WorkspaceResourceId')).toBe(`${workspace.symbol}.id`);
    expect(at(insights.body, 'properties', 'DisableLocalAuth')).toBeDefined();
    expect(unquote(bicepSettings.get('APPLICATIONINSIGHTS_AUTHENTICATION_STRING'))).toBe('Authorization=AAD');
    expect(bicepSettings.get('APPLICATIONINSIGHTS_CONNECTION_STRING')).toBe('applicationInsightsConnectionString');
  });
});

describe('role assignments', () => {
  /** Built-in roles: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles */
  const knownRoles: Record<string, string> = {
    'b86a8fe4-44ce-4948-aee5-eccb2c155cd7': 'Key Vault Secrets Officer',
    '4633458b-17de-408a-b874-0445c86b69e6': 'Key Vault Secrets User',
    '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3': 'Storage Table Data Contributor',
    'b7e6dc6d-f1e8-4753-8033-0f276bb0955b': 'Storage Blob Data Owner',
    '974c5e8b-45b9-4653-ba55-5f855dd0fb88': 'Storage Queue Data Contributor',
    '3913510d-42f4-4e42-8a64-420c390055eb': 'Monitoring Metrics Publisher',
  };
  const tooBroad = [
    '8e3af657-a8ff-443c-a75c-2fe8c4bcb635', // Owner
    'b24988ac-6180-42a0-ab88-20f7382dd24c', // Contributor
    '18d7d88d-d35e-4fb5-a5c3-7773c20a72d9', // User Access Administrator
    '00482a5a-887f-4fb3-b363-3b7fe8e74483', // Key Vault Administrator
    '17d1049b-9a84-46fb-8f53-869881c3d3ab', // Storage Account Contributor
  ];
  const assignments = created('Microsoft.Authorization/roleAssignments');
  const guidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  /** Role id variable -> { guid, scope type } of every assignment. */
  const granted = assignments.map((assignment) => {
    const file = files.get(assignment.file)!;
    const roleDefinitionId = at(assignment.body, 'properties', 'roleDefinitionId')!;
    const role = /^subscriptionResourceId\('Microsoft\.Authorization\/roleDefinitions', (\w+)\)$/.exec(roleDefinitionId);
    const scope = at(assignment.body, 'scope');
    const scopeResource = file.resources.find((resource) => resource.symbol === scope);
    return { assignment, file, roleDefinitionId, roleVar: role?.[1], scope, scopeResource };
  });

  it('every role id is a GUID in a named, commented variable, and names come from guid(scope, principal, role)', () => {
    expect(assignments.length).toBeGreaterThan(0);
    for (const { assignment, file, roleDefinitionId, roleVar, scope, scopeResource } of granted) {
      const where = `${assignment.file}: ${assignment.symbol}`;
      expect(roleVar, `${where}: roleDefinitionId uses a variable, got ${roleDefinitionId}`).toBeDefined();
      const guid = unquote(file.vars.get(roleVar!));
      expect(guid, `${where}: ${roleVar} is a GUID`).toMatch(guidPattern);
      const comment = new RegExp(`//([^\\n]*)\\n\\s*var ${roleVar} =`).exec(file.raw)?.[1];
      expect(comment, `${where}: ${roleVar} has a comment line above it`).toBeDefined();
      expect(comment, `${where}: ${roleVar} is a known role`).toContain(knownRoles[guid!] ?? 'unknown role id');
      expect(tooBroad).not.toContain(guid);
      expect(scopeResource, `${where}: scoped to one resource, got ${scope}`).toBeDefined();
      const name = at(assignment.body, 'name')!;
      expect(name, where).toMatch(new RegExp(`^guid\\(${scope}\\.id, \\w+, ${roleVar}\\)$`));
    }
  });

  it('grants exactly the roles the broker and the Functions host need, each on its own resource', () => {
    const forManagedIdentity = granted.filter(({ assignment }) => at(assignment.body, 'properties', 'principalId') === 'principalId');
    const summary = forManagedIdentity
      .map(({ file, roleVar, scopeResource, assignment }) => {
        expect(unquote(at(assignment.body, 'properties', 'principalType'))).toBe('ServicePrincipal');
        return `${knownRoles[unquote(file.vars.get(roleVar!))!]} @ ${scopeResource!.type}`;
      })
      .sort();
    expect(summary).toEqual([
      'Key Vault Secrets Officer @ Microsoft.KeyVault/vaults',
      'Monitoring Metrics Publisher @ Microsoft.Insights/components',
      'Storage Blob Data Owner @ Microsoft.Storage/storageAccounts',
      'Storage Table Data Contributor @ Microsoft.Storage/storageAccounts',
    ]);
    // The optional operator assignment reads the operator key secret only.
    const others = granted.filter((entry) => !forManagedIdentity.includes(entry));
    for (const { file, roleVar, scopeResource, assignment } of others) {
      expect(knownRoles[unquote(file.vars.get(roleVar!))!]).toBe('Key Vault Secrets User');
      expect(scopeResource!.type).toBe('Microsoft.KeyVault/vaults/secrets');
      expect(assignment.condition).toBeTruthy();
    }
  });
});

describe('app settings and the code', () => {
  it('every setting the code reads is set in Azure or left to its default for a stated reason', () => {
    expect(codeSettings).toContain('BROKER_PUBLIC_URL');
    expect(codeSettings).toContain('PORT');
    const unaccounted = codeSettings.filter((name) => !bicepSettings.has(name) && !(name in optionalInAzure));
    expect(unaccounted, 'add them to modules/app-settings.bicep or to optionalInAzure with a reason').toEqual([]);
    const stale = Object.keys(optionalInAzure).filter((name) => !codeSettings.includes(name));
    expect(stale, 'optionalInAzure names settings the code no longer reads').toEqual([]);
    for (const [name, reason] of Object.entries(optionalInAzure)) expect(reason.length, name).toBeGreaterThan(10);
  });

  it('sets every setting the code requires in Azure, none it forbids there, and nothing the code does not know', () => {
    for (const name of requiredInAzure) expect(bicepSettings.has(name), `${name} is set`).toBe(true);
    for (const name of forbiddenInAzure) expect(bicepSettings.has(name), `${name} is not set`).toBe(false);
    const unknown = [...bicepSettings.keys()].filter((name) => !codeSettings.includes(name) && !platformSetting.test(name));
    expect(unknown).toEqual([]);
    const optionalButSet = [...bicepSettings.keys()].filter((name) => name in optionalInAzure);
    expect(optionalButSet, 'a setting is either set or optional, not both').toEqual([]);
    // Every *Settings variable goes into the one appsettings resource.
    const properties = at(appSettingsResource.body, 'properties')!;
    expect(properties).toMatch(/^union\(/);
    expect(properties.match(/\w+Settings/g)!.sort()).toEqual([...settingVars].sort());
  });

  it('host storage and the broker tables use the managed identity, the operator key a Key Vault reference', () => {
    expect(bicepSettings.get('AzureWebJobsStorage__accountName')).toBe('storageAccountName');
    expect(unquote(bicepSettings.get('AzureWebJobsStorage__credential'))).toBe('managedidentity');
    expect(bicepSettings.get('BROKER_TABLES_URL')).toBe('tableEndpoint');
    expect(at(moduleCall('app-settings').body, 'params', 'tableEndpoint')).toBe('storage.outputs.tableEndpoint');
    expect(bicepSettings.get('BROKER_KEY_VAULT_URL')).toBe('keyVaultUri');
    expect(at(moduleCall('app-settings').body, 'params', 'keyVaultUri')).toBe('keyVault.outputs.uri');
    expect(bicepSettings.get('BROKER_OPERATOR_KEY')).toBe("'@Microsoft.KeyVault(SecretUri=${operatorKeyUri})'");
    expect(at(moduleCall('app-settings').body, 'params', 'operatorKeyUri')).toMatch(/^keyVault\.outputs\.\w+$/);
    expect(bicepSettings.get('BROKER_OPERATOR_EMAIL')).toBe('operatorEmail');
    expect(at(moduleCall('app-settings').body, 'params', 'operatorEmail')).toBe('operatorEmail');
  });

  it('loadConfig accepts the Azure settings (resolved) and refuses them without each required one', () => {
    const sample: Record<string, string> = {
      BROKER_PUBLIC_URL: 'https://func-broker-example.azurewebsites.net',
      BROKER_OPERATOR_KEY: 'k'.repeat(48),
      BROKER_TABLES_URL: 'https://stexample.table.core.windows.net/',
      BROKER_KEY_VAULT_URL: 'https://kv-example.vault.azure.net/',
      BROKER_OPERATOR_EMAIL: 'operator@example.com',
      BROKER_ALERT_SENDER: 'con_example',
    };
    const env: Record<string, string> = { WEBSITE_INSTANCE_ID: 'instance', WEBSITE_SITE_NAME: 'func-broker-example' };
    for (const name of bicepSettings.keys()) {
      if (name.startsWith('BROKER_')) env[name] = sample[name] ?? expect.unreachable(`no sample value for ${name}`);
    }
    const config = loadConfig(env);
    expect(config.runningInAzure).toBe(true);
    expect(config.sandbox).toBe(false);
    expect(config.tables).toEqual({ kind: 'accountUrl', url: 'https://stexample.table.core.windows.net' });
    expect(config.keyVault).toEqual({ url: 'https://kv-example.vault.azure.net', emulator: false });
    for (const name of requiredInAzure) {
      // Without BROKER_PUBLIC_URL the code falls back to http://localhost:7071 even in Azure.
      if (name === 'BROKER_PUBLIC_URL') continue;
      const without = { ...env };
      delete without[name];
      expect(() => loadConfig(without), name).toThrow(name === 'BROKER_TABLES_URL' ? /BROKER_TABLES_CONNECTION|BROKER_TABLES_URL/ : new RegExp(name));
    }
  });
});

/** Environment variables main.parameters.json reads ("${NAME}" or "${NAME=default}"). */
const azdVariables = new Set(
  [...read('infra/azure/main.parameters.json').matchAll(/"\$\{([A-Z_]+)(?:=[^}]*)?\}"/g)].map((match) => match[1]!),
);

describe('redirect URI', () => {
  const output = main.outputs.get('BROKER_REDIRECT_URI')!;
  const template = /^'\$\{(\w+)\}(\/[^']*)'$/.exec(output ?? '');

  it('the template outputs <BROKER_PUBLIC_URL>/api/oauth/callback, exactly what the code uses', () => {
    expect(template, `BROKER_REDIRECT_URI output, got ${output}`).not.toBeNull();
    const [, publicUrlVar, path] = template!;
    // The variable in the output is the one the app setting BROKER_PUBLIC_URL receives.
    expect(bicepSettings.get('BROKER_PUBLIC_URL')).toBe('publicUrl');
    expect(at(moduleCall('app-settings').body, 'params', 'publicUrl')).toBe(publicUrlVar);
    expect(main.outputs.get('BROKER_PUBLIC_URL')).toBe(publicUrlVar);
    const publicUrl = 'https://broker.example.com';
    const config = loadConfig({
      BROKER_PUBLIC_URL: publicUrl,
      BROKER_OPERATOR_KEY: 'k'.repeat(48),
      BROKER_TABLES_CONNECTION: 'UseDevelopmentStorage=true',
    });
    expect(`${publicUrl}${path}`).toBe(config.redirectUri);
  });

  it('an empty publicUrl defaults to the app\'s https host name, without a trailing slash', () => {
    const [, publicUrlVar] = template!;
    const definition = main.vars.get(publicUrlVar!)!;
    expect(definition).toMatch(/endsWith\(\w+, '\/'\)/);
    const requested = /^endsWith\((\w+),/.exec(definition)![1]!;
    expect(main.vars.get(requested)).toBe("empty(publicUrl) ? 'https://${functionApp.outputs.defaultHostName}' : publicUrl");
    expect(main.outputs.get('AZURE_FUNCTION_APP_URL')).toBe("'https://${functionApp.outputs.defaultHostName}'");
  });

  it('the docs tell admins to register that URI, on the Web platform', () => {
    const docs = readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md'));
    expect(docs).toEqual(expect.arrayContaining(['deploy.md', 'microsoft-app.md']));
    const guide = read('docs/microsoft-app.md');
    expect(guide).toContain('`{BROKER_PUBLIC_URL}/api/oauth/callback`');
    expect(guide).toContain('BROKER_REDIRECT_URI');
    expect(guide).toMatch(/\*\*Web\*\*/);
    for (const name of docs) {
      const text = read(`docs/${name}`);
      for (const match of text.matchAll(/\S*\/oauth\/callback/g)) {
        // Every callback the docs show is <public URL>/api/oauth/callback (or the bare route).
        const shown = match[0].replace(/^[`"'(<[*]+/, '');
        expect(shown, `docs/${name}`).toMatch(/^(\{BROKER_PUBLIC_URL\}|https:\/\/[\w.<>-]+|http:\/\/localhost:7071|)\/api\/oauth\/callback$/);
      }
      for (const match of text.matchAll(/azd env (?:get-value|set) (\w+)/g)) {
        expect(main.outputs.has(match[1]!) || azdVariables.has(match[1]!), `docs/${name}: ${match[0]} is an output or a parameter`).toBe(true);
      }
    }
  });

  it('the docs list the delegated scopes the code requests and the app-only permissions', () => {
    const guide = read('docs/microsoft-app.md');
    for (const scope of delegatedScopes(['smtp', 'imap', 'pop'], 'https://outlook.office.com')) {
      expect(guide).toContain(`\`${scope.replace('https://outlook.office.com/', '')}\``);
    }
    for (const permission of ['SMTP.SendAsApp', 'IMAP.AccessAsApp', 'POP.AccessAsApp', 'New-ServicePrincipal', 'Add-MailboxPermission']) {
      expect(guide).toContain(permission);
    }
  });
});

describe('azd', () => {
  const yaml = read('azure.yaml');
  const value = (key: string) => new RegExp(`^\\s*${key}:\\s*(\\S+)\\s*$`, 'm').exec(yaml)?.[1];

  it('azure.yaml points at files that exist', () => {
    const infraPath = value('path')!;
    expect(existsSync(join(root, infraPath, `${value('module')}.bicep`))).toBe(true);
    expect(existsSync(join(root, infraPath, `${value('module')}.parameters.json`))).toBe(true);
    expect(value('provider')).toBe('bicep');
    const project = value('project')!;
    for (const file of ['package.json', 'host.json', '.funcignore']) expect(existsSync(join(root, project, file)), file).toBe(true);
    const scripts = [...yaml.matchAll(/^\s*run:\s*node\s+(\S+)\s*$/gm)].map((match) => match[1]!);
    expect(scripts.length).toBeGreaterThan(0);
    for (const script of scripts) expect(existsSync(join(root, project, script)), script).toBe(true);
  });

  it('deploys the service `broker` as a TypeScript function app from the staged package', () => {
    expect(yaml).toMatch(/^services:\n {2}broker:\n/m);
    expect(value('host')).toBe('function');
    expect(['ts', 'js']).toContain(value('language'));
    expect(value('remoteBuild')).toBe('false');
    expect(value('dist')).toBe(STAGE_DIR);
    expect(yaml).toMatch(/^\s*prepackage:\s*$/m);
    expect(at(moduleCall('function-app').body, 'params', 'serviceName')).toBe("'broker'");
    expect(at(one('Microsoft.Web/sites').body, 'tags')).toBe("union(tags, { 'azd-service-name': serviceName })");
  });

  it('main.parameters.json feeds main.bicep from the azd environment', () => {
    const parameters = (JSON.parse(read('infra/azure/main.parameters.json')) as { parameters: Record<string, { value: string }> }).parameters;
    for (const name of Object.keys(parameters)) expect(main.params.has(name), `main.bicep declares ${name}`).toBe(true);
    for (const param of main.params.values()) {
      const generated = /type: 'generate'/.test(param.decorators);
      if (!param.hasDefault && !generated) expect(parameters[param.name], `${param.name} is mapped`).toBeDefined();
    }
    expect(parameters.environmentName?.value).toBe('${AZURE_ENV_NAME}');
    expect(parameters.location?.value).toBe('${AZURE_LOCATION}');
    expect(parameters.publicUrl?.value).toBe('${BROKER_PUBLIC_URL}');
    expect(parameters.operatorKey?.value).toBe('${BROKER_OPERATOR_KEY}');
    expect(parameters.operatorEmail?.value).toBe('${BROKER_OPERATOR_EMAIL}');
    for (const [name, { value: mapped }] of Object.entries(parameters)) expect(mapped, name).toMatch(/^\$\{[A-Z_]+(=[^}]*)?\}$/);
  });

  it('the package keeps the compiled functions and drops what .funcignore excludes', () => {
    const ignored = funcignoreMatcher(read('.funcignore'));
    const entry = (JSON.parse(read('package.json')) as { main: string }).main;
    expect(ignored(entry, false)).toBe(false);
    expect(ignored('host.json', false)).toBe(false);
    expect(ignored('dist/shared/config.js', false)).toBe(false);
    expect(ignored('dist/shared/config.d.ts', false)).toBe(false);
    expect(ignored('shared/config.ts', false)).toBe(true);
    expect(ignored('dist/infra/local/start.js', false)).toBe(true);
    expect(ignored('test', true)).toBe(true);
    expect(ignored('local.settings.json', false)).toBe(true);
    expect(ignored('tsconfig.build.json', false)).toBe(true);
  });
});
