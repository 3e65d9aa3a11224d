/**
 * A local certificate authority for everything the broker serves or fakes over HTTPS on this
 * machine (the sandbox identity provider, test fakes of Key Vault). Clients trust it through
 * `NODE_EXTRA_CA_CERTS`, so nothing ever needs plain http or disabled certificate checks.
 */
// tsyringe, which @peculiar/x509 loads, throws at import time without a Reflect metadata
// polyfill; ES modules evaluate imports in order, so this one must stay first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { Buffer } from 'node:buffer';
import { createPrivateKey, randomBytes, webcrypto, X509Certificate as NodeCertificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';

type CryptoKey = webcrypto.CryptoKey;

export interface CertificateAuthority {
  certPem: string;
  /** PKCS#8 PEM. Whoever holds it can mint certificates this machine trusts: keep it 0600. */
  keyPem: string;
  notAfter: Date;
  /** SHA-256 fingerprint, colon-separated hex, for people comparing trust stores. */
  fingerprint256: string;
}

export interface ServerCertificate {
  certPem: string;
  keyPem: string;
  notAfter: Date;
}

export interface CertificateAuthorityFiles extends CertificateAuthority {
  dir: string;
  caCertPath: string;
  caKeyPath: string;
  /** True when this call generated the CA (first run, or the old one was near expiry). */
  created: boolean;
}

/** Every name a local client may use for this machine; pass them to `issueServerCertificate`. */
export const LOOPBACK_HOSTNAMES: readonly string[] = ['localhost', '127.0.0.1', '::1'];

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';

const DAY_MS = 24 * 60 * 60 * 1000;
// Generous enough that a CA kept in .data/ is regenerated rarely, which would force anyone
// who imported it into a browser or OS trust store to import it again.
const CA_VALIDITY_DAYS = 5 * 365;
// Leaves are minted at every start, so short is free; Apple platforms reject over 825 days.
const SERVER_VALIDITY_DAYS = 90;
const RENEW_WITHIN_DAYS = 30;
// Backdated so a client whose clock runs a little behind still accepts a fresh certificate.
const CLOCK_SKEW_MS = 60 * 60 * 1000;

const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

export async function createCertificateAuthority(
  options: { commonName?: string; validityDays?: number; now?: Date } = {},
): Promise<CertificateAuthority> {
  const now = options.now ?? new Date();
  const keys = await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
  // A unique name per CA keeps chain building unambiguous when an old CA is still trusted somewhere.
  const commonName = options.commonName ?? `Mail OAuth Broker local CA ${randomBytes(4).toString('hex')}`;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }, { O: ['Mail OAuth Broker local development'] }],
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter: new Date(now.getTime() + (options.validityDays ?? CA_VALIDITY_DAYS) * DAY_MS),
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return describeAuthority(cert.toString('pem'), await exportKeyPem(keys.privateKey));
}

/**
 * A server certificate for `hostnames` (DNS names, and IP literals which become IP SANs),
 * signed by `ca`. Names are used exactly as given: pass `LOOPBACK_HOSTNAMES` for local servers.
 */
export async function issueServerCertificate(
  ca: Pick<CertificateAuthority, 'certPem' | 'keyPem'>,
  hostnames: readonly string[],
  options: { validityDays?: number; now?: Date } = {},
): Promise<ServerCertificate> {
  const names = [...new Set(hostnames.map((name) => name.trim().toLowerCase()).filter((name) => name !== ''))];
  if (names.length === 0) throw new TypeError('issueServerCertificate needs at least one hostname or IP address');
  const now = options.now ?? new Date();
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importSigningKey(ca.keyPem);
  const keys = await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']);
  const notAfter = new Date(Math.min(now.getTime() + (options.validityDays ?? SERVER_VALIDITY_DAYS) * DAY_MS, caCert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [names[0]!] }],
    issuer: caCert.subjectName,
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(
        names.map((value) => ({ type: isIP(value) === 0 ? ('dns' as const) : ('ip' as const), value })),
        false,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey), notAfter: cert.notAfter };
}

