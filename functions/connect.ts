import type { PlainResponse } from '../shared/http/problem.js';
import { renderSuccessPage } from '../shared/http/result-pages.js';
import type { HttpRegistration } from './http.js';

function redirect(location: string): PlainResponse {
  return { status: 302, headers: { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' }, body: '' };
}

export const connect: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'connect',
    route: 'connect/{linkId}',
    errors: 'page',
    methods: {
      GET: async ({ request, services }) => redirect(await services.connect.openLink(request.params.linkId)),
    },
  },
  {
    kind: 'http',
    name: 'oauth-callback',
    route: 'oauth/callback',
    errors: 'page',
    methods: {
      GET: async ({ request, services }) => {
        const query = request.query;
        const connected = await services.connect.callback({
          state: query.get('state') ?? undefined,
          code: query.get('code') ?? undefined,
          error: query.get('error') ?? undefined,
          error_description: query.get('error_description') ?? undefined,
          error_subcode: query.get('error_subcode') ?? undefined,
          admin_consent: query.get('admin_consent') ?? undefined,
          tenant: query.get('tenant') ?? undefined,
        });
        return renderSuccessPage(connected);
      },
    },
  },
];
