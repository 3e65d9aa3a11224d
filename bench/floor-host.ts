import type { AddressInfo } from 'node:net';
import type { Services } from '../shared/composition.js';
import { createLocalHost } from '../infra/local/host.js';

/*
 * The second yardstick of bench:token: the local host itself (routing, the request object and
 * the invocation context it builds per call, the body read through that request with
 * `arrayBuffer()`, the answer written at the end of the event-loop turn) with a handler that
 * does nothing but answer the broker's own token response, passed in BENCH_BODY. What the
 * broker costs above this is the token path's own work; what this costs above the bare server
 * is the host's per-request price.
 */

const body = process.env.BENCH_BODY ?? '{}';
const headers = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-type': 'application/json' };

const server = createLocalHost({
  registrations: [
    {
      kind: 'http',
      name: 'token',
      route: 'token',
      methods: {
        POST: async ({ request }) => {
          await request.arrayBuffer();
          return { status: 200, headers, body };
        },
      },
    },
  ],
  // The handler above never touches the broker's services.
  services: () => ({}) as Services,
  log: () => undefined,
});
server.listen(0, '127.0.0.1', () => {
  console.log(`floor host listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
process.on('SIGINT', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
