import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/*
 * The yardstick of bench:token: a bare node:http server answering every request with one
 * fixed JSON body (the broker's own token response, passed in BENCH_BODY), after reading the
 * request body as any POST handler must. Nothing else: no routing, no storage, no parsing.
 */

const body = Buffer.from(process.env.BENCH_BODY ?? '{}', 'utf8');
const headers = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length), 'cache-control': 'no-store' };

const server = createServer((request, response) => {
  request.resume();
  request.once('end', () => {
    response.writeHead(200, headers);
    response.end(body);
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(`bare server listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
process.on('SIGINT', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
