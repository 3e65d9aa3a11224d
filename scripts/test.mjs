// The one test command (npm test): type-check, build, then the whole vitest suite.
// Plain JavaScript so it can prepare what the suite needs before any TypeScript runs.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { prepareTestCertificateAuthority } from './test-tls.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(label, args, env = process.env) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  if (result.status !== 0) {
    console.error(`npm test: ${label} failed`);
    process.exit(result.status ?? 1);
  }
}

// Browser tests drive Debian's Chromium through playwright-core; Playwright's own browser
// download is never used (it needs more than the package registries).
function ensureChromium() {
  const path = process.env.BROKER_TEST_CHROMIUM || '/usr/bin/chromium';
  if (existsSync(path)) return path;
  if (process.getuid?.() !== 0) {
    console.error(`npm test: the browser tests need Chromium at ${path}. Install it with: sudo apt-get install -y chromium`);
    process.exit(1);
  }
  console.log('npm test: installing Chromium from Debian (apt-get install chromium) for the browser tests');
  for (const args of [['update'], ['install', '-y', '--no-install-recommends', 'chromium']]) {
    const result = spawnSync('apt-get', args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (result.status !== 0) {
      console.error(`npm test: apt-get ${args[0]} failed`);
      process.exit(result.status ?? 1);
    }
  }
  return path;
}

const chromium = ensureChromium();
run('type check', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
run('build', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json']);
const tls = prepareTestCertificateAuthority(root, 'npm test');
run('vitest', ['node_modules/vitest/vitest.mjs', 'run', ...process.argv.slice(2)], {
  ...process.env,
  NODE_EXTRA_CA_CERTS: tls.extraCaCerts,
  BROKER_TEST_CA_DIR: tls.dir,
  BROKER_TEST_CHROMIUM: chromium,
});
