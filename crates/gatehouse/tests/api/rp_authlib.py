"""A relying party built on PyPI's authlib (1.9.10, pinned by scripts/test.sh),
signing a user in at gatehouse the way a Python web app would: run by
tests/api/oidc_rps.rs against a gatehouse on 127.0.0.1.

authlib does the protocol work: discovery is judged by its
OpenIDProviderMetadata, the authorization URL (state, nonce, PKCE S256) is
made by OAuth2Session.create_authorization_url, the code is exchanged by
fetch_token (which checks `state`), refreshed by refresh_token, and the ID
token is verified as authlib's own OpenIDMixin.parse_id_token does: joserfc
against the JWKS from discovery, then authlib's CodeIDToken claims (iss, aud,
exp, iat, nonce, at_hash). The browser is a requests.Session with a cookie
jar that follows no redirect by itself: it reads each Location, posts the
login form, follows the login's meta refresh, and (for a client that is not
first-party) posts the consent form. The redirect URI is never fetched; the
code is read from the Location.

Configuration, all from the environment: ISSUER, CLIENT_ID, CLIENT_SECRET,
REDIRECT_URI, EMAIL, PASSWORD, FIRST_PARTY (1 or 0: whether gatehouse skips
the consent page), AUTH_METHOD (client_secret_basic or client_secret_post,
client_secret_basic when unset). Prints `ok <step>` per step passed; on the
first failure prints `FAIL <step>: <why>` to stderr and exits 1.
"""

import base64
import html.parser
import json
import os
import sys
import traceback
import urllib.parse
import warnings

import requests
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import MismatchingStateException
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.errors import ExpiredTokenError
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

# Written against authlib 1.9's current API: a deprecated call is a failure.
warnings.simplefilter("error", AuthlibDeprecationWarning)

TIMEOUT = 10
# Server and relying party share one clock; this only absorbs a second's
# rounding either side.
LEEWAY = 2
SCOPE = "openid profile email offline_access"


def env(name, default=None):
    value = os.environ.get(name, default)
    assert value, f"environment variable {name} is not set"
    return value


ISSUER = env("ISSUER")
CLIENT_ID = env("CLIENT_ID")
CLIENT_SECRET = env("CLIENT_SECRET")
REDIRECT_URI = env("REDIRECT_URI")
EMAIL = env("EMAIL")
PASSWORD = env("PASSWORD")
FIRST_PARTY = env("FIRST_PARTY") == "1"
AUTH_METHOD = env("AUTH_METHOD", "client_secret_basic")

BASE = ISSUER.rstrip("/")
ORIGIN = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(ISSUER))

if urllib.parse.urlsplit(ISSUER).hostname in ("127.0.0.1", "::1"):
    # authlib's metadata checks want https; the test server is plain HTTP on
    # the loopback interface, which RFC 8252 §8.3 allows.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

step = "start"


def ok(name):
    print(f"ok {name}", flush=True)


class Page(html.parser.HTMLParser):
    """The forms and the meta refresh of an HTML page (attribute values
    come unescaped)."""

    def __init__(self, text):
        super().__init__()
        self.refresh = None
        self.forms = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.refresh = a.get("content")
        elif tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value") or ""))

    def form(self, action):
        found = [f for f in self.forms if f["action"] == action]
        assert len(found) == 1, f"one form posting to {action} expected, found {self.forms}"
        return found[0]


def location(res):
    """The absolute URL a redirect answer sends the browser to."""
    loc = res.headers.get("Location")
    assert loc, f"{res.request.method} {res.url}: no Location on {res.status_code}: {res.text[:300]}"
    return urllib.parse.urljoin(res.url, loc)


def query(url):
    pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), f"a parameter given twice: {url}"
    return dict(pairs)


def expect(res, status, what):
    assert res.status_code == status, (
        f"{what}: {res.request.method} {res.url} answered {res.status_code}, not {status}: "
        f"{res.headers.get('Location') or res.text[:500]}"
    )


def new_session(cls, **kwargs):
    session = cls(**kwargs)
    # Never a proxy from the environment between us and 127.0.0.1.
    session.trust_env = False
    return session


