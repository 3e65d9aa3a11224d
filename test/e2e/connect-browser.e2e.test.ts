import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS_DIR, launchChromium } from '../support/browser.js';
import { connectionWithLink, CUSTOMER_TENANT, startConnectFixture, type ConnectFixture } from '../support/connect-fixture.js';

/*
 * What a customer admin sees, in real headless Chromium: the broker's one-click link, the
 * sandbox's Microsoft-style sign-in and consent pages, and the broker's result page.
 */

let fixture: ConnectFixture;
let chromium: Awaited<ReturnType<typeof launchChromium>>;
let browser: Browser;

beforeAll(async () => {
  [fixture, chromium] = await Promise.all([startConnectFixture(), launchChromium()]);
  browser = chromium.browser;
});

afterAll(async () => {
  await chromium?.close();
  await fixture?.close();
});

/** A fresh browser profile per person, as a private window would be. */
async function withPage<T>(run: (page: Page) => Promise<T>): Promise<T> {
  const context = await browser.newContext();
  try {
    return await run(await context.newPage());
  } finally {
    await context.close();
  }
}

async function signIn(page: Page, link: string, options: { login?: string; consent?: 'Accept' | 'Cancel' } = {}): Promise<void> {
  await page.goto(link);
  expect(new URL(page.url()).origin).toBe(fixture.idp.signInHost);
  if (options.login) await page.fill('input[name="login"]', options.login);
  await page.click('button[value="signin"]');
  await page.click(`button:has-text("${options.consent ?? 'Accept'}")`);
  await page.waitForURL((url) => url.pathname === '/api/oauth/callback');
}

describe('connecting a mailbox in a browser', () => {
  it('shows the success page naming the mailbox', async () => {
    fixture.idp.addUser({ upn: 'frank@contoso.example', tid: CUSTOMER_TENANT, name: 'Frank' });
    const { connectionId, link } = await connectionWithLink(fixture, 'frank@contoso.example');
    await withPage(async (page) => {
      await page.goto(link);
      // The sign-in page arrives with the mailbox already filled in from login_hint.
      expect(await page.inputValue('input[name="login"]')).toBe('frank@contoso.example');
      await page.click('button[value="signin"]');
      await page.click('button:has-text("Accept")');
      await page.waitForURL((url) => url.pathname === '/api/oauth/callback');
      expect(await page.textContent('h1')).toBe('frank@contoso.example is connected');
      expect(await page.textContent('body')).toContain('You signed in as frank@contoso.example');
      expect(await page.textContent('body')).toContain('You can close this window');
      await page.screenshot({ path: join(ARTIFACTS_DIR, 'connect-success.png'), fullPage: true });
    });
    const connection = (await (await fixture.broker.call('GET', `/api/manage/connections/${connectionId}`)).json()) as { status: string };
    expect(connection.status).toBe('connected');
  });

  it('tells the wrong user who signed in, who was expected, and what to do', async () => {
    fixture.idp.addUser({ upn: 'grace@contoso.example', tid: CUSTOMER_TENANT, name: 'Grace' });
    const { link } = await connectionWithLink(fixture, 'grace@contoso.example');
    await withPage(async (page) => {
      await signIn(page, link, { login: 'bob@contoso.example' });
      expect(await page.textContent('h1')).toBe('You signed in with a different account');
      const body = await page.textContent('body');
      expect(body).toContain('You signed in as bob@contoso.example but this link connects grace@contoso.example');
      expect(body).toContain('Open the link in a private window');
      await page.screenshot({ path: join(ARTIFACTS_DIR, 'connect-wrong-user.png'), fullPage: true });
    });
  });

  it('explains a declined consent and keeps the link usable', async () => {
    fixture.idp.addUser({ upn: 'heidi@contoso.example', tid: CUSTOMER_TENANT, name: 'Heidi' });
    const { link } = await connectionWithLink(fixture, 'heidi@contoso.example');
    await withPage(async (page) => {
      await signIn(page, link, { consent: 'Cancel' });
      expect(await page.textContent('h1')).toBe('Microsoft did not complete the sign-in');
      expect(await page.textContent('body')).toContain('declined the requested permissions. (AADSTS65004)');
      expect(await page.textContent('body')).toContain('select Accept');
      await page.screenshot({ path: join(ARTIFACTS_DIR, 'connect-consent-declined.png'), fullPage: true });
    });
    await withPage(async (page) => {
      await signIn(page, link);
      expect(await page.textContent('h1')).toBe('heidi@contoso.example is connected');
    });
  });
});
