// Bundles the Functions entry (functions/index.ts) with esbuild into dist/bundle/: the file
// package.json "main" names, which the Functions host (in Azure and under `func start`)
// loads. `npm run build:bundle` runs it; `npm run build` runs it after tsc.
//
// Why a bundle: unbundled, the entry resolves ~60 of our files and ~400 files of 30 npm
// packages at every cold start. Bundled, the start-up path is one file plus the chunks it
// imports, and the SDKs the first request may not need (@azure/identity,
// @azure/keyvault-secrets, msal-node, nodemailer, imapflow, the Azure Monitor distro) sit in
// chunks of their own that load only when their `import()` runs (code splitting).
//
// Plain JavaScript (like the other scripts): it runs before any TypeScript is compiled.
import { build } from 'esbuild';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BUNDLE_DIR = join('dist', 'bundle');
const BUNDLE_ENTRY = `${BUNDLE_DIR}/index.js`;
const METAFILE = 'meta.json';

/**
 * Left to Node's resolution at run time: only @azure/functions-core, which does not exist on
 * disk. The Functions worker answers `require('@azure/functions-core')` itself, by wrapping
 * Module.prototype.require; the banner's createRequire keeps that call a real CommonJS
 * require, so the worker sees it and @azure/functions leaves test mode.
 *
 * Everything else is bundled, the Azure Monitor distro too (its own chunk, loaded only with
 * APPLICATIONINSIGHTS_CONNECTION_STRING), so the deployment needs no node_modules. The
 * distro then shares the bundle's one @opentelemetry/api with the broker's spans and
 * metrics; what it cannot do is patch other packages through require hooks, which would
 * not see into the bundle, and the broker does not rely on that (functions/index.ts).
 */
const EXTERNAL = ['@azure/functions-core'];

// CommonJS packages in the bundle (@azure/functions, parts of msal-node and nodemailer) call
// require() for Node's built-ins, which an ES module does not have.
const BANNER = "import { createRequire as __brokerCreateRequire } from 'node:module'; const require = __brokerCreateRequire(import.meta.url);";

/**
 * Builds the bundle into `outdir` (emptied first) and returns esbuild's metafile, which
 * records the source files each output holds (the tests read it to tell chunks apart).
 */
export async function bundleFunctions({ root, outdir = join(root, BUNDLE_DIR), minify = false } = {}) {
  rmSync(outdir, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: root,
    entryPoints: { index: join(root, 'functions', 'index.ts') },
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    external: EXTERNAL,
    banner: { js: BANNER },
    chunkNames: 'chunks/[name]-[hash]',
    // Maps name the TypeScript file and line for stack traces (node --enable-source-maps);
    // without the sources' text, which would make them ten times larger.
    sourcemap: 'linked',
    sourcesContent: false,
    minify,
    // Class names appear in logs and errors (BrokerError, RestError); keep them.
    keepNames: true,
    legalComments: 'linked',
    metafile: true,
    logLevel: 'warning',
  });
  writeFileSync(join(outdir, METAFILE), JSON.stringify(result.metafile));
  return result.metafile;
}

function sizeReport(metafile) {
  const outputs = Object.entries(metafile.outputs).filter(([file]) => file.endsWith('.js'));
  const kilobytes = (bytes) => `${(bytes / 1024).toFixed(0)} KB`;
  const total = outputs.reduce((sum, [, output]) => sum + output.bytes, 0);
  const entry = outputs.find(([file]) => file.endsWith('/index.js'));
  const largest = outputs
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .slice(0, 5)
    .map(([file, output]) => `${file.split('/').at(-1)} ${kilobytes(output.bytes)}`);
  return `entry ${kilobytes(entry?.[1].bytes ?? 0)}, ${outputs.length - 1} chunks, ${kilobytes(total)} in all; largest: ${largest.join(', ')}`;
}

async function main() {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const minify = process.argv.includes('--minify');
  const metafile = await bundleFunctions({ root, minify });
  console.log(`bundle: ${BUNDLE_ENTRY}${minify ? ' (minified)' : ''}: ${sizeReport(metafile)}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((error) => {
    console.error(`bundle: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