/**
 * The CA kept in `dir` (`ca.crt`, `ca.key`), created on first use and again when it is within
 * `renewWithinDays` of expiry, so a trust setting pointing at `ca.crt` survives restarts.
 */
export async function ensureCertificateAuthority(
  dir: string,
  options: { renewWithinDays?: number } = {},
): Promise<CertificateAuthorityFiles> {
  const renewBefore = Date.now() + (options.renewWithinDays ?? RENEW_WITHIN_DAYS) * DAY_MS;
  const usable = (found: CertificateAuthorityFiles | null) => found !== null && found.notAfter.getTime() > renewBefore;

  const existing = await readAuthority(dir);
  if (usable(existing)) return existing!;

  await mkdir(dir, { recursive: true, mode: 0o700 });
  return withDirectoryLock(dir, async () => {
    const current = await readAuthority(dir);
    if (usable(current)) return current!;
    const ca = await createCertificateAuthority();
    // Key before certificate: a reader that finds the certificate also finds its key.
    await writeAtomically(join(dir, CA_KEY_FILE), ca.keyPem, 0o600);
    await writeAtomically(join(dir, CA_CERT_FILE), ca.certPem, 0o644);
    return { ...ca, ...paths(dir), created: true };
  });
}

/** The CA in `dir` without ever creating one; throws when it is missing or broken. */
export async function loadCertificateAuthority(dir: string): Promise<CertificateAuthorityFiles> {
  const found = await readAuthority(dir);
  if (!found) throw new Error(`No local certificate authority in ${dir} (expected ${CA_CERT_FILE} and ${CA_KEY_FILE})`);
  return found;
}

function paths(dir: string) {
  return { dir, caCertPath: join(dir, CA_CERT_FILE), caKeyPath: join(dir, CA_KEY_FILE) };
}

async function readAuthority(dir: string): Promise<CertificateAuthorityFiles | null> {
  const { caCertPath, caKeyPath } = paths(dir);
  const [certPem, keyPem] = await Promise.all([readIfExists(caCertPath), readIfExists(caKeyPath)]);
  // Half a pair is what an interrupted first run leaves: treat it as no CA and start over.
  if (certPem === null || keyPem === null) return null;
  try {
    const described = describeAuthority(certPem, keyPem);
    return { ...described, ...paths(dir), created: false };
  } catch (error) {
    throw new Error(
      `The local certificate authority in ${dir} is unreadable or its key does not match its certificate; ` +
        'delete the directory to create a new one',
      { cause: error },
    );
  }
}

function describeAuthority(certPem: string, keyPem: string): CertificateAuthority {
  const cert = new NodeCertificate(certPem);
  if (!cert.ca) throw new Error('the certificate is not a CA certificate');
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the private key does not belong to the certificate');
  return { certPem, keyPem, notAfter: new Date(cert.validTo), fingerprint256: cert.fingerprint256 };
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const key = createPrivateKey(keyPem);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new TypeError('the CA key must be an ECDSA P-256 key');
  }
  return webcrypto.subtle.importKey('pkcs8', key.export({ type: 'pkcs8', format: 'der' }), EC_ALGORITHM, false, ['sign']);
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
}

// 127 random bits, positive as RFC 5280 requires, never starting with a zero byte.
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, content, { mode, flag: 'wx' });
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

// Two processes creating a CA at once would otherwise pair one's key with the other's certificate.
async function withDirectoryLock<T>(dir: string, action: () => Promise<T>): Promise<T> {
  const lock = join(dir, '.ca.lock');
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
      // A holder that crashed leaves the lock behind; creating a CA takes well under a second.
      if (age > 30_000) await rm(lock, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`Timed out waiting for ${lock}; remove it if no other process is starting`);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    return await action();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
