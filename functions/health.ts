import { jsonResponse } from '../shared/http/problem.js';
import { ok, operatorOnly, type HttpRegistration } from './http.js';

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
];
