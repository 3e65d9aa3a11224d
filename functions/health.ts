import { BrokerError } from '../shared/errors.js';
import { jsonResponse } from '../shared/http/problem.js';
import { listQuery } from '../shared/manage/inputs.js';
import { ok, operatorOnly, readQuery, type HttpRegistration } from './http.js';

export const health: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'health',
    route: 'health',
    // Liveness only: no dependency is touched and nothing about them is said.
    methods: { GET: async () => ok({ status: 'ok' }) },
  },
  {
    kind: 'http',
    name: 'manage-health',
    route: 'manage/health',
    methods: {
      GET: operatorOnly(async ({ services }) => {
        const readiness = await services.readiness();
        return jsonResponse(readiness.ready ? 200 : 503, readiness);
      }),
    },
  },
  {
    kind: 'http',
    name: 'manage-runs',
    route: 'manage/runs',
    methods: {
      GET: operatorOnly(async ({ request, services }) => {
        const query = readQuery(request, listQuery);
        if (query.cursor !== undefined) {
          throw new BrokerError('INVALID_CURSOR', 'The runs list has one page: the latest runs, newest first.', { fields: [{ field: 'cursor', message: 'not supported here' }] });
        }
        return ok({ items: await services.sweep.latest(query.limit), next: null });
      }),
    },
  },
];
