#!/usr/bin/env python3
"""Baselines for gatehouse's load harness: what people use instead of it,
measured by the same wrk scripts on the same machine.

The servers are bench/express/server.js (Express with jsonwebtoken, jose,
node:crypto, express-session; its top comment says what each mode checks and
why EdDSA is not done with jsonwebtoken). They run from a scratch folder
(target/bench-express, not committed) that `install()` fills with
package.json, package-lock.json and server.js and installs with `npm ci`.

Used by bench/run.py (standard library only):

    import baselines
    baselines.install()
    hs = baselines.key_config(hs256.base, hs_access, hs256_secret=secret_bytes)
    ed = baselines.key_config(eddsa.base, access)
    for sc in baselines.SCENARIOS:
        r = baselines.measure(sc, wrk, {"HS256": hs, "EdDSA": ed},
                              tokens={"HS256": hs_access, "EdDSA": access},
                              fresh={"HS256": hs_fresh, "EdDSA": fresh},
                              redis_url=REDIS_URL)
        results.append(r)   # r["baseline"] is True, r["compare_with"] a label

or piecewise: start() a server in a mode, session_cookie() for the session
modes, wrk_args() for the script and its environment, stop().

Run as a script, it is its own driver: it starts gatehouse nodes as run.py
does, then runs each gatehouse scenario that has baselines followed by those
baselines, prints a table, and writes target/bench-baselines.json:

    cargo build --release --locked -p gatehouse
    python3 bench/baselines.py [--duration 5s] [--cluster] [--only TEXT]
"""

import base64
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "express"
WORKDIR = ROOT / "target" / "bench-express"
FILES = ("package.json", "package-lock.json", "server.js")
# What nginx's auth_request sends /v1/verify (the same as run.py's ORIGINAL).
ORIGINAL = "X-Original-Method: GET\nX-Original-URI: /app/orders"
STAMP = ".bench-lock.sha256"


# ---- installing -------------------------------------------------------------

def install(workdir: Path = WORKDIR, quiet: bool = True) -> Path:
    """Copies package.json, package-lock.json and server.js into `workdir`
    and runs `npm ci --no-audit --no-fund` there when node_modules is missing
    or the package files changed since the last install. Returns workdir."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("baselines: node and npm are needed (Node 20 or later)")
    digest = hashlib.sha256()
    for name in FILES:
        data = (SOURCE / name).read_bytes()
        if name != "server.js":
            digest.update(data)
        (workdir / name).write_bytes(data)
    stamp = workdir / STAMP
    if (workdir / "node_modules").is_dir() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return workdir
    print(f"baselines: npm ci in {workdir}", file=sys.stderr)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL if quiet else None)
    stamp.write_text(digest.hexdigest())
    return workdir


# ---- configuration ----------------------------------------------------------

@dataclass(frozen=True)
class KeyConfig:
    """What a bearer baseline needs to verify one gatehouse node's tokens."""
    alg: str                              # "HS256" or "EdDSA"
    issuer: str
    audience: str
    hs256_secret: Optional[bytes] = None  # HS256: the key bytes
    jwks: Optional[dict] = None           # EdDSA: the node's /.well-known/jwks.json
    public_key_pem: Optional[str] = None  # EdDSA: or one SPKI PEM key (no kid check)
    leeway: int = 30                      # gatehouse's default jwt_leeway


def _b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def key_config(base_url: str, access_token: str, hs256_secret: Optional[bytes] = None) -> KeyConfig:
    """The configuration of the gatehouse node at `base_url`, learnt from one
    of its access tokens (alg from the header; iss and aud from the claims,
    read without verifying: they only configure the baseline) and, for
    EdDSA, its JWKS. HS256 needs the secret's bytes (GATEHOUSE_JWT_HS256_SECRET
    decoded from base64, as gatehouse decodes it)."""
    header_b64, claims_b64, _ = access_token.split(".")
    alg = _b64url_json(header_b64)["alg"]
    claims = _b64url_json(claims_b64)
    aud = claims["aud"] if isinstance(claims["aud"], str) else claims["aud"][0]
    if alg == "HS256":
        if hs256_secret is None:
            raise ValueError("an HS256 node's baseline needs the secret's bytes")
        return KeyConfig("HS256", claims["iss"], aud, hs256_secret=hs256_secret)
    if alg != "EdDSA":
        raise ValueError(f"baselines cover HS256 and EdDSA, not {alg}")
    with urllib.request.urlopen(base_url + "/.well-known/jwks.json", timeout=10) as res:
        jwks = json.loads(res.read())
    return KeyConfig("EdDSA", claims["iss"], aud, jwks=jwks)


