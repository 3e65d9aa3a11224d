import { readFileSync } from 'node:fs';
import {
  issueServerCertificate,
  LOOPBACK_HOSTNAMES,
  loadCertificateAuthority,
  type CertificateAuthorityFiles,
  type ServerCertificate,
} from '../../infra/local/tls.js';

/** Set by scripts/test.mjs to the directory holding the test CA (ca.crt, ca.key). */
export const TEST_CA_DIR_ENV = 'BROKER_TEST_CA_DIR';

let authority: Promise<CertificateAuthorityFiles> | undefined;

/**
 * The CA that this test process trusts. Node reads NODE_EXTRA_CA_CERTS only when it starts,
 * so only a runner that set it beforehand (scripts/test.mjs, via `npm test`) can provide one.
 */
export function testCertificateAuthority(): Promise<CertificateAuthorityFiles> {
  authority ??= loadTrustedAuthority();
  return authority;
}

/** A server certificate for local HTTPS fakes, trusted by fetch and node:https in tests. */
export async function issueTestServerCertificate(hostnames: readonly string[] = LOOPBACK_HOSTNAMES): Promise<ServerCertificate> {
  return issueServerCertificate(await testCertificateAuthority(), hostnames);
}

async function loadTrustedAuthority(): Promise<CertificateAuthorityFiles> {
  const dir = process.env[TEST_CA_DIR_ENV];
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  const hint = 'Run the tests with `npm test` (or `npm test -- <vitest args>`), which creates the test CA and starts vitest trusting it.';
  if (!dir || !extra) {
    throw new Error(`${TEST_CA_DIR_ENV} and NODE_EXTRA_CA_CERTS must be set before this process starts. ${hint}`);
  }
  const ca = await loadCertificateAuthority(dir);
  if (!readFileSync(extra, 'utf8').includes(ca.certPem.trim())) {
    throw new Error(`NODE_EXTRA_CA_CERTS (${extra}) does not contain the test CA in ${dir}. ${hint}`);
  }
  return ca;
}
