#!/usr/bin/env python3
"""Revocation propagation between two gatehouse nodes: how long after a
logout on node A returns does node B refuse the session's access token,
idle and while wrk loads B.

Two release nodes share a fresh PostgreSQL database and a fresh Redis key
prefix (both removed at the end). For each sample: a fresh session and
access token from A (password grant, minted before the timed part), B
accepts the token once (GET /v1/me 200, so B has verified it and cached
the session), A ends the session (POST /v1/logout with the bearer), then B
is polled with GET /v1/me, back to back on a kept-alive connection, until
it answers 401. The figure is the time from A's 204 reaching us to B's 401
reaching us; when B refuses at the first poll (counted in
`first_poll_refusals`) it is bounded by that one request's duration, not
by the propagation itself.

Only the standard library (importable by bench/run.py); needs `psql` to
create and drop the database, PostgreSQL on 127.0.0.1:5432 (trust, user
postgres), Redis on 127.0.0.1:6379, and wrk for the loaded run. Run alone:

    cargo build --release --locked -p gatehouse
    python3 bench/propagation.py [--samples 200] [--idle-only | --load-only]
"""

import argparse
import http.client
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BINARY = ROOT / "target" / "release" / "gatehouse"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/")
# Both nodes must call themselves by one name, or each refuses the other's tokens.
ISSUER = "http://gatehouse.bench"
PASSWORD = "bench passphrase that is long"
ORIGINAL = "X-Original-Method: GET\nX-Original-URI: /app/orders"
# B must refuse within this, or the run fails (the issue's bound is 1 s).
POLL_LIMIT_S = 5.0
PG_HOW_TO_START = ("start it with `pg_ctlcluster 15 main start` (as root) or `bash scripts/test.sh`; "
                   "it must trust user postgres on 127.0.0.1")
REDIS_HOW_TO_START = ("start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
                      "--save \"\" --appendonly no` or `bash scripts/test.sh`")


class BenchError(RuntimeError):
    """A service is missing or a node misbehaved: the run measures nothing."""


