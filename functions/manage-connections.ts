import { connectionView } from '../shared/manage/connections.js';
import { createConnectionInput, listConnectionsQuery, patchConnectionInput } from '../shared/manage/inputs.js';
import { created, noContent, ok, operatorOnly, readJson, readQuery, type HttpRegistration } from './http.js';

export const manageConnections: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'manage-connections',
    route: 'manage/connections',
    methods: {
      POST: operatorOnly(async ({ request, services }) =>
        created(await services.connections.create(await readJson(request, createConnectionInput))),
      ),
      GET: operatorOnly(async ({ request, services }) => ok(await services.connections.list(readQuery(request, listConnectionsQuery)))),
    },
  },
  {
    kind: 'http',
    name: 'manage-connection-authorize-link',
    route: 'manage/connections/{id}/authorize-link',
    methods: {
      POST: operatorOnly(async ({ request, services }) =>
        created(await services.connect.createLink(await services.connections.get(request.params.id))),
      ),
    },
  },
  {
    kind: 'http',
    name: 'manage-connection-verify',
    route: 'manage/connections/{id}/verify',
    methods: {
      POST: operatorOnly(async ({ request, services }) => ok(await services.verifyConnection(await services.connections.get(request.params.id)))),
    },
  },
  {
    kind: 'http',
    name: 'manage-connection',
    route: 'manage/connections/{id}',
    methods: {
      GET: operatorOnly(async ({ request, services }) => ok(connectionView(await services.connections.get(request.params.id)))),
      PATCH: operatorOnly(async ({ request, services }) =>
        ok(await services.connections.patch(request.params.id, await readJson(request, patchConnectionInput))),
      ),
      DELETE: operatorOnly(async ({ request, services }) => {
        await services.connections.delete(request.params.id);
        return noContent();
      }),
    },
  },
];
