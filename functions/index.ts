import { app, type InvocationContext, type Timer } from '@azure/functions';
import { createServices, type Services } from '../shared/composition.js';
import { ConfigError, loadConfig } from '../shared/config.js';
import { ALL_METHODS, httpHandler } from './http.js';
import { registrations } from './registrations.js';

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
