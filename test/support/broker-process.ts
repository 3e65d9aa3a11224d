import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { resolve } from 'node:path';

/*
 * The broker as `npm start` runs it: the compiled entry point (npm test builds it first) in
 * its own process, with only the settings a test gives it.
 */

const entry = resolve('dist/infra/local/start.js');
const running = new Set<ChildProcess>();

export interface BrokerProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * Starts the broker with the test's environment minus every BROKER_* setting and PORT. By
 * default NODE_EXTRA_CA_CERTS is dropped too, so the broker must trust what it starts by
 * itself; `trustTestCa` keeps it, for a broker that talks to the test's HTTPS fakes.
 */
export function startBrokerProcess(env: Record<string, string>, options: { trustTestCa?: boolean } = {}): BrokerProcess {
  const base: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || name.startsWith('BROKER_') || name === 'PORT') continue;
    if (name === 'NODE_EXTRA_CA_CERTS' && !options.trustTestCa) continue;
    base[name] = value;
  }
  const child = spawn(process.execPath, [entry], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((done) =>
    child.once('exit', (code) => {
      running.delete(child);
      done(code);
    }),
  );
  return { child, output: () => output, exited };
}

export async function waitForOutput(started: BrokerProcess, text: string): Promise<void> {
  const deadline = Date.now() + 45_000;
  while (!started.output().includes(text)) {
    if (started.child.exitCode !== null) throw new Error(`the broker exited early:\n${started.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for "${text}":\n${started.output()}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

export function killBrokerProcesses(): void {
  for (const child of running) child.kill('SIGKILL');
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}
