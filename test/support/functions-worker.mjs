// Stands in for the Azure Functions Node.js worker around one function app, the way the real
// worker does it (github.com/Azure/azure-functions-nodejs-worker, src/setupCoreModule.ts and
// src/startApp.ts): it answers `require('@azure/functions-core')` by wrapping
// Module.prototype.require, imports the file package.json "main" names, then runs
// invocations through the programming model the app registered (getInvocationModel →
// getArguments → invokeFunction → getResponse), as the worker does for each RPC request.
//
// Usage: node functions-worker.mjs <app dir | entry .js file> [<invocations JSON>]
// Prints one line `WORKER_REPORT {...}`: the registered functions and hooks, the answers, and
// every module URL resolved after start-up, after the import and after the invocations; then
// one line `WORKER_ANSWERS [...]` with the answers alone.
// Plain JavaScript: it runs in a child process, outside vitest and TypeScript.
import Module, { registerHooks } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [app, invocationsJson = '[]'] = process.argv.slice(2);
if (!app) throw new Error('usage: functions-worker.mjs <app dir | entry .js file> [<invocations JSON>]');

const resolved = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    resolved.add(result.url);
    return result;
  },
});

const functions = new Map();
const hooks = [];
const logs = [];
let programmingModel;
const disposable = { dispose() {} };
const coreApi = {
  version: '4.0.0-test',
  hostVersion: '4.0.0-test',
  setProgrammingModel(model) {
    programmingModel = model;
  },
  getProgrammingModel() {
    return programmingModel;
  },
  registerFunction(metadata, callback) {
    if (functions.has(metadata.name)) throw new Error(`function ${metadata.name} registered twice`);
    functions.set(metadata.name, { metadata, callback });
    return disposable;
  },
  registerHook(name) {
    hooks.push(name);
    return disposable;
  },
  log(level, category, message) {
    logs.push(`${level} ${category} ${message}`);
  },
  Disposable: class {
    dispose() {}
  },
};
Module.prototype.require = new Proxy(Module.prototype.require, {
  apply(target, thisArg, args) {
    return args[0] === '@azure/functions-core' ? coreApi : Reflect.apply(target, thisArg, args);
  },
});

const snapshot = () => [...resolved];
const atStart = snapshot();
const entry = app.endsWith('.js') ? app : join(app, JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')).main);
const importStarted = performance.now();
await import(pathToFileURL(entry).href);
const importMs = performance.now() - importStarted;
const afterImport = snapshot();

async function invoke({ function: name, method, path, headers = {}, body }, index) {
  const registered = functions.get(name);
  if (!registered) throw new Error(`no function ${name}; registered: ${[...functions.keys()].join(', ')}`);
  const { metadata, callback } = registered;
  const [triggerName] = Object.entries(metadata.bindings).find(([, binding]) => binding.type === 'httpTrigger') ?? [];
  if (!triggerName) throw new Error(`${name} has no HTTP trigger`);
  const coreContext = {
    invocationId: `invocation-${index}`,
    metadata,
    request: {
      invocationId: `invocation-${index}`,
      functionId: name,
      triggerMetadata: {},
      inputData: [
        {
          name: triggerName,
          data: { http: { method, url: `http://localhost:7071${path}`, headers, query: {}, params: {}, ...(body === undefined ? {} : { body: { string: JSON.stringify(body) } }) } },
        },
      ],
    },
    state: undefined,
    log: (level, category, message) => logs.push(`${level} ${category} ${message}`),
  };
  const model = programmingModel.getInvocationModel(coreContext);
  const { context, inputs } = await model.getArguments();
  const result = await model.invokeFunction(context, inputs, callback);
  const response = await model.getResponse(context, result);
  const http = response.returnValue?.http;
  const bytes = http?.body?.bytes;
  // performance.now() counts from this process's start: the benchmarks read it as "start → answer".
  return { function: name, status: Number(http?.statusCode), body: bytes ? Buffer.from(bytes).toString('utf8') : (http?.body?.string ?? ''), answeredAtMs: performance.now() };
}

const answers = [];
for (const [index, invocation] of JSON.parse(invocationsJson).entries()) answers.push(await invoke(invocation, index));

console.log(
  `WORKER_REPORT ${JSON.stringify({
    importMs,
    functions: [...functions.values()].map(({ metadata }) => ({ name: metadata.name, bindings: metadata.bindings })),
    hooks,
    programmingModel: programmingModel ? { name: programmingModel.name, version: programmingModel.version } : null,
    answers,
    logs,
    loaded: { atStart, afterImport, afterInvocations: snapshot() },
  })}`,
);
// The answers alone, last, for callers that keep only the tail of the output (the benchmarks).
console.log(`WORKER_ANSWERS ${JSON.stringify(answers)}`);
// Queued audit writes and keep-alive sockets would hold the process open; the worker is done.
process.exit(0);
