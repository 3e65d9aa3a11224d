import { createTenantInput, listQuery, patchTenantInput } from '../shared/manage/inputs.js';
import { created, noContent, ok, operatorOnly, readJson, readQuery, type HttpRegistration } from './http.js';

export const manageTenants: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'manage-tenants',
    route: 'manage/tenants',
    methods: {
      POST: operatorOnly(async ({ request, services }) => created(await services.tenants.create(await readJson(request, createTenantInput)))),
      GET: operatorOnly(async ({ request, services }) => ok(await services.tenants.list(readQuery(request, listQuery)))),
    },
  },
  {
    kind: 'http',
    name: 'manage-tenant',
    route: 'manage/tenants/{id}',
    methods: {
      GET: operatorOnly(async ({ request, services }) => ok(await services.tenants.get(request.params.id))),
      PATCH: operatorOnly(async ({ request, services }) =>
        ok(await services.tenants.patch(request.params.id, await readJson(request, patchTenantInput))),
      ),
      DELETE: operatorOnly(async ({ request, services }) => {
        await services.tenants.delete(request.params.id);
        return noContent();
      }),
    },
  },
  {
    kind: 'http',
    name: 'manage-tenant-keys',
    route: 'manage/tenants/{id}/keys',
    methods: {
      // The key is in this answer and nowhere else, ever.
      POST: operatorOnly(async ({ request, services }) => created(await services.tenants.createKey(request.params.id))),
      GET: operatorOnly(async ({ request, services }) => ok(await services.tenants.listKeys(request.params.id, readQuery(request, listQuery)))),
    },
  },
  {
    kind: 'http',
    name: 'manage-tenant-key',
    route: 'manage/tenants/{id}/keys/{keyId}',
    methods: {
      DELETE: operatorOnly(async ({ request, services }) => {
        await services.tenants.revokeKey(request.params.id, request.params.keyId);
        return noContent();
      }),
    },
  },
];
