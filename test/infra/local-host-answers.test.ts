import { request as httpRequest, Agent } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Services } from '../../shared/composition.js';
import type { PlainResponse } from '../../shared/http/problem.js';
import { createLocalHost } from '../../infra/local/host.js';

/*
 * The local host writes the answers that settle within one event-loop turn together at its
 * end. Every caller must still get its own answer, whole, also when many settle at once and
 * when some of their clients have already gone.
 */

let release: () => void = () => undefined;
const released = () => new Promise<void>((resolve) => (release = resolve));
let gate = released();

const host = createLocalHost({
  registrations: [
    {
      kind: 'http',
      name: 'echo',
      route: 'echo/{id}',
      methods: {
        POST: async ({ request }): Promise<PlainResponse> => {
          const body = await request.text();
          if (request.query.get('wait') === '1') await gate;
          if (request.query.get('status')) return { status: Number(request.query.get('status')), headers: {}, body: 'bad' };
          return { status: 200, headers: { 'content-type': 'text/plain', 'x-id': request.params.id! }, body: `${request.params.id}:${body}` };
        },
      },
    },
  ],
  services: () => ({}) as Services,
  log: () => undefined,
});

let base = '';
const listening = new Promise<void>((resolve) =>
  host.listen(0, '127.0.0.1', () => {
    base = `http://127.0.0.1:${(host.address() as AddressInfo).port}`;
    resolve();
  }),
);

afterEach(() => release());
afterAll(async () => {
  host.closeAllConnections();
  await new Promise((resolve) => host.close(resolve));
});

function post(agent: Agent, path: string, body: string): { answer: Promise<{ status: number; id: string | undefined; text: string }>; abort: () => void } {
  const outgoing = httpRequest(`${base}${path}`, { method: 'POST', agent, headers: { 'content-type': 'text/plain' } });
  const answer = new Promise<{ status: number; id: string | undefined; text: string }>((resolve, reject) => {
    outgoing.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, id: response.headers['x-id'] as string | undefined, text }));
    });
    outgoing.on('error', reject);
  });
  outgoing.end(body);
  return { answer, abort: () => outgoing.destroy() };
}

describe('the local host\'s answers', () => {
  it('reach each caller whole and its own when hundreds settle in the same turn', async () => {
    await listening;
    const agent = new Agent({ keepAlive: true, maxSockets: 64 });
    gate = released();
    const calls = Array.from({ length: 400 }, (_, index) => post(agent, `/api/echo/c${index}?wait=1`, 'x'.repeat(index * 37)));
    // Let all of them arrive and wait at the gate, then settle them at once.
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    const answers = await Promise.all(calls.map((call) => call.answer));
    answers.forEach((answer, index) => {
      expect(answer).toEqual({ status: 200, id: `c${index}`, text: `c${index}:${'x'.repeat(index * 37)}` });
    });
    agent.destroy();
  });

  it('answers a handler\'s impossible status with a 500 problem, as before it was written at the turn\'s end', async () => {
    await listening;
    const agent = new Agent({ keepAlive: false });
    for (const status of ['1000', '99', '200.5']) {
      const answer = await post(agent, `/api/echo/s?status=${status}`, '').answer;
      expect(answer.status, status).toBe(500);
      expect(JSON.parse(answer.text)).toMatchObject({ code: 'INTERNAL', status: 500 });
    }
    expect(await post(agent, '/api/echo/ok?status=201', '').answer).toMatchObject({ status: 201, text: 'bad' });
  });

  it('answers everyone else when some clients left before their answers were written', async () => {
    await listening;
    const agent = new Agent({ keepAlive: false });
    gate = released();
    const calls = Array.from({ length: 40 }, (_, index) => post(agent, `/api/echo/g${index}?wait=1`, String(index)));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const leaving = calls.filter((_, index) => index % 3 === 0);
    for (const call of leaving) {
      call.abort();
      call.answer.catch(() => undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    const staying = calls.filter((_, index) => index % 3 !== 0);
    const answers = await Promise.all(staying.map((call) => call.answer));
    for (const answer of answers) expect(answer.text).toBe(`${answer.id}:${answer.id!.slice(1)}`);
    expect(answers).toHaveLength(26);
    // The host is still serving.
    expect(await post(agent, '/api/echo/after', 'ok').answer).toMatchObject({ status: 200, text: 'after:ok' });
  });
});
