// The hosted pages' journey in a real browser: headless Chromium driven by
// playwright-core, against a gatehouse that tests/api/browser.rs started.
//
//   node journey.mjs BASE_URL ARTIFACT_DIR
//
// Registers through /register, signs in on two devices (two browser
// contexts, each its own cookie jar), ends the other device from /account
// and checks through the JSON API that it is gone, changes the password,
// signs out, and checks that /account then sends the browser to /login;
// then turns two-step verification on from /account (the QR code's key read
// off the page, codes computed by PyPI's pyotp) and signs in with the
// second step.
// Every page is saved as a PNG in ARTIFACT_DIR. Exits 0 when every step
// held, 1 (with the reason on stderr) otherwise.
//
// Chromium is the system's (CHROMIUM, else /usr/bin/chromium): no browser is
// ever downloaded. The flags keep it from calling home, which a closed
// network refuses and which would slow every launch.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

const [base, artifacts] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error('usage: node journey.mjs BASE_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const COOKIE = '__Host-gatehouse';
const email = `journey-${Date.now()}@example.com`;
const password = 'correct horse battery staple';
const newPassword = 'a different horse entirely';

const step = (what) => console.log(`- ${what}`);

/** Fails the journey on anything the page itself complains about (a CSP
 *  violation is reported on the console), or an uncaught page error. The
 *  console's "Failed to load resource" lines are left out: they report the
 *  statuses the steps assert (a refused login is a 401 page) and the
 *  favicon the pages do not have. */
function watch(page, problems) {
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (m.text().startsWith('Failed to load resource: the server responded with a status of')) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/** The TOTP code of a base32 key at a Unix time, as PyPI's pyotp computes
 *  it (installed by scripts/test.sh). */
function totp(secret, at) {
  return execFileSync('python3', [
    '-c', 'import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))',
    secret, String(at),
  ]).toString().trim();
}

async function shot(page, name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
}

/** Submits a form by clicking its button and waits for the page it leads to. */
async function submit(page, button) {
  await Promise.all([page.waitForNavigation(), button.click()]);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // A fresh temporary profile per launch (playwright's own user-data-dir).
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
const problems = [];
try {
  const viewport = { width: 900, height: 900 };
  const a = await browser.newContext({ viewport, userAgent: 'JourneyLaptop/1.0 (device A)' });
  const b = await browser.newContext({ viewport, userAgent: 'JourneyPhone/2.0 (device B)' });
  const pageA = await a.newPage();
  const pageB = await b.newPage();
  watch(pageA, problems);
  watch(pageB, problems);

  step('register through /register');
  await pageA.goto(`${base}/register`);
  assert.equal(await pageA.title(), 'Create an account · gatehouse');
  await shot(pageA, '01-register');
  await pageA.getByLabel('Email').fill(email);
  await pageA.getByLabel('Password').fill(password);
  await submit(pageA, pageA.getByRole('button', { name: 'Create account' }));
  assert.equal(new URL(pageA.url()).pathname, '/login');
  await pageA.getByText('Your account was created.').waitFor();

  step('a wrong password is refused with the one generic message');
  await pageA.getByLabel('Email').fill(email);
  await pageA.getByLabel('Password').fill('not the password');
  await submit(pageA, pageA.getByRole('button', { name: 'Sign in' }));
  await pageA.getByRole('alert').getByText('The email or password is incorrect.').waitFor();
  await shot(pageA, '02-login-failed');

  step('sign in on device A');
  await pageA.goto(`${base}/login`);
  await shot(pageA, '03-login');
  await pageA.getByLabel('Email').fill(email);
  await pageA.getByLabel('Password').fill(password);
  await submit(pageA, pageA.getByRole('button', { name: 'Sign in' }));
  assert.equal(new URL(pageA.url()).pathname, '/account');
  const cookiesA = await a.cookies(base);
  const cookieA = cookiesA.find((c) => c.name === COOKIE);
  assert.ok(cookieA, `no ${COOKIE} cookie in device A: ${JSON.stringify(cookiesA.map((c) => c.name))}`);
  assert.equal(cookieA.httpOnly, true);
  assert.equal(cookieA.secure, true);
  assert.equal(cookieA.sameSite, 'Lax');

  step('sign in on device B, through /account and its redirect to /login');
  await pageB.goto(`${base}/account`);
  assert.equal(new URL(pageB.url()).pathname, '/login');
  assert.equal(new URL(pageB.url()).searchParams.get('return_to'), '/account');
  await pageB.getByLabel('Email').fill(email);
  await pageB.getByLabel('Password').fill(password);
  await submit(pageB, pageB.getByRole('button', { name: 'Sign in' }));
  assert.equal(new URL(pageB.url()).pathname, '/account');
  const meB = await b.request.get(`${base}/v1/me`);
  assert.equal(meB.status(), 200);
  const sessionB = (await meB.json()).session.id;

  step('the account page on device A lists both devices');
  await pageA.reload();
  const sessions = pageA.locator('li.session');
  assert.equal(await sessions.count(), 2);
  await pageA.locator('li.session.current', { hasText: 'JourneyLaptop/1.0' }).getByText('(this device)').waitFor();
  await pageA.locator(`li.session[data-session-id="${sessionB}"]`, { hasText: 'JourneyPhone/2.0' }).waitFor();
  await shot(pageA, '04-account');

  step('end device B from device A');
  await submit(
    pageA,
    pageA.locator(`li.session[data-session-id="${sessionB}"]`).getByRole('button', { name: 'Sign out' }),
  );
  assert.equal(new URL(pageA.url()).pathname, '/account');
  await pageA.getByText('That device was signed out.').waitFor();
  assert.equal(await pageA.locator('li.session').count(), 1);
  await shot(pageA, '05-account-after-ending-device-b');
  const goneB = await b.request.get(`${base}/v1/me`);
  assert.equal(goneB.status(), 401, 'device B is signed out on the API too');
  await pageB.goto(`${base}/account`);
  assert.equal(new URL(pageB.url()).pathname, '/login', 'device B is sent to /login');

  step('change the password on device A');
  await pageA.getByLabel('Current password').fill('not the password');
  await pageA.getByLabel('New password').fill(newPassword);
  await submit(pageA, pageA.getByRole('button', { name: 'Change password' }));
  await pageA.getByText('The current password is incorrect.').waitFor();
  await shot(pageA, '06-password-refused');
  await pageA.getByLabel('Current password').fill(password);
  await pageA.getByLabel('New password').fill(newPassword);
  await submit(pageA, pageA.getByRole('button', { name: 'Change password' }));
  await pageA.getByText('Your password was changed').waitFor();

  step('sign out on device A');
  await submit(pageA, pageA.locator('form[action="/logout"]').getByRole('button', { name: 'Sign out' }));
  assert.equal(new URL(pageA.url()).pathname, '/login');
  await pageA.getByText('You are signed out.').waitFor();
  await shot(pageA, '07-after-logout');
  assert.equal((await a.cookies(base)).filter((c) => c.name === COOKIE).length, 0, 'cookie cleared');

  step('/account now sends device A to /login');
  await pageA.goto(`${base}/account`);
  const after = new URL(pageA.url());
  assert.equal(after.pathname, '/login');
  assert.equal(after.searchParams.get('return_to'), '/account');

  step('the new password works, the old one does not');
  await pageA.getByLabel('Email').fill(email);
  await pageA.getByLabel('Password').fill(newPassword);
  await submit(pageA, pageA.getByRole('button', { name: 'Sign in' }));
  assert.equal(new URL(pageA.url()).pathname, '/account');

  step('turn on two-step verification from /account');
  await pageA.getByLabel('Your password').fill(newPassword);
  await submit(pageA, pageA.getByRole('button', { name: 'Set up an authenticator app' }));
  await pageA.getByRole('img', { name: 'QR code of your authenticator key' }).waitFor();
  await shot(pageA, '08-totp-setup');
  const secret = (await pageA.locator('code.secret').textContent()).trim();
  const now = () => Math.floor(Date.now() / 1000);
  await pageA.getByLabel('Code from your app').fill(totp(secret, now()));
  await submit(pageA, pageA.getByRole('button', { name: 'Turn on two-step verification' }));
  await pageA.getByText('Two-step verification is on.').waitFor();
  assert.equal(await pageA.locator('ul.codes li').count(), 10, 'ten recovery codes, shown once');
  await shot(pageA, '09-recovery-codes');
  await Promise.all([pageA.waitForNavigation(), pageA.getByRole('link', { name: 'I have saved them' }).click()]);
  await pageA.getByText('Recovery codes left:').waitFor();

  step('sign out, then sign in with the password and a code');
  await submit(pageA, pageA.locator('form[action="/logout"]').getByRole('button', { name: 'Sign out' }));
  await pageA.getByLabel('Email').fill(email);
  await pageA.getByLabel('Password').fill(newPassword);
  await submit(pageA, pageA.getByRole('button', { name: 'Sign in' }));
  await pageA.getByRole('heading', { name: 'Two-step verification' }).waitFor();
  assert.equal((await a.cookies(base)).filter((c) => c.name === COOKIE).length, 0, 'no session yet');
  await shot(pageA, '10-second-step');
  await pageA.getByLabel('Code').fill('000000' === totp(secret, now() + 30) ? '111111' : '000000');
  await submit(pageA, pageA.getByRole('button', { name: 'Verify' }));
  await pageA.getByText('The code is incorrect or was used before.').waitFor();
  // The code of the next step: the confirmation spent this one's.
  await pageA.getByLabel('Code').fill(totp(secret, now() + 30));
  await submit(pageA, pageA.getByRole('button', { name: 'Verify' }));
  assert.equal(new URL(pageA.url()).pathname, '/account');
  await shot(pageA, '11-signed-in-with-a-second-factor');
  const me = await (await a.request.get(`${base}/v1/me`)).json();
  assert.deepEqual(me.session.amr, ['pwd', 'otp', 'mfa']);

  assert.deepEqual(problems, [], 'the pages logged no errors (CSP violations among them)');
  console.log('journey passed');
} catch (e) {
  failed = true;
  console.error(`journey failed: ${e.stack || e}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
