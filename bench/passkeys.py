#!/usr/bin/env python3
"""Passwordless passkey logins against password logins, on the same server
in the same run: each measured as a rate (logins per second) with the same
number of client processes, and as the p50 latency of one login done one
request at a time (the passkey login is two requests: the options, then
the assertion).

The authenticator is a minimal software one (ES256, "none" attestation, a
counter that grows): a load generator, not an oracle; the oracle tests use
Chromium's virtual authenticator (tests/api/passkeys.rs). It needs PyPI's
`cryptography` for the P-256 signatures (bench/run.sh installs it).

    python3 bench/passkeys.py      # starts target/release/gatehouse itself
"""

import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PASSWORD = "bench passphrase that is long"
PROCESSES = int(os.environ.get("BENCH_PASSKEY_CLIENTS", "4"))
SECONDS = float(os.environ.get("BENCH_PASSKEY_SECONDS", "8"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cbor(value) -> bytes:
    """The CBOR of ints, bytes, strings and maps (all WebAuthn needs here)."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for size, code in ((1, 24), (2, 25), (4, 26), (8, 27)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | code]) + n.to_bytes(size, "big")
        raise ValueError(n)
    if isinstance(value, bool):
        raise TypeError("no booleans needed")
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return head(3, len(raw)) + raw
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(type(value))


class Authenticator:
    """One discoverable ES256 credential with user verification."""

    def __init__(self, origin: str, rp_id: str):
        self.origin, self.rp_id = origin, rp_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cred_id = os.urandom(32)
        self.user_handle = b""
        self.count = 0

    # Worker processes get the key as PKCS#8 (key objects do not pickle).
    def __getstate__(self):
        state = dict(self.__dict__)
        state["key"] = self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        return state

    def __setstate__(self, state):
        state["key"] = serialization.load_der_private_key(state["key"], None)
        self.__dict__.update(state)

    def client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}, separators=(",", ":")).encode()

    def auth_data(self, attested: bool) -> bytes:
        self.count += 1
        flags = 0x01 | 0x04 | (0x40 if attested else 0)  # UP, UV, AT
        data = hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags])
        data += self.count.to_bytes(4, "big")
        if attested:
            numbers = self.key.public_key().public_numbers()
            cose = cbor({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                         -3: numbers.y.to_bytes(32, "big")})
            data += bytes(16) + len(self.cred_id).to_bytes(2, "big") + self.cred_id + cose
        return data

    def create(self, options: dict) -> dict:
        self.user_handle = unb64(options["user"]["id"])
        client = self.client_data("webauthn.create", options["challenge"])
        att = cbor({"fmt": "none", "attStmt": {}, "authData": self.auth_data(True)})
        return {"id": b64(self.cred_id), "rawId": b64(self.cred_id), "type": "public-key",
                "response": {"clientDataJSON": b64(client), "attestationObject": b64(att)},
                "clientExtensionResults": {}}

    def get(self, options: dict) -> dict:
        client = self.client_data("webauthn.get", options["challenge"])
        auth = self.auth_data(False)
        sig = self.key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return {"id": b64(self.cred_id), "rawId": b64(self.cred_id), "type": "public-key",
                "response": {"clientDataJSON": b64(client), "authenticatorData": b64(auth),
                             "signature": b64(sig), "userHandle": b64(self.user_handle)},
                "clientExtensionResults": {}}


class Conn:
    def __init__(self, base: str):
        self.base = base
        self.conn = http.client.HTTPConnection(urllib.parse.urlparse(base).netloc, timeout=30)

    def post(self, path, body=None, cookie=None):
        headers = {"Origin": self.base}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if cookie:
            headers["Cookie"] = cookie
        self.conn.request("POST", path, body=None if body is None else json.dumps(body),
                          headers=headers)
        res = self.conn.getresponse()
        data = res.read()
        return res.status, res.getheader("Set-Cookie"), json.loads(data) if data else None


def passkey_account(base: str, rp_id: str):
    """A new account with a registered passkey: (email, authenticator)."""
    c = Conn(base)
    email = f"bench-pk-{uuid.uuid4().hex[:12]}@example.com"
    assert c.post("/v1/users", {"email": email, "password": PASSWORD})[0] == 201
    status, cookie, _ = c.post("/v1/login", {"email": email, "password": PASSWORD})
    assert status == 200 and cookie, status
    cookie = cookie.split(";", 1)[0]
    status, _, options = c.post("/v1/me/passkeys/options", cookie=cookie)
    assert status == 200, (status, options)
    auth = Authenticator(base, rp_id)
    credential = auth.create(options["publicKey"])
    status, _, body = c.post("/v1/me/passkeys", {"challenge_id": options["challenge_id"],
                                                 "name": "bench", "credential": credential},
                             cookie=cookie)
    assert status == 201, (status, body)
    return email, auth


def passkey_login(c: Conn, auth: Authenticator):
    status, _, options = c.post("/v1/login/passkey/options")
    assert status == 200, status
    status, cookie, body = c.post("/v1/login/passkey", {
        "challenge_id": options["challenge_id"], "credential": auth.get(options["publicKey"])})
    assert status == 200 and cookie, (status, body)


def password_login(c: Conn, email: str):
    status, cookie, _ = c.post("/v1/login", {"email": email, "password": PASSWORD})
    assert status == 200 and cookie, status


def worker(args):
    """Logs in for SECONDS: how many logins."""
    base, kind, account, start = args
    c = Conn(base)
    while time.time() < start:
        time.sleep(0.001)
    done, end = 0, start + SECONDS
    while time.time() < end:
        if kind == "passkey":
            passkey_login(c, account)
        else:
            password_login(c, account)
        done += 1
    return done


def cpu_seconds(pid: int) -> float:
    """The server's CPU time so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(base: str, kind: str, accounts, pid: int):
    """Logins per second, and the server's CPU milliseconds per login."""
    start = time.time() + 0.5
    cpu = cpu_seconds(pid)
    with multiprocessing.Pool(len(accounts)) as pool:
        counts = pool.map(worker, [(base, kind, a, start) for a in accounts])
    logins = sum(counts)
    return logins / SECONDS, (cpu_seconds(pid) - cpu) * 1000 / logins


def measure(base: str, rp_id: str, pid: int) -> dict:
    print(f"bench: {PROCESSES} passkey accounts and {PROCESSES} password accounts",
          file=sys.stderr)
    keyed = [passkey_account(base, rp_id) for _ in range(PROCESSES)]
    plain = []
    c = Conn(base)
    for _ in range(PROCESSES):
        email = f"bench-pw-{uuid.uuid4().hex[:12]}@example.com"
        assert c.post("/v1/users", {"email": email, "password": PASSWORD})[0] == 201
        plain.append(email)
    # One at a time: latency.
    lat_pk, lat_pw = [], []
    for _ in range(100):
        t = time.perf_counter()
        passkey_login(c, keyed[0][1])
        lat_pk.append(time.perf_counter() - t)
    for _ in range(30):
        t = time.perf_counter()
        password_login(c, plain[0])
        lat_pw.append(time.perf_counter() - t)
    p50 = lambda v: sorted(v)[len(v) // 2] * 1000  # noqa: E731
    passkey_rate, passkey_cpu = rate(base, "passkey", [a for _, a in keyed], pid)
    password_rate, password_cpu = rate(base, "password", plain, pid)
    return {
        "clients": PROCESSES,
        "passkey_logins_per_s": round(passkey_rate),
        "password_logins_per_s": round(password_rate),
        "ratio": round(passkey_rate / password_rate, 1),
        "passkey_server_cpu_ms": round(passkey_cpu, 3),
        "password_server_cpu_ms": round(password_cpu, 3),
        "cpu_ratio": round(password_cpu / passkey_cpu, 1),
        "passkey_login_p50_ms": round(p50(lat_pk), 2),
        "password_login_p50_ms": round(p50(lat_pw), 2),
    }


def report(r: dict) -> str:
    return (f"{r['clients']} client processes: passwordless passkey logins "
            f"{r['passkey_logins_per_s']}/s, password logins {r['password_logins_per_s']}/s "
            f"({r['ratio']} ×); server CPU per login {r['passkey_server_cpu_ms']} ms against "
            f"{r['password_server_cpu_ms']} ms ({r['cpu_ratio']} ×); one at a time p50 "
            f"{r['passkey_login_p50_ms']} ms (two requests) against "
            f"{r['password_login_p50_ms']} ms")


def standalone() -> dict:
    """Starts a server of its own on http://localhost:PORT (passkeys need a
    domain name as relying party id) and measures it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # noqa: E402  (bench/run.py: Server, the binary's path)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = run.Server(Path(tmp), "passkeys", {
            "GATEHOUSE_LISTEN": f"127.0.0.1:{port}",
            "GATEHOUSE_ISSUER": f"http://localhost:{port}",
        })
        try:
            return measure(f"http://localhost:{port}", "localhost", server.proc.pid)
        finally:
            server.stop()


if __name__ == "__main__":
    print(report(standalone()))
