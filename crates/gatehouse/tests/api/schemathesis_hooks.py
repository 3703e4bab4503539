"""Credentials for the schemathesis run of tests/api/openapi.rs.

Loaded through SCHEMATHESIS_HOOKS. The test starts a fresh gatehouse with an
admin user and a resource server and passes them in the environment:
GATEHOUSE_ST_BASE (the server's base URL), GATEHOUSE_ST_EMAIL and
GATEHOUSE_ST_PASSWORD (the admin), GATEHOUSE_ST_COOKIE (the session cookie's
name, as the document's `sessionCookie` scheme names it) and
GATEHOUSE_ST_RS_KEY (a resource-server key).

Each operation gets the credential its security scheme names: the
resource-server key for /v1/revocations, a session cookie for
/v1/session/token (which refuses bearer tokens), the admin's access token for
everything else. Credentials are fetched again after any 401: schemathesis
calls logout and ends sessions by id, and a credential it ended must not turn
the rest of the run into a test of the 401 answer.
"""

import os

import requests
import schemathesis

BASE = os.environ["GATEHOUSE_ST_BASE"].rstrip("/")
EMAIL = os.environ["GATEHOUSE_ST_EMAIL"]
PASSWORD = os.environ["GATEHOUSE_ST_PASSWORD"]
COOKIE = os.environ["GATEHOUSE_ST_COOKIE"]
RS_KEY = os.environ["GATEHOUSE_ST_RS_KEY"]

# Credentials are refreshed on a 401 (schemathesis's default `retry_on`) and
# otherwise kept well within the access token's 5 minutes.
REFRESH = 60


@schemathesis.auth(refresh_interval=REFRESH).apply_to(path="/v1/revocations")
class ResourceServerKey:
    def get(self, case, context):
        return RS_KEY

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth(refresh_interval=REFRESH).apply_to(path="/v1/session/token")
class SessionCookie:
    def get(self, case, context):
        res = requests.post(
            f"{BASE}/v1/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10
        )
        res.raise_for_status()
        return res.cookies[COOKIE]

    def set(self, case, data, context):
        case.cookies = case.cookies or {}
        case.cookies[COOKIE] = data


@schemathesis.auth(refresh_interval=REFRESH).skip_for(
    path=["/v1/revocations", "/v1/session/token"]
)
class AdminBearer:
    def get(self, case, context):
        res = requests.post(
            f"{BASE}/v1/token",
            data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
            timeout=10,
        )
        res.raise_for_status()
        return res.json()["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
