import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/identity';

/**
 * `DefaultAzureCredential` (the managed identity in Azure), loaded and built on the first
 * token request. @azure/identity and its dependencies cost about 40 MB of resident memory
 * and a few hundred milliseconds to import; a broker that talks only to Azurite, to the
 * local secret store or to a Key Vault emulator never asks for a token, and an instance in
 * Azure asks only when its first request reaches Table Storage or Key Vault.
 */
export function lazyDefaultAzureCredential(): TokenCredential {
  return lazyCredential(async () => {
    const { DefaultAzureCredential } = await import('@azure/identity');
    return new DefaultAzureCredential();
  });
}

/**
 * A credential whose real one is created by `create` on the first `getToken`, once: the
 * credential caches its tokens, so every caller must share the one instance. A failed
 * creation (the package missing) is not retried; getToken failures are the credential's own.
 */
export function lazyCredential(create: () => Promise<TokenCredential>): TokenCredential {
  let credential: Promise<TokenCredential> | undefined;
  return {
    async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
      credential ??= create();
      return (await credential).getToken(scopes, options);
    },
  };
}
