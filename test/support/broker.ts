import { registrations } from '../../functions/registrations.js';
import { createServices, type ServiceOverrides, type Services } from '../../shared/composition.js';
import { loadConfig } from '../../shared/config.js';
import { freePort } from '../../infra/local/free-port.js';
import { createLocalHost } from '../../infra/local/host.js';

export const OPERATOR_KEY = 'test-operator-key-0123456789abcdef0123456789';

export interface TestBroker {
  baseUrl: string;
  services: Services;
  /** fetch against the broker with the operator key unless `authorization` is given. */
  call(method: string, path: string, options?: { body?: unknown; rawBody?: string; headers?: Record<string, string>; operator?: boolean }): Promise<Response>;
  close(): Promise<void>;
}

/** The real broker (local host, real services) on a free port, against the given storage. */
export async function startTestBroker(options: {
  tablesConnection: string;
  env?: Record<string, string>;
  overrides?: ServiceOverrides;
  /** Receives every line the local host logs for the functions (their InvocationContext). */
  hostLog?: (line: string) => void;
  runSchedules?: boolean;
}): Promise<TestBroker> {
  // The port is chosen first so the public URL, and with it the redirect URI, is known up front.
  const port = await freePort();
  const config = loadConfig({
    BROKER_PUBLIC_URL: `http://localhost:${port}`,
    BROKER_OPERATOR_KEY: OPERATOR_KEY,
    BROKER_TABLES_CONNECTION: options.tablesConnection,
    BROKER_SANDBOX: 'false',
    ...options.env,
  });
  const services = createServices(config, options.overrides);
  const server = createLocalHost({
    registrations: registrations({ rotationSchedule: config.rotationSchedule }),
    services: () => services,
    log: options.hostLog ?? (() => undefined),
    runSchedules: options.runSchedules ?? false,
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const baseUrl = `http://localhost:${port}`;
  return {
    baseUrl,
    services,
    call(method, path, callOptions = {}) {
      const headers: Record<string, string> = { ...callOptions.headers };
      if (callOptions.operator !== false && !('authorization' in headers)) headers.authorization = `Bearer ${OPERATOR_KEY}`;
      let body: string | undefined = callOptions.rawBody;
      if (callOptions.body !== undefined) {
        body = JSON.stringify(callOptions.body);
        headers['content-type'] ??= 'application/json';
      }
      return fetch(`${baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    },
    close: async () => {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await services.audit.close();
    },
  };
}
