#!/usr/bin/env python3
"""gatehouse's load harness: starts release builds of gatehouse on
127.0.0.1, loads each scenario with wrk for a fixed time, and prints a
table of requests per second and p50/p99 latency, each throughput also as
a ratio to the GET /healthz floor measured in the same run.

Run it through bench/run.sh, which installs wrk and builds the binary.
Only the standard library; every server and request stays on loopback.
"""

import base64
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BINARY = Path(os.environ.get("BENCH_BINARY", ROOT / "target" / "release" / "gatehouse"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = 1  # wrk's own threads: on 2 cores it shares the machine with the server
PASSWORD = "bench passphrase that is long"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/")
# More fresh tokens than the server's cache of verified tokens holds
# (~13,000 entries of this size), so a token seen again was evicted.
# What nginx's auth_request sends /v1/verify: the original request.
ORIGINAL = "X-Original-Method: GET\nX-Original-URI: /app/orders"
FRESH_TOKENS = int(os.environ.get("BENCH_FRESH_TOKENS", "60000"))
# Logouts timed from node A to node B (bench/propagation.py), idle and loaded.
PROPAGATION_SAMPLES = int(os.environ.get("BENCH_PROPAGATION_SAMPLES", "200"))
# Live sessions created in each store to weigh one (0 skips that part, the
# longest: about 10 minutes for a million sessions on 2 cores).
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "1000000"))

sys.path.insert(0, str(BENCH))
import propagation  # noqa: E402  (bench/propagation.py, beside this file)
import baselines  # noqa: E402  (bench/baselines.py: the Express servers)
import mfa  # noqa: E402  (bench/mfa.py: the second step of a login)

HS256_SECRET = "YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC1iZW5jaC0xMjM0NTY="
# Tokens minted at the start are still presented to the baselines at the
# end, some minutes later: the bench nodes give them two hours.
TOKEN_TTL = {"GATEHOUSE_ACCESS_TOKEN_TTL": "2h"}
# The Express baselines (0 skips them) and their 2-worker cluster variants.
RUN_BASELINES = os.environ.get("BENCH_BASELINES", "1") != "0"


class Server:
    """One gatehouse process on a free port, with its own SQLite file."""

    def __init__(self, workdir: Path, name: str, env: dict):
        self.name = name
        environ = dict(os.environ)
        environ.update(
            {
                "GATEHOUSE_LISTEN": "127.0.0.1:0",
                "GATEHOUSE_DATABASE_URL": f"sqlite://{workdir / (name + '.db')}",
                "GATEHOUSE_COOKIE_SECURE": "false",
                # Every account is signed up, and every login flood sent,
                # from 127.0.0.1: one client network's budgets would refuse
                # the harness as they would a sprayer.
                "GATEHOUSE_REGISTRATION_MAX_PER_IP": "1000000",
                "GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP": "1000000",
                "RUST_LOG": "warn",
            }
        )
        environ.update(env)
        self.proc = subprocess.Popen(
            [str(BINARY), "serve"],
            cwd=workdir,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=open(workdir / f"{name}.log", "wb"),
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.match(r"listening on http://(\S+)", line)
        if not match:
            self.proc.kill()
            sys.exit(f"bench: {name} did not start (first line {line!r}); see {workdir / name}.log")
        self.base = f"http://{match.group(1)}"

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        return kb / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def call(self, method, path, body=None, form=None, headers=None):
        data, hdrs = None, dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if form is not None:
            data = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in form.items()).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.headers, res.read()