# ---- one server -------------------------------------------------------------

class Baseline:
    """One running server.js (and its cluster workers, in its own process
    group). `base` is its http://127.0.0.1:PORT."""

    def __init__(self, proc: subprocess.Popen, base: str, mode: str, alg: Optional[str], log: Path):
        self.proc, self.base, self.mode, self.alg, self.log = proc, base, mode, alg, log

    def rss_mb(self) -> float:
        """Resident memory of the server and its workers, MB."""
        total, pids = 0, [self.proc.pid]
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            m = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(m.group(1)) if m else 0
            pids.extend(int(c) for c in children)
        return total / 1024

    def stop(self):
        stop(self)


def start(mode: str, config: Optional[KeyConfig] = None, *, redis_url: Optional[str] = None,
          cluster: bool = False, workdir: Path = WORKDIR, log_dir: Optional[Path] = None,
          timeout: float = 30.0) -> Baseline:
    """Starts server.js in `mode` ("jwt-string", "jwt-keyobject", "jose",
    "node-crypto", "session", "session-redis") on 127.0.0.1, a free port.
    Bearer modes need `config` (key_config()); session-redis `redis_url`
    (keys under a fresh prefix). `cluster` runs 2 node:cluster workers.
    install() must have run. Returns once it answers."""
    workdir = Path(workdir)
    env = dict(os.environ, NODE_ENV="production", BENCH_MODE=mode, BENCH_PORT="0")
    for k in ("BENCH_NODE_CLUSTER", "BENCH_JWKS", "BENCH_PUBLIC_KEY_PEM", "BENCH_HS256_SECRET"):
        env.pop(k, None)
    if cluster:
        env["BENCH_NODE_CLUSTER"] = "1"
    alg = None
    if config is not None:
        alg = config.alg
        env.update(BENCH_ALG=config.alg, BENCH_ISSUER=config.issuer,
                   BENCH_AUDIENCE=config.audience, BENCH_LEEWAY=str(config.leeway))
        if config.hs256_secret is not None:
            env["BENCH_HS256_SECRET"] = base64.b64encode(config.hs256_secret).decode()
        if config.jwks is not None:
            env["BENCH_JWKS"] = json.dumps(config.jwks)
        if config.public_key_pem is not None:
            env["BENCH_PUBLIC_KEY_PEM"] = config.public_key_pem
    elif mode not in ("session", "session-redis"):
        raise ValueError(f"mode {mode} verifies tokens: give it a KeyConfig")
    if mode == "session-redis":
        env["BENCH_REDIS_URL"] = redis_url or "redis://127.0.0.1:6379/"
        env["BENCH_REDIS_PREFIX"] = f"gatehouse-bench-express-{uuid.uuid4().hex[:8]}:"
    log = Path(log_dir or workdir) / f"server-{mode}{'-' + alg if alg else ''}.log"
    proc = subprocess.Popen(
        ["node", "server.js"], cwd=workdir, env=env, stdout=subprocess.PIPE,
        stderr=open(log, "wb"), text=True, start_new_session=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    match = re.match(r"listening on (http://\S+)", line)
    if not match:
        _kill(proc)
        raise RuntimeError(f"baselines: server.js {mode} did not start (first line {line!r}); see {log}")
    return Baseline(proc, match.group(1), mode, alg, log)


def session_cookie(server: Baseline) -> str:
    """A session cookie ("connect.sid=…") from the server's POST /login
    (session modes; baseline only: no password is checked)."""
    req = urllib.request.Request(server.base + "/login", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.headers["Set-Cookie"].split(";", 1)[0]


def _kill(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group start() made: server and workers
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop(server: Baseline):
    """Stops the server and its workers."""
    _kill(server.proc)
    if server.proc.stdout:
        server.proc.stdout.close()


# ---- scenarios --------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    label: str          # the row in the table
    compare_with: str   # the gatehouse scenario's label in run.py
    mode: str           # server.js mode
    alg: Optional[str]  # the gatehouse node whose tokens it verifies (None: no token)
    credential: str     # "none", "same-token", "fresh-tokens" or "cookie"
    path: str = "/v1/verify"
    cluster: bool = False


FLOOR = "GET /healthz (floor)"
_SAME, _FRESH = "bearer, same token", "bearer, fresh token each request"

SCENARIOS = [
    Scenario("Express GET /healthz (Express's own floor)", FLOOR,
             "jwt-keyobject", "HS256", "none", path="/healthz"),
    Scenario("Express + jsonwebtoken, HS256 secret Buffer per call, same token",
             f"GET /v1/verify, HS256 {_SAME}", "jwt-string", "HS256", "same-token"),
    Scenario("Express + jsonwebtoken, HS256 KeyObject made once, same token",
             f"GET /v1/verify, HS256 {_SAME}", "jwt-keyobject", "HS256", "same-token"),
    Scenario("Express + jsonwebtoken, HS256 KeyObject made once, fresh token each request",
             f"GET /v1/verify, HS256 {_FRESH}", "jwt-keyobject", "HS256", "fresh-tokens"),
    Scenario("Express + jose (WebCrypto), EdDSA local JWKS, same token",
             f"GET /v1/verify, EdDSA {_SAME}", "jose", "EdDSA", "same-token"),
    Scenario("Express + node:crypto, EdDSA KeyObject made once, same token",
             f"GET /v1/verify, EdDSA {_SAME}", "node-crypto", "EdDSA", "same-token"),
    Scenario("Express + jose (WebCrypto), EdDSA local JWKS, fresh token each request",
             f"GET /v1/verify, EdDSA {_FRESH}", "jose", "EdDSA", "fresh-tokens"),
    Scenario("Express + node:crypto, EdDSA KeyObject made once, fresh token each request",
             f"GET /v1/verify, EdDSA {_FRESH}", "node-crypto", "EdDSA", "fresh-tokens"),
    Scenario("Express + express-session, MemoryStore (in process)",
             "GET /v1/verify, session cookie, SQLite", "session", None, "cookie"),
    Scenario("Express + express-session, connect-redis",
             "GET /v1/verify, session cookie, Redis", "session-redis", None, "cookie"),
]

# Optional: the same with node:cluster, 2 workers (both cores, as gatehouse).
CLUSTER_SCENARIOS = [
    Scenario("Express GET /healthz, 2 workers (node:cluster)", FLOOR,
             "jwt-keyobject", "HS256", "none", path="/healthz", cluster=True),
    Scenario("Express + jsonwebtoken, HS256 KeyObject made once, same token, 2 workers",
             f"GET /v1/verify, HS256 {_SAME}", "jwt-keyobject", "HS256", "same-token", cluster=True),
    Scenario("Express + node:crypto, EdDSA KeyObject made once, fresh token each request, 2 workers",
             f"GET /v1/verify, EdDSA {_FRESH}", "node-crypto", "EdDSA", "fresh-tokens", cluster=True),
    Scenario("Express + express-session, connect-redis, 2 workers",
             "GET /v1/verify, session cookie, Redis", "session-redis", None, "cookie", cluster=True),
]


def wrk_args(scenario: Scenario, *, token: Optional[str] = None, fresh_tokens: Optional[Path] = None,
             cookie: Optional[str] = None) -> tuple:
    """(path, script, env) for run.wrk(base + path, script, env): the same
    scripts and headers as the gatehouse scenario it is compared with."""
    if scenario.credential == "none":
        return scenario.path, "header.lua", {"BENCH_HEADER": "X-Bench: 1"}
    if scenario.credential == "same-token":
        return scenario.path, "header.lua", {"BENCH_HEADER": f"Authorization: Bearer {token}",
                                             "BENCH_EXTRA": ORIGINAL}
    if scenario.credential == "fresh-tokens":
        return scenario.path, "fresh_tokens.lua", {"BENCH_TOKENS": str(fresh_tokens),
                                                   "BENCH_EXTRA": ORIGINAL}
    if scenario.credential == "cookie":
        return scenario.path, "header.lua", {"BENCH_HEADER": f"Cookie: {cookie}",
                                             "BENCH_EXTRA": ORIGINAL}
    raise ValueError(scenario.credential)


def warm_up(url: str, script: str, env: dict, duration: str = "2s", connections: int = 32):
    """Loads `url` for `duration` and discards the figures: V8 compiles the
    hot path with its optimising tiers during the first seconds (a cold 5 s
    run measured ~15 % fewer requests and a p99 ~7 × longer than the next
    one), and the comparison is with a server that needs no warming."""
    subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "-s", str(ROOT / "bench" / "wrk" / script), url],
        env=dict(os.environ, BENCH_DIR=str(ROOT / "bench"), BENCH_THREADS="1", **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
    )


def measure(scenario: Scenario, wrk: Callable[[str, str, dict], dict], configs: dict, *,
            tokens: dict, fresh: dict, redis_url: Optional[str] = None,
            workdir: Path = WORKDIR, warmup: Optional[str] = "2s") -> dict:
    """Starts the scenario's server, warms it up (`warmup` of load, not
    measured; None for none), loads it with `wrk(url, script, env)`
    (run.wrk), stops it, and returns wrk's result with "scenario" (label),
    "baseline": True, "compare_with", "mode", "alg", "cluster", "warmup",
    "idle_rss_mb" (before any load) and "rss_mb" (after it). `configs`,
    `tokens` and `fresh` are keyed by "HS256"/"EdDSA": KeyConfig, a valid
    access token, the file of fresh tokens. Tokens live 5 minutes: give ones
    minted shortly before."""
    config = configs[scenario.alg] if scenario.alg else None
    server = start(scenario.mode, config, redis_url=redis_url, cluster=scenario.cluster, workdir=workdir)
    try:
        idle = server.rss_mb()
        path, script, env = wrk_args(
            scenario,
            token=tokens.get(scenario.alg) if scenario.alg else None,
            fresh_tokens=fresh.get(scenario.alg) if scenario.alg else None,
            cookie=session_cookie(server) if scenario.credential == "cookie" else None,
        )
        if warmup:
            warm_up(server.base + path, script, env, warmup)
        result = wrk(server.base + path, script, env)
        rss = server.rss_mb()
    finally:
        stop(server)
    result.update(scenario=scenario.label, baseline=True, compare_with=scenario.compare_with,
                  mode=scenario.mode, alg=scenario.alg, cluster=scenario.cluster,
                  idle_rss_mb=round(idle, 1), rss_mb=round(rss, 1), warmup=warmup)
    return result


# ---- the driver ---------------------------------------------------------------

def _idle_fraction(seconds: float = 1.0) -> float:
    """The machine's idle CPU share over `seconds` (/proc/stat)."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(max_wait: float = 600.0, threshold: float = 0.85, samples: int = 3) -> bool:
    """Waits until the machine has been idle (at least `threshold` of its
    CPU) for `samples` seconds running, at most `max_wait` seconds: on a
    shared machine a build or a test of someone else's takes the cores the
    server and wrk need. Returns False when it gave up."""
    deadline, quiet, told = time.monotonic() + max_wait, 0, False
    while time.monotonic() < deadline:
        quiet = quiet + 1 if _idle_fraction() >= threshold else 0
        if quiet >= samples:
            return True
        if not told:
            print("baselines: waiting for a quiet machine", file=sys.stderr)
            told = True
    return False

def _main():
    import argparse
    import platform
    import tempfile

    parser = argparse.ArgumentParser(description="gatehouse against its Express baselines")
    parser.add_argument("--duration", default="5s", help="wrk -d for each run (default 5s)")
    parser.add_argument("--cluster", action="store_true", help="also the node:cluster scenarios")
    parser.add_argument("--only", default="", help="only baselines whose label contains this")
    parser.add_argument("--warmup", default="2s", help="unmeasured load before each baseline run")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for an idle machine before each run")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "bench-baselines.json")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))
    import run  # noqa: E402  (bench/run.py: Server, account, wrk, mint_fresh_tokens)

    if not run.BINARY.exists():
        sys.exit("baselines: build first: cargo build --release --locked -p gatehouse")
    install()
    chosen = [s for s in SCENARIOS + (CLUSTER_SCENARIOS if args.cluster else []) if args.only in s.label]
    secret_b64 = "YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC1iZW5jaC0xMjM0NTY="  # run.py's HS256 node
    results = []
    busy = []

    def wrk(url, script, env):
        return run.wrk(url, script, env, duration=args.duration)

    def quiet(label):
        if not args.no_wait and not wait_for_quiet():
            busy.append(label)

    def show(r):
        results.append(r)
        print(f"  {r['scenario']}: {r['rps']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms"
              f" non-2xx {r['non2xx']}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="gatehouse-baselines-") as tmp:
        work = Path(tmp)
        nodes = []
        # Tokens that outlive the run (waits for a quiet machine included);
        # the lifetime changes nothing in what a verification costs.
        ttl = {"GATEHOUSE_ACCESS_TOKEN_TTL": "2h"}
        try:
            eddsa = run.Server(work, "eddsa", ttl)
            nodes.append(eddsa)
            hs256 = run.Server(work, "hs256", {**ttl, "GATEHOUSE_JWT_ALG": "HS256",
                                               "GATEHOUSE_JWT_HS256_SECRET": secret_b64})
            nodes.append(hs256)
            redis = None
            if any(s.mode == "session-redis" for s in chosen):
                redis = run.Server(work, "redis", {
                    **ttl,
                    "GATEHOUSE_REDIS_URL": run.REDIS_URL,
                    "GATEHOUSE_REDIS_KEY_PREFIX": f"gatehouse-bench-{uuid.uuid4().hex[:8]}:"})
                nodes.append(redis)
            time.sleep(1)
            idle_rss = eddsa.rss_mb()

            fresh = {}
            if any(s.credential == "fresh-tokens" for s in chosen):
                print("baselines: minting fresh tokens", file=sys.stderr)
                for alg, node in (("EdDSA", eddsa), ("HS256", hs256)):
                    fresh[alg] = work / f"fresh-{alg}.txt"
                    run.mint_fresh_tokens(node, run.account(node)[1], fresh[alg])
            # Same-token credentials after the minting, the youngest.
            _, cookie, access, _ = run.account(eddsa)
            _, _, hs_access, _ = run.account(hs256)
            redis_cookie = run.account(redis)[1] if redis else None
            tokens = {"EdDSA": access, "HS256": hs_access}
            configs = {"EdDSA": key_config(eddsa.base, access),
                       "HS256": key_config(hs256.base, hs_access, base64.b64decode(secret_b64))}

            # The gatehouse scenarios the baselines compare with, as run.py runs them.
            gatehouse = {FLOOR: (eddsa, "/healthz", "header.lua", {"BENCH_HEADER": "X-Bench: 1"})}
            for alg, node in (("EdDSA", eddsa), ("HS256", hs256)):
                gatehouse[f"GET /v1/verify, {alg} {_SAME}"] = (
                    node, "/v1/verify", "header.lua",
                    {"BENCH_HEADER": f"Authorization: Bearer {tokens[alg]}", "BENCH_EXTRA": ORIGINAL})
                if alg in fresh:
                    gatehouse[f"GET /v1/verify, {alg} {_FRESH}"] = (
                        node, "/v1/verify", "fresh_tokens.lua",
                        {"BENCH_TOKENS": str(fresh[alg]), "BENCH_EXTRA": ORIGINAL})
            gatehouse["GET /v1/verify, session cookie, SQLite"] = (
                eddsa, "/v1/verify", "header.lua", {"BENCH_HEADER": f"Cookie: {cookie}", "BENCH_EXTRA": ORIGINAL})
            if redis:
                gatehouse["GET /v1/verify, session cookie, Redis"] = (
                    redis, "/v1/verify", "header.lua",
                    {"BENCH_HEADER": f"Cookie: {redis_cookie}", "BENCH_EXTRA": ORIGINAL})

            print(f"baselines: {args.duration} a run, {run.CONNECTIONS} connections", file=sys.stderr)
            for label, (node, path, script, env) in gatehouse.items():
                group = [s for s in chosen if s.compare_with == label]
                if not group and label != FLOOR:
                    continue
                quiet(label)
                r = wrk(node.base + path, script, env)
                r["scenario"] = label
                show(r)
                for sc in group:
                    quiet(sc.label)
                    show(measure(sc, wrk, configs, tokens=tokens, fresh=fresh, redis_url=run.REDIS_URL,
                                 warmup=args.warmup if args.warmup not in ("", "0", "0s") else None))
        finally:
            for n in nodes:
                n.stop()

    floor = results[0]["rps"]
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.release()}"
    print(f"\nMachine: {machine}; wrk -t{run.THREADS} -c{run.CONNECTIONS} -d{args.duration}; "
          f"each baseline warmed up for {args.warmup} first\n")
    print("| scenario | requests/s | × /healthz | p50 | p99 | non-2xx | RSS after |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        name = f"↳ {r['scenario']}" if r.get("baseline") else f"**{r['scenario']}**"
        rss = f"{r['rss_mb']:.0f} MB" if "rss_mb" in r else ""
        print(f"| {name} | {r['rps']:,.0f} | {r['rps'] / floor:.2f} | {r['p50_ms']:.2f} ms | "
              f"{r['p99_ms']:.2f} ms | {r['non2xx']} | {rss} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "idle_rss_mb": idle_rss, "results": results},
                                   indent=1) + "\n")
    print(f"\nbaselines: wrote {args.out}", file=sys.stderr)
    if busy:
        print(f"baselines: {len(busy)} runs started on a busy machine (no quiet within 10 min)",
              file=sys.stderr)
    if any(r["non2xx"] or r.get("socket_errors") for r in results):
        sys.exit("baselines: some answers were not 2xx (or sockets failed): those figures measure nothing")


if __name__ == "__main__":
    _main()
