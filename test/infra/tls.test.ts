import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { get as httpsGet, createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CA_CERT_FILE,
  CA_KEY_FILE,
  createCertificateAuthority,
  ensureCertificateAuthority,
  issueServerCertificate,
  loadCertificateAuthority,
  LOOPBACK_HOSTNAMES,
  type ServerCertificate,
} from '../../infra/local/tls.js';
import { testCertificateAuthority } from '../support/test-ca.js';

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  await Promise.all(cleanup.map((step) => step()));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tls-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function serve(certificate: ServerCertificate): Promise<number> {
  const server: Server = createServer({ cert: certificate.certPem, key: certificate.keyPem }, (_req, res) => res.end('hello over tls'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

async function fetchFailure(url: string): Promise<string | undefined> {
  try {
    await fetch(url);
  } catch (error) {
    return ((error as Error).cause as NodeJS.ErrnoException | undefined)?.code;
  }
  throw new Error(`${url} was trusted`);
}

describe('local certificate authority', () => {
  it('issues server certificates that fetch and node:https trust through NODE_EXTRA_CA_CERTS', async () => {
    const port = await serve(await issueServerCertificate(await testCertificateAuthority(), LOOPBACK_HOSTNAMES));
    for (const host of ['localhost', '127.0.0.1']) {
      const response = await fetch(`https://${host}:${port}/`);
      expect(await response.text()).toBe('hello over tls');
    }
    const body = await new Promise<string>((resolve, reject) => {
      httpsGet(`https://127.0.0.1:${port}/`, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk)).on('end', () => resolve(text));
      }).on('error', reject);
    });
    expect(body).toBe('hello over tls');
  });

  it('is not trusted for names it was not issued for', async () => {
    const port = await serve(await issueServerCertificate(await testCertificateAuthority(), ['localhost']));
    expect(await fetchFailure(`https://127.0.0.1:${port}/`)).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('rejects a certificate from a CA the process does not trust', async () => {
    const stranger = await createCertificateAuthority();
    const port = await serve(await issueServerCertificate(stranger, LOOPBACK_HOSTNAMES));
    expect(await fetchFailure(`https://127.0.0.1:${port}/`)).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('issues ECDSA P-256 server certificates with the names as DNS and IP SANs', async () => {
    const ca = await createCertificateAuthority();
    const issued = await issueServerCertificate(ca, ['localhost', '127.0.0.1', '::1', 'Broker.Local']);
    const cert = new X509Certificate(issued.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:broker.local');
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.checkPrivateKey(createPrivateKey(issued.keyPem))).toBe(true);
    await expect(issueServerCertificate(ca, [])).rejects.toThrow(TypeError);
  });

  it('creates the CA in a directory once, with a 0600 key, and reuses it', async () => {
    const dir = join(await tempDir(), 'nested', 'ca');
    const first = await ensureCertificateAuthority(dir);
    expect(first).toMatchObject({ created: true, caCertPath: join(dir, CA_CERT_FILE), caKeyPath: join(dir, CA_KEY_FILE) });
    expect((await stat(first.caKeyPath)).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const again = await ensureCertificateAuthority(dir);
    expect(again.created).toBe(false);
    expect(again.fingerprint256).toBe(first.fingerprint256);
    expect((await loadCertificateAuthority(dir)).certPem).toBe(first.certPem);
    const concurrent = await Promise.all([1, 2, 3].map(() => ensureCertificateAuthority(join(dir, 'racing'))));
    expect(new Set(concurrent.map((ca) => ca.fingerprint256)).size).toBe(1);
  });

  it('replaces a CA near expiry or half-written, and refuses a broken one', async () => {
    const dir = await tempDir();
    const first = await ensureCertificateAuthority(dir);
    const renewed = await ensureCertificateAuthority(dir, { renewWithinDays: 10 * 365 });
    expect(renewed.created).toBe(true);
    expect(renewed.fingerprint256).not.toBe(first.fingerprint256);
    await unlink(renewed.caKeyPath);
    expect((await ensureCertificateAuthority(dir)).created).toBe(true);
    const other = await createCertificateAuthority();
    await writeFile(join(dir, CA_KEY_FILE), other.keyPem);
    await expect(ensureCertificateAuthority(dir)).rejects.toThrow(/key does not match its certificate; delete the directory/);
    await expect(loadCertificateAuthority(await tempDir())).rejects.toThrow(/No local certificate authority/);
    expect(await readFile(join(dir, CA_CERT_FILE), 'utf8')).toContain('BEGIN CERTIFICATE');
  });
});
