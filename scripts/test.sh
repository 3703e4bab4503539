#!/usr/bin/env bash
# Runs gatehouse's whole test suite: unit tests, property tests and the
# black-box tests that start the real server on port 0 over real HTTP.
#
# Besides the Rust toolchain the suite needs nginx: tests/api/nginx.rs runs the
# nginx block of docs/integrations.md with a real nginx (its own temporary
# configuration and ports; the tests never use the system's nginx service).
# This script installs nginx with apt-get when it is missing (with sudo when
# not root); without apt-get, install it yourself. The embedded store is a
# SQLite file per test, created in a temporary directory. (PostgreSQL and
# Redis join when their backends do; this script will then start them.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: nginx not found and no apt-get to install it; install nginx (the nginx tests need it)" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  echo "scripts/test.sh: installing nginx (for tests/api/nginx.rs)" >&2
  if ! ($sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx); then
    echo "scripts/test.sh: installing nginx failed; install it by hand (apt-get install nginx)" >&2
    exit 1
  fi
fi

exec cargo test --workspace --locked
