// A relying party signing a user in through gatehouse, in headless
// Chromium: the application is this script's own small web app on
// 127.0.0.1 (node:http, port 0), against a gatehouse that
// tests/api/oidc_browser.rs started and registered the app with
// (confidential, not first-party, redirect URIs `http://127.0.0.1/callback`
// and `http://127.0.0.1/bye`, whose port may vary: RFC 8252 §7.3).
//
//   ISSUER=… CLIENT_ID=… CLIENT_SECRET=… APP_NAME=… EMAIL=… PASSWORD=… \
//   ARTIFACTS=DIR node rp_journey.mjs
//
// The app: `/` offers "Sign in with gatehouse"; `/login` keeps a state, a
// nonce and a PKCE (S256) verifier on the server, keyed by its cookie, and
// redirects to the authorization endpoint found by discovery; `/callback`
// checks `state` and `iss` (RFC 9207), exchanges the code with
// client_secret_basic, verifies the ID token against the JWKS (RS256 with
// node:crypto; iss, aud, exp, nonce, at_hash), calls UserInfo; `/logout`
// (a form post) sends the browser to the end_session_endpoint with
// `id_token_hint`, `post_logout_redirect_uri` and `state`; `/bye` checks
// that state.
//
// The journey: sign in (gatehouse's login form, then its consent page,
// which must name the app and its origin), back in the app; sign in again
// as a new visitor of the app (consent remembered: no gatehouse page at
// all); the app on gatehouse's /account under "Applications"; sign out
// from the app (a valid hint: no confirmation page), back on the app's
// /bye; gatehouse's /account then sends to /login, and the app's access
// tokens get 401 from UserInfo. Any console error or warning of a page
// (a Content-Security-Policy violation above all) fails the step it
// happened in. Every page is saved as a PNG in ARTIFACTS; each step that
// held prints `ok <step>`. Exits 0 when every step held, 1 with the reason
// (and the navigations so far) on stderr otherwise.

import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import crypto from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const NEEDED = ['ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'APP_NAME', 'EMAIL', 'PASSWORD', 'ARTIFACTS'];
const missing = NEEDED.filter((name) => !process.env[name]);
if (missing.length) {
  console.error(`rp_journey.mjs needs the environment variables ${NEEDED.join(', ')}; missing: ${missing.join(', ')}`);
  process.exit(2);
}
const { ISSUER, CLIENT_ID, CLIENT_SECRET, APP_NAME, EMAIL, PASSWORD, ARTIFACTS } = process.env;
mkdirSync(ARTIFACTS, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const issuerOrigin = new URL(ISSUER).origin;

const ok = (what) => console.log(`ok ${what}`);
const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const random = () => b64url(crypto.randomBytes(32));
const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
/** application/x-www-form-urlencoded, as RFC 6749 §2.3.1 wants the id and
 *  secret before Base64. */
const formEncode = (s) => new URLSearchParams([['', s]]).toString().slice(1);

// ---------------------------------------------------------------- discovery

const discoveryRes = await fetch(`${ISSUER}/.well-known/openid-configuration`);
assert.equal(discoveryRes.status, 200, 'discovery answers 200');
const discovery = await discoveryRes.json();
assert.equal(discovery.issuer, ISSUER, 'discovery names this issuer');
for (const name of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'end_session_endpoint']) {
  assert.equal(typeof discovery[name], 'string', `discovery has no ${name}`);
}
assert.ok(discovery.code_challenge_methods_supported?.includes('S256'), 'discovery offers PKCE S256');
assert.ok(
  discovery.token_endpoint_auth_methods_supported?.includes('client_secret_basic'),
  'discovery offers client_secret_basic',
);
assert.equal(discovery.authorization_response_iss_parameter_supported, true, 'discovery promises iss (RFC 9207)');
ok('discovery');

// ------------------------------------------------------------ the app (RP)

/** The app's visitors, by the `rp_session` cookie: what a sign-in or a
 *  sign-out in progress must match, and who is signed in. */
const visitors = new Map();
/** Every sign-in the app completed, in order (the journey checks them). */
const signIns = [];
/** What went wrong inside the app (also shown on its error page). */
const appErrors = [];
let appOrigin = '';

/** The ID token's claims, once its signature (RS256, a key of the JWKS
 *  named by `kid`) and claims hold for this sign-in. */
async function verifyIdToken(idToken, nonce, accessToken) {
  const parts = idToken.split('.');
  assert.equal(parts.length, 3, 'the ID token is a JWS in compact form');
  const [h, p, s] = parts;
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  assert.equal(header.alg, 'RS256', `the ID token's alg is ${header.alg}, not the client's RS256`);
  assert.ok(header.kid, 'the ID token names no kid');
  const jwksRes = await fetch(discovery.jwks_uri);
  assert.equal(jwksRes.status, 200, 'the JWKS answers 200');
  const jwk = (await jwksRes.json()).keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `no key ${header.kid} in ${discovery.jwks_uri}`);
  assert.equal(jwk.kty, 'RSA');
  if (jwk.alg) assert.equal(jwk.alg, 'RS256');
  if (jwk.use) assert.equal(jwk.use, 'sig');
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const valid = crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
  assert.ok(valid, 'the ID token signature does not verify against the JWKS');
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  assert.equal(claims.iss, ISSUER, 'the ID token iss');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  assert.ok(aud.includes(CLIENT_ID), `the ID token aud ${JSON.stringify(claims.aud)} lacks the client`);
  if (aud.length > 1) assert.equal(claims.azp, CLIENT_ID, 'azp of a multi-audience ID token');
  assert.ok(Number.isInteger(claims.exp) && claims.exp > now, `the ID token expired (exp ${claims.exp}, now ${now})`);
  assert.ok(Number.isInteger(claims.iat) && claims.iat <= now + 60, `the ID token iat ${claims.iat} is in the future`);
  assert.equal(claims.nonce, nonce, 'the ID token nonce is not the one sent');
  assert.ok(claims.sub, 'the ID token has no sub');
  assert.ok(claims.sid, 'the ID token has no sid');
  // OIDC Core §3.1.3.6: the left half of the SHA-256 of the access token.
  const digest = crypto.createHash('sha256').update(accessToken).digest();
  assert.equal(claims.at_hash, b64url(digest.subarray(0, 16)), 'at_hash does not match the access token');
  return claims;
}

