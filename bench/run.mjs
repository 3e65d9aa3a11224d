// `npm run bench:<name> [-- --flag value]`: runs one compiled benchmark (dist/bench/bench/<name>.js).
// Plain JavaScript for the same reason as scripts/test.mjs: the HTTPS fakes (Key Vault, the
// sandbox identity provider) get certificates from the test CA, and Node reads
// NODE_EXTRA_CA_CERTS only when it starts, so it must be set before the benchmark's process
// (and every broker process it spawns, which inherit it) starts.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const [name, ...args] = process.argv.slice(2);
const benchmarks = ['token', 'storm', 'sweep', 'memory', 'startup'];

if (!name || !benchmarks.includes(name)) {
  console.error(`usage: node bench/run.mjs <${benchmarks.join('|')}> [--flag value …]`);
  process.exit(2);
}
const entry = join(root, 'dist', 'bench', 'bench', `${name}.js`);
if (!existsSync(entry) || !existsSync(join(root, 'dist', 'infra', 'local', 'tls-cli.js'))) {
  console.error(`bench: ${entry} is missing; build first (npm run bench:${name} does: tsc -p tsconfig.build.json && tsc -p bench/tsconfig.json)`);
  process.exit(1);
}

// The same CA as `npm test` (.data/test-tls), made on first use.
function prepareTestCertificateAuthority() {
  const dir = join(root, '.data', 'test-tls');
  const result = spawnSync(process.execPath, ['dist/infra/local/tls-cli.js', 'ensure', dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (result.status !== 0) {
    console.error('bench: creating the test certificate authority failed');
    process.exit(result.status ?? 1);
  }
  const caCertPath = result.stdout.trim();
  const inherited = process.env.NODE_EXTRA_CA_CERTS;
  if (!inherited) return { dir, extraCaCerts: caCertPath };
  const caPem = readFileSync(caCertPath, 'utf8');
  const inheritedPem = readFileSync(inherited, 'utf8');
  if (inheritedPem.includes(caPem.trim())) return { dir, extraCaCerts: inherited };
  const bundle = join(dir, 'extra-ca-bundle.pem');
  writeFileSync(bundle, `${inheritedPem.trim()}\n${caPem}`);
  return { dir, extraCaCerts: bundle };
}

const tls = prepareTestCertificateAuthority();
// What RESULTS.md quotes as "the exact command".
const command = process.env.npm_lifecycle_event
  ? `npm run ${process.env.npm_lifecycle_event}${args.length ? ` -- ${args.join(' ')}` : ''}`
  : `node bench/run.mjs ${[name, ...args].join(' ')}`;

const child = spawn(process.execPath, [entry, ...args], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, NODE_EXTRA_CA_CERTS: tls.extraCaCerts, BROKER_TEST_CA_DIR: tls.dir, BENCH_ROOT: root, BENCH_COMMAND: command },
});
// Ctrl-C reaches the benchmark through the terminal's process group; it stops what it started.
child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
