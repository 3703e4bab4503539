#!/usr/bin/env python3
"""The speed goals of the request path, logins and start-up, in one run
(about four minutes), each figure beside its goal:

    BENCH_BINARY=$PWD/target/release/gatehouse python3 bench/speed.py

bench/run.sh runs it after bench/run.py (it builds the release binary and
the hash_rate example first). Starts gatehouse on SQLite, on PostgreSQL
alone and on PostgreSQL + Redis (a fresh database and key prefix each,
dropped at the end), and measures, with run.py's wrk scripts and 32
connections for BENCH_DURATION each:

- GET /healthz on SQLite: the floor every ratio is taken to;
- GET /v1/verify with the same EdDSA token, and with a fresh one each
  request (60,000 minted beforehand);
- a session cookie on GET /v1/me and GET /v1/verify, on SQLite and on
  PostgreSQL + Redis;
- refresh grants on SQLite and on PostgreSQL;
- logins (the right password over 64 accounts) against the hashing limit:
  password verifications per second through gatehouse's own hasher on the
  same machine (examples/hash_rate.rs, BENCH_HASH_SECONDS, 10);
- 8 connections logging in to one account from one address with the right
  password: every answer must be 200, none 429;
- GET /v1/verify's p99 while 16 more connections log in;
- start-up to the first /healthz answer on an existing SQLite database
  (the median of 7), and the resident memory of an idle node, fresh and
  25 s after the load.

Prints a Markdown table and writes target/bench-speed.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import propagation  # noqa: E402
import run  # noqa: E402

if os.environ.get("BENCH_BINARY"):
    run.BINARY = Path(os.environ["BENCH_BINARY"]).resolve()
HASH_RATE = run.BINARY.parent / "examples" / "hash_rate"
HASH_SECONDS = os.environ.get("BENCH_HASH_SECONDS", "10")
STARTS = 7
IDLE_WAIT = 25


def pg_server(work: Path, name: str, redis: bool) -> tuple:
    """A node on a fresh PostgreSQL database (and Redis prefix): the server
    and the database to drop."""
    db = f"gh_bench_speed_{uuid.uuid4().hex[:12]}"
    propagation.psql(propagation.PG_URL, f"CREATE DATABASE {db}")
    env = dict(run.TOKEN_TTL, GATEHOUSE_DATABASE_URL=f"{propagation.PG_URL}/{db}")
    if redis:
        env["GATEHOUSE_REDIS_URL"] = run.REDIS_URL
        env["GATEHOUSE_REDIS_KEY_PREFIX"] = f"gh-bench-speed-{uuid.uuid4().hex[:8]}:"
    return run.Server(work, name, env), db


def hash_limit() -> dict:
    if not HASH_RATE.is_file():
        sys.exit(f"bench: {HASH_RATE} is missing: cargo build --release --locked -p gatehouse "
                 "--example hash_rate")
    out = subprocess.run([str(HASH_RATE), HASH_SECONDS], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_up(work: Path, name: str) -> list:
    """Milliseconds from the process's start to its first /healthz answer,
    on the database `name` left behind, STARTS times."""
    times = []
    for _ in range(STARTS):
        began = time.perf_counter()
        server = run.Server(work, name, dict(run.TOKEN_TTL))
        try:
            while True:
                try:
                    with urllib.request.urlopen(server.base + "/healthz", timeout=5) as res:
                        if res.status == 200:
                            break
                except OSError:
                    time.sleep(0.001)
            times.append((time.perf_counter() - began) * 1000)
        finally:
            server.stop()
    return times


def main():
    rows, extra = [], {}
    with tempfile.TemporaryDirectory(prefix="gatehouse-speed-") as tmp:
        work = Path(tmp)
        servers, databases = [], []
        try:
            sqlite = run.Server(work, "sqlite", dict(run.TOKEN_TTL))
            servers.append(sqlite)
            pg, db = pg_server(work, "pg", redis=False)
            servers.append(pg)
            databases.append(db)
            pgredis, db = pg_server(work, "pgredis", redis=True)
            servers.append(pgredis)
            databases.append(db)
            time.sleep(1)
            extra["idle_rss_fresh_mb"] = sqlite.rss_mb()

            def measure(label, server, path, script, env, goal=None, connections=run.CONNECTIONS):
                r = run.wrk(server.base + path, script, env, connections=connections)
                r["scenario"], r["goal"] = label, goal
                rows.append(r)
                print(f"  {label}: {r['rps']:.0f}/s p99 {r['p99_ms']:.2f} ms non-2xx {r['non2xx']}",
                      file=sys.stderr)
                return r

            print("bench: setting up accounts and tokens", file=sys.stderr)
            email, cookie, access, _ = run.account(sqlite)
            pg_email, _, _, _ = run.account(pg)
            _, pgr_cookie, _, _ = run.account(pgredis)
            fresh = work / "fresh.txt"
            run.mint_fresh_tokens(sqlite, cookie, fresh)
            pools = {}
            for name, srv, mail in [("SQLite", sqlite, email), ("PostgreSQL", pg, pg_email)]:
                pools[name] = work / f"refresh-{name}.txt"
                run.refresh_pool(srv, mail, pools[name], 2 * run.CONNECTIONS)
            logins = work / "accounts.txt"
            logins.write_text("\n".join(run.account(sqlite)[0] for _ in range(2 * run.CONNECTIONS))
                              + "\n")
            one = work / "one-account.txt"
            one.write_text(run.account(sqlite)[0] + "\n")

            print(f"bench: {run.DURATION} a scenario, {run.CONNECTIONS} connections", file=sys.stderr)
            verify = {"BENCH_EXTRA": run.ORIGINAL}
            measure("GET /healthz (floor)", sqlite, "/healthz", "header.lua",
                    {"BENCH_HEADER": "X-Bench: 1"})
            measure("GET /v1/verify, EdDSA bearer, same token", sqlite, "/v1/verify", "header.lua",
                    dict(verify, BENCH_HEADER=f"Authorization: Bearer {access}"), ("ratio", 0.85))
            measure("GET /v1/verify, EdDSA bearer, fresh token each request", sqlite, "/v1/verify",
                    "fresh_tokens.lua", dict(verify, BENCH_TOKENS=str(fresh)), ("ratio", 0.3))
            for store, srv, ck, goal in [("SQLite", sqlite, cookie, 0.6),
                                         ("PostgreSQL + Redis", pgredis, pgr_cookie, 0.5)]:
                for path in ["/v1/me", "/v1/verify"]:
                    measure(f"GET {path}, session cookie, {store}", srv, path, "header.lua",
                            dict(verify, BENCH_HEADER=f"Cookie: {ck}"), ("ratio", goal))
            for name, srv in [("SQLite", sqlite), ("PostgreSQL", pg)]:
                measure(f"POST /v1/token refresh_token grant, {name}", srv, "/v1/token",
                        "refresh.lua", {"BENCH_TOKENS": str(pools[name])}, ("rps", 2400))
            print("bench: the hashing limit (examples/hash_rate.rs)", file=sys.stderr)
            limit = hash_limit()
            extra["hash_limit"] = limit
            print(f"  {limit['per_s']}/s on {limit['threads']} threads", file=sys.stderr)
            login = measure("POST /v1/login (argon2id, OWASP parameters)", sqlite, "/v1/login",
                            "login.lua", {"BENCH_ACCOUNTS": str(logins),
                                          "BENCH_PASSWORD": run.PASSWORD})
            login["goal"] = ("rps", round(0.75 * limit["per_s"], 1))
            measure("POST /v1/login, one account from one address, 8 connections", sqlite,
                    "/v1/login", "login.lua",
                    {"BENCH_ACCOUNTS": str(one), "BENCH_PASSWORD": run.PASSWORD},
                    ("non2xx", 0), connections=8)
            r = run.during_flood(sqlite, logins, lambda: run.wrk(
                sqlite.base + "/v1/verify", "header.lua",
                dict(verify, BENCH_HEADER=f"Authorization: Bearer {access}"), connections=16))
            r["scenario"] = ("GET /v1/verify, same EdDSA token, 16 connections, during a login "
                             "flood (16 more connections logging in)")
            r["goal"] = ("p99_ms", 5.0)
            rows.append(r)
            print(f"  {r['scenario']}: p99 {r['p99_ms']:.2f} ms; logins meanwhile "
                  f"{r['flood_logins_per_s']}/s", file=sys.stderr)
            # Idle again: the hashing threads give their memory back after
            # 10 s without a job (one thread at a time).
            time.sleep(IDLE_WAIT)
            extra["idle_rss_after_load_mb"] = sqlite.rss_mb()
        finally:
            for s in servers:
                s.stop()
            for db in databases:
                propagation.psql(propagation.PG_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        print("bench: start-up on the existing SQLite database", file=sys.stderr)
        extra["start_up_ms"] = start_up(work, "sqlite")

    floor = rows[0]["rps"]
    print(f"\nbinary: {run.BINARY}; wrk -t{run.THREADS} -c{run.CONNECTIONS} -d{run.DURATION}\n")
    print("| scenario | requests/s | × /healthz | p50 | p99 | non-2xx | goal | met |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        goal, met = "", ""
        if r.get("goal"):
            kind, value = r["goal"]
            if kind == "ratio":
                goal, ok = f"≥ {value} ×", r["rps"] / floor >= value
            elif kind == "rps":
                goal, ok = f"≥ {value:,}/s", r["rps"] >= value
            elif kind == "p99_ms":
                goal, ok = f"p99 < {value} ms", r["p99_ms"] < value
            else:
                goal, ok = "no refusals", r["non2xx"] == 0
            met = "yes" if ok and r["non2xx"] == 0 or kind == "non2xx" and ok else "no"
        print(f"| {r['scenario']} | {r['rps']:,.0f} | {r['rps'] / floor:.2f} | "
              f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['non2xx']} | {goal} | {met} |")
    limit = extra["hash_limit"]
    starts = extra["start_up_ms"]
    print(f"\nHashing limit: {limit['per_s']:.1f} verifications/s on {limit['threads']} threads "
          f"(examples/hash_rate.rs); logins reached {login['rps'] / limit['per_s']:.2f} × of it "
          "(goal ≥ 0.75 ×).")
    print(f"\nStart-up to the first /healthz answer on an existing SQLite database: median "
          f"{statistics.median(starts):.0f} ms, max {max(starts):.0f} ms of {STARTS} "
          "(goal < 200 ms).")
    print(f"\nResident memory of an idle node (SQLite): {extra['idle_rss_fresh_mb']:.1f} MB fresh, "
          f"{extra['idle_rss_after_load_mb']:.1f} MB {IDLE_WAIT} s after the load (goal < 50 MB).")
    (run.ROOT / "target" / "bench-speed.json").write_text(
        json.dumps({"results": rows, **extra}, indent=1) + "\n")


if __name__ == "__main__":
    main()