class Redis:
    """Just enough RESP for PING, SCAN and UNLINK."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlparse(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        try:
            self.sock = socket.create_connection((host, port), timeout=5)
        except OSError as e:
            raise BenchError(f"Redis is not reachable at {url} ({e}); {REDIS_HOW_TO_START}") from e
        self.file = self.sock.makefile("rb")
        db = parsed.path.strip("/")
        if db:
            self.call("SELECT", db)

    def call(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.file.readline()
        if not line:
            raise BenchError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"Redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise BenchError(f"Redis: unexpected reply {line!r}")

    def delete_prefix(self, prefix: str) -> int:
        cursor, deleted = "0", 0
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
            cursor = cursor.decode()
            if keys:
                deleted += self.call("UNLINK", *keys)
            if cursor == "0":
                return deleted

    def close(self):
        self.sock.close()


def psql(pg_url: str, sql: str):
    if shutil.which("psql") is None:
        raise BenchError("psql not found: install the PostgreSQL client (apt-get install postgresql-client)")
    done = subprocess.run(["psql", f"{pg_url}/postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"PostgreSQL at {pg_url}: {done.stderr.strip()}; {PG_HOW_TO_START}")


class Node:
    """One `gatehouse serve` on a free port; HTTP over one kept-alive connection."""

    def __init__(self, binary: Path, workdir: Path, name: str, env: dict):
        self.name = name
        self.log = workdir / f"propagation-{name}.log"
        environ = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn", **env}
        self.log_file = open(self.log, "wb")
        self.proc = subprocess.Popen([str(binary), "serve"], cwd=workdir, env=environ,
                                     stdout=subprocess.PIPE, stderr=self.log_file)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.match(r"listening on http://(\S+)", line)
        if not match:
            self.stop()
            raise BenchError(f"node {name} did not start (first line {line!r}); see {self.log}")
        host, port = match.group(1).rsplit(":", 1)
        self.addr = match.group(1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def call(self, method: str, path: str, headers=None, body=None, form=None):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                res = self.conn.getresponse()
                return res.status, res.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle kept-alive connection: once more.
                self.conn.close()
                if attempt == 2:
                    raise

    def wait_following(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                status, body = self.call("GET", "/readyz")
                if status == 200 and json.loads(body)["checks"].get("revocation_feed") == "connected":
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        raise BenchError(f"node {self.name} did not follow the revocation feed within 10 s; see {self.log}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log_file.close()


def password_grant(node: Node, email: str) -> str:
    status, body = node.call("POST", "/v1/token",
                             form={"grant_type": "password", "username": email, "password": PASSWORD})
    if status != 200:
        raise BenchError(f"password grant on {node.name}: {status} {body[:200]!r}")
    return json.loads(body)["access_token"]


def start_load(node: Node, token: str, connections: int) -> subprocess.Popen:
    """wrk on the node's /v1/verify with one bearer token, until SIGINT."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found: install it (apt-get install wrk) or run with --idle-only")
    env = dict(os.environ, BENCH_DIR=str(BENCH), BENCH_HEADER=f"Authorization: Bearer {token}",
               BENCH_EXTRA=ORIGINAL)
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", "-d3600s", "--latency", "-s",
         str(BENCH / "wrk" / "header.lua"), f"http://{node.addr}/v1/verify"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stop_load(wrk: subprocess.Popen) -> dict:
    wrk.send_signal(signal.SIGINT)  # wrk stops, prints its summary and runs done()
    out, _ = wrk.communicate(timeout=30)
    lines = [l for l in out.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def one_sample(a: Node, b: Node, token: str):
    """(ms from A's logout answer to B's 401, polls, ms of B's accepting request)."""
    bearer = {"Authorization": f"Bearer {token}"}
    began = time.perf_counter()
    status, _ = b.call("GET", "/v1/me", bearer)
    accepted_ms = (time.perf_counter() - began) * 1000
    if status != 200:
        raise BenchError(f"B did not accept a fresh token from A: {status}")
    status, body = a.call("POST", "/v1/logout", bearer)
    if status != 204:
        raise BenchError(f"logout on A: {status} {body[:200]!r}")
    logged_out = time.perf_counter()
    polls = 0
    while True:
        status, _ = b.call("GET", "/v1/me", bearer)
        polls += 1
        refused = time.perf_counter()
        if status == 401:
            return (refused - logged_out) * 1000, polls, accepted_ms
        if status != 200:
            raise BenchError(f"B answered {status} while polling")
        if refused - logged_out > POLL_LIMIT_S:
            raise BenchError(f"B still accepts the token {POLL_LIMIT_S} s after the logout on A")


def percentile(sorted_values, q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def measure(binary: Path, workdir: Path, redis_url: str = REDIS_URL, samples: int = 200,
            load: bool = False, pg_url: str = PG_URL, connections: int = 16) -> dict:
    """Propagation of a logout on node A to node B, over `samples` sessions;
    with `load`, while `wrk -t1 -c{connections}` loads B's /v1/verify.

    Returns p50_ms, p99_ms, max_ms (A's logout answer to B's first 401),
    samples, first_poll_refusals, mean_polls, max_polls, request_p50_ms (B
    accepting a token: the resolution of the figures) and, under load,
    load (wrk's rps, p50_ms, p99_ms, non2xx on B meanwhile).

    Raises BenchError when PostgreSQL, Redis, psql, wrk or a node fails.
    """
    binary = Path(binary)
    if not binary.is_file():
        raise BenchError(f"{binary} is missing: cargo build --release --locked -p gatehouse")
    db = f"gh_bench_prop_{uuid.uuid4().hex[:12]}"
    prefix = f"gh-bench-prop-{uuid.uuid4().hex[:8]}:"
    redis = Redis(redis_url)
    try:
        redis.call("PING")
        psql(pg_url, f"CREATE DATABASE {db}")
    except BaseException:
        redis.close()
        raise
    nodes, wrk, load_result = [], None, None
    try:
        env = {
            "GATEHOUSE_LISTEN": "127.0.0.1:0",
            "GATEHOUSE_DATABASE_URL": f"{pg_url}/{db}",
            "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_REDIS_KEY_PREFIX": prefix,
            "GATEHOUSE_ISSUER": ISSUER,
            "GATEHOUSE_COOKIE_SECURE": "false",
        }
        # A first: it migrates the database and creates the signing key.
        a = Node(binary, workdir, "A", env)
        nodes.append(a)
        b = Node(binary, workdir, "B", env)
        nodes.append(b)
        a.wait_following()
        b.wait_following()
        email = f"prop-{uuid.uuid4().hex[:12]}@example.com"
        status, body = a.call("POST", "/v1/users", body={"email": email, "password": PASSWORD})
        if status != 201:
            raise BenchError(f"registering on A: {status} {body[:200]!r}")
        # Minted before the timed part: each is an argon2id hash.
        tokens = [password_grant(a, email) for _ in range(samples)]
        if load:
            wrk = start_load(b, password_grant(a, email), connections)
            time.sleep(1)  # wrk at full speed before the first sample
        taken = [one_sample(a, b, t) for t in tokens]
        if wrk is not None:
            load_result = stop_load(wrk)
            wrk = None
    finally:
        if wrk is not None:
            wrk.kill()
            wrk.wait()
        for n in nodes:
            n.stop()
        try:
            psql(pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        finally:
            redis.delete_prefix(prefix)
            redis.close()
    ms = sorted(t[0] for t in taken)
    polls = [t[1] for t in taken]
    result = {
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1],
        "samples": len(ms),
        "first_poll_refusals": sum(1 for p in polls if p == 1),
        "mean_polls": sum(polls) / len(polls),
        "max_polls": max(polls),
        "request_p50_ms": percentile(sorted(t[2] for t in taken), 0.50),
    }
    if load:
        result["load"] = load_result
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections on B")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--idle-only", action="store_true")
    group.add_argument("--load-only", action="store_true")
    args = parser.parse_args()
    runs = [("idle", False), (f"B under wrk -t1 -c{args.connections} on /v1/verify", True)]
    if args.idle_only:
        runs = runs[:1]
    if args.load_only:
        runs = runs[1:]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-propagation-") as tmp:
        for label, load in runs:
            print(f"propagation: {label}, {args.samples} samples", file=sys.stderr)
            try:
                r = measure(args.binary, Path(tmp), samples=args.samples, load=load,
                            connections=args.connections)
            except BenchError as e:
                sys.exit(f"propagation: {e}")
            rows.append((label, r))
            print(f"  {json.dumps(r)}", file=sys.stderr)
    print()
    print(table(rows))


def table(rows) -> str:
    """A Markdown table of (label, measure() result) pairs."""
    lines = ["| B's load | samples | p50 | p99 | max | refused at the first poll | "
             "B accepting a token (p50) | B's load meanwhile |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in rows:
        load = r.get("load")
        during = (f"{load['rps']:,.0f}/s, p99 {load['p99_ms']:.2f} ms, non-2xx {load['non2xx']}"
                  if load else "–")
        lines.append(f"| {label} | {r['samples']} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                     f"{r['max_ms']:.2f} ms | {r['first_poll_refusals']} of {r['samples']} "
                     f"(most polls {r['max_polls']}) | {r['request_p50_ms']:.2f} ms | {during} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
