import { Buffer } from 'node:buffer';
import { Cron } from 'croner';
import { z } from 'zod';

/** A setting that is missing or malformed: the broker refuses to start and prints `message`. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly setting: string,
    expectation: string,
    got?: string,
  ) {
    super(`Invalid setting ${setting}: ${expectation}${got === undefined ? '' : `, got "${got}"`}`);
  }
}

export interface HostHint {
  host: string;
  port: number;
}

export type TablesSetting = { kind: 'connectionString'; connectionString: string } | { kind: 'accountUrl'; url: string };

export interface Config {
  publicUrl: string;
  redirectUri: string;
  operatorKeys: string[];
  tables: TablesSetting;
  keyVault: { url: string; emulator: boolean } | null;
  /** 32 bytes; when absent the local store generates one into `localDataDir`. */
  localSecretsKey: Buffer | null;
  localDataDir: string;
  authorityHost: string;
  mailResource: string;
  mailAppResource: string;
  smtp: HostHint;
  imap: HostHint;
  pop: HostHint;
  sandbox: boolean;
  alertSender: string | null;
  operatorEmail: string | null;
  rotationSchedule: string;
  refreshMaxAgeDays: number;
  kvWriteBudget: number;
  sweepTimeBudgetSeconds: number;
  /** Refreshes a sweep runs at once. */
  sweepConcurrency: number;
  tokenRateLimit: number;
  linkTtlHours: number;
  auditRetentionDays: number;
  port: number;
  runningInAzure: boolean;
}

export type Environment = Readonly<Record<string, string | undefined>>;

/** App Service sets these on every Functions instance; nothing else does. */
export function isRunningInAzure(env: Environment): boolean {
  return Boolean(env.WEBSITE_INSTANCE_ID || env.WEBSITE_SITE_NAME);
}

const isLocalHost = (host: string) => host === 'localhost' || host === '127.0.0.1' || host === '[::1]';

function read(env: Environment, name: string): string | undefined {
  const value = env[name]?.trim();
  if (value === undefined || value === '') return undefined;
  // App Service leaves a Key Vault reference it could not resolve in place, as text; used as
  // a value it would, say, become an operator key anyone can read in the portal.
  if (value.startsWith('@Microsoft.KeyVault(')) {
    throw new ConfigError(name, 'is a Key Vault reference the platform could not resolve: check the app\'s managed identity has "Key Vault Secrets User" or "Officer" on the vault and the secret exists');
  }
  return value;
}

function parseWith<T>(env: Environment, name: string, schema: z.ZodType<T>, expectation: string, fallback?: string): T {
  const raw = read(env, name) ?? fallback;
  const result = schema.safeParse(raw);
  if (!result.success) throw new ConfigError(name, expectation, raw);
  return result.data;
}

function baseUrl(env: Environment, name: string, fallback: string, allowHttpLocalhost: boolean): string {
  const raw = read(env, name) ?? fallback;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, 'must be an absolute URL', raw);
  }
  const httpAllowed = allowHttpLocalhost && url.protocol === 'http:' && isLocalHost(url.hostname);
  if (url.protocol !== 'https:' && !httpAllowed) {
    throw new ConfigError(name, allowHttpLocalhost ? 'must be https (http only for localhost)' : 'must be https', raw);
  }
  if (url.search || url.hash || url.username) throw new ConfigError(name, 'must be a base URL without query, fragment or credentials', raw);
  return url.toString().replace(/\/+$/, '');
}

function hostHint(env: Environment, name: string, fallback: string): HostHint {
  const raw = read(env, name) ?? fallback;
  const match = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
  const port = match ? Number(match[2]) : 0;
  if (!match || port < 1 || port > 65535) throw new ConfigError(name, 'must be host:port', raw);
  return { host: match[1]!, port };
}

function bool(env: Environment, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new ConfigError(name, 'must be true or false', raw);
}

