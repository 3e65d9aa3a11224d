import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium, type Browser } from 'playwright-core';

/** Where screenshots go: kept after the run as test artifacts (git-ignored). */
export const ARTIFACTS_DIR = resolve('test-results');

/**
 * Debian's Chromium, headless, with the flags this machine needs: no sandbox as root, and
 * no background networking (it would only be refused here).
 */
export async function launchChromium(): Promise<{ browser: Browser; close(): Promise<void> }> {
  const executablePath = process.env.BROKER_TEST_CHROMIUM;
  if (!executablePath) throw new Error('BROKER_TEST_CHROMIUM is not set: run the suite with "npm test", which installs Chromium when missing.');
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  return {
    browser,
    // Playwright gives each launch a fresh temporary profile and removes it on close.
    close: () => browser.close(),
  };
}
