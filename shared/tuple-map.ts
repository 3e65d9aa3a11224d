type Part = string | number | boolean | null;
type Node = Map<Part, unknown>;

/**
 * A map keyed by a tuple of primitives, kept as nested Maps. For lookups on the token path
 * whose parts are the same string objects on every call (ids from cached rows, literals):
 * V8 keeps a string's hash on the string, so those parts hash nothing new, where one key
 * joined from them is a new string to build and hash on every call (about 0.6 µs for the
 * audit count's seven parts). Tuples of one map must all have the same length.
 */
export class TupleMap<K extends readonly Part[], V> {
  readonly #root: Node = new Map();
  #size = 0;
  #levels = 0;

  get size(): number {
    return this.#size;
  }

  /** Inner maps held below the root: what `delete` keeps from outgrowing the entries. */
  get levels(): number {
    return this.#levels;
  }

  get(key: K): V | undefined {
    let node: unknown = this.#root;
    for (let index = 0; index < key.length; index += 1) {
      node = (node as Node).get(key[index]!);
      if (node === undefined) return undefined;
    }
    return node as V;
  }

  set(key: K, value: V): void {
    let node = this.#root;
    const last = key.length - 1;
    for (let index = 0; index < last; index += 1) {
      let next = node.get(key[index]!) as Node | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(key[index]!, next);
        this.#levels += 1;
      }
      node = next;
    }
    if (!node.has(key[last]!)) this.#size += 1;
    node.set(key[last]!, value);
  }

  /** Removes the entry and every level it leaves empty, so forgotten keys hold no memory. */
  delete(key: K): boolean {
    const path: Node[] = [this.#root];
    for (let index = 0; index < key.length - 1; index += 1) {
      const next = path[index]!.get(key[index]!) as Node | undefined;
      if (next === undefined) return false;
      path.push(next);
    }
    if (!path[key.length - 1]!.delete(key[key.length - 1]!)) return false;
    this.#size -= 1;
    for (let index = key.length - 1; index > 0 && path[index]!.size === 0; index -= 1) {
      path[index - 1]!.delete(key[index - 1]!);
      this.#levels -= 1;
    }
    return true;
  }
}
