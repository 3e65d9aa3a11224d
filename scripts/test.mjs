// The one test command (npm test): type-check, build, then the whole vitest suite.
// Plain JavaScript so it can prepare what the suite needs before any TypeScript runs.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function run(label, args, env = process.env) {
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
  if (result.status !== 0) {
    console.error(`npm test: ${label} failed`);
    process.exit(result.status ?? 1);
  }
}

run('type check', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
run('build', ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json']);
run('vitest', ['node_modules/vitest/vitest.mjs', 'run', ...process.argv.slice(2)]);
