#!/usr/bin/env bash
# The load harness: installs wrk (Debian's package) when missing, builds the
# release binary, checks that Redis answers on 127.0.0.1:6379 and PostgreSQL
# on 127.0.0.1:5432 (the Redis scenarios, revocation propagation between two
# nodes, memory per session), then runs bench/run.py, which prints the
# tables that docs/benchmarks.md quotes and writes target/bench-results.json,
# bench/speed.py (the speed goals, each figure beside its goal: cookie and
# bearer ratios, refresh grants on SQLite and PostgreSQL, logins against the
# hashing limit, start-up, idle memory), which writes target/bench-speed.json,
# and bench/mail.py (password reset for known and unknown addresses, with an
# SMTP server answering, silent and absent), which writes
# target/bench-mail.json.
#
#   bash bench/run.sh                       # 10 s a scenario, 32 connections
#   BENCH_DURATION=30s bash bench/run.sh    # longer runs
#
# Every server it starts listens on 127.0.0.1 and is stopped at the end.
# Run it on a quiet machine: the load generator shares the cores with the
# server, and so does anything else running.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "bench: Redis is not running on 127.0.0.1:6379; start it (redis-server --daemonize yes --save \"\" --appendonly no)" >&2
  exit 1
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null || ! command -v psql >/dev/null 2>&1; then
  echo "bench: PostgreSQL must answer on 127.0.0.1:5432 (trust, user postgres) and psql be installed, for the propagation and memory parts; bash scripts/test.sh starts it" >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "bench: node and npm (20 or later) are needed for the Express baselines (BENCH_BASELINES=0 skips them)" >&2
  exit 1
fi
# bench/passkeys.py signs its WebAuthn assertions with PyPI's cryptography.
if ! python3 -c "import cryptography" 2>/dev/null; then
  echo "bench: installing PyPI's cryptography (for bench/passkeys.py)" >&2
  pip3 install --quiet cryptography
fi
# bench/mail.py runs aiosmtpd as its SMTP server, with this python3 or with
# /usr/bin/python3 (which Debian's package serves).
if ! python3 -c "import aiosmtpd" 2>/dev/null && ! /usr/bin/python3 -c "import aiosmtpd" 2>/dev/null; then
  echo "bench: installing Debian's python3-aiosmtpd (for bench/mail.py)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-aiosmtpd
fi
cargo build --release --locked -p gatehouse --bins --example hash_rate
python3 bench/run.py
python3 bench/speed.py
python3 bench/mail.py