def account(server: Server):
    """A registered user: their email, a session cookie, a token pair."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    server.call("POST", "/v1/users", body={"email": email, "password": PASSWORD})
    _, headers, _ = server.call("POST", "/v1/login", body={"email": email, "password": PASSWORD})
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    _, _, body = server.call(
        "POST", "/v1/token", form={"grant_type": "password", "username": email, "password": PASSWORD}
    )
    pair = json.loads(body)
    return email, cookie, pair["access_token"], pair["refresh_token"]


def wrk(url: str, script: str, env: dict, duration=DURATION, connections=CONNECTIONS) -> dict:
    environ = dict(os.environ, BENCH_DIR=str(BENCH), BENCH_THREADS=str(THREADS), **env)
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{duration}", "--latency",
         "-s", str(BENCH / "wrk" / script), url],
        env=environ, capture_output=True, text=True, check=True,
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("{")]
    if not line:
        sys.exit(f"bench: wrk printed no result for {url}:\n{out}")
    return json.loads(line[-1])


def during_flood(server: Server, accounts: Path, measure):
    """Runs `measure()` while 16 connections post logins (more logins in
    flight than cores, each an argon2id hash) to the same server."""
    environ = dict(os.environ, BENCH_DIR=str(BENCH), BENCH_ACCOUNTS=str(accounts),
                   BENCH_PASSWORD=PASSWORD)
    flood = subprocess.Popen(
        ["wrk", "-t1", "-c16", f"-d{DURATION}", "-s", str(BENCH / "wrk" / "login.lua"),
         server.base + "/v1/login"],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    time.sleep(0.5)  # the hashing pool is saturated before measuring
    try:
        result = measure()
    finally:
        out, _ = flood.communicate()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    logins = json.loads(lines[-1]) if lines else {}
    result["flood_logins_per_s"] = logins.get("rps")
    result["flood_non2xx"] = logins.get("non2xx")
    return result


def mint_fresh_tokens(server: Server, cookie: str, path: Path):
    """Distinct access tokens of one session, from POST /v1/session/token."""
    path.write_text("")
    while sum(1 for _ in path.open()) < FRESH_TOKENS:
        wrk(server.base + "/v1/session/token", "mint.lua",
            {"BENCH_HEADER": f"Cookie: {cookie}", "BENCH_TOKENS": str(path)},
            duration="5s", connections=8)
    return sum(1 for _ in path.open())


def refresh_pool(server: Server, email: str, path: Path, size: int):
    tokens = []
    for _ in range(size):
        _, _, body = server.call(
            "POST", "/v1/token", form={"grant_type": "password", "username": email, "password": PASSWORD}
        )
        tokens.append(json.loads(body)["refresh_token"])
    path.write_text("\n".join(tokens) + "\n")


def main():
    results = []
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.release()}"
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        work = Path(tmp)
        servers = []
        try:
            eddsa = Server(work, "eddsa", dict(TOKEN_TTL))
            servers.append(eddsa)
            hs256 = Server(work, "hs256", {
                **TOKEN_TTL,
                "GATEHOUSE_JWT_ALG": "HS256",
                "GATEHOUSE_JWT_HS256_SECRET": HS256_SECRET,
            })
            servers.append(hs256)
            redis = Server(work, "redis", {
                **TOKEN_TTL,
                "GATEHOUSE_REDIS_URL": REDIS_URL,
                "GATEHOUSE_REDIS_KEY_PREFIX": f"gatehouse-bench-{uuid.uuid4().hex[:8]}:",
            })
            servers.append(redis)
            time.sleep(1)
            idle_rss = eddsa.rss_mb()

            def run(label, server, path, script, env):
                r = wrk(server.base + path, script, env)
                r["scenario"] = label
                results.append(r)
                print(f"  {label}: {r['rps']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms"
                      f" non-2xx {r['non2xx']}", file=sys.stderr)

            print("bench: setting up accounts and tokens", file=sys.stderr)
            email, cookie, access, refresh = account(eddsa)
            _, _, hs_access, _ = account(hs256)
            _, redis_cookie, _, _ = account(redis)
            fresh = work / "fresh.txt"
            n = mint_fresh_tokens(eddsa, cookie, fresh)
            hs_fresh = work / "hs_fresh.txt"
            _, hs_cookie, _, _ = account(hs256)
            mint_fresh_tokens(hs256, hs_cookie, hs_fresh)
            pool = work / "refresh.txt"
            refresh_pool(eddsa, email, pool, 2 * CONNECTIONS)
            logins = work / "accounts.txt"
            logins.write_text("\n".join(account(eddsa)[0] for _ in range(2 * CONNECTIONS)) + "\n")

            print(f"bench: {DURATION} per scenario, {CONNECTIONS} connections, {n} fresh tokens",
                  file=sys.stderr)
            run("GET /healthz (floor)", eddsa, "/healthz", "header.lua", {"BENCH_HEADER": "X-Bench: 1"})
            for alg, srv, tok, fresh_file in [("EdDSA", eddsa, access, fresh),
                                              ("HS256", hs256, hs_access, hs_fresh)]:
                for path in ["/v1/verify", "/v1/me"]:
                    run(f"GET {path}, {alg} bearer, same token", srv, path, "header.lua",
                        {"BENCH_HEADER": f"Authorization: Bearer {tok}", "BENCH_EXTRA": ORIGINAL})
                    run(f"GET {path}, {alg} bearer, fresh token each request", srv, path,
                        "fresh_tokens.lua", {"BENCH_TOKENS": str(fresh_file), "BENCH_EXTRA": ORIGINAL})
            for store, srv, ck in [("SQLite", eddsa, cookie), ("Redis", redis, redis_cookie)]:
                for path in ["/v1/verify", "/v1/me"]:
                    run(f"GET {path}, session cookie, {store}", srv, path, "header.lua",
                        {"BENCH_HEADER": f"Cookie: {ck}", "BENCH_EXTRA": ORIGINAL})
            run("POST /v1/token refresh_token grant", eddsa, "/v1/token", "refresh.lua",
                {"BENCH_TOKENS": str(pool)})
            run("POST /v1/login (argon2id, OWASP parameters)", eddsa, "/v1/login", "login.lua",
                {"BENCH_ACCOUNTS": str(logins), "BENCH_PASSWORD": PASSWORD})
            print("bench: the second step of a login (TOTP)", file=sys.stderr)
            second_step = mfa.measure(eddsa.base)
            print(f"  {mfa.report(second_step)}", file=sys.stderr)
            # bench/passkeys.py needs PyPI's cryptography (bench/run.sh installs it).
            import passkeys  # noqa: E402
            print("bench: passwordless passkey logins against password logins", file=sys.stderr)
            passkey_logins = passkeys.standalone()
            print(f"  {passkeys.report(passkey_logins)}", file=sys.stderr)
            for label, env, script in [
                ("same EdDSA token", {"BENCH_HEADER": f"Authorization: Bearer {access}"}, "header.lua"),
                ("fresh EdDSA token each request", {"BENCH_TOKENS": str(fresh)}, "fresh_tokens.lua"),
            ]:
                env = dict(env, BENCH_EXTRA=ORIGINAL)
                r = during_flood(eddsa, logins,
                                 lambda: wrk(eddsa.base + "/v1/verify", script, env, connections=16))
                r["scenario"] = f"GET /v1/verify, {label}, during a login flood (16 more connections logging in)"
                results.append(r)
                print(f"  {r['scenario']}: {r['rps']:.0f}/s p99 {r['p99_ms']:.2f} ms; logins meanwhile "
                      f"{r['flood_logins_per_s']}/s", file=sys.stderr)
            if RUN_BASELINES:
                # What people use instead, on the same machine, with the same
                # tokens, scripts and connections (bench/baselines.py).
                print("bench: installing and running the Express baselines", file=sys.stderr)
                baselines.install()
                configs = {"EdDSA": baselines.key_config(eddsa.base, access),
                           "HS256": baselines.key_config(hs256.base, hs_access,
                                                         base64.b64decode(HS256_SECRET))}
                for sc in baselines.SCENARIOS + baselines.CLUSTER_SCENARIOS:
                    r = baselines.measure(sc, wrk, configs,
                                          tokens={"HS256": hs_access, "EdDSA": access},
                                          fresh={"HS256": hs_fresh, "EdDSA": fresh},
                                          redis_url=REDIS_URL)
                    results.append(r)
                    print(f"  {r['scenario']}: {r['rps']:.0f}/s p99 {r['p99_ms']:.2f} ms"
                          f" non-2xx {r['non2xx']}", file=sys.stderr)
        finally:
            for s in servers:
                s.stop()

    print("bench: revocation propagation between two nodes (PostgreSQL + Redis)", file=sys.stderr)
    spread = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-propagation-") as tmp:
        for label, load in [("idle", False), ("B under wrk -t1 -c16 on /v1/verify", True)]:
            try:
                r = propagation.measure(BINARY, Path(tmp), REDIS_URL, samples=PROPAGATION_SAMPLES,
                                        load=load)
            except propagation.BenchError as e:
                sys.exit(f"bench: propagation: {e}")
            r["scenario"] = label
            spread.append(r)
            print(f"  {label}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms", file=sys.stderr)

    memory = ""
    if SESSIONS > 0:
        print(f"bench: memory per live session at {SESSIONS:,} sessions", file=sys.stderr)
        memory = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--locked", "-p", "gatehouse",
             "--example", "session_memory", "--", str(SESSIONS)],
            cwd=ROOT, capture_output=False, stdout=subprocess.PIPE, text=True, check=True,
        ).stdout

    floor = results[0]["rps"]
    print(f"\nMachine: {machine}; wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}; "
          f"idle RSS of a fresh node: {idle_rss:.1f} MB\n")
    print("| scenario | requests/s | × /healthz | p50 | p99 | non-2xx |")
    print("|---|---|---|---|---|---|")
    ours = {r["scenario"]: r for r in results if not r.get("baseline")}
    for r in ours.values():
        print(f"| {r['scenario']} | {r['rps']:,.0f} | {r['rps'] / floor:.2f} | "
              f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['non2xx']} |")
    others = [r for r in results if r.get("baseline")]
    if others:
        print("\nWhat people use instead (Express 5 on Node "
              f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}"
              ", bench/express), against the gatehouse scenario it does the work of\n")
        print("| baseline | requests/s | p50 | p99 | non-2xx | RSS after | compared with | "
              "gatehouse ÷ baseline |")
        print("|---|---|---|---|---|---|---|---|")
        for r in others:
            theirs = ours.get(r["compare_with"])
            ratio = f"{theirs['rps'] / r['rps']:.1f} ×" if theirs and r["rps"] else "–"
            print(f"| {r['scenario']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} ms | "
                  f"{r['p99_ms']:.2f} ms | {r['non2xx']} | {r['rss_mb']:.0f} MB | "
                  f"{r['compare_with']} | {ratio} |")
    for r in results:
        if "flood_logins_per_s" in r:
            print(f"\nDuring \"{r['scenario']}\": {r['flood_logins_per_s']} logins/s, "
                  f"{r['flood_non2xx']} of them non-2xx.")
    print(f"\nThe second step of a login: {mfa.report(second_step)}.")
    print(f"\nPasskey logins: {passkeys.report(passkey_logins)}.")
    print("\nRevocation propagation: logout on node A (204 received) until node B refuses the "
          "access token, two nodes on PostgreSQL + Redis\n")
    print(propagation.table([(r["scenario"], r) for r in spread]))
    if memory:
        print("\nMemory per live session\n")
        print(memory)
    (ROOT / "target" / "bench-results.json").write_text(json.dumps(
        {"machine": machine, "idle_rss_mb": idle_rss, "results": results,
         "second_step": second_step, "passkey_logins": passkey_logins,
         "propagation": spread, "memory": memory}, indent=1) + "\n")
    # The chart of docs/benchmarks.md (matplotlib in target/bench-venv).
    subprocess.run([sys.executable, str(BENCH / "plot.py")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
