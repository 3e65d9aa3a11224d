// The test certificate authority (.data/test-tls) that the HTTPS fakes' certificates come from,
// shared by `npm test` and the benchmarks. Node reads NODE_EXTRA_CA_CERTS only at start-up,
// so callers put the returned path into the environment of the processes they start.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function prepareTestCertificateAuthority(root, label) {
  const dir = join(root, '.data', 'test-tls');
  const result = spawnSync(process.execPath, ['dist/infra/local/tls-cli.js', 'ensure', dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (result.status !== 0) {
    console.error(`${label}: creating the test certificate authority failed`);
    process.exit(result.status ?? 1);
  }
  const caCertPath = result.stdout.trim();
  const inherited = process.env.NODE_EXTRA_CA_CERTS;
  if (!inherited) return { dir, extraCaCerts: caCertPath };
  const caPem = readFileSync(caCertPath, 'utf8');
  const inheritedPem = readFileSync(inherited, 'utf8');
  if (inheritedPem.includes(caPem.trim())) return { dir, extraCaCerts: inherited };
  // Node takes one file: keep the CAs the caller already trusts (a TLS-inspecting proxy, say).
  const bundle = join(dir, 'extra-ca-bundle.pem');
  writeFileSync(bundle, `${inheritedPem.trim()}\n${caPem}`);
  return { dir, extraCaCerts: bundle };
}