/** `/callback`: the code for tokens, then who signed in. */
async function callback(url, visitor) {
  const pending = visitor.pending;
  visitor.pending = undefined; // one use
  assert.ok(pending, 'a callback without a sign-in in progress');
  const q = url.searchParams;
  assert.equal(q.get('state'), pending.state, 'the callback state is not the one sent');
  assert.equal(q.get('iss'), ISSUER, 'the callback iss (RFC 9207)');
  assert.equal(q.get('error'), null, `gatehouse answered ${q.get('error')}: ${q.get('error_description')}`);
  const code = q.get('code');
  assert.ok(code, 'the callback has no code');

  const basic = Buffer.from(`${formEncode(CLIENT_ID)}:${formEncode(CLIENT_SECRET)}`).toString('base64');
  const tokenRes = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: pending.redirectUri,
      code_verifier: pending.verifier,
    }),
  });
  const tokens = await tokenRes.json();
  assert.equal(tokenRes.status, 200, `the token endpoint answered ${tokenRes.status}: ${JSON.stringify(tokens)}`);
  assert.match(tokenRes.headers.get('cache-control') || '', /no-store/, 'the token response is cacheable');
  assert.equal(String(tokens.token_type).toLowerCase(), 'bearer');
  assert.ok(tokens.access_token && tokens.id_token, `no access or ID token: ${Object.keys(tokens)}`);
  const claims = await verifyIdToken(tokens.id_token, pending.nonce, tokens.access_token);

  const infoRes = await fetch(discovery.userinfo_endpoint, {
    headers: { authorization: `Bearer ${tokens.access_token}` },
  });
  const info = await infoRes.json();
  assert.equal(infoRes.status, 200, `UserInfo answered ${infoRes.status}: ${JSON.stringify(info)}`);
  assert.equal(info.sub, claims.sub, 'UserInfo sub is not the ID token sub');
  assert.equal(info.email, EMAIL, 'UserInfo email');
  const signIn = { email: info.email, claims, idToken: tokens.id_token, accessToken: tokens.access_token };
  visitor.user = signIn;
  signIns.push(signIn);
}

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
    `<body><p>${escape(APP_NAME)}</p><main>${body}</main></body></html>`);
}

function redirect(res, status, location, cookie) {
  const headers = { location, 'cache-control': 'no-store' };
  if (cookie) headers['set-cookie'] = cookie;
  res.writeHead(status, headers);
  res.end();
}

