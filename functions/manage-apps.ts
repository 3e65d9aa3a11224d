import { createAppInput, listQuery, patchAppInput } from '../shared/manage/inputs.js';
import { created, noContent, ok, operatorOnly, readJson, readQuery, type HttpRegistration } from './http.js';

export const manageApps: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'manage-apps',
    route: 'manage/apps',
    methods: {
      POST: operatorOnly(async ({ request, services }) => created(await services.apps.create(await readJson(request, createAppInput)))),
      GET: operatorOnly(async ({ request, services }) => ok(await services.apps.list(readQuery(request, listQuery)))),
    },
  },
  {
    kind: 'http',
    name: 'manage-app',
    route: 'manage/apps/{id}',
    methods: {
      GET: operatorOnly(async ({ request, services }) => ok(services.apps.view(await services.apps.get(request.params.id)))),
      PATCH: operatorOnly(async ({ request, services }) =>
        ok(await services.apps.patch(request.params.id, await readJson(request, patchAppInput))),
      ),
      DELETE: operatorOnly(async ({ request, services }) => {
        await services.apps.delete(request.params.id);
        return noContent();
      }),
    },
  },
];
