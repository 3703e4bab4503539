// A browser signing in through the nginx block of docs/integrations.md:
// headless Chromium (playwright-core) against nginx, which tests/api/nginx.rs
// started in front of gatehouse and an app that echoes what it receives.
//
//   node nginx.mjs SITE_URL WANTED_PATH EMAIL ARTIFACT_DIR   (PASSWORD in the environment)
//
// Asks for WANTED_PATH (a protected page of the app), is sent to gatehouse's
// sign-in page, signs in there, and must land on WANTED_PATH as the app
// answers it, with the user's email in the identity headers nginx passed.
// Exits 0 when every step held, 1 (with the reason on stderr) otherwise.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [site, wanted, email, artifacts] = process.argv.slice(2);
const password = process.env.PASSWORD;
if (!site || !wanted || !email || !artifacts || !password) {
  console.error('usage: PASSWORD=... node nginx.mjs SITE_URL WANTED_PATH EMAIL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
  const page = await context.newPage();

  console.log(`- ask for ${wanted}: sent to the sign-in page`);
  await page.goto(`${site}${wanted}`);
  const login = new URL(page.url());
  assert.equal(login.pathname, '/login');
  assert.equal(login.searchParams.get('return_to'), wanted);
  assert.equal(await page.title(), 'Sign in · gatehouse');
  await page.screenshot({ path: join(artifacts, 'nginx-01-login.png'), fullPage: true });

  console.log('- sign in: back where the browser was going');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await Promise.all([
    page.waitForNavigation(),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  const landed = new URL(page.url());
  assert.equal(landed.pathname + landed.search, wanted);
  const echoed = JSON.parse(await page.locator('body').innerText());
  assert.equal(echoed.path, wanted);
  assert.deepEqual(echoed['x-auth-request-email'], [email]);
  await page.screenshot({ path: join(artifacts, 'nginx-02-app.png'), fullPage: true });
  console.log('nginx journey: done');
} catch (e) {
  failed = true;
  console.error(`nginx journey failed: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
