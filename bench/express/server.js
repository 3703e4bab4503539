'use strict';
// Baselines for gatehouse's load harness: "what people use instead",
// measured by the same wrk scripts on the same machine (bench/baselines.py
// installs this into a scratch folder, starts it, and stops it).
//
// Modes (BENCH_MODE or the first argument):
//
//   jwt-string     jsonwebtoken as usually written: jwt.verify(token, secret)
//                  with the HS256 secret as a Buffer (or a string) on every
//                  request. jsonwebtoken 9 turns it into a KeyObject inside
//                  every call (crypto.createSecretKey), a cost paid per
//                  request.
//   jwt-keyobject  jsonwebtoken tuned: the KeyObject is made once at start-up
//                  (crypto.createSecretKey) and handed to every jwt.verify.
//   jose           jose's jwtVerify. EdDSA: a local JWKS (createLocalJWKSet)
//                  of gatehouse's /.well-known/jwks.json, so the key is chosen
//                  by `kid` as gatehouse does; HS256: the key imported once.
//   node-crypto    no JWT library: the compact JWS split by hand and checked
//                  with crypto.verify (EdDSA) or crypto.createHmac (HS256)
//                  under a KeyObject made once: what Node can do at best.
//   session        express-session with its default MemoryStore: POST /login
//                  creates a session, GET /v1/verify answers from it.
//   session-redis  the same with connect-redis (node-redis client), the store
//                  people move to once there is more than one process.
//
// Every mode also answers GET /healthz (200, "ok"): Express's own floor.
//
// EdDSA and jsonwebtoken. jsonwebtoken 9.0.3 (latest) cannot verify EdDSA:
// jwt.verify with an Ed25519 key, as a KeyObject or as a PEM string, throws
// 'Unknown key type "ed25519".' (its key check knows rsa, rsa-pss and ec
// only, and the jws/jwa modules under it have no EdDSA), and without an
// `algorithms` list it answers "invalid algorithm". So for EdDSA the modes
// are jose and node-crypto, and jwt-string/jwt-keyobject refuse to start.
// jose is the library Node projects use for EdDSA: its version 6 verifies
// through WebCrypto (crypto.subtle.verify, a promise per token); it is the
// "as usually written" EdDSA baseline. node-crypto (a KeyObject made once,
// crypto.verify) is the tuned one: the same checks without a library and
// without a promise. Note that crypto.verify runs on the event loop's
// thread, while WebCrypto's verify runs on libuv's thread pool, so jose can
// put the second core to work on signatures and may come out ahead.
//
// What every bearer mode checks, the same rules as gatehouse's GET
// /v1/verify (docs/tokens.md, "Verification"): at most 8 KiB; the algorithm
// pinned to the configured one (never taken from the token alone); `typ`
// at+jwt (or application/at+jwt); the signature; `iss` equal to the issuer;
// `aud` (a string or an array) holding the audience; `exp`, `nbf`, `iat`
// against the clock with the same leeway (30 s by default, gatehouse's
// default jwt_leeway); `sub` and `sid` canonical UUIDs. It answers 200 with
// X-Auth-Request-User (sub), X-Auth-Request-Roles (roles, comma-separated)
// and X-Auth-Request-Email when the token has an `email` claim. gatehouse's
// tokens have none: gatehouse reads the email, and the session, from its
// store on every request, which these baselines do not. They also have no
// revocation check (nothing tells them a session ended), and choose the key
// by `kid` only in jose's EdDSA mode and node-crypto's. As with gatehouse, a
// request without X-Original-URI or X-Forwarded-Uri is 400.
//
// Sessions. POST /login creates a session for a made-up user without any
// password or password hashing: it exists only so that the benchmark can
// get a session cookie, and is a baseline, not a login. The authenticated
// GET /v1/verify then answers from req.session. express-session is set up as
// its README suggests (resave: false, saveUninitialized: false); with
// connect-redis every request reads the session from Redis and refreshes its
// time to live (touch), two Redis commands, where gatehouse keeps a
// node-local cache of sessions for 10 s.
//
// Processes. One process, the way Express is usually run, so it uses one of
// the two cores (gatehouse uses both). BENCH_NODE_CLUSTER=1 runs node:cluster
// with 2 workers (BENCH_NODE_WORKERS to change it) sharing the port, which
// uses both cores; not with the MemoryStore, whose sessions would live in one
// worker only.
//
// Configuration (environment):
//   BENCH_PORT             port on 127.0.0.1 (default 0: any free one)
//   BENCH_ALG              HS256 or EdDSA (default HS256)
//   BENCH_HS256_SECRET     the HS256 secret, base64 (standard or url-safe),
//                          decoded as gatehouse decodes GATEHOUSE_JWT_HS256_SECRET
//   BENCH_JWKS             EdDSA: a JWK set, as /.well-known/jwks.json serves it
//   BENCH_PUBLIC_KEY_PEM   EdDSA: or one SPKI PEM public key (then no kid check)
//   BENCH_ISSUER, BENCH_AUDIENCE, BENCH_LEEWAY (seconds, default 30)
//   BENCH_REDIS_URL, BENCH_REDIS_PREFIX   session-redis
//   BENCH_SESSION_SECRET   the cookie signing secret (default: random)
// The first line on stdout is `listening on http://127.0.0.1:PORT`.

