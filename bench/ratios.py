#!/usr/bin/env python3
"""The bearer and cookie ratios alone: a quick before/after check of a change
to the request path, without the 25 minutes of bench/run.py.

    BENCH_BINARY=path/to/gatehouse python3 bench/ratios.py

Starts the binary twice (on SQLite; on SQLite with sessions in Redis on
127.0.0.1:6379), measures GET /healthz (the floor), GET /v1/verify and
GET /v1/me with the same EdDSA bearer token, and with a session cookie on
each store, for BENCH_DURATION each (10s), and prints each figure with its
ratio to the floor of the same run. Uses bench/run.py's servers, accounts
and wrk scripts, so the figures are comparable with its tables.
"""

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

if os.environ.get("BENCH_BINARY"):
    run.BINARY = Path(os.environ["BENCH_BINARY"]).resolve()


def main():
    with tempfile.TemporaryDirectory(prefix="gatehouse-ratios-") as tmp:
        work = Path(tmp)
        servers = []
        try:
            sqlite = run.Server(work, "sqlite", dict(run.TOKEN_TTL))
            servers.append(sqlite)
            redis = run.Server(work, "redis", {
                **run.TOKEN_TTL,
                "GATEHOUSE_REDIS_URL": run.REDIS_URL,
                "GATEHOUSE_REDIS_KEY_PREFIX": f"gatehouse-ratios-{uuid.uuid4().hex[:8]}:",
            })
            servers.append(redis)
            time.sleep(1)
            _, cookie, access, _ = run.account(sqlite)
            _, redis_cookie, _, _ = run.account(redis)
            rows = []

            def measure(label, server, path, header):
                r = run.wrk(server.base + path, "header.lua",
                            {"BENCH_HEADER": header, "BENCH_EXTRA": run.ORIGINAL})
                rows.append((label, r))
                print(f"  {label}: {r['rps']:.0f}/s non-2xx {r['non2xx']}", file=sys.stderr)

            measure("GET /healthz (floor)", sqlite, "/healthz", "X-Bench: 1")
            for path in ["/v1/verify", "/v1/me"]:
                measure(f"GET {path}, EdDSA bearer, same token", sqlite, path,
                        f"Authorization: Bearer {access}")
            for store, srv, ck in [("SQLite", sqlite, cookie), ("Redis", redis, redis_cookie)]:
                for path in ["/v1/verify", "/v1/me"]:
                    measure(f"GET {path}, session cookie, {store}", srv, path, f"Cookie: {ck}")
        finally:
            for s in servers:
                s.stop()
    floor = rows[0][1]["rps"]
    print(f"binary: {run.BINARY}; {run.DURATION} a scenario, {run.CONNECTIONS} connections")
    print("| scenario | requests/s | × /healthz | p99 ms |")
    print("|---|---:|---:|---:|")
    for label, r in rows:
        print(f"| {label} | {r['rps']:,.0f} | {r['rps'] / floor:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
