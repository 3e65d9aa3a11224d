import { inspect } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LocalHeaders } from '../../infra/local/local-headers.js';

/*
 * The local host's headers answer `get` from Node's parsed record until anything else is
 * asked of them. Whatever a handler does, it must see what `new Headers(record)` shows.
 */

type Outcome = { value: unknown } | { threw: string };

function attempt(operation: () => unknown): Outcome {
  try {
    return { value: operation() };
  } catch (error) {
    return { threw: error instanceof Error ? error.constructor.name : typeof error };
  }
}

const tokenChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&*+^`|~'.split(''));
const headerName = fc.oneof(fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 }), fc.constantFrom('set-cookie', 'constructor', '__proto__', 'content-type', 'k'));
// What Node's parser lets through: visible ASCII, spaces and tabs (also at the ends), bytes 0x80–0xff as latin1.
const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((code) => code !== 0x7f).map((code) => String.fromCharCode(code)), maxLength: 20 });
const valueWithTabs = fc.tuple(fc.constantFrom('', ' ', '\t'), headerValue, fc.constantFrom('', ' ', '\t')).map(([before, value, after]) => `${before}${value}${after}`);
// Node keeps a repeated set-cookie as an array; the host's request shows it joined.
const parsedValue = fc.oneof({ weight: 4, arbitrary: valueWithTabs }, fc.array(headerValue, { minLength: 1, maxLength: 3 }));
const record = fc.dictionary(headerName, parsedValue, { maxKeys: 6 }).map((entries) => Object.assign(Object.create(null) as Record<string, string | string[]>, entries));

/** What `new Headers` is given for the same headers: each array joined. */
function joined(headers: Record<string, string | string[]>): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
  for (const [name, value] of Object.entries(headers)) out[name] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

/** Names a handler might ask for: present ones in any case, absent ones, ones fetch refuses, non-ASCII look-alikes. */
function nameFor(headers: Record<string, string | string[]>) {
  const present = Object.keys(headers);
  return fc.oneof(
    present.length > 0 ? fc.constantFrom(...present) : fc.constant('absent'),
    present.length > 0 ? fc.constantFrom(...present).map((name) => name.toUpperCase()) : fc.constant('ABSENT'),
    // "K" (U+212A) lower-cases to "k" in JavaScript, never in fetch.
    present.length > 0 ? fc.constantFrom(...present).map((name) => name.replace(/k/g, '\u212a')) : fc.constant('\u212a'),
    fc.string({ maxLength: 8 }),
    fc.constantFrom('constructor', '__proto__', 'toString', 'has Space', '', 'ä'),
  );
}

type Operation = (headers: Headers) => unknown;

function operation(headers: Record<string, string | string[]>): fc.Arbitrary<Operation> {
  const name = nameFor(headers);
  return fc.oneof(
    { weight: 4, arbitrary: name.map((n): Operation => (target) => target.get(n)) },
    name.map((n): Operation => (target) => target.has(n)),
    fc.tuple(name, headerValue).map(([n, v]): Operation => (target) => target.set(n, v)),
    fc.tuple(name, headerValue).map(([n, v]): Operation => (target) => target.append(n, v)),
    name.map((n): Operation => (target) => target.delete(n)),
    fc.constant<Operation>((target) => target.getSetCookie()),
    fc.constant<Operation>((target) => [...target]),
    fc.constant<Operation>((target) => [...target.keys()]),
    fc.constant<Operation>((target) => [...target.values()]),
    fc.constant<Operation>((target) => [...target.entries()]),
    fc.constant<Operation>((target) => {
      const seen: string[][] = [];
      target.forEach((value, key, parent) => seen.push([key, value, String(parent === target)]));
      return seen;
    }),
    fc.constant<Operation>((target) => [...new Headers(target)]),
    fc.constant<Operation>((target) => [...new Request('http://localhost/', { headers: target }).headers]),
    fc.constant<Operation>((target) => Object.fromEntries(target)),
    fc.constant<Operation>((target) => inspect(target)),
  );
}

describe('the local host\'s headers', () => {
  it('show handlers what new Headers(record) shows, whatever they ask in whatever order', () => {
    fc.assert(
      fc.property(
        record.chain((headers) => fc.tuple(fc.constant(headers), fc.array(operation(headers), { minLength: 1, maxLength: 8 }))),
        ([headers, operations]) => {
          const ours = new LocalHeaders(headers);
          const theirs = new Headers(joined(headers));
          for (const run of operations) expect(attempt(() => run(ours))).toEqual(attempt(() => run(theirs)));
          expect([...ours]).toEqual([...theirs]);
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('answers the names fetch would refuse or not find the way fetch does, record or not', () => {
    const parsed = Object.assign(Object.create(null) as Record<string, string | string[]>, { k: 'kelvin', kind: 'x', ['__proto__']: 'p', padded: ' v\t', constructor: 'c', 'set-cookie': ['a=1', 'b=2'] });
    const names = ['\u212a', '\u212aind', 'KIND', '__proto__', 'padded', 'constructor', 'toString', 'bad name', '', 'ä', 'Set-Cookie'];
    for (const name of names) expect(attempt(() => new LocalHeaders(parsed).get(name)), name).toEqual(attempt(() => new Headers(joined(parsed)).get(name)));
    expect(attempt(() => new LocalHeaders(parsed).get('\u212a'))).toEqual({ threw: 'TypeError' });
  });

  it('is a Headers to anyone who checks', () => {
    const headers = new LocalHeaders(Object.assign(Object.create(null) as Record<string, string>, { 'content-type': 'application/json' }));
    expect(headers).toBeInstanceOf(Headers);
    expect(Object.prototype.toString.call(headers)).toBe('[object Headers]');
    expect(inspect(headers)).toBe(inspect(new Headers({ 'content-type': 'application/json' })));
  });
});
