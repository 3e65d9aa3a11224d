import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * API keys are 256 random bits; a plain SHA-256 is the right hash for them (a slow
 * password hash buys nothing against that much entropy and would slow every token call).
 */
export function hashKey(key: string): string {
  return hash('sha256', key, 'hex');
}

/** Constant-time equality of two hex hashes of equal length. */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && left.length > 0 && timingSafeEqual(left, right);
}

export const TENANT_KEY_PREFIX = 'mob_';

export function newTenantKey(): { key: string; prefix: string; hash: string } {
  const key = `${TENANT_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { key, prefix: key.slice(0, TENANT_KEY_PREFIX.length + 8), hash: hashKey(key) };
}

/** The key from `Authorization: Bearer <key>`, or null. */
export function bearerKey(authorization: string | null | undefined): string | null {
  if (!authorization) return null;
  const match = /^Bearer[ ]+([\x21-\x7e]{1,512})\s*$/i.exec(authorization);
  return match ? match[1]! : null;
}

/**
 * Operator keys from BROKER_OPERATOR_KEY. Several may be valid at once so a key can be
 * rotated without downtime; every candidate is compared, so timing says nothing about
 * which one (if any) matched.
 */
export class OperatorKeys {
  private readonly hashes: string[];

  constructor(keys: readonly string[]) {
    this.hashes = keys.map(hashKey);
  }

  verify(authorization: string | null | undefined): boolean {
    const key = bearerKey(authorization);
    if (key === null) return false;
    const presented = hashKey(key);
    let matched = false;
    for (const hash of this.hashes) matched = sameHash(presented, hash) || matched;
    return matched;
  }
}
