#!/usr/bin/env python3
"""The OpenID Provider under load, in one run with its /healthz floor:
introspection (a confidential client asking about a live access token of
a client session, the same token every time), the client_credentials
grant (a service client with HTTP Basic and a role of two permissions, a
new signed token every request), and the whole code flow of a signed-in
user (authorize with the session cookie, then the code grant with PKCE and
HTTP Basic), with EdDSA and with RS256 ID tokens.

    BENCH_BINARY=target/release/gatehouse python3 bench/oidc.py

Starts one release gatehouse on a fresh SQLite file (EdDSA access tokens),
registers its clients with `gatehouse client create` on the same file, and
loads each scenario with wrk (bench/wrk/post.lua, bench/wrk/code_flow.lua)
like bench/run.py. Writes target/bench-oidc.json.
"""

import base64
import hashlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: Server, account, wrk)

REDIRECT = "https://app.example.com/callback"


def client(server: run.Server, workdir: Path, name: str, alg: str):
    """A first-party confidential client with its ID tokens signed `alg`:
    (client id, secret). Registered by the CLI; the algorithm, which the
    CLI does not set, written into the row (one of the three it accepts)."""
    env = dict(os.environ, GATEHOUSE_DATABASE_URL=f"sqlite://{workdir / 'oidc.db'}")
    out = subprocess.run(
        [str(run.BINARY), "client", "create", "--name", name, "--first-party",
         "--redirect-uri", REDIRECT],
        env=env, cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    client_id = out[0].split()[3]
    secret = out[1].strip()
    db = sqlite3.connect(workdir / "oidc.db")
    db.execute("UPDATE clients SET id_token_signed_response_alg = ? WHERE client_id = ?",
               (alg, client_id))
    db.commit()
    db.close()
    return client_id, secret


def service(server: run.Server, workdir: Path):
    """A service client for the client_credentials grant, with the role
    `reports` (two permissions): (client id, secret)."""
    env = dict(os.environ, GATEHOUSE_DATABASE_URL=f"sqlite://{workdir / 'oidc.db'}")
    subprocess.run([str(run.BINARY), "role", "set", "reports", "reports:read", "reports:write"],
                   env=env, cwd=workdir, capture_output=True, text=True, check=True)
    out = subprocess.run(
        [str(run.BINARY), "client", "create", "--name", "bench-service",
         "--grant-type", "client_credentials", "--role", "reports"],
        env=env, cwd=workdir, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return out[0].split()[3], out[1].strip()


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def authorize_path(client_id: str, challenge: str) -> str:
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "scope": "openid email profile", "state": "bench", "nonce": "bench",
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    return f"/oauth2/authorize?{query}"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def one_flow(server: run.Server, cookie: str, client_id: str, secret: str) -> dict:
    """One code flow by hand: the token answer (for introspection)."""
    verifier, challenge = pkce()
    req = urllib.request.Request(server.base + authorize_path(client_id, challenge),
                                 headers={"Cookie": cookie})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(req, timeout=30)
        sys.exit("bench: the authorization endpoint did not redirect")
    except urllib.error.HTTPError as e:
        location = e.headers["Location"]
    code = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)["code"][0]
    _, _, body = server.call(
        "POST", "/v1/token",
        form={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
              "code_verifier": verifier},
        headers={"Authorization": basic(client_id, secret)},
    )
    return json.loads(body)


def main():
    if not run.BINARY.exists():
        sys.exit(f"bench: {run.BINARY} is missing; cargo build --release --locked -p gatehouse")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = run.Server(workdir, "oidc", dict(run.TOKEN_TTL))
        try:
            _, cookie, _, _ = run.account(server)
            eddsa = client(server, workdir, "bench-eddsa", "EdDSA")
            rs256 = client(server, workdir, "bench-rs256", "RS256")
            tokens = one_flow(server, cookie, *eddsa)
            floor = run.wrk(server.base + "/healthz", "header.lua", {})
            results["healthz"] = floor
            body = urllib.parse.urlencode({"token": tokens["access_token"]})
            results["introspection"] = run.wrk(
                server.base + "/oauth2/introspect", "post.lua",
                {"BENCH_BODY": body, "BENCH_HEADER": "Authorization: " + basic(*eddsa)},
            )
            svc = service(server, workdir)
            results["client_credentials"] = run.wrk(
                server.base + "/v1/token", "post.lua",
                {"BENCH_BODY": "grant_type=client_credentials",
                 "BENCH_HEADER": "Authorization: " + basic(*svc)},
            )
            for label, (client_id, secret) in (("code_flow_eddsa", eddsa),
                                                ("code_flow_rs256", rs256)):
                verifier, challenge = pkce()
                results[label] = run.wrk(server.base + "/", "code_flow.lua", {
                    "BENCH_AUTHORIZE": authorize_path(client_id, challenge),
                    "BENCH_COOKIE": cookie,
                    "BENCH_BASIC": basic(client_id, secret),
                    "BENCH_REDIRECT": urllib.parse.quote(REDIRECT, safe=""),
                    "BENCH_VERIFIER": verifier,
                })
            results["rss_mb_after"] = server.rss_mb()
        finally:
            server.stop()
    rps = results["healthz"]["rps"]
    print("| scenario | per second | × /healthz | p50 ms | p99 ms | failures |")
    print("|---|---|---|---|---|---|")
    print(f"| GET /healthz | {rps:,.0f} | 1.00 | {results['healthz']['p50_ms']:.2f} "
          f"| {results['healthz']['p99_ms']:.2f} | {results['healthz']['non2xx']} |")
    i = results["introspection"]
    print(f"| POST /oauth2/introspect (client_secret_basic) | {i['rps']:,.0f} | {i['rps'] / rps:.2f} "
          f"| {i['p50_ms']:.2f} | {i['p99_ms']:.2f} | {i['non2xx']} |")
    c = results["client_credentials"]
    print(f"| POST /v1/token client_credentials (client_secret_basic) | {c['rps']:,.0f} "
          f"| {c['rps'] / rps:.2f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['non2xx']} |")
    for label, alg in (("code_flow_eddsa", "EdDSA"), ("code_flow_rs256", "RS256")):
        c = results[label]
        print(f"| code flow, {alg} ID tokens (authorize + token = 1 flow) | {c['flows_per_s']:,.0f} flows "
              f"| {c['flows_per_s'] / rps:.3f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} "
              f"| {c['failed'] + c['non2xx']} |")
    out = run.ROOT / "target" / "bench-oidc.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
