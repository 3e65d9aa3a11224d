import { BrokerError } from '../shared/errors.js';
import { ALL_METHODS, type Endpoint, type HttpRegistration } from './http.js';

const unknownPath: Endpoint = async ({ request }) => {
  throw new BrokerError('NOT_FOUND', `There is nothing at ${new URL(request.url).pathname}.`);
};

/** The host matches literal routes first, so this only sees paths no other function claims. */
export const notFound: HttpRegistration = {
  kind: 'http',
  name: 'not-found',
  route: '{*path}',
  methods: Object.fromEntries(ALL_METHODS.map((method) => [method, unknownPath])),
};
