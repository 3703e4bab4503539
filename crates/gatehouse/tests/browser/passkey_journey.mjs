// The hosted pages' passkey journey in headless Chromium with the DevTools
// virtual authenticator, against a gatehouse whose relying party is
// `localhost` (tests/api/passkeys.rs starts it):
//
//   node passkey_journey.mjs BASE_URL ARTIFACT_DIR EMAIL PASSWORD
//
// Signs in with the password, adds a passkey on /account (its recovery
// codes shown once), signs out, signs in with the password and the passkey
// as the second step, signs out, signs in with the passkey alone from
// /login, and removes the passkey. Every page is saved as a PNG. Exits 0
// when every step held.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [base, artifacts, email, password] = process.argv.slice(2);
if (!base || !artifacts || !email || !password) {
  console.error('usage: node passkey_journey.mjs BASE_URL ARTIFACT_DIR EMAIL PASSWORD');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const step = (what) => console.log(`- ${what}`);

const browser = await chromium.launch({
  executablePath,
  args: ['--no-first-run', '--disable-background-networking', '--disable-component-update'],
});
let failed = false;
const problems = [];
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (m.text().startsWith('Failed to load resource: the server responded with a status of')) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const shot = async (name) => {
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`  screenshot ${path}`);
  };
  const navigating = (action) => Promise.all([page.waitForNavigation(), action]);
  const amr = async () => (await (await page.request.get(`${base}/v1/me`)).json()).session.amr;
  const signInWithPassword = async () => {
    await page.goto(`${base}/login`);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await navigating(page.getByRole('button', { name: 'Sign in', exact: true }).click());
  };
  const signOut = async () => {
    await navigating(page.locator('form[action="/logout"]').getByRole('button', { name: 'Sign out' }).click());
    assert.equal(new URL(page.url()).pathname, '/login');
  };

  step('sign in with the password; /account offers passkeys');
  await signInWithPassword();
  assert.equal(new URL(page.url()).pathname, '/account');
  await page.getByRole('heading', { name: 'Passkeys' }).waitFor();
  await shot('p1-account');

  step('add a passkey from /account: the recovery codes are shown once');
  await page.getByLabel('Name for the new passkey').fill('This laptop');
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await page.getByText('two-step verification is on').waitFor();
  assert.equal(await page.locator('[data-passkey-codes] ul.codes li').count(), 10);
  await shot('p2-passkey-added');
  await navigating(page.getByRole('link', { name: 'I have saved them' }).click());
  await page.getByRole('heading', { name: 'This laptop' }).waitFor();
  await shot('p3-account-with-a-passkey');

  step('sign in with the password, then the passkey as the second step');
  await signOut();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await navigating(page.getByRole('button', { name: 'Sign in', exact: true }).click());
  await page.getByRole('heading', { name: 'Two-step verification' }).waitFor();
  await shot('p4-second-step');
  await navigating(page.getByRole('button', { name: 'Use a passkey' }).click());
  assert.equal(new URL(page.url()).pathname, '/account');
  assert.deepEqual(await amr(), ['pwd', 'hwk', 'mfa']);
  await shot('p5-signed-in-with-password-and-passkey');

  step('sign in with the passkey alone from /login');
  await signOut();
  await shot('p6-login-offers-a-passkey');
  await navigating(page.getByRole('button', { name: 'Sign in with a passkey' }).click());
  assert.equal(new URL(page.url()).pathname, '/account');
  assert.deepEqual(await amr(), ['hwk', 'user', 'mfa']);
  await shot('p7-signed-in-with-a-passkey');

  step('remove the passkey');
  await navigating(
    page.locator('li[data-passkey-id]').getByRole('button', { name: 'Remove' }).click(),
  );
  await page.getByText('The passkey was removed.').waitFor();
  assert.equal(await page.locator('li[data-passkey-id]').count(), 0);
  await shot('p8-passkey-removed');

  assert.deepEqual(problems, [], 'the pages logged no errors (CSP violations among them)');
  console.log('passkey journey passed');
} catch (e) {
  failed = true;
  console.error(`passkey journey failed: ${e.stack || e}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
