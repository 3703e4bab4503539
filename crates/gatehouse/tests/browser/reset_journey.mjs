// The password-reset journey in headless Chromium, against a gatehouse
// with mail that tests/api/email_pages.rs started (with the account
// registered, and a real SMTP server as the mailbox):
//
//   node reset_journey.mjs BASE_URL ARTIFACT_DIR HANDOFF_DIR EMAIL NEW_PASSWORD
//
// From /login, "Forgot your password?", the address, the request; then
// waits for HANDOFF_DIR/link, where the Rust side writes the link of the
// mail that came; opens it, sets the new password, lands on /login with
// its notice, signs in with the new password and finds the account on
// /account. Checks on the way that the link's token went into no `Referer`
// and that the form was posted with this origin as `Origin`. Every page is
// saved as a PNG in ARTIFACT_DIR. Exits 0 when every step held.

import { chromium } from 'playwright-core';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';

const [base, artifacts, handoff, email, newPassword] = process.argv.slice(2);
if (!base || !artifacts || !handoff || !email || !newPassword) {
  console.error('usage: node reset_journey.mjs BASE_URL ARTIFACT_DIR HANDOFF_DIR EMAIL NEW_PASSWORD');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const origin = new URL(base).origin;
const step = (what) => console.log(`- ${what}`);

/** The link the Rust side found in the mail (HANDOFF_DIR/link, written
 *  whole with a rename), once it is there. */
async function mailedLink() {
  const file = join(handoff, 'link');
  const deadline = Date.now() + 90_000;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`no link in ${file} after 90 s`);
    await sleep(100);
  }
  return readFileSync(file, 'utf8').trim();
}

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
  // Every request's headers as sent (allHeaders: Origin and Referer too).
  const sent = [];
  page.on('request', (r) => {
    sent.push(r.allHeaders().then((headers) => ({ method: r.method(), url: r.url(), headers })));
  });
  const shot = async (name) => {
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`  screenshot ${path}`);
  };
  const navigating = (action) => Promise.all([page.waitForNavigation(), action]);
  const path = () => new URL(page.url()).pathname;

  step('/login links to the reset form');
  await page.goto(`${base}/login`);
  await navigating(page.getByRole('link', { name: 'Forgot your password?' }).click());
  assert.equal(path(), '/forgot-password');
  await page.getByRole('heading', { name: 'Reset your password' }).waitFor();
  await shot('r1-forgot-password');

  step('ask for a link');
  await page.getByLabel('Email').fill(email);
  await navigating(page.getByRole('button', { name: 'Mail me a link' }).click());
  await page.getByText('If an account uses this address').waitFor();
  await shot('r2-link-requested');

  step('wait for the mail');
  const link = await mailedLink();
  assert.equal(new URL(link).origin, origin, `the link ${link} is not on ${origin}`);
  const token = new URL(link).searchParams.get('token');
  assert.ok(token && token.length === 43, `no token in ${link}`);

  step('open the link and set the new password');
  const before = sent.length;
  const res = await page.goto(link);
  assert.equal(res.status(), 200);
  assert.equal((await res.allHeaders())['referrer-policy'], 'strict-origin');
  await page.getByRole('heading', { name: 'Choose a new password' }).waitFor();
  await page.getByLabel('New password').fill(newPassword);
  await shot('r3-reset-form');
  await navigating(page.getByRole('button', { name: 'Set the new password' }).click());
  assert.equal(path(), '/login');
  assert.equal(new URL(page.url()).searchParams.get('notice'), 'password-reset');
  await page.getByText('Your password was changed. Sign in with the new one.').waitFor();
  await shot('r4-login-after-reset');

  step('the token went into no Referer, the post carried this Origin');
  const after = await Promise.all(sent.slice(before));
  for (const r of after) {
    const referer = r.headers.referer || '';
    assert.ok(!referer.includes(token), `${r.method} ${r.url} carried the token in Referer: ${referer}`);
  }
  const post = after.find((r) => r.method === 'POST' && new URL(r.url).pathname === '/reset-password');
  assert.ok(post, 'the reset form was not posted');
  assert.equal(post.headers.origin, origin, 'the reset form was posted without this Origin');

  step('sign in with the new password');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(newPassword);
  await navigating(page.getByRole('button', { name: 'Sign in', exact: true }).click());
  assert.equal(path(), '/account');
  await page.getByRole('heading', { name: 'Your account' }).waitFor();
  await page.getByText(email).first().waitFor();
  // The reset proved the mailbox.
  assert.equal(await page.locator('#email-state').textContent(), 'Verified');
  await shot('r5-account');

  assert.deepEqual(problems, [], 'the pages logged no errors (CSP violations among them)');
  console.log('reset journey passed');
} catch (e) {
  failed = true;
  console.error(`reset journey failed: ${e.stack || e}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
