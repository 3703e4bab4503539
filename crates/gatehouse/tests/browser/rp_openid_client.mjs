// A relying party built on npm's openid-client (panva's OpenID-certified
// client, pinned in package.json), signing a user in at gatehouse the way a
// Node web app would: run by tests/api/oidc_rp_node.rs against a gatehouse
// that serves HTTPS with a certificate of a test CA.
//
//   ISSUER=https://127.0.0.1:PORT ... node rp_openid_client.mjs
//
// openid-client does the protocol work and its own checks: discovery (the
// issuer), the authorization response (RFC 9207 `iss`, `state`), the code
// grant with PKCE, the ID token (signature against the JWKS, since
// non-repudiation checks are on; alg, iss, aud, exp, iat, nonce), UserInfo
// (`sub`), refresh, introspection, revocation and the RP-initiated logout
// URL. It talks HTTPS only: the test CA is trusted through
// NODE_EXTRA_CA_CERTS, never by an "insecure" switch. The browser is Node's
// fetch with a cookie jar of its own that follows no redirect by itself: it
// reads each Location, posts the login form, follows the login's meta
// refresh, and (for a client that is not first-party) posts the consent
// form. The redirect URIs are never fetched.
//
// Configuration, all from the environment: ISSUER, CLIENT_ID, CLIENT_SECRET,
// REDIRECT_URI, POST_LOGOUT_REDIRECT_URI, EMAIL, PASSWORD, FIRST_PARTY (1 or
// 0: whether gatehouse skips the consent page), AUTH_METHOD
// (client_secret_basic or client_secret_post), ID_TOKEN_ALG (RS256, ES256 or
// EdDSA: the client's id_token_signed_response_alg). Prints `ok <step>` per
// step passed; on the first failure prints `FAIL <step>: <why>` to stderr and
// exits 1.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as client from 'openid-client';

const SCOPE = 'openid profile email offline_access';
const TIMEOUT_MS = 10_000;

function env(name) {
  const value = process.env[name];
  assert.ok(value, `environment variable ${name} is not set`);
  return value;
}

const ISSUER = env('ISSUER');
const CLIENT_ID = env('CLIENT_ID');
const CLIENT_SECRET = env('CLIENT_SECRET');
const REDIRECT_URI = env('REDIRECT_URI');
const POST_LOGOUT_REDIRECT_URI = env('POST_LOGOUT_REDIRECT_URI');
const EMAIL = env('EMAIL');
const PASSWORD = env('PASSWORD');
const FIRST_PARTY = env('FIRST_PARTY') === '1';
const AUTH_METHOD = env('AUTH_METHOD');
const ID_TOKEN_ALG = env('ID_TOKEN_ALG');

const ORIGIN = new URL(ISSUER).origin;
// Over HTTPS gatehouse's session cookie has the `__Host-` name.
const SESSION_COOKIE = '__Host-gatehouse';

let step = 'start';

function ok(name) {
  console.log(`ok ${name}`);
}

// ------------------------------------------------------------ the browser

/** Text with the HTML character references maud writes turned back. */
function unescapeHtml(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos);/gi, (_, ref) => {
    const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ref.toLowerCase()];
    if (named) return named;
    const hex = ref[1] === 'x' || ref[1] === 'X';
    return String.fromCodePoint(parseInt(ref.slice(hex ? 2 : 1), hex ? 16 : 10));
  });
}

