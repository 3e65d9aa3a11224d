// `npm run bench:<name> [-- --flag value]`: runs one compiled benchmark (dist/bench/bench/<name>.js).
// Plain JavaScript for the same reason as scripts/test.mjs: the HTTPS fakes (Key Vault, the
// sandbox identity provider) get certificates from the test CA, and Node reads
// NODE_EXTRA_CA_CERTS only when it starts, so it must be set before the benchmark's process
// (and every broker process it spawns, which inherit it) starts.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareTestCertificateAuthority } from '../scripts/test-tls.mjs';

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


const tls = prepareTestCertificateAuthority(root, 'bench');
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
