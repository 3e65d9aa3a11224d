import { describe, expect, it } from 'vitest';
import { BrokerError } from '../../../shared/errors.js';
import { problemResponse } from '../../../shared/http/problem.js';

const ignore = () => undefined;

describe('problemResponse', () => {
  it('tells every 503 when to come back: its own wait when it has one, else 5 s', () => {
    expect(problemResponse(new BrokerError('SECRET_STORE_UNAVAILABLE', 'the vault did not answer'), '/api/token', ignore).headers['retry-after']).toBe('5');
    expect(problemResponse(new BrokerError('STORAGE_UNAVAILABLE', 'down', { retryAfterSeconds: 12.2 }), '/api/token', ignore).headers['retry-after']).toBe('13');
    expect(problemResponse(new BrokerError('INVALID_REQUEST', 'bad'), '/api/token', ignore).headers).not.toHaveProperty('retry-after');
  });
});
