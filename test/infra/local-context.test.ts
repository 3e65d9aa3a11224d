import functionsLibrary, { input, output, type InvocationContext, type LogLevel } from '@azure/functions';
import { describe, expect, it } from 'vitest';
import { LocalInvocationContext } from '../../infra/local/local-context.js';

/*
 * The local host hands handlers its own invocation context. What a handler can see and do
 * with it must match the library's, built as the host builds it (a name, a log handler).
 */

const { InvocationContext: FunctionsInvocationContext } = functionsLibrary;

type Logged = { level: LogLevel; args: unknown[]; self: unknown };

function pair(functionName: string) {
  const logs = { ours: [] as Logged[], theirs: [] as Logged[] };
  const handler = (into: Logged[]) =>
    function (this: unknown, level: LogLevel, ...args: unknown[]) {
      into.push({ level, args, self: this });
    };
  const ours = new LocalInvocationContext({ functionName, logHandler: handler(logs.ours) });
  const theirs = new FunctionsInvocationContext({ functionName, invocationId: 'from-the-host', logHandler: handler(logs.theirs) });
  return { ours, theirs, logs };
}

const visible = (context: InvocationContext) => ({
  functionName: context.functionName,
  options: context.options,
  retryContext: context.retryContext,
  traceContext: context.traceContext,
  triggerMetadata: context.triggerMetadata,
});

describe('the local host\'s invocation context', () => {
  it('shows what the library\'s context shows', () => {
    for (const name of ['token', '']) {
      const { ours, theirs } = pair(name);
      expect(visible(ours)).toEqual(visible(theirs));
    }
  });

  it('has one invocation id per call, a UUID that stays put', () => {
    const { ours } = pair('token');
    expect(ours.invocationId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(ours.invocationId).toBe(ours.invocationId);
    expect(pair('token').ours.invocationId).not.toBe(ours.invocationId);
    ours.invocationId = 'set-by-hand';
    expect(ours.invocationId).toBe('set-by-hand');
  });

  it('logs through the handler with the library\'s levels, arguments and receiver', () => {
    const { ours, theirs, logs } = pair('token');
    const error = new Error('boom');
    for (const context of [ours, theirs]) {
      context.log('a', 1);
      context.trace('b');
      context.debug('c', { d: 2 });
      context.info();
      context.warn('e', error);
      context.error('f', error);
    }
    expect(logs.ours.map(({ level, args }) => ({ level, args }))).toEqual(logs.theirs.map(({ level, args }) => ({ level, args })));
    expect(logs.ours.every((entry) => entry.self === ours)).toBe(true);
    expect(logs.theirs.every((entry) => entry.self === theirs)).toBe(true);
  });

  it('keeps extra inputs and outputs by name or by binding, each context its own', () => {
    const blob = input.storageBlob({ path: 'x/y', connection: 'Storage' });
    const queue = output.storageQueue({ queueName: 'q', connection: 'Storage' });
    const { ours, theirs } = pair('token');
    const other = pair('token').ours;
    for (const context of [ours, theirs]) {
      context.extraInputs.set(blob, 'in');
      context.extraInputs.set('named', 1);
      context.extraOutputs.set(queue, ['out']);
    }
    for (const read of [
      (context: InvocationContext) => context.extraInputs.get(blob),
      (context: InvocationContext) => context.extraInputs.get(blob.name),
      (context: InvocationContext) => context.extraInputs.get('named'),
      (context: InvocationContext) => context.extraOutputs.get(queue),
      (context: InvocationContext) => context.extraOutputs.get('missing'),
      (context: InvocationContext) => context.extraOutputs.get('named'),
    ]) {
      expect(read(ours)).toEqual(read(theirs));
      expect(read(other)).toBeUndefined();
    }
  });

  it('lets a handler replace what it may replace', () => {
    const { ours, theirs } = pair('token');
    for (const context of [ours, theirs]) {
      context.functionName = 'renamed';
      context.options = { ...context.options, trigger: { name: 'request', type: 'httpTrigger' } };
      context.traceContext = { traceParent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
    }
    expect(visible(ours)).toEqual(visible(theirs));
  });
});