/** The attributes of one start tag's source (`<input a="b" c>`). */
function attributes(tag) {
  const attrs = {};
  const re = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;
  const body = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  for (const m of body.matchAll(re)) {
    attrs[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

/** The forms of a page (hidden and other named inputs, named buttons) and
 *  its meta refresh. */
function parsePage(html) {
  const forms = [];
  for (const m of html.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form>/gi)) {
    const a = attributes(m[0].slice(0, m[0].indexOf('>') + 1));
    const fields = {};
    const buttons = [];
    for (const input of m[1].matchAll(/<input\b[^>]*>/gi)) {
      const ia = attributes(input[0]);
      if (ia.name) fields[ia.name] = ia.value ?? '';
    }
    for (const button of m[1].matchAll(/<button\b[^>]*>/gi)) {
      const ba = attributes(button[0]);
      if (ba.name) buttons.push([ba.name, ba.value ?? '']);
    }
    forms.push({ action: a.action, method: a.method, fields, buttons });
  }
  let refresh = null;
  for (const m of html.matchAll(/<meta\b[^>]*>/gi)) {
    const a = attributes(m[0]);
    if ((a['http-equiv'] ?? '').toLowerCase() === 'refresh') refresh = a.content;
  }
  return {
    refresh,
    form(action) {
      const found = forms.filter((f) => f.action === action);
      assert.equal(found.length, 1, `one form posting to ${action} expected, found ${JSON.stringify(forms)}`);
      return found[0];
    },
  };
}

/** One user agent: a cookie jar for the issuer's origin, no redirect
 *  followed by itself. */
class Browser {
  constructor() {
    this.cookies = new Map();
  }

  /** Fetches `url` (on the issuer) with the jar's cookies, and keeps the
   *  cookies the answer sets or clears. */
  async fetch(url, { method = 'GET', form, headers = {} } = {}) {
    assert.equal(new URL(url).origin, ORIGIN, `the browser only visits the issuer, not ${url}`);
    const h = new Headers(headers);
    if (this.cookies.size) {
      h.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    let body;
    if (form) {
      h.set('content-type', 'application/x-www-form-urlencoded');
      body = new URLSearchParams(form).toString();
    }
    const res = await fetch(url, {
      method,
      headers: h,
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const gone = attrs.some((a) => {
        const [k, v = ''] = a.split('=').map((s) => s.trim());
        return (k.toLowerCase() === 'max-age' && Number(v) <= 0)
          || (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now());
      });
      if (gone) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    res.text_ = await res.text();
    return res;
  }
}

/** The absolute URL a redirect answer sends the browser to. */
function location(res, from) {
  const loc = res.headers.get('location');
  assert.ok(loc, `${from}: no Location on ${res.status}: ${res.text_.slice(0, 300)}`);
  return new URL(loc, from);
}

function expectStatus(res, status, what, url) {
  assert.equal(
    res.status,
    status,
    `${what}: ${url} answered ${res.status}, not ${status}: ${res.headers.get('location') ?? res.text_.slice(0, 500)}`,
  );
}

/** The single value of each query parameter of `url` (none given twice). */
function query(url) {
  const params = new URL(url).searchParams;
  const names = [...params.keys()];
  assert.equal(names.length, new Set(names).size, `a parameter given twice: ${url}`);
  return Object.fromEntries(params);
}

// ----------------------------------------------------------- the protocol

/** The authorization request's secrets, and its URL made by openid-client. */
async function authorizationRequest(config) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  return { url, codeVerifier, state, nonce };
}

/** The redirect URI of an authorization answer (a 302 or 303 there),
 *  without an error. */
function callbackOf(res, from) {
  const callback = location(res, from);
  assert.equal(`${callback.origin}${callback.pathname}`, REDIRECT_URI, `sent to ${callback}`);
  assert.ok(!('error' in query(callback)), `the authorization failed: ${callback}`);
  return callback;
}

/** An authorization request at `url` by a `browser` that is signed in and
 *  has consented: gatehouse answers at once, with no page. */
async function authorizeAgain(browser, url) {
  const res = await browser.fetch(url);
  expectStatus(res, 302, 'authorization request of a signed-in user', url);
  return callbackOf(res, url);
}

/** The first authorization request, at `url`: `browser` is sent to the
 *  login page, signs in, and (for a client that is not first-party) allows
 *  the consent page. Returns the redirect URI with the answer. */
async function authorizeFirst(browser, url) {
  let res = await browser.fetch(url);
  expectStatus(res, 302, 'authorization request without a session', url);
  const loginUrl = location(res, url);
  assert.equal(loginUrl.pathname, '/login', `not sent to the login page: ${loginUrl}`);
  assert.ok((query(loginUrl).return_to ?? '').startsWith('/oauth2/authorize?'), `${loginUrl}`);
  ok('login_redirect');

  step = 'login';
  res = await browser.fetch(loginUrl);
  expectStatus(res, 200, 'login page', loginUrl);
  const login = parsePage(res.text_).form('/login');
  for (const name of ['email', 'password', 'return_to']) {
    assert.ok(name in login.fields, `no ${name} in the login form: ${JSON.stringify(login.fields)}`);
  }
  const posted = new URL(login.action, loginUrl);
  res = await browser.fetch(posted, {
    method: 'POST',
    form: { ...login.fields, email: EMAIL, password: PASSWORD },
    headers: { origin: ORIGIN },
  });
  expectStatus(res, 200, 'login form', posted);
  assert.ok(browser.cookies.has(SESSION_COOKIE), `no ${SESSION_COOKIE} cookie: ${[...browser.cookies.keys()]}`);
  const refresh = parsePage(res.text_).refresh;
  assert.ok(refresh, `the login's answer has no meta refresh: ${res.text_.slice(0, 500)}`);
  const m = /^\s*0\s*;\s*url=(.*)$/i.exec(refresh);
  assert.ok(m, `meta refresh ${JSON.stringify(refresh)}`);
  const back = new URL(m[1].trim(), posted);
  assert.ok(back.href.startsWith(`${ORIGIN}/oauth2/authorize?`), `the login sends the browser to ${back}`);
  ok('login');

  step = FIRST_PARTY ? 'authorization_response' : 'consent';
  res = await browser.fetch(back);
  if (FIRST_PARTY) {
    expectStatus(res, 302, 'authorization request of a first-party client after login', back);
    return callbackOf(res, back);
  }
  expectStatus(res, 200, 'consent page of a third-party client', back);
  const consent = parsePage(res.text_).form('/oauth2/consent');
  assert.ok('request' in consent.fields, `consent form fields: ${JSON.stringify(consent.fields)}`);
  assert.ok(
    consent.buttons.some(([k, v]) => k === 'decision' && v === 'allow'),
    `consent buttons: ${JSON.stringify(consent.buttons)}`,
  );
  const allowed = new URL(consent.action, back);
  res = await browser.fetch(allowed, {
    method: 'POST',
    form: { ...consent.fields, decision: 'allow' },
    headers: { origin: ORIGIN },
  });
  expectStatus(res, 303, 'consent form (allow)', allowed);
  ok('consent');
  return callbackOf(res, allowed);
}

/** The redirect URI's answer with `name` set to `value` (or removed). */
function altered(callback, name, value) {
  const url = new URL(callback);
  if (value === undefined) url.searchParams.delete(name);
  else url.searchParams.set(name, value);
  return url;
}

/** Asserts that `call` throws, and that `check` (which asserts on
 *  openid-client's ClientError code, or the server's error in a
 *  ResponseBodyError or WWWAuthenticateChallengeError) accepts the error;
 *  returns it. */
async function refused(description, call, check) {
  let result;
  try {
    result = await call();
  } catch (e) {
    check(e);
    return e;
  }
  // The names only: a result may hold tokens.
  assert.fail(`${description} was accepted, answering ${Object.keys(result ?? {})}`);
}

function describe(e) {
  let cause;
  try {
    cause = JSON.stringify(e?.cause);
  } catch {
    cause = String(e?.cause);
  }
  return `${e?.name}: ${e?.message} (code ${e?.code}, cause ${cause})`;
}

/** The decoded JOSE header of a compact JWS. */
function jwsHeader(token) {
  return JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString());
}

/** OIDC Core §3.1.3.6: the left half of the access token's hash, by the
 *  hash of the ID token's alg (SHA-512 for EdDSA with Ed25519). */
function atHash(accessToken, alg) {
  const digest = createHash(alg === 'EdDSA' ? 'sha512' : 'sha256').update(accessToken, 'ascii').digest();
  return digest.subarray(0, digest.length / 2).toString('base64url');
}

function flipSignatureByte(token) {
  const [header, payload, signature] = token.split('.');
  const raw = Buffer.from(signature, 'base64url');
  raw[raw.length >> 1] ^= 0x01;
  return [header, payload, raw.toString('base64url')].join('.');
}

/** Asserts a UserInfo request with `accessToken` is refused with 401
 *  `invalid_token`. */
async function userinfoRefused(config, accessToken, sub, what) {
  await refused(`UserInfo with ${what}`, () => client.fetchUserInfo(config, accessToken, sub), (e) => {
    assert.ok(e instanceof client.WWWAuthenticateChallengeError, `UserInfo with ${what}: ${describe(e)}`);
    assert.equal(e.status, 401, `UserInfo with ${what}: ${describe(e)}`);
    assert.ok(
      e.cause.some((c) => c.scheme === 'bearer' && c.parameters.error === 'invalid_token'),
      `UserInfo with ${what}: challenges ${JSON.stringify(e.cause)}`,
    );
  });
}

async function introspect(config, token, hint) {
  return client.tokenIntrospection(config, token, hint ? { token_type_hint: hint } : undefined);
}

function inactive(answer, what) {
  assert.deepEqual({ ...answer }, { active: false }, `introspection of ${what}`);
}

async function main() {
  assert.ok(ISSUER.startsWith('https://'), `the issuer must be https for openid-client: ${ISSUER}`);
  assert.ok(['client_secret_basic', 'client_secret_post'].includes(AUTH_METHOD), AUTH_METHOD);

  // --------------------------------------------------------- discovery
  step = 'discovery';
  const auth = AUTH_METHOD === 'client_secret_basic'
    ? client.ClientSecretBasic(CLIENT_SECRET)
    : client.ClientSecretPost(CLIENT_SECRET);
  // Signatures of ID tokens are checked against the JWKS too, not only the
  // TLS connection they came over (OIDC Core §3.1.3.7 makes that optional).
  const config = await client.discovery(
    new URL(ISSUER),
    CLIENT_ID,
    { client_secret: CLIENT_SECRET, id_token_signed_response_alg: ID_TOKEN_ALG },
    auth,
    { execute: [client.enableNonRepudiationChecks], timeout: TIMEOUT_MS / 1000 },
  );
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, ISSUER, 'OIDC Discovery §4.3: the issuer is the one asked');
  for (const name of [
    'authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri',
    'revocation_endpoint', 'introspection_endpoint', 'end_session_endpoint',
  ]) {
    assert.ok((meta[name] ?? '').startsWith(`${ISSUER}/`), `${name} ${meta[name]} is not on the issuer`);
  }
  assert.ok(meta.supportsPKCE('S256'), 'no S256 PKCE in discovery');
  assert.equal(meta.authorization_response_iss_parameter_supported, true, 'RFC 9207 iss not announced');
  assert.ok(meta.token_endpoint_auth_methods_supported.includes(AUTH_METHOD), `${AUTH_METHOD} not in discovery`);
  assert.ok(meta.id_token_signing_alg_values_supported.includes(ID_TOKEN_ALG), `${ID_TOKEN_ALG} not in discovery`);
  ok('discovery');

  // ------------------------------------------------ authorization request
  step = 'authorization_url';
  const first = await authorizationRequest(config);
  const sent = query(first.url);
  assert.equal(sent.client_id, CLIENT_ID, `${first.url}`);
  assert.equal(sent.response_type, 'code', `${first.url}`);
  assert.equal(sent.code_challenge_method, 'S256', `${first.url}`);
  assert.equal(sent.state, first.state, `${first.url}`);
  assert.equal(sent.nonce, first.nonce, `${first.url}`);
  ok('authorization_url');

  step = 'login_redirect';
  const browser = new Browser();
  const callback = await authorizeFirst(browser, first.url);
  step = 'authorization_response';
  const answer = query(callback);
  assert.ok(answer.code, `no code: ${callback}`);
  assert.equal(answer.state, first.state, `${callback}`);
  assert.equal(answer.iss, ISSUER, `RFC 9207 §2.4: ${callback}`);
  ok('authorization_response');

  // ------------------ what openid-client refuses before spending the code
  const checks = {
    pkceCodeVerifier: first.codeVerifier,
    expectedState: first.state,
    expectedNonce: first.nonce,
    idTokenExpected: true,
  };
  const invalidResponse = (what, words) => (e) => {
    assert.ok(e instanceof client.ClientError, `${what}: ${describe(e)}`);
    assert.equal(e.code, 'OAUTH_INVALID_RESPONSE', `${what}: ${describe(e)}`);
    assert.match(e.cause?.message ?? '', words, `${what}: ${describe(e)}`);
  };
  step = 'state_tampered_rejected';
  await refused('an answer with another state',
    () => client.authorizationCodeGrant(config, altered(callback, 'state', client.randomState()), checks),
    invalidResponse('another state', /"state"/));
  ok(step);

  step = 'iss_tampered_rejected';
  await refused('an answer from another issuer',
    () => client.authorizationCodeGrant(config, altered(callback, 'iss', 'https://evil.example'), checks),
    invalidResponse('another iss', /"iss"/));
  await refused('an answer without iss',
    () => client.authorizationCodeGrant(config, altered(callback, 'iss'), checks),
    invalidResponse('no iss', /"iss"/));
  ok(step);

  // -------------------------------------------------------------- token
  step = `token ${AUTH_METHOD}`;
  const tokens = await client.authorizationCodeGrant(config, callback, checks);
  for (const name of ['access_token', 'id_token', 'refresh_token', 'expires_in', 'scope']) {
    assert.ok(tokens[name], `no ${name} in the token response: ${Object.keys(tokens)}`);
  }
  assert.equal(tokens.token_type, 'bearer', `token_type ${tokens.token_type}`);
  const granted = tokens.scope.split(' ');
  for (const s of SCOPE.split(' ')) assert.ok(granted.includes(s), `granted ${granted}`);
  ok(step);

  // openid-client checked the signature (against the JWKS), alg, iss, aud,
  // exp, iat and nonce; what it leaves to the application is checked here.
  step = 'id_token';
  const claims = tokens.claims();
  const header = jwsHeader(tokens.id_token);
  assert.equal(header.alg, ID_TOKEN_ALG, `alg ${header.alg}`);
  assert.ok(header.kid, 'no kid in the ID token header');
  assert.equal(claims.iss, ISSUER, `iss ${claims.iss}`);
  assert.ok([claims.aud].flat().includes(CLIENT_ID), `aud ${claims.aud}`);
  assert.equal(claims.nonce, first.nonce, `nonce ${claims.nonce}`);
  assert.ok(claims.sub, 'no sub');
  assert.ok(claims.sid, 'no sid');
  assert.equal(claims.at_hash, atHash(tokens.access_token, header.alg), 'at_hash does not match the access token');
  assert.equal(claims.email, EMAIL, `email ${claims.email}`);
  assert.equal(claims.email_verified, false, `email_verified ${claims.email_verified}`);
  assert.equal(claims.preferred_username, EMAIL, `preferred_username ${claims.preferred_username}`);
  assert.ok(Array.isArray(claims.roles), `roles ${claims.roles}`);
  assert.deepEqual(claims.amr, ['pwd'], `amr ${claims.amr}`);
  assert.ok(claims.auth_time <= claims.iat && claims.iat < claims.exp, `times ${JSON.stringify(claims)}`);
  ok('id_token');

  // ---------------------------- what openid-client refuses in an ID token
  // Each spends a code of its own; the browser is signed in, so gatehouse
  // answers the authorization request at once.
  step = 'id_token_wrong_nonce_rejected';
  const second = await authorizationRequest(config);
  const secondCallback = await authorizeAgain(browser, second.url);
  await refused('an ID token for another nonce',
    () => client.authorizationCodeGrant(config, secondCallback, {
      pkceCodeVerifier: second.codeVerifier,
      expectedState: second.state,
      expectedNonce: client.randomNonce(),
      idTokenExpected: true,
    }),
    (e) => {
      assert.ok(e instanceof client.ClientError, describe(e));
      assert.equal(e.code, 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', describe(e));
      assert.equal(e.cause?.cause?.claim, 'nonce', describe(e));
    });
  ok(step);

  // RFC 6749 §4.1.2: a code is exchanged once.
  step = 'code_replay_refused';
  await refused('a code exchanged twice',
    () => client.authorizationCodeGrant(config, secondCallback, {
      pkceCodeVerifier: second.codeVerifier,
      expectedState: second.state,
      expectedNonce: second.nonce,
      idTokenExpected: true,
    }),
    (e) => {
      assert.ok(e instanceof client.ResponseBodyError, describe(e));
      assert.equal(e.error, 'invalid_grant', describe(e));
    });
  ok(step);

  // A token response whose ID token lost its signature on the way: the
  // non-repudiation check verifies it against the JWKS and refuses it.
  step = 'id_token_bad_signature_rejected';
  const third = await authorizationRequest(config);
  const thirdCallback = await authorizeAgain(browser, third.url);
  const plainFetch = config[client.customFetch];
  config[client.customFetch] = async (url, options) => {
    const res = await fetch(url, options);
    if (new URL(url).href !== new URL(meta.token_endpoint).href || res.status !== 200) return res;
    const body = await res.json();
    body.id_token = flipSignatureByte(body.id_token);
    return new Response(JSON.stringify(body), {
      status: 200,
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    });
  };
  try {
    await refused('an ID token with a flipped signature byte',
      () => client.authorizationCodeGrant(config, thirdCallback, {
        pkceCodeVerifier: third.codeVerifier,
        expectedState: third.state,
        expectedNonce: third.nonce,
        idTokenExpected: true,
      }),
      (e) => {
        assert.ok(e instanceof client.ClientError, describe(e));
        assert.match(`${e.message} ${e.cause?.message}`, /signature/i, describe(e));
      });
  } finally {
    config[client.customFetch] = plainFetch;
  }
  ok(step);

  // ----------------------------------------------------------- UserInfo
  step = 'userinfo';
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.equal(info.sub, claims.sub, `UserInfo sub ${info.sub}`);
  assert.equal(info.email, EMAIL, `UserInfo email ${info.email}`);
  assert.equal(info.email_verified, claims.email_verified, `UserInfo ${JSON.stringify(info)}`);
  ok(step);

  step = 'userinfo_other_subject_rejected';
  await refused('UserInfo for another subject',
    () => client.fetchUserInfo(config, tokens.access_token, 'someone-else'),
    (e) => {
      assert.ok(e instanceof client.ClientError, describe(e));
      assert.equal(e.code, 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED', describe(e));
    });
  ok(step);

  // ------------------------------------------------------------- refresh
  step = 'refresh';
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.ok(refreshed.access_token && refreshed.access_token !== tokens.access_token, 'no new access token');
  assert.ok(
    refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token,
    'the refresh token was not rotated',
  );
  assert.equal(refreshed.id_token, undefined, 'the refresh grant returned an ID token');
  const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
  assert.equal(again.sub, claims.sub, 'UserInfo with the refreshed access token');
  ok(step);

  // -------------------------------------------------------- introspection
  step = 'introspection';
  const active = await introspect(config, refreshed.access_token, 'access_token');
  assert.equal(active.active, true, `introspection of the access token: ${JSON.stringify(active)}`);
  assert.equal(active.sub, claims.sub, `sub ${active.sub}`);
  assert.equal(active.client_id, CLIENT_ID, `client_id ${active.client_id}`);
  assert.equal(active.username, EMAIL, `username ${active.username}`);
  assert.equal(active.iss, ISSUER, `iss ${active.iss}`);
  assert.equal(active.token_type, 'Bearer', `token_type ${active.token_type}`);
  assert.ok(active.scope.split(' ').includes('openid'), `scope ${active.scope}`);
  assert.ok([active.aud].flat().includes(CLIENT_ID), `aud ${active.aud}`);
  assert.ok(active.sid && active.jti && active.exp > active.iat, JSON.stringify(active));
  const refreshActive = await introspect(config, refreshed.refresh_token, 'refresh_token');
  assert.equal(refreshActive.active, true, `introspection of the refresh token: ${JSON.stringify(refreshActive)}`);
  assert.equal(refreshActive.token_type, 'refresh_token', `token_type ${refreshActive.token_type}`);
  assert.equal(refreshActive.sid, active.sid, 'the refresh and access tokens of one client session');
  ok(step);

  step = 'introspection_inactive';
  inactive(await introspect(config, tokens.id_token), 'the ID token');
  inactive(await introspect(config, tokens.refresh_token, 'refresh_token'), 'the rotated refresh token');
  inactive(await introspect(config, 'not-a-token'), 'garbage');
  ok(step);

  // ----------------------------------------------------------- revocation
  step = 'revocation';
  await client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' });
  inactive(await introspect(config, refreshed.refresh_token, 'refresh_token'), 'the revoked refresh token');
  inactive(await introspect(config, refreshed.access_token, 'access_token'), "the revoked refresh token's access token");
  await userinfoRefused(config, refreshed.access_token, claims.sub, 'an access token of a revoked grant');
  await refused('a refresh with a revoked refresh token',
    () => client.refreshTokenGrant(config, refreshed.refresh_token),
    (e) => {
      assert.ok(e instanceof client.ResponseBodyError, describe(e));
      assert.equal(e.error, 'invalid_grant', describe(e));
    });
  ok(step);

  // ------------------------------------------------- RP-initiated logout
  step = 'sign_in_again';
  const last = await authorizationRequest(config);
  const lastCallback = await authorizeAgain(browser, last.url);
  const lastTokens = await client.authorizationCodeGrant(config, lastCallback, {
    pkceCodeVerifier: last.codeVerifier,
    expectedState: last.state,
    expectedNonce: last.nonce,
    idTokenExpected: true,
  });
  const lastClaims = lastTokens.claims();
  assert.equal(lastClaims.sid, claims.sid, 'one browser session, one sid');
  await client.fetchUserInfo(config, lastTokens.access_token, claims.sub);
  ok(step);

  // An unregistered post_logout_redirect_uri is a page: nothing ends.
  step = 'logout_unregistered_uri_refused';
  const evil = client.buildEndSessionUrl(config, {
    id_token_hint: lastTokens.id_token,
    post_logout_redirect_uri: 'https://evil.example/signed-out',
  });
  let res = await browser.fetch(evil);
  expectStatus(res, 400, 'RP-initiated logout to an unregistered URI', evil);
  await client.fetchUserInfo(config, lastTokens.access_token, claims.sub);
  ok(step);

  step = 'logout';
  const logoutState = client.randomState();
  const logout = client.buildEndSessionUrl(config, {
    id_token_hint: lastTokens.id_token,
    post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
    state: logoutState,
  });
  assert.equal(query(logout).client_id, CLIENT_ID, `${logout}`);
  res = await browser.fetch(logout);
  expectStatus(res, 302, 'RP-initiated logout', logout);
  const after = location(res, logout);
  assert.equal(`${after.origin}${after.pathname}`, POST_LOGOUT_REDIRECT_URI, `sent to ${after}`);
  assert.equal(query(after).state, logoutState, `state of ${after}`);
  assert.ok(!browser.cookies.has(SESSION_COOKIE), `the ${SESSION_COOKIE} cookie is kept`);
  ok(step);

  step = 'userinfo_refused_after_logout';
  await userinfoRefused(config, lastTokens.access_token, claims.sub, 'an access token of a signed-out session');
  inactive(await introspect(config, lastTokens.access_token, 'access_token'), 'an access token after logout');
  await refused('a refresh after logout',
    () => client.refreshTokenGrant(config, lastTokens.refresh_token),
    (e) => {
      assert.ok(e instanceof client.ResponseBodyError, describe(e));
      assert.equal(e.error, 'invalid_grant', describe(e));
    });
  // The browser is signed out: a new request goes to the login page.
  const next = await authorizationRequest(config);
  res = await browser.fetch(next.url);
  expectStatus(res, 302, 'authorization request after logout', next.url);
  assert.equal(location(res, next.url).pathname, '/login', 'the browser is still signed in');
  ok(step);

  ok('all');
}

try {
  await main();
} catch (e) {
  if (e instanceof assert.AssertionError) {
    console.error(`FAIL ${step}: ${e.message}`);
  } else {
    console.error(e);
    console.error(`FAIL ${step}: ${describe(e)}`);
  }
  process.exit(1);
}
