// The one test command (npm test): type-check, build, then the whole vitest suite.
// Plain JavaScript so it can prepare what the suite needs before any TypeScript runs.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(label, args, env = process.env) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  if (result.status !== 0) {
    console.error(`npm test: ${label} failed`);
    process.exit(result.status ?? 1);
  }
}

// The HTTPS fakes get certificates from a test CA that the vitest processes must trust.
// Node reads NODE_EXTRA_CA_CERTS only at start-up, so it has to be set here, not in a test.
function prepareTestCertificateAuthority() {
  const dir = join(root, '.data', 'test-tls');
  const result = spawnSync(process.execPath, ['dist/infra/local/tls-cli.js', 'ensure', dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (result.status !== 0) {
    console.error('npm test: creating the test certificate authority failed');
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

run('type check', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
run('build', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json']);
const tls = prepareTestCertificateAuthority();
run('vitest', ['node_modules/vitest/vitest.mjs', 'run', ...process.argv.slice(2)], {
  ...process.env,
  NODE_EXTRA_CA_CERTS: tls.extraCaCerts,
  BROKER_TEST_CA_DIR: tls.dir,
});
