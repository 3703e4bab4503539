"""A service calling APIs on its own behalf, built on PyPI's authlib (1.9.10,
pinned by scripts/test.sh): the OAuth 2.0 client credentials grant (RFC 6749
§4.4) at gatehouse, run by tests/api/oidc_rps.rs.

authlib does the protocol work: discovery is judged by its
OpenIDProviderMetadata, the grant is OAuth2Session.fetch_token with
grant_type=client_credentials and the configured client authentication
(which parses the token response and raises OAuthError on an error
answer), and introspection is OAuth2Session.introspect_token (RFC 7662).
The access token is verified as a resource server would with joserfc (the
library authlib itself verifies with) against the JWKS from discovery: the
signature, `typ: at+jwt`, and the claims RFC 9068 and gatehouse name.

Two phases, from the environment: ISSUER, CLIENT_ID, CLIENT_SECRET,
AUTH_METHOD (client_secret_basic or client_secret_post), PHASE.
- PHASE=grant: takes a token, checks it, narrows the scope, checks that
  introspection calls it active; prints `token <access token>` last.
- PHASE=rotated, with OLD_SECRET and OLD_TOKEN (the secret has been
  rotated since): the old secret is refused (invalid_client), introspection
  calls the old token inactive, the new secret gets a new token.
Prints `ok <step>` per step passed; on the first failure prints
`FAIL <step>: <why>` to stderr and exits 1.
"""

import os
import sys
import time
import traceback
import warnings

import requests
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet

# Written against authlib 1.9's current API: a deprecated call is a failure.
warnings.simplefilter("error", AuthlibDeprecationWarning)

TIMEOUT = 10
LEEWAY = 2


def env(name):
    value = os.environ.get(name)
    assert value, f"environment variable {name} is not set"
    return value


ISSUER = env("ISSUER")
CLIENT_ID = env("CLIENT_ID")
AUTH_METHOD = env("AUTH_METHOD")
PHASE = env("PHASE")
STEP = "start"


def ok(name):
    global STEP
    print(f"ok {name}", flush=True)
    STEP = name


def session(secret):
    return OAuth2Session(CLIENT_ID, secret, token_endpoint_auth_method=AUTH_METHOD)


def discover():
    res = requests.get(f"{ISSUER}/.well-known/openid-configuration", timeout=TIMEOUT)
    res.raise_for_status()
    meta = OpenIDProviderMetadata(res.json())
    meta.validate()
    assert "client_credentials" in meta["grant_types_supported"], meta["grant_types_supported"]
    assert AUTH_METHOD in meta["token_endpoint_auth_methods_supported"]
    ok("discovery")
    keys = requests.get(meta["jwks_uri"], timeout=TIMEOUT)
    keys.raise_for_status()
    return meta, KeySet.import_key_set(keys.json())


def check_token(token, keys, scope):
    """The access token as a resource server checks it."""
    decoded = jwt.decode(token, keys, algorithms=["EdDSA", "ES256", "RS256"])
    assert decoded.header["typ"] == "at+jwt", decoded.header
    claims = decoded.claims
    now = int(time.time())
    assert claims["iss"] == ISSUER, claims
    assert claims["sub"] == CLIENT_ID and claims["client_id"] == CLIENT_ID, claims
    assert CLIENT_ID in claims["aud"], claims
    assert "sid" not in claims, claims
    assert claims["credential_id"], claims
    assert claims["scope"] == scope, claims
    assert claims["iat"] <= now + LEEWAY < claims["exp"] + 2 * LEEWAY, claims
    return claims


def grant(meta, keys):
    client = session(env("CLIENT_SECRET"))
    token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer", token
    assert "refresh_token" not in token and "id_token" not in token, token
    ok("grant")
    check_token(token["access_token"], keys, "reports:read reports:write")
    ok("token_verified")
    narrow = client.fetch_token(
        meta["token_endpoint"], grant_type="client_credentials", scope="reports:read"
    )
    check_token(narrow["access_token"], keys, "reports:read")
    ok("narrowed_scope")
    try:
        client.fetch_token(
            meta["token_endpoint"], grant_type="client_credentials", scope="gatehouse:admin"
        )
        raise AssertionError("a scope beyond the client's roles was granted")
    except OAuthError as e:
        assert e.error == "invalid_scope", e.error
    ok("wider_scope_refused")
    res = client.introspect_token(meta["introspection_endpoint"], token=token["access_token"])
    res.raise_for_status()
    seen = res.json()
    assert seen["active"] is True and seen["sub"] == CLIENT_ID, seen
    ok("introspection_active")
    print(f"token {token['access_token']}", flush=True)


def rotated(meta, keys):
    try:
        session(env("OLD_SECRET")).fetch_token(
            meta["token_endpoint"], grant_type="client_credentials"
        )
        raise AssertionError("the rotated secret still got a token")
    except OAuthError as e:
        assert e.error == "invalid_client", e.error
    ok("old_secret_refused")
    client = session(env("CLIENT_SECRET"))
    res = client.introspect_token(meta["introspection_endpoint"], token=env("OLD_TOKEN"))
    res.raise_for_status()
    assert res.json() == {"active": False}, res.json()
    ok("old_token_inactive")
    token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    claims = check_token(token["access_token"], keys, "reports:read reports:write")
    old = jwt.decode(env("OLD_TOKEN"), keys, algorithms=["EdDSA", "ES256", "RS256"]).claims
    assert claims["credential_id"] != old["credential_id"], (claims, old)
    ok("new_secret_grant")


def main():
    try:
        meta, keys = discover()
        if PHASE == "grant":
            grant(meta, keys)
        elif PHASE == "rotated":
            rotated(meta, keys)
        else:
            raise AssertionError(f"unknown PHASE {PHASE}")
        ok("all")
    except Exception as e:  # noqa: BLE001 (every failure is reported the same way)
        traceback.print_exc()
        print(f"FAIL {STEP}: {e!r}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