async function handle(req, res) {
  const url = new URL(req.url, appOrigin);
  // Both servers are on 127.0.0.1, and cookies ignore ports: gatehouse's
  // cookie comes here too, and this one goes there; each reads its own.
  const cookies = Object.fromEntries(
    (req.headers.cookie || '').split(';').map((c) => c.trim().split('=')).filter((kv) => kv.length === 2),
  );
  let id = cookies.rp_session;
  let setCookie;
  if (!id || !visitors.has(id)) {
    id = random();
    visitors.set(id, {});
    setCookie = `rp_session=${id}; Path=/; HttpOnly; SameSite=Lax`;
  }
  const visitor = visitors.get(id);
  const route = `${req.method} ${url.pathname}`;

  if (route === 'GET /favicon.ico') {
    res.writeHead(204);
    return res.end();
  }
  if (route === 'GET /') {
    if (setCookie) res.setHeader('set-cookie', setCookie);
    if (visitor.user) {
      return page(res, 200, APP_NAME,
        `<h1>Signed in as ${escape(visitor.user.email)}</h1>` +
        '<form method="post" action="/logout"><button type="submit">Sign out</button></form>');
    }
    return page(res, 200, APP_NAME,
      `<h1>Welcome to ${escape(APP_NAME)}</h1><p><a href="/login">Sign in with gatehouse</a></p>`);
  }
  if (route === 'GET /login') {
    const verifier = random(); // 43 characters (RFC 7636 §4.1)
    const pending = {
      state: random(),
      nonce: random(),
      verifier,
      redirectUri: `${appOrigin}/callback`,
    };
    visitor.pending = pending;
    const to = new URL(discovery.authorization_endpoint);
    to.search = new URLSearchParams({
      response_type: 'code',
      client_id: CLIENT_ID,
      redirect_uri: pending.redirectUri,
      scope: 'openid profile email',
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
    }).toString();
    return redirect(res, 302, to.href, setCookie);
  }
  if (route === 'GET /callback') {
    await callback(url, visitor);
    return redirect(res, 303, '/', setCookie);
  }
  if (route === 'POST /logout') {
    assert.equal(req.headers.origin, appOrigin, 'the sign-out form came from elsewhere');
    const user = visitor.user;
    assert.ok(user, 'sign-out without a signed-in visitor');
    visitor.user = undefined;
    visitor.logoutState = random();
    const to = new URL(discovery.end_session_endpoint);
    to.search = new URLSearchParams({
      id_token_hint: user.idToken,
      post_logout_redirect_uri: `${appOrigin}/bye`,
      state: visitor.logoutState,
    }).toString();
    return redirect(res, 303, to.href, setCookie);
  }
  if (route === 'GET /bye') {
    const expected = visitor.logoutState;
    visitor.logoutState = undefined;
    assert.ok(expected, 'back from sign-out without one in progress');
    assert.equal(url.searchParams.get('state'), expected, 'the sign-out state is not the one sent');
    return page(res, 200, `Signed out · ${APP_NAME}`, '<h1>Signed out</h1><p><a href="/">Home</a></p>');
  }
  page(res, 404, 'Not found', '<h1>Not found</h1>');
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    const why = `${req.method} ${req.url}: ${e.message}`;
    appErrors.push(why);
    if (!res.headersSent) page(res, 400, 'Sign-in failed', `<h1>Sign-in failed</h1><pre>${escape(why)}</pre>`);
    else res.end();
  });
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
appOrigin = `http://127.0.0.1:${server.address().port}`;
console.log(`  the app listens on ${appOrigin}`);

// ------------------------------------------------------------ the browser