const cluster = require('node:cluster');
const crypto = require('node:crypto');

const MODES = ['jwt-string', 'jwt-keyobject', 'jose', 'node-crypto', 'session', 'session-redis'];
const mode = process.argv[2] || process.env.BENCH_MODE || 'jwt-keyobject';
const alg = process.env.BENCH_ALG || 'HS256';
const workers = process.env.BENCH_NODE_CLUSTER === '1'
  ? Number(process.env.BENCH_NODE_WORKERS || 2)
  : 0;

function fail(message) {
  process.stderr.write(`server.js: ${message}\n`);
  process.exit(2);
}

if (!MODES.includes(mode)) fail(`unknown mode ${mode}; one of ${MODES.join(', ')}`);
if (alg !== 'HS256' && alg !== 'EdDSA') fail(`BENCH_ALG must be HS256 or EdDSA, not ${alg}`);
if ((mode === 'jwt-string' || mode === 'jwt-keyobject') && alg !== 'HS256') {
  fail('jsonwebtoken 9 does not support EdDSA (see the top of server.js): use jose or node-crypto');
}
if (workers && mode === 'session') fail('the MemoryStore cannot be shared by cluster workers');

function primary() {
  // One cookie secret for every worker (they inherit the environment), so
  // a cookie one of them signed is valid on the others.
  if (!process.env.BENCH_SESSION_SECRET) {
    process.env.BENCH_SESSION_SECRET = crypto.randomBytes(32).toString('hex');
  }
  let listening = 0;
  cluster.on('listening', (_w, address) => {
    // Printed once every worker accepts, so the load never meets only one.
    if (++listening === workers) {
      process.stdout.write(`listening on http://127.0.0.1:${address.port}\n`);
    }
  });
  let stopping = false;
  cluster.on('exit', (_w, code) => {
    if (!stopping) fail(`a worker exited (${code})`);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < workers; i++) cluster.fork();
}

async function worker() {
  const express = require('express');
  const app = express();
  app.get('/healthz', (_req, res) => {
    res.send('ok');
  });

  if (mode === 'session' || mode === 'session-redis') {
    await sessionRoutes(app);
  } else {
    const verify = await bearerVerifier();
    app.all('/v1/verify', (req, res) => {
      if (!hasOriginal(req)) return res.status(400).end();
      const token = bearer(req);
      if (token === null) return unauthorized(res, false);
      let claims;
      try {
        claims = verify(token);
      } catch {
        return unauthorized(res, true);
      }
      if (claims instanceof Promise) {
        claims.then((c) => allow(res, c), () => unauthorized(res, true));
      } else {
        allow(res, claims);
      }
    });
  }

  const server = app.listen(Number(process.env.BENCH_PORT || 0), '127.0.0.1', () => {
    if (!workers) process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
}

// ---- bearer modes ---------------------------------------------------------

const LEEWAY = Number(process.env.BENCH_LEEWAY || 30);
const ISSUER = process.env.BENCH_ISSUER;
const AUDIENCE = process.env.BENCH_AUDIENCE;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_TOKEN = 8 * 1024;

function hs256Secret() {
  const b64 = process.env.BENCH_HS256_SECRET;
  if (!b64) fail('HS256 needs BENCH_HS256_SECRET (base64)');
  // Buffer.from(…, 'base64') reads both alphabets, padded or not, as
  // gatehouse's decoding does.
  const secret = Buffer.from(b64, 'base64');
  if (secret.length < 32) fail('BENCH_HS256_SECRET must decode to at least 32 bytes');
  return secret;
}

function eddsaJwks() {
  if (process.env.BENCH_JWKS) {
    const set = JSON.parse(process.env.BENCH_JWKS);
    const keys = (set.keys || []).filter((k) => k.kty === 'OKP' && k.crv === 'Ed25519');
    if (!keys.length) fail('BENCH_JWKS holds no Ed25519 key');
    return { keys };
  }
  return null;
}

// The rules jsonwebtoken and jose leave out: `typ`, `iat` not in the
// future, `exp` and `iat` present, canonical `sub` and `sid`.
function gatehouseRules(header, claims, now) {
  const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : '';
  if (typ !== 'at+jwt' && typ !== 'application/at+jwt') throw new Error('typ');
  if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number') throw new Error('times');
  if (claims.iat > now + LEEWAY) throw new Error('iat');
  if (typeof claims.sub !== 'string' || !UUID.test(claims.sub)) throw new Error('sub');
  if (typeof claims.sid !== 'string' || !UUID.test(claims.sid)) throw new Error('sid');
  return claims;
}

// iss, aud, exp, nbf as jsonwebtoken and jose check them, for node-crypto.
function registeredClaims(claims, now) {
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) throw new Error('claims');
  if (claims.iss !== ISSUER) throw new Error('iss');
  const aud = claims.aud;
  if (!(aud === AUDIENCE || (Array.isArray(aud) && aud.includes(AUDIENCE)))) throw new Error('aud');
  if (now >= claims.exp + LEEWAY) throw new Error('exp');
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || now < claims.nbf - LEEWAY)) {
    throw new Error('nbf');
  }
}

