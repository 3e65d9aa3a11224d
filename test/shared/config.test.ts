import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../shared/config.js';

const operatorKey = 'op-key-0123456789abcdef0123456789abcdef';
const minimal = { BROKER_OPERATOR_KEY: operatorKey, BROKER_TABLES_CONNECTION: 'UseDevelopmentStorage=true' };

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig(minimal);
    expect(config.publicUrl).toBe('http://localhost:7071');
    expect(config.redirectUri).toBe('http://localhost:7071/api/oauth/callback');
    expect(config.authorityHost).toBe('https://login.microsoftonline.com');
    expect(config.mailResource).toBe('https://outlook.office.com');
    expect(config.mailAppResource).toBe('https://outlook.office365.com');
    expect(config.smtp).toEqual({ host: 'smtp.office365.com', port: 587 });
    expect(config.imap).toEqual({ host: 'outlook.office365.com', port: 993 });
    expect(config.pop).toEqual({ host: 'outlook.office365.com', port: 995 });
    expect(config.rotationSchedule).toBe('0 */30 * * * *');
    expect(config.refreshMaxAgeDays).toBe(7);
    expect(config.kvWriteBudget).toBe(250);
    expect(config.sweepTimeBudgetSeconds).toBe(240);
    expect(config.sweepConcurrency).toBe(16);
    expect(config.tokenRateLimit).toBe(600);
    expect(config.linkTtlHours).toBe(168);
    expect(config.port).toBe(7071);
    expect(config.sandbox).toBe(true);
    expect(config.keyVault).toBeNull();
  });

  it('splits rotated operator keys', () => {
    const second = 'op-key-fedcba9876543210fedcba9876543210';
    expect(loadConfig({ ...minimal, BROKER_OPERATOR_KEY: `${operatorKey}, ${second}` }).operatorKeys).toEqual([operatorKey, second]);
  });

  it('turns the sandbox off by default once a real authority is configured', () => {
    expect(loadConfig({ ...minimal, BROKER_AUTHORITY_HOST: 'https://login.microsoftonline.us' }).sandbox).toBe(false);
  });

  it.each([
    [{ BROKER_PUBLIC_URL: 'http://broker.example.com' }, 'BROKER_PUBLIC_URL', 'https'],
    [{ BROKER_PUBLIC_URL: 'not a url' }, 'BROKER_PUBLIC_URL', 'absolute URL'],
    [{ BROKER_OPERATOR_KEY: '' }, 'BROKER_OPERATOR_KEY', 'required'],
    [{ BROKER_OPERATOR_KEY: 'short' }, 'BROKER_OPERATOR_KEY', '32 characters'],
    [{ BROKER_TABLES_CONNECTION: '' }, 'BROKER_TABLES_CONNECTION', 'required'],
    [{ BROKER_TABLES_CONNECTION: 'hello' }, 'BROKER_TABLES_CONNECTION', 'connection string'],
    [{ BROKER_KEY_VAULT_URL: 'http://vault.example.com' }, 'BROKER_KEY_VAULT_URL', 'https'],
    [{ BROKER_LOCAL_SECRETS_KEY: 'c2hvcnQ=' }, 'BROKER_LOCAL_SECRETS_KEY', '32 bytes'],
    [{ BROKER_AUTHORITY_HOST: 'http://login.example.com' }, 'BROKER_AUTHORITY_HOST', 'https'],
    [{ BROKER_SMTP_HOST: 'smtp.office365.com' }, 'BROKER_SMTP_HOST', 'host:port'],
    [{ BROKER_IMAP_HOST: 'imap:99999' }, 'BROKER_IMAP_HOST', 'host:port'],
    [{ BROKER_SANDBOX: 'maybe' }, 'BROKER_SANDBOX', 'true or false'],
    [{ BROKER_ROTATION_SCHEDULE: '*/30 * * * *' }, 'BROKER_ROTATION_SCHEDULE', 'six-field'],
    [{ BROKER_ROTATION_SCHEDULE: '0 */30 * * * 99' }, 'BROKER_ROTATION_SCHEDULE', 'six-field'],
    [{ BROKER_REFRESH_MAX_AGE_DAYS: '90' }, 'BROKER_REFRESH_MAX_AGE_DAYS', '1 to 89'],
    [{ BROKER_KV_WRITE_BUDGET: '301' }, 'BROKER_KV_WRITE_BUDGET', '1 to 300'],
    [{ BROKER_SWEEP_CONCURRENCY: '0' }, 'BROKER_SWEEP_CONCURRENCY', '1 to 64'],
    [{ BROKER_SWEEP_CONCURRENCY: '65' }, 'BROKER_SWEEP_CONCURRENCY', '1 to 64'],
    [{ BROKER_SWEEP_CONCURRENCY: '2.5' }, 'BROKER_SWEEP_CONCURRENCY', '1 to 64'],
    [{ BROKER_TOKEN_RATE_LIMIT: 'lots' }, 'BROKER_TOKEN_RATE_LIMIT', 'whole number'],
    [{ BROKER_OPERATOR_EMAIL: 'ops' }, 'BROKER_OPERATOR_EMAIL', 'email'],
    [{ PORT: '-1' }, 'PORT', 'port'],
  ])('names the bad setting in one line (%o)', (override, setting, expectation) => {
    const error = configError({ ...minimal, ...override });
    expect(error.setting).toBe(setting);
    expect(error.message).toContain(setting);
    expect(error.message).toContain(expectation);
    expect(error.message).not.toContain('\n');
  });

  it('refuses an unresolved Key Vault reference as a value', () => {
    const error = configError({ ...minimal, BROKER_OPERATOR_KEY: '@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k/1)' });
    expect(error.setting).toBe('BROKER_OPERATOR_KEY');
    expect(error.message).toContain('Key Vault reference');
  });

  it('requires the public URL in Azure', () => {
    const inAzure = { ...minimal, WEBSITE_INSTANCE_ID: 'abc', BROKER_KEY_VAULT_URL: 'https://vault.example.com' };
    expect(configError(inAzure).setting).toBe('BROKER_PUBLIC_URL');
  });

  it('refuses the local secret store and the sandbox in Azure', () => {
    const inAzure = { ...minimal, WEBSITE_INSTANCE_ID: 'abc', BROKER_PUBLIC_URL: 'https://broker.example.com' };
    expect(configError(inAzure).setting).toBe('BROKER_KEY_VAULT_URL');
    const withVault = { ...inAzure, BROKER_KEY_VAULT_URL: 'https://vault.example.com' };
    expect(loadConfig(withVault).sandbox).toBe(false);
    expect(configError({ ...withVault, BROKER_SANDBOX: 'true' }).setting).toBe('BROKER_SANDBOX');
  });
});
