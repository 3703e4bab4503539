// Passkeys against a real authenticator implementation nobody here wrote:
// headless Chromium's WebAuthn stack with the DevTools virtual
// authenticator (CTAP2, platform, resident keys, user verification),
// driving gatehouse's JSON API from a page on the relying party's origin.
//
//   node passkeys.mjs BASE_URL EMAIL PASSWORD [OTHER_NODE_URL]
//
// With OTHER_NODE_URL (another node of the same deployment, which accepts
// BASE_URL's origin), each ceremony is also begun on this node and finished
// on the other: the finishing request is sent from here, not the page.
//
// BASE_URL is http://localhost:PORT (the relying party id is `localhost`).
// The user exists and has no second factor. Registers a passkey, signs in
// with password + passkey, signs in passwordless, and checks the attacks:
// a replayed assertion, an assertion for another ceremony, an assertion
// for another origin's challenge, and a cloned credential (re-added to a
// second authenticator with its counter reset). Prints one JSON line of
// findings for the Rust test to judge; exits 1 when a step could not run.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const [base, email, password, other] = process.argv.slice(2);
if (!base || !email || !password) {
  console.error('usage: node passkeys.mjs BASE_URL EMAIL PASSWORD');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath,
  args: ['--no-first-run', '--disable-background-networking', '--disable-component-update'],
});
let failed = false;
const out = {};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  // A page of the origin without the hosted pages' CSP (it forbids fetch).
  await page.goto(`${base}/healthz`);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const authenticator = async () =>
    (
      await cdp.send('WebAuthn.addVirtualAuthenticator', {
        options: {
          protocol: 'ctap2',
          transport: 'internal',
          hasResidentKey: true,
          hasUserVerification: true,
          isUserVerified: true,
          automaticPresenceSimulation: true,
        },
      })
    ).authenticatorId;
  const first = await authenticator();

  /** fetch() from the page: same origin, its cookie jar. */
  const call = (method, path, body) =>
    page.evaluate(
      async ([method, path, body]) => {
        const res = await fetch(path, {
          method,
          headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await res.text();
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        return { status: res.status, json };
      },
      [method, path, body],
    );
  const create = (publicKey) =>
    page.evaluate(async (publicKey) => {
      const cred = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey),
      });
      return cred.toJSON();
    }, publicKey);
  const get = (publicKey) =>
    page.evaluate(async (publicKey) => {
      const cred = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey),
      });
      return cred.toJSON();
    }, publicKey);

  // Registration, signed in with the password.
  let r = await call('POST', '/v1/login', { email, password });
  assert.equal(r.status, 200, 'the password login');
  r = await call('POST', '/v1/me/passkeys/options');
  assert.equal(r.status, 200, `registration options: ${JSON.stringify(r.json)}`);
  out.registration_options = r.json.publicKey;
  const registrationChallenge = r.json.challenge_id;
  const registration = await create(r.json.publicKey);
  r = await call('POST', '/v1/me/passkeys', {
    challenge_id: registrationChallenge,
    name: 'Laptop',
    credential: registration,
  });
  out.register = { status: r.status, json: r.json };
  // The same registration again: its challenge is spent.
  r = await call('POST', '/v1/me/passkeys', {
    challenge_id: registrationChallenge,
    name: 'Again',
    credential: registration,
  });
  out.register_replayed = r.status;
  out.mfa_after_registration = (await call('GET', '/v1/me/mfa')).json;
  await call('POST', '/v1/logout');

  // Password, then the passkey as the second step.
  r = await call('POST', '/v1/login', { email, password });
  out.password_step = r.json;
  const mfaToken = r.json.mfa_token;
  r = await call('POST', '/v1/login/mfa/passkey-options', { mfa_token: mfaToken });
  assert.equal(r.status, 200, `second-step options: ${JSON.stringify(r.json)}`);
  out.second_factor_options = r.json.publicKey;
  const secondChallenge = r.json.challenge_id;
  const assertion = await get(r.json.publicKey);
  r = await call('POST', '/v1/login/mfa', {
    mfa_token: mfaToken,
    challenge_id: secondChallenge,
    credential: assertion,
  });
  out.second_factor = { status: r.status, amr: r.json?.session?.amr };
  out.me_after_second_factor = (await call('GET', '/v1/me')).json?.session?.amr;
  await call('POST', '/v1/logout');

  // Passwordless, with the discoverable credential.
  r = await call('POST', '/v1/login/passkey/options');
  assert.equal(r.status, 200, `passwordless options: ${JSON.stringify(r.json)}`);
  out.passwordless_options = r.json.publicKey;
  const challenge = r.json.challenge_id;
  const discoverable = await get(r.json.publicKey);
  r = await call('POST', '/v1/login/passkey', { challenge_id: challenge, credential: discoverable });
  out.passwordless = { status: r.status, amr: r.json?.session?.amr, email: r.json?.user?.email };
  await call('POST', '/v1/logout');
  // The same assertion again, on its spent challenge.
  r = await call('POST', '/v1/login/passkey', { challenge_id: challenge, credential: discoverable });
  out.passwordless_replayed = r.status;
  // The same assertion on a fresh challenge it does not answer.
  r = await call('POST', '/v1/login/passkey/options');
  r = await call('POST', '/v1/login/passkey', {
    challenge_id: r.json.challenge_id,
    credential: discoverable,
  });
  out.passwordless_wrong_challenge = r.status;
  // Malformed credentials.
  r = await call('POST', '/v1/login/passkey/options');
  const malformed = [];
  for (const credential of [{}, { id: 5 }, 'x', { ...discoverable, response: { clientDataJSON: 'AAAA' } }]) {
    malformed.push((await call('POST', '/v1/login/passkey', { challenge_id: r.json.challenge_id, credential })).status);
  }
  out.passwordless_malformed = malformed;

  if (other) {
    // Begun on this node, finished on the other.
    r = await call('POST', '/v1/login/passkey/options');
    const elsewhere = await get(r.json.publicKey);
    const res = await fetch(`${other}/v1/login/passkey`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ challenge_id: r.json.challenge_id, credential: elsewhere }),
    });
    const body = await res.json().catch(() => null);
    out.other_node = { status: res.status, amr: body?.session?.amr };
  }

  // A clone: the same credential on another authenticator, counter reset.
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: first });
  out.counter_before_clone = credentials[0].signCount;
  await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: first });
  const clone = await authenticator();
  await cdp.send('WebAuthn.addCredential', {
    authenticatorId: clone,
    credential: { ...credentials[0], signCount: 0 },
  });
  r = await call('POST', '/v1/login/passkey/options');
  const cloned = await get(r.json.publicKey);
  r = await call('POST', '/v1/login/passkey', { challenge_id: r.json.challenge_id, credential: cloned });
  out.clone = r.status;

  console.log(JSON.stringify(out));
} catch (e) {
  failed = true;
  console.error(`passkeys failed: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
