/**
 * `node dist/infra/local/tls-cli.js ensure <dir>`: creates (or reuses) the local certificate
 * authority in <dir> and prints the path of its certificate, for shell scripts and
 * scripts/test.mjs to put into NODE_EXTRA_CA_CERTS before starting Node processes.
 */
import { ensureCertificateAuthority } from './tls.js';

const usage = 'usage: tls-cli ensure <dir>';

async function main(args: readonly string[]): Promise<number> {
  const [command, dir, ...rest] = args;
  if (command !== 'ensure' || dir === undefined || dir === '' || rest.length > 0) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const ca = await ensureCertificateAuthority(dir);
  // stdout carries only the path, so callers can capture it verbatim.
  process.stdout.write(`${ca.caCertPath}\n`);
  if (ca.created) process.stderr.write(`Created local certificate authority ${ca.fingerprint256} in ${ca.dir}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`tls-cli: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
