// Builds the deployment package of the function app (azure.yaml `prepackage` hook of the
// `broker` service; `node infra/azure/package.mjs` by hand does the same).
//
// 1. `npm ci && npm run build` in the repository: tsc, then the esbuild bundle
//    (scripts/bundle.mjs) into dist/bundle/.
// 2. Stages what the Functions host needs into .azure-package/: host.json, a package.json
//    whose "main" is the bundle's entry, and dist/bundle/, filtered by .funcignore.
//
// The bundle holds every npm package the app uses; only @azure/functions-core stays outside,
// and the Functions worker provides that one. So the stage has no node_modules: the zip is a
// few megabytes instead of ~50, and a cold start opens a few dozen files instead of ~450.
//
// azure.yaml points the service's `dist` at the stage, so azd zips exactly this folder.
// Plain JavaScript (like scripts/*.mjs): it runs on the operator's Node before any build.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const STAGE_DIR = '.azure-package';

/** Files copied from the repository root; the bundle is copied separately, file by file. */
const ROOT_FILES = ['host.json', '.funcignore'];

/**
 * The staged package.json: what the Functions worker reads ("main", "type") and the package's
 * identity. No dependencies (they are in the bundle) and no scripts, so should a remote build
 * run anyway (older azd forces one for TypeScript), it finds nothing to build or install.
 */
export function runtimeManifest(manifest) {
  const fields = ['name', 'version', 'private', 'description', 'type', 'main', 'engines'];
  return Object.fromEntries(fields.filter((field) => field in manifest).map((field) => [field, manifest[field]]));
}

/**
 * A .funcignore matcher for the subset of .gitignore syntax the Functions tooling uses:
 * `#` comments, `!` negation, `*`/`?` wildcards, a trailing `/` for directories, a leading
 * `/` (or an inner `/`) anchoring to the root. The last matching rule wins.
 */
export function funcignoreMatcher(text) {
  const rules = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negate = line.startsWith('!');
      let pattern = negate ? line.slice(1) : line;
      const directoryOnly = pattern.endsWith('/');
      if (directoryOnly) pattern = pattern.slice(0, -1);
      const anchored = pattern.includes('/');
      if (pattern.startsWith('/')) pattern = pattern.slice(1);
      const source = pattern
        .split('')
        .map((char) => (char === '*' ? '[^/]*' : char === '?' ? '[^/]' : char.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('');
      return { negate, directoryOnly, anchored, regex: new RegExp(`^${source}$`) };
    });

  /** `path` is relative to the package root with `/` separators. */
  return (path, isDirectory) => {
    const segments = path.split('/');
    let ignored = false;
    for (const rule of rules) {
      let matches = false;
      if (rule.anchored) {
        // Matches the path itself or one of its parent directories.
        for (let end = 1; end <= segments.length && !matches; end += 1) {
          const isDir = end < segments.length || isDirectory;
          matches = rule.regex.test(segments.slice(0, end).join('/')) && (!rule.directoryOnly || isDir);
        }
      } else {
        matches = segments.some((segment, index) => {
          const isDir = index < segments.length - 1 || isDirectory;
          return rule.regex.test(segment) && (!rule.directoryOnly || isDir);
        });
      }
      if (matches) ignored = !rule.negate;
    }
    return ignored;
  };
}

function run(command, args, cwd) {
  const printable = [command, ...args].join(' ');
  console.log(`package: ${printable} (in ${cwd})`);
  // npm is npm.cmd on Windows, which Node only starts through a shell.
  const result = spawnSync(command, args, { cwd, stdio: 'inherit', shell: process.platform === 'win32' });
  if (result.status !== 0) {
    console.error(`package: "${printable}" failed`);
    process.exit(result.status ?? 1);
  }
}

function copyFiltered(root, from, to, ignored) {
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    const path = relative(root, source).split(sep).join('/');
    if (ignored(path, entry.isDirectory())) continue;
    const target = join(to, entry.name);
    if (entry.isDirectory()) {
      copyFiltered(root, source, target, ignored);
    } else if (entry.isFile()) {
      mkdirSync(dirname(target), { recursive: true });
      cpSync(source, target);
    }
  }
}

function directorySize(path) {
  let total = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    total += entry.isDirectory() ? directorySize(child) : entry.isFile() ? statSync(child).size : 0;
  }
  return total;
}

function main() {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const stage = join(root, STAGE_DIR);

  if (!process.argv.includes('--skip-build')) {
    run(npm, ['ci', '--no-audit', '--no-fund'], root);
    run(npm, ['run', 'build'], root);
  }

  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const ignoreFile = join(root, '.funcignore');
  const ignored = funcignoreMatcher(existsSync(ignoreFile) ? readFileSync(ignoreFile, 'utf8') : '');
  if (typeof manifest.main !== 'string' || ignored(manifest.main, false) || !manifest.main.startsWith('dist/')) {
    console.error(`package: package.json "main" (${manifest.main}) is missing, outside dist/ or excluded by .funcignore`);
    process.exit(1);
  }
  // Everything the entry imports sits beside it: the bundle's folder is the whole app.
  const bundleDir = dirname(manifest.main);

  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  for (const file of ROOT_FILES) {
    if (existsSync(join(root, file))) cpSync(join(root, file), join(stage, file));
  }
  copyFiltered(root, join(root, bundleDir), join(stage, bundleDir), ignored);
  if (!existsSync(join(stage, manifest.main))) {
    console.error(`package: ${manifest.main} was not built; run npm run build and look for errors`);
    process.exit(1);
  }

  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(runtimeManifest(manifest), null, 2)}\n`);

  const megabytes = (directorySize(stage) / 1024 / 1024).toFixed(1);
  console.log(`package: staged ${STAGE_DIR}/ (${megabytes} MB) with main ${manifest.main}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