const positiveInt = (max: number) => z.coerce.number().int().min(1).max(max);

// Six fields, seconds first, as the Functions host reads NCRONTAB; croner reads the same form.
const ncrontab = z
  .string()
  .regex(/^(\S+\s+){5}\S+$/)
  .refine((pattern) => {
    try {
      new Cron(pattern, { paused: true, timezone: 'UTC' }).stop();
      return true;
    } catch {
      return false;
    }
  });

/**
 * Reads and validates every `BROKER_*` setting. Throws `ConfigError` naming the first bad
 * setting; callers print its message and stop, so no SDK ever sees a malformed value.
 */
export function loadConfig(env: Environment): Config {
  const runningInAzure = isRunningInAzure(env);
  if (runningInAzure && read(env, 'BROKER_PUBLIC_URL') === undefined) {
    throw new ConfigError('BROKER_PUBLIC_URL', 'is required in Azure: the https base URL the redirect URI and links derive from');
  }
  const publicUrl = baseUrl(env, 'BROKER_PUBLIC_URL', 'http://localhost:7071', true);

  const operatorKeys = (read(env, 'BROKER_OPERATOR_KEY') ?? '')
    .split(',')
    .map((key) => key.trim())
    .filter((key) => key !== '');
  if (operatorKeys.length === 0) {
    throw new ConfigError('BROKER_OPERATOR_KEY', 'is required: one or more keys of at least 32 characters, comma-separated');
  }
  if (operatorKeys.some((key) => key.length < 32)) {
    throw new ConfigError('BROKER_OPERATOR_KEY', 'every key must have at least 32 characters');
  }

  const tablesConnection = read(env, 'BROKER_TABLES_CONNECTION');
  const tablesUrl = read(env, 'BROKER_TABLES_URL');
  let tables: TablesSetting;
  if (tablesConnection && tablesUrl) {
    throw new ConfigError('BROKER_TABLES_CONNECTION', 'set either BROKER_TABLES_CONNECTION or BROKER_TABLES_URL, not both');
  } else if (tablesConnection) {
    if (tablesConnection !== 'UseDevelopmentStorage=true' && !/(^|;)\s*(TableEndpoint|AccountName)=/i.test(tablesConnection)) {
      throw new ConfigError('BROKER_TABLES_CONNECTION', 'must be a storage connection string (AccountName=…;AccountKey=…;TableEndpoint=…)');
    }
    tables = { kind: 'connectionString', connectionString: tablesConnection };
  } else if (tablesUrl) {
    tables = { kind: 'accountUrl', url: baseUrl(env, 'BROKER_TABLES_URL', tablesUrl, true) };
  } else {
    throw new ConfigError(
      'BROKER_TABLES_CONNECTION',
      'is required: a connection string (UseDevelopmentStorage=true for Azurite), or set BROKER_TABLES_URL to the account URL',
    );
  }

  const keyVaultUrl = read(env, 'BROKER_KEY_VAULT_URL');
  const keyVault = keyVaultUrl
    ? { url: baseUrl(env, 'BROKER_KEY_VAULT_URL', keyVaultUrl, false), emulator: bool(env, 'BROKER_KEY_VAULT_EMULATOR', false) }
    : null;
  if (!keyVault && runningInAzure) {
    throw new ConfigError('BROKER_KEY_VAULT_URL', 'is required in Azure: the local encrypted secret store is for local runs only');
  }

  const localKeyRaw = read(env, 'BROKER_LOCAL_SECRETS_KEY');
  let localSecretsKey: Buffer | null = null;
  if (localKeyRaw !== undefined) {
    localSecretsKey = Buffer.from(localKeyRaw, 'base64');
    if (localSecretsKey.length !== 32 || !/^[A-Za-z0-9+/]+={0,2}$/.test(localKeyRaw)) {
      throw new ConfigError('BROKER_LOCAL_SECRETS_KEY', 'must be 32 bytes in base64 (openssl rand -base64 32)');
    }
  }

  const authorityHostSet = read(env, 'BROKER_AUTHORITY_HOST') !== undefined;
  const sandbox = bool(env, 'BROKER_SANDBOX', !authorityHostSet && !runningInAzure);
  if (sandbox && runningInAzure) throw new ConfigError('BROKER_SANDBOX', 'must not be true in Azure');

  const optionalAddress = (name: string) => {
    const raw = read(env, name);
    if (raw === undefined) return null;
    return parseWith(env, name, z.string().min(1).max(320), 'must be a connection id or a mailbox address');
  };

  return {
    publicUrl,
    redirectUri: `${publicUrl}/api/oauth/callback`,
    operatorKeys,
    tables,
    keyVault,
    localSecretsKey,
    localDataDir: read(env, 'BROKER_LOCAL_DATA_DIR') ?? '.data',
    authorityHost: baseUrl(env, 'BROKER_AUTHORITY_HOST', 'https://login.microsoftonline.com', false),
    mailResource: baseUrl(env, 'BROKER_MAIL_RESOURCE', 'https://outlook.office.com', false),
    mailAppResource: baseUrl(env, 'BROKER_MAIL_APP_RESOURCE', 'https://outlook.office365.com', false),
    smtp: hostHint(env, 'BROKER_SMTP_HOST', 'smtp.office365.com:587'),
    imap: hostHint(env, 'BROKER_IMAP_HOST', 'outlook.office365.com:993'),
    pop: hostHint(env, 'BROKER_POP_HOST', 'outlook.office365.com:995'),
    sandbox,
    alertSender: optionalAddress('BROKER_ALERT_SENDER'),
    operatorEmail: read(env, 'BROKER_OPERATOR_EMAIL') === undefined
      ? null
      : parseWith(env, 'BROKER_OPERATOR_EMAIL', z.email(), 'must be an email address'),
    rotationSchedule: parseWith(env, 'BROKER_ROTATION_SCHEDULE', ncrontab, 'must be a six-field NCRONTAB expression (seconds first)', '0 */30 * * * *'),
    refreshMaxAgeDays: parseWith(env, 'BROKER_REFRESH_MAX_AGE_DAYS', positiveInt(89), 'must be a whole number of days from 1 to 89', '7'),
    kvWriteBudget: parseWith(env, 'BROKER_KV_WRITE_BUDGET', positiveInt(300), 'must be a whole number from 1 to 300', '250'),
    sweepTimeBudgetSeconds: parseWith(env, 'BROKER_SWEEP_TIME_BUDGET_S', positiveInt(3600), 'must be a whole number of seconds', '240'),
    // Each refresh takes about the identity provider's latency plus four storage round trips
    // (lease, refresh token, rotated refresh token, release): at 150–300 ms, 16 at once reach
    // 50–100 a second, above the default write budget's 25, so the budget rather than the wait
    // is the limit. Beyond 64 the identity provider's own throttling would set the pace.
    sweepConcurrency: parseWith(env, 'BROKER_SWEEP_CONCURRENCY', positiveInt(64), 'must be a whole number from 1 to 64', '16'),
    tokenRateLimit: parseWith(env, 'BROKER_TOKEN_RATE_LIMIT', positiveInt(1_000_000), 'must be a whole number of requests per minute', '600'),
    linkTtlHours: parseWith(env, 'BROKER_LINK_TTL_HOURS', positiveInt(24 * 90), 'must be a whole number of hours from 1 to 2160', '168'),
    auditRetentionDays: parseWith(env, 'BROKER_AUDIT_RETENTION_DAYS', positiveInt(3650), 'must be a whole number of days from 1 to 3650', '90'),
    port: parseWith(env, 'PORT', z.coerce.number().int().min(0).max(65535), 'must be a port number', '7071'),
    runningInAzure,
  };
}
