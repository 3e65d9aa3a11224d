import type { AccessToken, TokenCredential } from '@azure/identity';
import { describe, expect, it } from 'vitest';
import { lazyCredential } from '../../shared/azure-credential.js';

describe('lazyCredential', () => {
  it('creates the credential on the first getToken, once, and shares it between concurrent callers', async () => {
    let created = 0;
    const scopesSeen: (string | string[])[] = [];
    const credential = lazyCredential(async () => {
      created += 1;
      await new Promise((resolve) => setTimeout(resolve, 10));
      const real: TokenCredential = {
        getToken: async (scopes): Promise<AccessToken> => {
          scopesSeen.push(scopes);
          return { token: `token-${scopesSeen.length}`, expiresOnTimestamp: Date.now() + 3_600_000 };
        },
      };
      return real;
    });
    expect(created).toBe(0);
    const tokens = await Promise.all([credential.getToken('https://vault.azure.net/.default'), credential.getToken(['https://storage.azure.com/.default'])]);
    expect(created).toBe(1);
    expect(tokens.map((token) => token?.token).sort()).toEqual(['token-1', 'token-2']);
    expect(scopesSeen).toEqual(expect.arrayContaining(['https://vault.azure.net/.default', ['https://storage.azure.com/.default']]));
  });

  it('reports a credential that cannot be created to every caller', async () => {
    const credential = lazyCredential(async () => {
      throw new Error('no identity package');
    });
    await expect(credential.getToken('scope')).rejects.toThrow('no identity package');
    await expect(credential.getToken('scope')).rejects.toThrow('no identity package');
  });
});
