import { randomUUID } from 'node:crypto';
import type {
  EffectiveFunctionOptions,
  FunctionInput,
  FunctionOutput,
  InvocationContext,
  InvocationContextExtraInputs,
  InvocationContextExtraOutputs,
  LogHandler,
  RetryContext,
  TraceContext,
  TriggerMetadata,
} from '@azure/functions';

export interface LocalContextInit {
  functionName: string;
  logHandler: LogHandler;
}

/** The library's extra inputs and outputs: values by binding name (or a binding's `name`). */
class NamedValues implements InvocationContextExtraInputs, InvocationContextExtraOutputs {
  readonly #values: Record<string, unknown> = {};
  get(binding: FunctionInput | FunctionOutput | string): unknown {
    return this.#values[typeof binding === 'string' ? binding : binding.name];
  }
  set(binding: FunctionInput | FunctionOutput | string, value: unknown): void {
    this.#values[typeof binding === 'string' ? binding : binding.name] = value;
  }
}

const UNKNOWN = 'unknown';

/*
 * The invocation context the local host hands to HTTP handlers: the members and behaviour of
 * the `@azure/functions` InvocationContext as the host builds it (a function name, a fresh
 * invocation id, a log handler; no trace, retry or trigger metadata), with what handlers
 * rarely touch built on first use. The library's constructor registers three objects in
 * WeakMaps and draws a UUID on every call, about 1.5 µs: more than the token path's own
 * answer. test/infra/local-context.test.ts holds it to the library's class.
 */
export class LocalInvocationContext implements InvocationContext {
  functionName: string;
  retryContext?: RetryContext;
  traceContext?: TraceContext;
  triggerMetadata?: TriggerMetadata;
  readonly #logHandler: LogHandler;
  #invocationId: string | undefined;
  #extraInputs: InvocationContextExtraInputs | undefined;
  #extraOutputs: InvocationContextExtraOutputs | undefined;
  #options: EffectiveFunctionOptions | undefined;

  constructor(init: LocalContextInit) {
    this.functionName = init.functionName || UNKNOWN;
    this.#logHandler = init.logHandler;
  }

  get invocationId(): string {
    this.#invocationId ??= randomUUID();
    return this.#invocationId;
  }
  set invocationId(value: string) {
    this.#invocationId = value;
  }

  get extraInputs(): InvocationContextExtraInputs {
    this.#extraInputs ??= new NamedValues();
    return this.#extraInputs;
  }
  set extraInputs(value: InvocationContextExtraInputs) {
    this.#extraInputs = value;
  }

  get extraOutputs(): InvocationContextExtraOutputs {
    this.#extraOutputs ??= new NamedValues();
    return this.#extraOutputs;
  }
  set extraOutputs(value: InvocationContextExtraOutputs) {
    this.#extraOutputs = value;
  }

  get options(): EffectiveFunctionOptions {
    this.#options ??= { trigger: { name: UNKNOWN, type: UNKNOWN }, return: undefined, extraInputs: [], extraOutputs: [] };
    return this.#options;
  }
  set options(value: EffectiveFunctionOptions) {
    this.#options = value;
  }

  log(...args: unknown[]): void {
    this.#logHandler.call(this, 'information', ...args);
  }
  trace(...args: unknown[]): void {
    this.#logHandler.call(this, 'trace', ...args);
  }
  debug(...args: unknown[]): void {
    this.#logHandler.call(this, 'debug', ...args);
  }
  info(...args: unknown[]): void {
    this.#logHandler.call(this, 'information', ...args);
  }
  warn(...args: unknown[]): void {
    this.#logHandler.call(this, 'warning', ...args);
  }
  error(...args: unknown[]): void {
    this.#logHandler.call(this, 'error', ...args);
  }
}
