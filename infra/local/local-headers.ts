/** What Node's parser hands over: `IncomingMessage.headers`. */
export type ParsedHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/** Whitespace fetch strips from both ends of a header value (HTTP tab or space, CR, LF). */
function trimmed(value: string): boolean {
  if (value.length === 0) return true;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(value.length - 1);
  return first !== 0x20 && first !== 0x09 && first !== 0x0a && first !== 0x0d && last !== 0x20 && last !== 0x09 && last !== 0x0a && last !== 0x0d;
}

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

function ascii(name: string): boolean {
  for (let index = 0; index < name.length; index += 1) if (name.charCodeAt(index) > 0x7f) return false;
  return true;
}

/** `Headers` with its members declared as methods: the global's typing has them as properties, which a subclass cannot override. */
interface HeadersMethods {
  get(name: string): string | null;
  has(name: string): boolean;
  set(name: string, value: string): void;
  append(name: string, value: string): void;
  delete(name: string): void;
  getSetCookie(): string[];
  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void;
  keys(): ReturnType<Headers['keys']>;
  values(): ReturnType<Headers['values']>;
  entries(): ReturnType<Headers['entries']>;
  [Symbol.iterator](): ReturnType<Headers['entries']>;
}
const FetchHeaders = Headers as unknown as new () => HeadersMethods;

/*
 * A request's headers as fetch's `Headers`, filled on first need. `new Headers(record)`
 * validates and copies every header (about 1.5 µs for a token request's five, more than the
 * rest of the host's work on it) while a handler reads two or three by name. `get` answers
 * those from the parsed record; every other member, and any name `get` cannot answer
 * exactly from the record, fills the real `Headers` first and goes through it.
 *
 * The record must be what Node's HTTP parser produces (`IncomingMessage.headers`): lower-case
 * token names and values without NUL, CR or LF, which is everything `Headers` would refuse.
 * A repeated header Node keeps as an array (`set-cookie`) counts as its values joined with
 * ", ". test/infra/local-headers.test.ts holds it to `new Headers(record)` of that record.
 */
export class LocalHeaders extends FetchHeaders implements Headers {
  #parsed: ParsedHeaders | null;

  constructor(parsed: ParsedHeaders) {
    super();
    this.#parsed = parsed;
  }

  override get(name: string): string | null {
    const parsed = this.#parsed;
    if (parsed !== null && typeof name === 'string') {
      // The record's keys are lower case, as handlers mostly ask: those need no lower-casing.
      // fetch lower-cases ASCII only (the Kelvin sign is not a "k" to it); a value with
      // whitespace at its ends, a name not in the record or one `new Headers(record)` drops
      // is left to `Headers` itself.
      const key = Object.hasOwn(parsed, name) ? name : name.toLowerCase();
      if (key !== '__proto__' && Object.hasOwn(parsed, key) && (key === name || ascii(name))) {
        const value = parsed[key];
        if (typeof value === 'string' && trimmed(value)) return value;
      }
    }
    this.#fill();
    return super.get(name);
  }

  override has(name: string): boolean {
    this.#fill();
    return super.has(name);
  }
  override set(name: string, value: string): void {
    this.#fill();
    super.set(name, value);
  }
  override append(name: string, value: string): void {
    this.#fill();
    super.append(name, value);
  }
  override delete(name: string): void {
    this.#fill();
    super.delete(name);
  }
  override getSetCookie(): string[] {
    this.#fill();
    return super.getSetCookie();
  }
  override forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    this.#fill();
    super.forEach(callback, thisArg);
  }
  override keys(): ReturnType<Headers['keys']> {
    this.#fill();
    return super.keys();
  }
  override values(): ReturnType<Headers['values']> {
    this.#fill();
    return super.values();
  }
  override entries(): ReturnType<Headers['entries']> {
    this.#fill();
    return super.entries();
  }
  override [Symbol.iterator](): ReturnType<Headers['entries']> {
    this.#fill();
    return super.entries();
  }
  /** What `console.log` and `util.inspect` show: the headers, not an empty list. */
  [INSPECT](...args: unknown[]): unknown {
    this.#fill();
    return (Headers.prototype as unknown as Record<symbol, (...rest: unknown[]) => unknown>)[INSPECT]!.apply(this, args);
  }

  #fill(): void {
    const parsed = this.#parsed;
    if (parsed === null) return;
    this.#parsed = null;
    // In the record's order, as `new Headers(record)` adds them (and without "__proto__",
    // which it drops: it copies the record into a plain object first).
    for (const name of Object.keys(parsed)) {
      const value = parsed[name];
      if (name !== '__proto__' && value !== undefined) super.append(name, typeof value === 'string' ? value : value.join(', '));
    }
  }
}