const browser = await chromium.launch({
  executablePath,
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
/** Console errors and warnings, page errors: every one fails the step. */
const problems = [];
/** The main frame's navigation answers, for the failure report. */
const trail = [];
/** Main-frame documents committed since `mark()`. */
let committed = [];
let pg;

/** Throws when a page complained (a CSP violation is a console error) or
 *  the app failed since the last check. */
function clean(step) {
  const found = [...problems.splice(0), ...appErrors.splice(0).map((e) => `app: ${e}`)];
  assert.deepEqual(found, [], `${step}: problems (a Content-Security-Policy line is a gatehouse bug)`);
}

async function shot(name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await pg.screenshot({ path, fullPage: true });
  console.log(`  screenshot ${path}`);
}

/** Runs `action` and waits until the main frame shows a URL `where`
 *  accepts (checked on every commit, not on the URL before). */
async function go(action, where, what) {
  const before = trail.length;
  const arrived = pg.waitForEvent('framenavigated', {
    predicate: (f) => f === pg.mainFrame() && where(new URL(f.url())),
    timeout: 20_000,
  });
  // An error inside the app ends the wait at once (it will not get there).
  let poll;
  const appFailed = new Promise((_, reject) => {
    poll = setInterval(() => appErrors.length && reject(new Error('the app failed')), 100);
  });
  await Promise.race([Promise.all([arrived, action()]), appFailed]).catch((e) => {
    throw new Error(`${what}: not reached (${e.message.split('\n')[0]}); ` +
      `navigations: ${JSON.stringify(trail.slice(before))}; at ${pg.url()}`);
  }).finally(() => clearInterval(poll));
  await pg.waitForLoadState('load');
}

const atGatehouse = (path) => (u) => u.origin === issuerOrigin && u.pathname === path;

/** Runs `action` until the browser is back in the app, which must then be
 *  at `path` (its error page, when it failed, is elsewhere). */
async function toApp(action, path, what) {
  await go(action, (u) => u.origin === appOrigin, what);
  clean(what);
  assert.equal(new URL(pg.url()).pathname, path, `${what}: the app shows ${pg.url()}`);
}

try {
  const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
  pg = await context.newPage();
  pg.setDefaultTimeout(20_000);
  pg.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    // The statuses the steps assert; the favicons pages do not have.
    if (m.text().startsWith('Failed to load resource: the server responded with a status of')) return;
    problems.push(`console ${m.type()} on ${m.location().url || pg.url()}: ${m.text()}`);
  });
  pg.on('pageerror', (e) => problems.push(`page error on ${pg.url()}: ${e.message}`));
  pg.on('response', async (r) => {
    const req = r.request();
    if (!req.isNavigationRequest() || req.frame() !== pg.mainFrame()) return;
    const h = await r.allHeaders().catch(() => ({}));
    trail.push({
      status: r.status(),
      method: req.method(),
      url: r.url(),
      ...(h.location ? { location: h.location } : {}),
      ...(h['content-security-policy'] ? { csp: h['content-security-policy'] } : {}),
    });
  });
  pg.on('framenavigated', (f) => {
    if (f === pg.mainFrame()) committed.push(f.url());
  });
  const mark = () => { committed = []; };

  // 1. The app, signed out.
  await pg.goto(`${appOrigin}/`);
  await pg.getByRole('link', { name: 'Sign in with gatehouse' }).waitFor();
  await shot('o1-app-home');
  clean('app home');
  ok('app home');

  // 2. To gatehouse's login form, with the authorization request to come back to.
  await go(() => pg.getByRole('link', { name: 'Sign in with gatehouse' }).click(),
    atGatehouse('/login'), "gatehouse's /login");
  const returnTo = new URL(pg.url()).searchParams.get('return_to') || '';
  assert.ok(returnTo.startsWith('/oauth2/authorize?'), `return_to is ${returnTo}`);
  await pg.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  await shot('o2-gatehouse-login');
  clean('gatehouse login page');
  ok('gatehouse login page');

  // 3. Sign in: a page that moves on (meta refresh) to the authorization
  //    endpoint, which shows the consent page to this third-party app.
  await pg.getByLabel('Email').fill(EMAIL);
  await pg.getByLabel('Password').fill(PASSWORD);
  const consentAnswer = pg.waitForResponse(
    (r) => atGatehouse('/oauth2/authorize')(new URL(r.url())) && r.request().isNavigationRequest(),
  ).catch((e) => e);
  await go(() => pg.getByRole('button', { name: 'Sign in', exact: true }).click(),
    atGatehouse('/oauth2/authorize'), 'the consent page');
  const consent = await consentAnswer;
  if (consent instanceof Error) throw consent;
  assert.equal(consent.status(), 200, 'the consent page answers 200');
  const csp = (await consent.allHeaders())['content-security-policy'] || '';
  const formAction = csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('form-action')) || '';
  assert.ok(formAction.split(/\s+/).includes(appOrigin),
    `the consent page's form-action does not name the app's origin ${appOrigin}: ${csp}`);
  await pg.getByRole('heading', { name: `Allow ${APP_NAME}?` }).waitFor();
  const text = await pg.locator('main').innerText();
  assert.ok(text.includes(`${APP_NAME} (${appOrigin})`), `the consent page does not name the app and its origin:\n${text}`);
  assert.ok(text.includes(EMAIL), `the consent page does not name the user:\n${text}`);
  await shot('o3-consent');
  clean('consent page');
  ok('consent page names the app and its origin');

  // 4. Allow: back in the app, signed in.
  await toApp(() => pg.getByRole('button', { name: 'Allow' }).click(), '/', 'sign-in');
  await pg.getByRole('heading', { name: `Signed in as ${EMAIL}` }).waitFor();
  assert.equal(signIns.length, 1);
  await shot('o4-signed-in');
  ok('signed in to the app');

  // 5. Again, as a new visitor of the app (its cookie gone, gatehouse's
  //    kept): straight back, without any page of gatehouse's.
  await context.clearCookies({ name: 'rp_session' });
  await pg.goto(`${appOrigin}/`);
  mark();
  await toApp(() => pg.getByRole('link', { name: 'Sign in with gatehouse' }).click(), '/', 'second sign-in');
  await pg.getByRole('heading', { name: `Signed in as ${EMAIL}` }).waitFor();
  const seen = committed.filter((u) => new URL(u).origin === issuerOrigin);
  assert.deepEqual(seen, [], 'the second sign-in showed gatehouse pages (consent not remembered?)');
  assert.equal(signIns.length, 2);
  const [first, second] = signIns;
  assert.equal(second.claims.sub, first.claims.sub);
  assert.equal(second.claims.sid, first.claims.sid, 'the same browser session signed in twice');
  assert.equal(second.claims.auth_time, first.claims.auth_time, 'no new login');
  await shot('o5-signed-in-again');
  ok('consent remembered');

  // 6. gatehouse's account page lists the app under "Applications".
  await pg.goto(`${ISSUER}/account`);
  assert.equal(new URL(pg.url()).pathname, '/account');
  const apps = pg.getByRole('region', { name: 'Applications' });
  const entry = apps.locator(`li[data-client-id="${CLIENT_ID}"]`);
  assert.equal(await entry.count(), 1, 'the app is listed once under Applications');
  await entry.getByRole('heading', { name: APP_NAME }).waitFor();
  await shot('o6-account-applications');
  clean('account page');
  ok('account lists the app');

  // 7. Sign out from the app: gatehouse ends the session at once (the ID
  //    token is the proof the app asked) and sends the browser back.
  await pg.goto(`${appOrigin}/`);
  await pg.getByRole('heading', { name: `Signed in as ${EMAIL}` }).waitFor();
  mark();
  await toApp(() => pg.getByRole('button', { name: 'Sign out' }).click(), '/bye', 'sign-out');
  await pg.getByRole('heading', { name: 'Signed out' }).waitFor();
  const pages = committed.filter((u) => new URL(u).origin === issuerOrigin);
  assert.deepEqual(pages, [], 'the sign-out showed gatehouse pages (a confirmation despite the hint?)');
  await shot('o7-signed-out');
  clean('sign-out');
  ok('signed out through gatehouse');

  // 8. Signed out of gatehouse too.
  await pg.goto(`${ISSUER}/account`);
  assert.equal(new URL(pg.url()).pathname, '/login', `/account stayed at ${pg.url()}`);
  await pg.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  await shot('o8-login-after-sign-out');
  clean('account after sign-out');
  ok('gatehouse session ended');

  // 9. The app's tokens died with it.
  for (const [i, s] of signIns.entries()) {
    const res = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${s.accessToken}` } });
    assert.equal(res.status, 401, `UserInfo with access token ${i + 1} answered ${res.status}`);
    assert.match(res.headers.get('www-authenticate') || '', /invalid_token/);
  }
  ok('access tokens refused by UserInfo');

  console.log('rp journey passed');
} catch (e) {
  failed = true;
  console.error(`rp journey failed: ${e.stack || e}`);
  const left = [...problems, ...appErrors.map((x) => `app: ${x}`)];
  if (left.length) console.error(`problems:\n${left.join('\n')}`);
  console.error(`navigations:\n${trail.map((t) => JSON.stringify(t)).join('\n')}`);
  if (pg) await shot('o-failure').catch(() => {});
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
