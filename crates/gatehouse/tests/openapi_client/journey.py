"""A user's journey through a Python client generated from /openapi.json.

Run by tests/api/openapi_client.rs, which starts a fresh gatehouse,
generates `gatehouse_client` from its document with openapi-python-client
into a temporary directory and runs this script with that directory on
PYTHONPATH. The environment names the server and the account to create:
GATEHOUSE_BASE_URL, GATEHOUSE_COOKIE (the session cookie's name, as the
document's `sessionCookie` scheme names it), GATEHOUSE_EMAIL and
GATEHOUSE_PASSWORD.

Every request goes through the generated package: register, log in (the
session cookie), who am I with the cookie, the password grant, who am I
with the access token, the refresh grant (a new pair) and a refresh grant
with a made-up token (the RFC 6749 error body). Each step checks the status
and the parsed fields; any failure exits non-zero with what differed.
"""

import importlib
import os
import pkgutil
import sys

try:
    import gatehouse_client
except ImportError as e:
    # The generated client needs httpx and attrs, which pip installs with
    # openapi-python-client; this python3 may not be the one it went into.
    sys.exit(
        f"cannot import the generated client ({e!r}); run the test with the python3 "
        "that openapi-python-client is installed in (pip install openapi-python-client "
        "installs httpx and attrs, which the client needs)"
    )

BASE_URL = os.environ["GATEHOUSE_BASE_URL"]
COOKIE = os.environ["GATEHOUSE_COOKIE"]
EMAIL = os.environ["GATEHOUSE_EMAIL"]
PASSWORD = os.environ["GATEHOUSE_PASSWORD"]


def check(condition, what):
    """An assertion that `python -O` does not remove."""
    if not condition:
        raise AssertionError(what)


def step(name):
    print(f"journey: {name}", flush=True)


# Every generated module imports: a module the generator wrote but Python
# cannot load (an undefined name in an annotation, say) fails here, whether
# or not the journey calls it.
step("import every generated module")
broken = []
modules = 0
for info in pkgutil.walk_packages(gatehouse_client.__path__, "gatehouse_client."):
    modules += 1
    try:
        importlib.import_module(info.name)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        broken.append(f"{info.name}: {e!r}")
check(not broken, "generated modules that do not import:\n" + "\n".join(broken))
check(modules > 20, f"only {modules} generated modules")

from gatehouse_client import AuthenticatedClient, Client  # noqa: E402
from gatehouse_client.api.accounts import me, register  # noqa: E402
from gatehouse_client.api.sessions import login  # noqa: E402
from gatehouse_client.api.tokens import token  # noqa: E402
from gatehouse_client.models import (  # noqa: E402
    LoginRequest,
    LoginResponse,
    MeResponse,
    OAuthErrorBody,
    RegisterRequest,
    TokenRequest,
    TokenResponse,
    UserResponse,
)


def client(**kwargs):
    # An undocumented status raises instead of parsing to None.
    return Client(base_url=BASE_URL, raise_on_unexpected_status=True, **kwargs)


def bearer(access_token):
    return AuthenticatedClient(
        base_url=BASE_URL, token=access_token, raise_on_unexpected_status=True
    )


def status(res, expected, what):
    check(
        res.status_code == expected,
        f"{what}: status {int(res.status_code)}, expected {expected}: "
        f"{res.content[:500]!r}",
    )


step("register (POST /v1/users)")
with client() as c:
    res = register.sync_detailed(client=c, body=RegisterRequest(email=EMAIL, password=PASSWORD))
status(res, 201, "register")
check(isinstance(res.parsed, UserResponse), f"register parsed as {res.parsed!r}")
check(res.parsed.user.email == EMAIL, f"registered {res.parsed.user.email!r}")
user_id = res.parsed.user.id

# One client keeps the cookie jar between login and /v1/me, as a browser
# would.
with client() as browser:
    step("log in (POST /v1/login)")
    res = login.sync_detailed(client=browser, body=LoginRequest(email=EMAIL, password=PASSWORD))
    status(res, 200, "login")
    check(isinstance(res.parsed, LoginResponse), f"login parsed as {res.parsed!r}")
    check(res.parsed.user.id == user_id, f"logged in as {res.parsed.user!r}")
    check(res.parsed.session.current, "the login's session is not current")
    cookie_session = res.parsed.session.id
    jar = browser.get_httpx_client().cookies
    check(jar.get(COOKIE), f"no {COOKIE} cookie after login: {dict(jar)!r}")

    step("who am I with the cookie (GET /v1/me)")
    res = me.sync_detailed(client=browser)
    status(res, 200, "me with the cookie")
    check(isinstance(res.parsed, MeResponse), f"me parsed as {res.parsed!r}")
    check(res.parsed.user.email == EMAIL, f"me is {res.parsed.user.email!r}")
    check(res.parsed.session.id == cookie_session, "me names another session")
    check(isinstance(res.parsed.permissions, list), "no permissions list")

step("password grant (POST /v1/token, grant_type=password)")
with client() as c:
    res = token.sync_detailed(
        client=c,
        body=TokenRequest(grant_type="password", username=EMAIL, password=PASSWORD),
    )
status(res, 200, "password grant")
check(isinstance(res.parsed, TokenResponse), f"password grant parsed as {res.parsed!r}")
first = res.parsed
check(first.token_type == "Bearer", f"token_type {first.token_type!r}")
check(first.expires_in > 0, f"expires_in {first.expires_in}")
check(first.access_token.count(".") == 2, "the access token is not a JWT")
check(first.refresh_token, "no refresh token")
check(res.headers.get("pragma") == "no-cache", f"Pragma {res.headers.get('pragma')!r}")

step("who am I with the access token (GET /v1/me)")
with bearer(first.access_token) as c:
    res = me.sync_detailed(client=c)
status(res, 200, "me with the access token")
check(res.parsed.user.email == EMAIL, f"me is {res.parsed.user.email!r}")
token_session = res.parsed.session.id
check(token_session != cookie_session, "the password grant did not start a new session")

step("refresh grant (POST /v1/token, grant_type=refresh_token)")
with client() as c:
    res = token.sync_detailed(
        client=c,
        body=TokenRequest(grant_type="refresh_token", refresh_token=first.refresh_token),
    )
status(res, 200, "refresh grant")
check(isinstance(res.parsed, TokenResponse), f"refresh grant parsed as {res.parsed!r}")
second = res.parsed
check(second.refresh_token, "no refresh token")
check(second.refresh_token != first.refresh_token, "the refresh token did not rotate")
check(second.access_token != first.access_token, "the access token is the same")

with bearer(second.access_token) as c:
    res = me.sync_detailed(client=c)
status(res, 200, "me with the refreshed access token")
check(res.parsed.session.id == token_session, "the refresh grant changed the session")

step("refresh grant with a made-up token (the RFC 6749 error body)")
with client() as c:
    res = token.sync_detailed(
        client=c,
        body=TokenRequest(grant_type="refresh_token", refresh_token="not-a-refresh-token"),
    )
status(res, 400, "refresh grant with a made-up token")
check(isinstance(res.parsed, OAuthErrorBody), f"error parsed as {res.parsed!r}")
check(res.parsed.error == "invalid_grant", f"error {res.parsed.error!r}")

step("done")
