// Plain JavaScript on purpose: this must run, and explain itself, on any Node version.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(
    `Mail OAuth Broker needs Node 22.12 or newer, but this is Node ${process.versions.node} (${process.execPath}). ` +
      'Run "npm ci" without --ignore-scripts so the project installs its own Node 22, then use "npm start" / "npm test".',
  );
  process.exit(1);
}
