import { randomBytes } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** Lower-case base32 of `bytes` random bytes: safe in URLs, Table keys and Key Vault names. */
export function randomToken(bytes: number): string {
  const data = randomBytes(bytes);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

export type IdPrefix = 'app' | 'tnt' | 'key' | 'con' | 'lnk' | 'run';

/** 128 random bits behind a type prefix, e.g. `con_…`. Never reused, so never guessable. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${randomToken(16)}`;
}

export function idPattern(prefix: IdPrefix): RegExp {
  return new RegExp(`^${prefix}_[a-z2-7]{26}$`);
}
