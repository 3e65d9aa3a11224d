import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TupleMap } from '../../shared/tuple-map.js';

type Key = [string | null, number, string];

describe('TupleMap', () => {
  it('behaves as a Map keyed by the whole tuple, and holds no levels for deleted keys', () => {
    const key = fc.tuple(fc.constantFrom<string | null>('a', 'b', null, ''), fc.integer({ min: 0, max: 3 }), fc.constantFrom('x', 'y', 'z'));
    const operation = fc.oneof(
      fc.tuple(fc.constant('set' as const), key, fc.integer()),
      fc.tuple(fc.constant('delete' as const), key, fc.constant(0)),
      fc.tuple(fc.constant('get' as const), key, fc.constant(0)),
    );
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 60 }), (operations) => {
        const ours = new TupleMap<Key, number>();
        const model = new Map<string, number>();
        for (const [kind, parts, value] of operations) {
          const id = JSON.stringify(parts);
          if (kind === 'set') {
            ours.set(parts, value);
            model.set(id, value);
          } else if (kind === 'delete') {
            expect(ours.delete(parts)).toBe(model.delete(id));
          }
          expect(ours.get(parts)).toBe(model.get(id));
          expect(ours.size).toBe(model.size);
        }
        for (const id of [...model.keys()]) {
          expect(ours.delete(JSON.parse(id) as Key)).toBe(true);
        }
        expect(ours.size).toBe(0);
        expect(ours.levels).toBe(0);
      }),
      { numRuns: 500 },
    );
  });

  it('keeps an inner level only while a key below it lives', () => {
    const map = new TupleMap<Key, number>();
    map.set(['a', 1, 'x'], 1);
    map.set(['a', 1, 'y'], 2);
    map.set(['a', 2, 'x'], 3);
    expect(map.levels).toBe(3);
    map.delete(['a', 1, 'x']);
    expect(map.levels).toBe(3);
    map.delete(['a', 1, 'y']);
    expect(map.levels).toBe(2);
    expect(map.delete(['a', 1, 'y'])).toBe(false);
    map.delete(['a', 2, 'x']);
    expect(map.levels).toBe(0);
  });
});