def decode_id_token(id_token, keys, algorithms, nonce, access_token, client_id=CLIENT_ID, issuer=ISSUER, now=None):
    """Verifies an ID token as authlib's OpenIDMixin.parse_id_token does
    (joserfc, then CodeIDToken), with every claim this relying party relies
    on required; raises on any failure."""
    token = jwt.decode(id_token, keys, registry=JWSRegistry(algorithms=algorithms, strict_check_header=False))
    options = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        # CodeIDToken checks nonce and at_hash only when they are there.
        "nonce": {"essential": True},
        "at_hash": {"essential": True},
        "auth_time": {"essential": True},
        "sid": {"essential": True},
    }
    params = {"nonce": nonce, "client_id": client_id, "access_token": access_token}
    claims = CodeIDToken(token.claims, token.header, options, params)
    claims.validate(now=now, leeway=LEEWAY)
    return claims


def refused(what, call, error, claim=None):
    """Asserts that `call` raises `error` (authlib or joserfc refusing), for
    `claim` when given; returns the exception."""
    try:
        call()
    except error as e:
        if claim is not None:
            assert e.claim == claim, f"{what}: refused for {e.claim!r}, not {claim!r}: {e}"
        return e
    except Exception as e:
        raise AssertionError(f"{what}: {e!r}, not {error.__name__}") from e
    raise AssertionError(f"{what} was accepted")


def flip_signature_byte(token):
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return ".".join([header, payload, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()])


