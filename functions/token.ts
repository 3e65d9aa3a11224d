import { jsonTextResponse } from '../shared/http/problem.js';
import { tokenRequestInput } from '../shared/tokens/inputs.js';
import { readJson, type HttpRegistration } from './http.js';

export const token: HttpRegistration[] = [
  {
    kind: 'http',
    name: 'token',
    route: 'token',
    methods: {
      POST: async ({ request, services }) => {
        // The key first: an unauthenticated caller learns nothing, not even about its body.
        const principal = await services.tenants.authenticate(request.headers.get('authorization'));
        const input = await readJson(request, tokenRequestInput);
        return jsonTextResponse(200, await services.tokens.issueFor(principal, input.connection));
      },
    },
  },
];
