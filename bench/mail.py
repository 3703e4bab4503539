#!/usr/bin/env python3
"""`POST /v1/password-reset` for known and unknown addresses: whether the
answer takes the same time whatever the address (so its timing tells no one
whether an account exists), and whether it ever waits for SMTP.

Three servers in turn (release build, SQLite), each with `smtp_url` on a
mail server this script runs itself on a free loopback port:

- answering: aiosmtpd (Debian's python3-aiosmtpd), accepting every mail;
- silent: a socket server that accepts the TCP connection and then says
  nothing for 30 s (no greeting), so a client that waited for it would
  wait out its timeout;
- refused: nothing listens on the port (connection refused).

On each, SAMPLES requests for known addresses and SAMPLES for unknown ones,
alternated in counterbalanced pairs (known, unknown, unknown, known, known,
...) so that drift hits both alike and each kind follows each kind equally
often, one at a time on one keep-alive connection, after WARMUP of each
that are not counted. Every address is asked for once: each known request names a fresh
registered account and each unknown one a fresh address, so the
per-address budget (`login_max_failures`) never refuses one and both kinds
pay for a new budget key; the per-network budget
(`login_max_failures_per_ip`) is raised, as for the other benches, since
every request comes from 127.0.0.1. After each request the client waits
GAP, so that the work a known address causes after the answer (the lookup,
the token and the mail written, the mail sent) is over before the next
request is timed; only what happens before the answer is measured.

For each server: p50/p90/p99/mean of the client-side latency per kind, the
difference of the medians (known - unknown) with a bootstrap 95 % interval,
and a two-sided Mann-Whitney U test; as the noise floor, the same
comparison between two halves of the unknown requests (pairs 0-1 and 2-3
of every four, so each half has as many after a known request as after an
unknown one); and the carry-over: unknown requests GAP after a known one
against those after an unknown one. GET /healthz on the same connection,
paced alike, gives the floor: the round trip and this client's own time.
The mail counters read from /metrics afterwards show the known requests did
write their mails (and, with the answering server, that they were sent).

    python3 bench/mail.py      # starts target/release/gatehouse (or BENCH_BINARY)

Needs aiosmtpd in this python3 or in /usr/bin/python3 (the sink runs in a
process of its own, whichever has it); otherwise only the standard library.
Every process it starts listens on 127.0.0.1 and is stopped at the end.
"""

import http.client
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from pathlib import Path

SAMPLES = int(os.environ.get("BENCH_RESET_SAMPLES", "250"))
WARMUP = 20
GAP = float(os.environ.get("BENCH_RESET_GAP", "0.025"))
PASSWORD = "bench passphrase that is long"
BOOTSTRAP = 4000

# The SMTP sink: aiosmtpd, counting what it accepts in a file.
SINK = textwrap.dedent("""
    import signal, sys, threading
    from aiosmtpd.controller import Controller
    port, count_file = int(sys.argv[1]), sys.argv[2]
    class Handler:
        n = 0
        async def handle_DATA(self, server, session, envelope):
            Handler.n += 1
            with open(count_file, "w") as f:
                f.write(str(Handler.n))
            return "250 OK"
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
""")

