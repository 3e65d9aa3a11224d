import type { InvocationContext, Timer } from '@azure/functions';
import type { Services } from '../shared/composition.js';

/*
 * Telemetry first. ESM evaluates every static import before this module's body, so the
 * Azure Monitor distro is started here and the rest of the app is imported after it, with
 * dynamic imports. The broker's own spans and metrics (shared/telemetry.ts) go through the
 * OpenTelemetry API and only need the SDK in place before the first request; automatic
 * instrumentation of ESM-imported packages would also need the distro's loader
 * (`--import @azure/monitor-opentelemetry/loader`), which is not configured. Key-based
 * ingestion is disabled on the Application Insights resource, so the exporter signs in with
 * the app's managed identity. The Functions host keeps its own request and log telemetry
 * (host.json); the worker adds the broker's traces and metrics next to it. Without a
 * connection string (tests, the local host) nothing is loaded and the API stays a no-op.
 * The top-level awaits are safe for registration: the Node.js worker loads an ES module entry
 * with `await import()` (azure-functions-nodejs-worker, src/loadScriptFile.ts), so the
 * `app.http`/`app.timer` calls below still happen while the app is starting.
 * @see https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-enable?tabs=nodejs
 * @see https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication
 */
const connectionString = process.env.APPLICATIONINSIGHTS_CONNECTION_STRING;
if (connectionString) {
  const [{ useAzureMonitor }, { DefaultAzureCredential }] = await Promise.all([import('@azure/monitor-opentelemetry'), import('@azure/identity')]);
  useAzureMonitor({ azureMonitorExporterOptions: { connectionString, credential: new DefaultAzureCredential() } });
}

// `default` is the package's CommonJS exports object; its named exports exist only where Node's
// CommonJS lexer finds them (the tsc output), not in the esbuild bundle.
const [{ default: functionsLibrary }, { createServices }, { ConfigError, loadConfig }, { ALL_METHODS, httpHandler }, { registrations }] = await Promise.all([
  import('@azure/functions'),
  import('../shared/composition.js'),
  import('../shared/config.js'),
  import('./http.js'),
  import('./registrations.js'),
]);

/*
 * Entry point for the Azure Functions host (package.json "main"). Settings are checked
 * here, at load, so a bad one stops the app with one line instead of failing requests.
 */
function configOrExit() {
  try {
    return loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      throw new Error(error.message);
    }
    throw error;
  }
}

const { app } = functionsLibrary;
const config = configOrExit();
let services: Services | undefined;
const provider = () => (services ??= createServices(config));

for (const registration of registrations({ rotationSchedule: config.rotationSchedule })) {
  if (registration.kind === 'http') {
    app.http(registration.name, {
      route: registration.route,
      methods: ALL_METHODS,
      authLevel: 'anonymous',
      handler: httpHandler(registration, provider),
    });
  } else {
    app.timer(registration.name, {
      schedule: registration.schedule,
      handler: (timer: Timer, context: InvocationContext) => registration.run(provider(), context, timer),
    });
  }
}

// Queued audit events are written before the worker goes away.
app.hook.appTerminate(async () => {
  await services?.audit.close();
});
