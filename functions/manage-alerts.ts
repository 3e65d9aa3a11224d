import { listAlertsQuery } from '../shared/alerts/alert-store.js';
import { ok, operatorOnly, readQuery, type HttpRegistration } from './http.js';

export const manageAlerts: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'manage-alerts',
    route: 'manage/alerts',
    methods: {
      // What was raised, what went out, and what is still waiting (say, while the alert sender's own grant is gone).
      GET: operatorOnly(async ({ request, services }) => ok(await services.alerts.list(readQuery(request, listAlertsQuery)))),
    },
  },
];