const nowSecs = () => Math.floor(Date.now() / 1000);

// A function token -> claims (or a promise of them) that throws on refusal.
async function bearerVerifier() {
  if (!ISSUER || !AUDIENCE) fail('bearer modes need BENCH_ISSUER and BENCH_AUDIENCE');

  if (mode === 'jwt-string' || mode === 'jwt-keyobject') {
    const jwt = require('jsonwebtoken');
    const secret = hs256Secret();
    const key = mode === 'jwt-keyobject' ? crypto.createSecretKey(secret) : secret;
    const options = {
      algorithms: ['HS256'],
      issuer: ISSUER,
      audience: AUDIENCE,
      clockTolerance: LEEWAY,
      complete: true,
    };
    return (token) => {
      if (token.length > MAX_TOKEN) throw new Error('size');
      const { header, payload } = jwt.verify(token, key, options);
      return gatehouseRules(header, payload, nowSecs());
    };
  }

  if (mode === 'jose') {
    const jose = await import('jose');
    let key;
    if (alg === 'HS256') {
      key = await jose.importJWK({ kty: 'oct', k: hs256Secret().toString('base64url') }, 'HS256');
    } else {
      const jwks = eddsaJwks();
      key = jwks
        ? jose.createLocalJWKSet(jwks)
        : await jose.importSPKI(pemKey(), 'EdDSA');
    }
    const options = {
      algorithms: [alg],
      issuer: ISSUER,
      audience: AUDIENCE,
      clockTolerance: LEEWAY,
      typ: 'at+jwt',
      requiredClaims: ['exp', 'iat', 'sub', 'sid'],
    };
    return async (token) => {
      if (token.length > MAX_TOKEN) throw new Error('size');
      const { protectedHeader, payload } = await jose.jwtVerify(token, key, options);
      return gatehouseRules(protectedHeader, payload, nowSecs());
    };
  }

  // node-crypto
  let keyFor; // header -> KeyObject
  if (alg === 'HS256') {
    const key = crypto.createSecretKey(hs256Secret());
    keyFor = () => key;
  } else {
    const jwks = eddsaJwks();
    if (jwks) {
      const byKid = new Map(jwks.keys.map((k) => [k.kid, crypto.createPublicKey({ key: k, format: 'jwk' })]));
      keyFor = (header) => {
        const key = byKid.get(header.kid);
        if (!key) throw new Error('kid');
        return key;
      };
    } else {
      const key = crypto.createPublicKey(pemKey());
      keyFor = () => key;
    }
  }
  return (token) => {
    if (token.length > MAX_TOKEN) throw new Error('size');
    const dot1 = token.indexOf('.');
    const dot2 = token.indexOf('.', dot1 + 1);
    if (dot1 < 1 || dot2 < 0 || token.indexOf('.', dot2 + 1) !== -1) throw new Error('form');
    const header = JSON.parse(Buffer.from(token.slice(0, dot1), 'base64url'));
    if (header === null || typeof header !== 'object' || header.alg !== alg) throw new Error('alg');
    const key = keyFor(header);
    const input = Buffer.from(token.slice(0, dot2));
    const signature = Buffer.from(token.slice(dot2 + 1), 'base64url');
    let ok;
    if (alg === 'HS256') {
      const mac = crypto.createHmac('sha256', key).update(input).digest();
      ok = mac.length === signature.length && crypto.timingSafeEqual(mac, signature);
    } else {
      ok = crypto.verify(null, input, key, signature);
    }
    if (!ok) throw new Error('signature');
    const claims = JSON.parse(Buffer.from(token.slice(dot1 + 1, dot2), 'base64url'));
    const now = nowSecs();
    registeredClaims(claims, now);
    return gatehouseRules(header, claims, now);
  };
}