def main():
    global step

    # --------------------------------------------------------- discovery
    step = "discovery"
    anon = new_session(requests.Session)
    res = anon.get(f"{BASE}/.well-known/openid-configuration", timeout=TIMEOUT)
    expect(res, 200, "discovery")
    meta = OpenIDProviderMetadata(res.json())
    meta.validate()
    # OIDC Discovery §4.3: the issuer is exactly the one we asked.
    assert meta["issuer"] == ISSUER, f"discovery names issuer {meta['issuer']!r}, not {ISSUER!r}"
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert meta.get(name, "").startswith(BASE + "/"), f"{name} {meta.get(name)!r} is not on the issuer"
    assert "code" in meta["response_types_supported"], meta["response_types_supported"]
    assert "S256" in meta.get("code_challenge_methods_supported", []), "no S256 PKCE in discovery"
    assert AUTH_METHOD in meta.get("token_endpoint_auth_methods_supported", []), f"{AUTH_METHOD} not in discovery"
    assert meta.get("authorization_response_iss_parameter_supported") is True, "RFC 9207 iss not announced"
    algorithms = meta["id_token_signing_alg_values_supported"]
    ok("discovery")

    step = "jwks"
    res = anon.get(meta["jwks_uri"], timeout=TIMEOUT)
    expect(res, 200, "jwks")
    jwks = res.json()
    keys = KeySet.import_key_set(jwks)
    assert jwks["keys"] and all(k.get("kid") for k in jwks["keys"]), f"keys without kid: {jwks}"
    assert not any(k in key for key in jwks["keys"] for k in ("d", "p", "q", "dp", "dq", "qi")), "a private key part is published"
    ok("jwks")

    # ------------------------------------------------ authorization request
    step = "authorization_url"
    rp = new_session(
        OAuth2Session,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method=AUTH_METHOD,
        default_timeout=TIMEOUT,
    )
    code_verifier = generate_token(48)
    nonce = generate_token(20)
    auth_url, state = rp.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
    )
    sent = query(auth_url)
    assert sent.get("code_challenge_method") == "S256" and sent.get("code_challenge"), auth_url
    assert sent.get("nonce") == nonce and sent.get("state") == state, auth_url
    ok("authorization_url")

    step = "login_redirect"
    browser = new_session(requests.Session)
    res = browser.get(auth_url, allow_redirects=False, timeout=TIMEOUT)
    expect(res, 302, "authorization request without a session")
    login_url = location(res)
    assert urllib.parse.urlsplit(login_url).path == "/login", f"not sent to the login page: {login_url}"
    assert query(login_url).get("return_to", "").startswith("/oauth2/authorize?"), login_url
    ok("login_redirect")

    step = "login"
    res = browser.get(login_url, allow_redirects=False, timeout=TIMEOUT)
    expect(res, 200, "login page")
    form = Page(res.text).form("/login")
    assert set(form["fields"]) >= {"email", "password", "return_to"}, f"login form fields: {form['fields']}"
    fields = dict(form["fields"], email=EMAIL, password=PASSWORD)
    res = browser.post(
        urllib.parse.urljoin(res.url, form["action"]),
        data=fields,
        headers={"Origin": ORIGIN},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    expect(res, 200, "login form")
    refresh = Page(res.text).refresh
    assert refresh, f"the login's answer has no meta refresh: {res.text[:500]}"
    delay, _, target = refresh.partition(";")
    assert delay.strip() == "0" and target.strip().lower().startswith("url="), f"meta refresh {refresh!r}"
    back = urllib.parse.urljoin(res.url, target.strip()[4:])
    assert back.startswith(f"{ORIGIN}/oauth2/authorize?"), f"the login sends the browser to {back}"
    ok("login")

    step = "consent" if not FIRST_PARTY else "authorization_response"
    res = browser.get(back, allow_redirects=False, timeout=TIMEOUT)
    if FIRST_PARTY:
        expect(res, 302, "authorization request of a first-party client after login")
    else:
        expect(res, 200, "consent page of a third-party client")
        form = Page(res.text).form("/oauth2/consent")
        assert "request" in form["fields"], f"consent form fields: {form['fields']}"
        assert ("decision", "allow") in form["buttons"], f"consent buttons: {form['buttons']}"
        res = browser.post(
            urllib.parse.urljoin(res.url, form["action"]),
            data=dict(form["fields"], decision="allow"),
            headers={"Origin": ORIGIN},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        expect(res, 303, "consent form (allow)")
        ok("consent")

    step = "authorization_response"
    callback = location(res)
    assert callback.split("?")[0] == REDIRECT_URI, f"sent to {callback}, not to {REDIRECT_URI}"
    answer = query(callback)
    assert "error" not in answer, f"the authorization failed: {answer}"
    assert answer.get("code"), f"no code: {callback}"
    assert answer.get("state") == state, f"state {answer.get('state')!r}, sent {state!r}"
    # RFC 9207 §2.4: the iss of the answer is the issuer we asked.
    assert answer.get("iss") == ISSUER, f"iss {answer.get('iss')!r}, not {ISSUER!r}"
    ok("authorization_response")

    # A forged answer (another state) is refused by authlib before any
    # request, when given the state it sent (OAuth2Session keeps none itself).
    step = "state_mismatch_rejected"
    forged = REDIRECT_URI + "?" + urllib.parse.urlencode(dict(answer, state="forged"))
    refused(
        "an answer with another state",
        lambda: rp.fetch_token(
            meta["token_endpoint"], authorization_response=forged, state=state, code_verifier=code_verifier
        ),
        MismatchingStateException,
    )
    ok("state_mismatch_rejected")

    # -------------------------------------------------------------- token
    step = f"token {AUTH_METHOD}"
    try:
        token = rp.fetch_token(
            meta["token_endpoint"], authorization_response=callback, state=state, code_verifier=code_verifier
        )
    except OAuthError as e:
        raise AssertionError(f"the token endpoint refused the code: {e}") from e
    for name in ("access_token", "id_token", "refresh_token", "expires_in", "scope"):
        assert token.get(name), f"no {name} in the token response: {sorted(token)}"
    assert token["token_type"].lower() == "bearer", token["token_type"]
    granted = token["scope"].split()
    assert {"openid", "profile", "email", "offline_access"} <= set(granted), f"granted {granted}"
    ok(f"token {AUTH_METHOD}")

    step = "id_token"
    access = token["access_token"]
    id_token = token["id_token"]
    claims = decode_id_token(id_token, keys, algorithms, nonce, access)
    assert claims.header["alg"] == "RS256", f"alg {claims.header['alg']} (RS256 is the default)"
    assert claims.header.get("kid"), "no kid in the ID token's header"
    assert claims["aud"] == CLIENT_ID or claims["aud"] == [CLIENT_ID], f"aud {claims['aud']}"
    assert claims["email"] == EMAIL, f"email {claims['email']!r}"
    assert claims["email_verified"] is False, f"email_verified {claims['email_verified']!r}"
    assert claims["preferred_username"] == EMAIL, f"preferred_username {claims['preferred_username']!r}"
    assert isinstance(claims["roles"], list), f"roles {claims.get('roles')!r}"
    assert claims["amr"] == ["pwd"], f"amr {claims['amr']!r}"
    assert claims["auth_time"] <= claims["iat"] < claims["exp"], f"times {claims}"
    ok("id_token")

    # ------------------------------------- what authlib refuses in an ID token
    step = "id_token_tampered_signature_rejected"
    refused("an ID token with a flipped signature byte",
            lambda: decode_id_token(flip_signature_byte(id_token), keys, algorithms, nonce, access),
            BadSignatureError)
    ok(step)

    step = "id_token_tampered_payload_rejected"
    header, payload, signature = id_token.split(".")
    changed = dict(claims, email="someone.else@example.com")
    forged_payload = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    refused("an ID token with a changed payload",
            lambda: decode_id_token(".".join([header, forged_payload, signature]), keys, algorithms, nonce, access),
            BadSignatureError)
    ok(step)

    step = "id_token_wrong_nonce_rejected"
    refused("an ID token for another nonce",
            lambda: decode_id_token(id_token, keys, algorithms, generate_token(20), access),
            InvalidClaimError, "nonce")
    ok(step)

    step = "id_token_wrong_audience_rejected"
    refused("an ID token for another client",
            lambda: decode_id_token(id_token, keys, algorithms, nonce, access, client_id="another-client"),
            InvalidClaimError, "aud")
    refused("an ID token of another issuer",
            lambda: decode_id_token(id_token, keys, algorithms, nonce, access, issuer="https://evil.example"),
            InvalidClaimError, "iss")
    ok(step)

    step = "id_token_expired_rejected"
    refused("an expired ID token",
            lambda: decode_id_token(id_token, keys, algorithms, nonce, access, now=claims["exp"] + LEEWAY),
            ExpiredTokenError)
    ok(step)

    # ----------------------------------------------------------- UserInfo
    step = "userinfo"
    res = rp.get(meta["userinfo_endpoint"])
    expect(res, 200, "UserInfo")
    info = res.json()
    assert info.get("sub") == claims["sub"], f"UserInfo sub {info.get('sub')!r}, ID token {claims['sub']!r}"
    assert info.get("email") == claims["email"] == EMAIL, f"UserInfo email {info.get('email')!r}"
    assert info.get("email_verified") == claims["email_verified"], f"UserInfo {info}"
    ok("userinfo")

    # ------------------------------------------------------------- refresh
    step = "refresh"
    old_refresh = token["refresh_token"]
    try:
        refreshed = rp.refresh_token(meta["token_endpoint"])
    except OAuthError as e:
        raise AssertionError(f"the refresh was refused: {e}") from e
    access2 = refreshed["access_token"]
    assert access2 and access2 != access, "no new access token"
    assert refreshed.get("refresh_token") and refreshed["refresh_token"] != old_refresh, "the refresh token was not rotated"
    assert "id_token" not in refreshed, "the refresh grant returned an ID token"
    ok("refresh")

    # The old ID token's at_hash binds it to the first access token only.
    step = "id_token_other_access_token_rejected"
    refused("the ID token with the refreshed access token",
            lambda: decode_id_token(id_token, keys, algorithms, nonce, access2),
            InvalidClaimError, "at_hash")
    ok(step)

    step = "userinfo_after_refresh"
    res = rp.get(meta["userinfo_endpoint"])
    expect(res, 200, "UserInfo with the refreshed access token")
    assert res.json().get("sub") == claims["sub"], res.text
    ok(step)

    # ------------------------------------------------ signing out of gatehouse
    step = "logout"
    res = browser.post(
        f"{BASE}/logout",
        data="",
        headers={"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    expect(res, 303, "sign-out form")
    ok(step)

    step = "userinfo_refused_after_logout"
    for which, bearer in (("refreshed", access2), ("first", access)):
        res = anon.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {bearer}"}, timeout=TIMEOUT)
        expect(res, 401, f"UserInfo with the {which} access token after sign-out")
        challenge = res.headers.get("WWW-Authenticate", "")
        assert "invalid_token" in challenge, f"WWW-Authenticate {challenge!r}"
    ok(step)

    step = "refresh_refused_after_logout"
    e = refused("a refresh after sign-out", lambda: rp.refresh_token(meta["token_endpoint"]), OAuthError)
    assert e.error == "invalid_grant", f"refresh after sign-out: {e.error} ({e.description})"
    ok(step)

    ok("all")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {step}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print(f"FAIL {step}: unexpected error (above)", file=sys.stderr)
        sys.exit(1)