# The silent server: accepts, then says nothing for 30 s, then hangs up.
SILENT = textwrap.dedent("""
    import socket, sys, threading, time
    port, count_file = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("ready", flush=True)
    accepted = 0
    def hold(conn):
        time.sleep(30)
        conn.close()
    while True:
        conn, _ = listener.accept()
        accepted += 1
        with open(count_file, "w") as f:
            f.write(str(accepted))
        threading.Thread(target=hold, args=(conn,), daemon=True).start()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_with_aiosmtpd() -> str:
    for exe in (sys.executable, "/usr/bin/python3"):
        if Path(exe).exists() and subprocess.run(
                [exe, "-c", "import aiosmtpd"], capture_output=True).returncode == 0:
            return exe
    sys.exit("bench: aiosmtpd is needed (Debian's python3-aiosmtpd serves /usr/bin/python3)")


class MailServer:
    """One of the SMTP servers above, in a process of its own (none for
    "refused": a port nothing listens on)."""

    def __init__(self, kind: str, workdir: Path):
        self.kind = kind
        self.port = free_port()
        self.count_file = workdir / f"smtp-{kind}.count"
        self.proc = None
        if kind == "refused":
            return
        code, exe = (SINK, python_with_aiosmtpd()) if kind == "answering" else (SILENT, sys.executable)
        self.proc = subprocess.Popen([exe, "-c", code, str(self.port), str(self.count_file)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            sys.exit(f"bench: the {kind} SMTP server did not start ({line!r})")

    def count(self) -> int:
        """Mails accepted (answering) or connections accepted (silent)."""
        try:
            return int(self.count_file.read_text() or 0)
        except FileNotFoundError:
            return 0

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Conn:
    """One keep-alive connection to the server."""

    def __init__(self, base: str):
        self.conn = http.client.HTTPConnection(urllib.parse.urlparse(base).netloc, timeout=60)

    def post(self, path, body):
        data = json.dumps(body)
        started = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        res = self.conn.getresponse()
        payload = res.read()
        return res.status, payload, time.perf_counter() - started

    def get(self, path):
        started = time.perf_counter()
        self.conn.request("GET", path)
        res = self.conn.getresponse()
        payload = res.read()
        return res.status, payload, time.perf_counter() - started


# -- statistics, standard library only ---------------------------------------

def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def median(values):
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def mann_whitney(a, b):
    """Two-sided p-value of the Mann-Whitney U test (normal approximation
    with the tie correction; fine for samples of this size)."""
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks, i = [0.0] * len(pooled), 0
    ties = 0.0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, g) in zip(ranks, pooled) if g == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / sigma
    return math.erfc(max(z, 0) / math.sqrt(2))


def bootstrap_ci(a, b, rng, reps=BOOTSTRAP):
    """95 % percentile-bootstrap interval of median(a) - median(b)."""
    diffs = sorted(
        median(rng.choices(a, k=len(a))) - median(rng.choices(b, k=len(b)))
        for _ in range(reps)
    )
    return diffs[int(0.025 * reps)], diffs[int(0.975 * reps) - 1]


def compare(a, b, rng):
    lo, hi = bootstrap_ci(a, b, rng)
    return {"diff_ms": ms(median(a) - median(b)), "ci_ms": [ms(lo), ms(hi)],
            "p": mann_whitney(a, b)}


def ms(seconds):
    return round(seconds * 1000, 3)


def summary(values):
    return {"p50_ms": ms(percentile(values, 50)), "p90_ms": ms(percentile(values, 90)),
            "p99_ms": ms(percentile(values, 99)), "mean_ms": ms(sum(values) / len(values)),
            "max_ms": ms(max(values))}


# -- the measurement ---------------------------------------------------------

def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def measure(run, workdir: Path, smtp_kind: str, rng) -> dict:
    """One server, one SMTP server of kind `smtp_kind`."""
    smtp = MailServer(smtp_kind, workdir)
    server = run.Server(workdir, f"mail-{smtp_kind}", {
        "GATEHOUSE_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
        "GATEHOUSE_EMAIL_FROM": "Bench <gatehouse@example.test>",
        "GATEHOUSE_PUBLIC_URL": "https://auth.example.test",
        "GATEHOUSE_REGISTRATION": "open",
        # No verification mail per registration: the setup sends nothing.
        "GATEHOUSE_EMAIL_VERIFICATION": "off",
        "GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP": "1000000",
        "GATEHOUSE_REGISTRATION_MAX_PER_IP": "1000000",
    })
    try:
        c = Conn(server.base)
        total = WARMUP + SAMPLES
        print(f"bench: {smtp_kind} SMTP server: registering {total} accounts", file=sys.stderr)
        known = []
        for _ in range(total):
            email = f"bench-reset-{uuid.uuid4().hex[:12]}@example.com"
            status, body, _ = c.post("/v1/users", {"email": email, "password": PASSWORD})
            assert status == 201, (status, body)
            known.append(email)
        unknown = [f"nobody-{uuid.uuid4().hex[:12]}@example.com" for _ in range(total)]
        print(f"bench: {smtp_kind}: {SAMPLES} + {SAMPLES} requests, alternated", file=sys.stderr)
        # Each timed request: (pair number, its kind, the kind before it).
        times = []
        previous = None
        started = time.time()
        for i in range(total):
            # Counterbalanced pairs (known-unknown, unknown-known, ...):
            # each kind follows each kind equally often, and drift hits both.
            pair = [("known", known[i]), ("unknown", unknown[i])]
            for kind, email in (pair if i % 2 == 0 else pair[::-1]):
                status, body, took = c.post("/v1/password-reset", {"email": email})
                assert status == 202, (kind, status, body)
                if i >= WARMUP:
                    times.append((i, kind, previous, took))
                previous = kind
                time.sleep(GAP)
        elapsed = time.time() - started
        # The round trip and this client's own time on the same connection,
        # paced alike: what a request that does nothing costs here.
        floor = []
        for _ in range(SAMPLES):
            floor.append(c.get("/healthz")[2])
            time.sleep(GAP)
        if smtp_kind == "answering":
            # Every known address's mail reaches the sink (soon after).
            deadline = time.time() + 60
            while smtp.count() < total and time.time() < deadline:
                time.sleep(0.2)
        status, text, _ = c.get("/metrics")
        text = text.decode() if status == 200 else ""
        counters = {k: int(metric(text, "gatehouse_mails_total", f'{{result="{k}"}}'))
                    for k in ("queued", "sent", "retried", "failed")}
        counters["outbox_pending"] = int(metric(text, "gatehouse_mail_outbox_pending"))
        def pick(kind, after=None, pairs=(0, 1, 2, 3)):
            return [t for i, k, prev, t in times
                    if k == kind and after in (None, prev) and i % 4 in pairs]
        k, u = pick("known"), pick("unknown")
        return {
            "smtp": smtp_kind,
            "samples": SAMPLES,
            "seconds": round(elapsed, 1),
            "healthz_p50_ms": ms(percentile(floor, 50)),
            "known": summary(k),
            "unknown": summary(u),
            "known_vs_unknown": compare(k, u, rng),
            # Noise: two halves of the unknown requests, each with as many
            # after a known request as after an unknown one.
            "unknown_halves": compare(pick("unknown", pairs=(0, 1)),
                                      pick("unknown", pairs=(2, 3)), rng),
            # What a known request's work after its answer does to the next
            # request, GAP later: unknown ones after a known one against
            # unknown ones after an unknown one.
            "carry_over": compare(pick("unknown", after="known"),
                                  pick("unknown", after="unknown"), rng),
            "mails": counters,
            "smtp_accepted": smtp.count(),
        }
    finally:
        server.stop()
        smtp.stop()


LABELS = {
    "answering": "aiosmtpd, answering",
    "silent": "accepts, silent for 30 s",
    "refused": "none (connection refused)",
}


def report(results) -> str:
    lines = [
        "| SMTP server | address | p50 | p90 | p99 | mean | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for kind in ("known", "unknown"):
            s = r[kind]
            lines.append(f"| {LABELS[r['smtp']]} | {kind} | {s['p50_ms']:.3f} ms | "
                         f"{s['p90_ms']:.3f} ms | {s['p99_ms']:.3f} ms | {s['mean_ms']:.3f} ms | "
                         f"{s['max_ms']:.3f} ms |")
    lines += [
        "",
        "| SMTP server | median known − unknown (95 % CI) | Mann-Whitney p | "
        "noise: unknown, one half − the other (95 % CI) | p | "
        "mails queued / sent / retried, left in the outbox | SMTP server accepted |",
        "|---|---|---|---|---|---|---|",
    ]
    carry = []
    for r in results:
        d, n, m = r["known_vs_unknown"], r["unknown_halves"], r["mails"]
        c = r["carry_over"]
        carry.append(f"{LABELS[r['smtp']]}: {c['diff_ms']:+.3f} ms ({c['ci_ms'][0]:+.3f} to "
                     f"{c['ci_ms'][1]:+.3f}), p {c['p']:.2g}")
        accepted = {"answering": f"{r['smtp_accepted']} mails",
                    "silent": f"{r['smtp_accepted']} connections",
                    "refused": "–"}[r["smtp"]]
        lines.append(
            f"| {LABELS[r['smtp']]} | {d['diff_ms']:+.3f} ms ({d['ci_ms'][0]:+.3f} to "
            f"{d['ci_ms'][1]:+.3f}) | {d['p']:.2g} | {n['diff_ms']:+.3f} ms ({n['ci_ms'][0]:+.3f} "
            f"to {n['ci_ms'][1]:+.3f}) | {n['p']:.2g} | {m['queued']} / {m['sent']} / "
            f"{m['retried']}, {m['outbox_pending']} | {accepted} |")
    lines += ["", "GET /healthz on the same connection, paced alike, p50: "
              + "; ".join(f"{LABELS[r['smtp']]}: {r['healthz_p50_ms']:.3f} ms" for r in results)
              + "."]
    lines += ["", f"An unknown address's request {GAP * 1000:.0f} ms after a known one's, "
              "against one after an unknown one's (median difference, 95 % CI): "
              + "; ".join(carry) + "."]
    return "\n".join(lines)


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run  # noqa: E402  (bench/run.py: Server, the binary's path)

    rng = random.Random(20261206)
    results = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-mail-") as tmp:
        for kind in ("answering", "silent", "refused"):
            results.append(measure(run, Path(tmp), kind, rng))
    machine = f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}"
    print(f"\nMachine: {machine}; binary {run.BINARY}; {SAMPLES} known + {SAMPLES} unknown "
          f"requests per server, alternated (counterbalanced pairs), one at a time on one "
          f"keep-alive connection, {GAP * 1000:.0f} ms apart, after {WARMUP} + {WARMUP} not "
          f"counted\n")
    print(report(results))
    out = run.ROOT / "target" / "bench-mail.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
