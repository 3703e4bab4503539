#!/usr/bin/env python3
"""What the second step of a login costs the server: accounts with TOTP
enrolled, each signing in with its password (POST /v1/login, answered
`mfa_required`) and then its code (POST /v1/login/mfa), one request at a
time on one connection, so that each latency is the server's time plus a
loopback round trip. Printed beside the password step of the same logins
and a password-only login, and returned for bench/run.py's results.

A TOTP code is accepted once per 30-second step and account, so every
sample is another account. Codes are computed here (RFC 6238, standard
library only): the oracle tests with pyotp are in tests/api/mfa.rs.

    python3 bench/mfa.py            # starts target/release/gatehouse itself
"""

import base64
import hashlib
import hmac
import http.client
import json
import struct
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

SAMPLES = 200
PASSWORD = "bench passphrase that is long"


def totp(secret_b32: str, at: float) -> str:
    """RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{code % 1_000_000:06d}"


class Conn:
    """One keep-alive connection to the server."""

    def __init__(self, base: str):
        self.host = urllib.parse.urlparse(base).netloc
        self.conn = http.client.HTTPConnection(self.host, timeout=30)

    def get(self, path):
        started = time.perf_counter()
        self.conn.request("GET", path)
        res = self.conn.getresponse()
        res.read()
        return res.status, time.perf_counter() - started

    def post(self, path, body, cookie=None):
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        started = time.perf_counter()
        self.conn.request("POST", path, body=json.dumps(body), headers=headers)
        res = self.conn.getresponse()
        data = res.read()
        took = time.perf_counter() - started
        return res.status, res.getheader("Set-Cookie"), data, took


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def enrolled_account(c: Conn):
    """A new account with TOTP confirmed at the current step: (email, key)."""
    email = f"bench-mfa-{uuid.uuid4().hex[:12]}@example.com"
    status, _, _, _ = c.post("/v1/users", {"email": email, "password": PASSWORD})
    assert status == 201, status
    status, cookie, _, _ = c.post("/v1/login", {"email": email, "password": PASSWORD})
    assert status == 200 and cookie, status
    cookie = cookie.split(";", 1)[0]
    status, _, body, _ = c.post("/v1/me/mfa/totp", {"password": PASSWORD}, cookie)
    assert status == 200, (status, body)
    secret = json.loads(body)["secret"]
    status, _, body, _ = c.post("/v1/me/mfa/totp/confirm", {"code": totp(secret, time.time())},
                                cookie)
    assert status == 200, (status, body)
    return email, secret


def measure(base: str, samples: int = SAMPLES) -> dict:
    """Times `samples` two-step logins and as many password-only logins."""
    c = Conn(base)
    print(f"bench: enrolling TOTP for {samples} accounts", file=sys.stderr)
    accounts = [enrolled_account(c) for _ in range(samples)]
    plain = []
    for _ in range(samples):
        email = f"bench-pwd-{uuid.uuid4().hex[:12]}@example.com"
        c.post("/v1/users", {"email": email, "password": PASSWORD})
        plain.append(email)
    first, second, password_only = [], [], []
    for email, secret in accounts:
        status, cookie, body, took = c.post("/v1/login", {"email": email, "password": PASSWORD})
        assert status == 200 and cookie is None, status
        first.append(took)
        token = json.loads(body)["mfa_token"]
        # The next step's code: the confirmation spent this one's.
        status, cookie, body, took = c.post(
            "/v1/login/mfa", {"mfa_token": token, "code": totp(secret, time.time() + 30)})
        assert status == 200 and cookie, (status, body)
        second.append(took)
    for email in plain:
        status, cookie, _, took = c.post("/v1/login", {"email": email, "password": PASSWORD})
        assert status == 200 and cookie, status
        password_only.append(took)
    # The round trip and this client's own time, on the same connection:
    # what a request that does nothing costs here.
    floor = [c.get("/healthz")[1] for _ in range(samples)]
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    return {
        "samples": samples,
        "healthz_p50_ms": ms(percentile(floor, 50)),
        "second_step_server_ms": ms(percentile(second, 50) - percentile(floor, 50)),
        "second_step_p50_ms": ms(percentile(second, 50)),
        "second_step_p99_ms": ms(percentile(second, 99)),
        "password_step_p50_ms": ms(percentile(first, 50)),
        "password_only_login_p50_ms": ms(percentile(password_only, 50)),
    }


def report(r: dict) -> str:
    return (f"{r['samples']} two-step logins, one at a time: second step (TOTP) p50 "
            f"{r['second_step_p50_ms']} ms, p99 {r['second_step_p99_ms']} ms (GET /healthz on "
            f"the same connection p50 {r['healthz_p50_ms']} ms: about "
            f"{r['second_step_server_ms']} ms of server time); password step "
            f"p50 {r['password_step_p50_ms']} ms; a password-only login p50 "
            f"{r['password_only_login_p50_ms']} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # noqa: E402  (bench/run.py: Server, the binary's path)

    with tempfile.TemporaryDirectory() as tmp:
        server = run.Server(Path(tmp), "mfa", {})
        try:
            print(report(measure(server.base)))
        finally:
            server.stop()