function pemKey() {
  const pem = process.env.BENCH_PUBLIC_KEY_PEM;
  if (!pem) fail('EdDSA needs BENCH_JWKS or BENCH_PUBLIC_KEY_PEM');
  return pem;
}

function hasOriginal(req) {
  return req.headers['x-original-uri'] !== undefined || req.headers['x-forwarded-uri'] !== undefined;
}

function bearer(req) {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || h.slice(0, 7).toLowerCase() !== 'bearer ') return null;
  return h.slice(7).trim();
}

function unauthorized(res, presented) {
  res.set('WWW-Authenticate', presented
    ? 'Bearer realm="gatehouse", error="invalid_token"'
    : 'Bearer realm="gatehouse"');
  res.status(401).end();
}

function allow(res, claims) {
  res.set('X-Auth-Request-User', claims.sub);
  if (typeof claims.email === 'string') res.set('X-Auth-Request-Email', claims.email);
  res.set('X-Auth-Request-Roles', Array.isArray(claims.roles) ? claims.roles.join(',') : '');
  res.status(200).end();
}

// ---- session modes --------------------------------------------------------

async function sessionRoutes(app) {
  const session = require('express-session');
  const options = {
    secret: process.env.BENCH_SESSION_SECRET || crypto.randomBytes(32).toString('hex'),
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', secure: false },
  };
  if (mode === 'session-redis') {
    const { createClient } = require('redis');
    const { RedisStore } = require('connect-redis');
    const client = createClient({ url: process.env.BENCH_REDIS_URL || 'redis://127.0.0.1:6379/' });
    client.on('error', (err) => process.stderr.write(`redis: ${err}\n`));
    await client.connect();
    options.store = new RedisStore({
      client,
      prefix: process.env.BENCH_REDIS_PREFIX || 'gatehouse-bench-express:',
    });
  }
  app.use(session(options));

  // Baseline only: a session for a made-up user, no password checked.
  app.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      const id = crypto.randomUUID();
      req.session.user = { id, email: `bench-${id.slice(0, 12)}@example.com`, roles: [] };
      res.status(204).end();
    });
  });

  app.all('/v1/verify', (req, res) => {
    if (!hasOriginal(req)) return res.status(400).end();
    const user = req.session.user;
    if (!user) return res.status(401).end();
    res.set('X-Auth-Request-User', user.id);
    res.set('X-Auth-Request-Email', user.email);
    res.set('X-Auth-Request-Roles', user.roles.join(','));
    res.status(200).end();
  });
}

// Last, once every constant above is set.
if (workers && cluster.isPrimary) {
  primary();
} else {
  worker().catch((err) => fail(err.stack || String(err)));
}
