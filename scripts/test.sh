#!/usr/bin/env bash
# Runs gatehouse's whole test suite: unit tests, property tests and the
# black-box tests that start the real server on port 0 over real HTTP.
#
# Today the suite needs nothing but the Rust toolchain: the embedded store is
# a SQLite file per test, created in a temporary directory. (PostgreSQL and
# Redis join when their backends do; this script will then start them.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

exec cargo test --workspace --locked
