#!/usr/bin/env bash
# Runs gatehouse's whole test suite: unit tests, property tests and the
# black-box tests that start the real server on port 0 over real HTTP.
#
# Besides the Rust toolchain the suite needs nginx: tests/api/nginx.rs runs the
# nginx block of docs/integrations.md with a real nginx (its own temporary
# configuration and ports; the tests never use the system's nginx service).
# This script installs nginx with apt-get when it is missing (with sudo when
# not root); without apt-get, install it yourself. The embedded store is a
# SQLite file per test, created in a temporary directory.
#
# The PostgreSQL tests need a server on 127.0.0.1:5432 that trusts local
# connections as user postgres (each test creates and drops its own
# database). This script starts an installed but stopped cluster, and installs
# Debian's postgresql (configured for trust on loopback) when there is none.
#
# The Redis tests need a Redis (7.0 or later, no auth) on 127.0.0.1:6379; each
# test uses a key prefix of its own and deletes its keys. This script starts
# redis-server (in memory only, no persistence) when the port is closed, and
# installs Debian's redis-server when it is missing. The Redis outage tests
# (tests/api/multinode.rs) also run redis-server themselves, on free ports
# with temporary directories, so the binary must be installed.
#
# The hosted pages' browser test (tests/api/browser.rs) drives headless
# Chromium with playwright-core: it needs node (20 or later), Debian's
# chromium at /usr/bin/chromium (or CHROMIUM), and the npm packages of
# crates/gatehouse/tests/browser. This script installs chromium with apt-get
# and runs `npm ci` there when they are missing. No browser is ever
# downloaded by playwright (never run `npx playwright install`).
#
# The OpenAPI test (tests/api/openapi.rs) runs schemathesis against the
# server; this script pip-installs the pinned release when the
# `schemathesis` command is missing or is another version. The client test
# (tests/api/openapi_client.rs) generates a Python client from the document
# with openapi-python-client and runs it with python3 (3.11 or later); this
# script pip-installs the pinned openapi-python-client (which brings the
# client's httpx and attrs) when the command is missing or is another
# version.
#
# The packaging test (tests/api/packaging.rs) builds the Debian package with
# cargo-deb from the test build's own binary, reads it back with dpkg-deb,
# checks the systemd unit with systemd-analyze and runs the packaged binary
# under strace. This script installs Debian's systemd (for systemd-analyze;
# nothing is started, PID 1 need not be systemd), strace and dpkg-dev (whose
# dpkg-shlibdeps fills in Depends) with apt-get when they are missing, and
# `cargo install`s the pinned cargo-deb when `cargo deb` is missing or is
# another version. The backup test (tests/api/backups.rs) runs the documented
# sqlite3, pg_dump, dropdb, createdb and pg_restore commands: this script
# installs Debian's sqlite3 and postgresql-client when they are missing.
#
# The relying-party test (tests/api/oidc_rps.rs) signs in at gatehouse with
# PyPI's authlib, run by python3 (3.10 or later); this script pip-installs the
# pinned authlib (which brings cryptography) and requests when python3 cannot
# import them or has another authlib.
#
# The mail tests read what gatehouse sends from a real SMTP server of their
# own: tests/api/mail_sink.rs runs aiosmtpd (tests/api/smtp_sink.py) on a free
# loopback port, in plain, STARTTLS and SMTPS modes. This script installs
# Debian's python3-aiosmtpd (1.4.3 on Debian 12, the release the sink is
# written against) with apt-get when neither python3 nor /usr/bin/python3
# can import aiosmtpd; the package serves the system's /usr/bin/python3, which
# the tests use when the python3 on PATH (pyenv's, say) lacks the module.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ensure_nginx() {
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: nginx not found and no apt-get to install it; install nginx (the nginx tests need it)" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing nginx (for tests/api/nginx.rs)" >&2
  if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx); then
    echo "scripts/test.sh: installing nginx failed; install it by hand (apt-get install nginx)" >&2
    exit 1
  fi
}

ensure_postgres() {
  port_open 5432 && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "scripts/test.sh: PostgreSQL is not running on 127.0.0.1:5432 and apt-get is missing; install and start PostgreSQL" >&2
      exit 1
    fi
    echo "scripts/test.sh: installing PostgreSQL (for the PostgreSQL backend tests)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      # Tests connect as postgres over loopback without a password.
      as_root sh -c "printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
    done
    # The package may have started the cluster already; restart it so the
    # new rules apply.
    for version in $(ls /etc/postgresql); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main restart 2>/dev/null || true
    done
  fi
  for version in $(ls /etc/postgresql); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do
    port_open 5432 && return 0
    sleep 1
  done
  echo "scripts/test.sh: PostgreSQL did not come up on 127.0.0.1:5432 (try: pg_ctlcluster \$(ls /etc/postgresql) main start)" >&2
  exit 1
}

ensure_redis() {
  # The outage tests run redis-server themselves, so the binary must be
  # here even when some Redis already listens on 6379.
  if ! command -v redis-server >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "scripts/test.sh: redis-server is not installed and apt-get is missing; install Redis 7 or later (the tests also run redis-server themselves)" >&2
      exit 1
    fi
    echo "scripts/test.sh: installing Redis (for the Redis backend tests)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  fi
  # The package may have started its own service on 6379 already.
  port_open 6379 && return 0
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do
    port_open 6379 && return 0
    sleep 1
  done
  echo "scripts/test.sh: Redis did not come up on 127.0.0.1:6379 (try: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no)" >&2
  exit 1
}

ensure_browser() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "scripts/test.sh: node and npm are missing and apt-get is missing; install Node.js 20 or later (the browser test needs it)" >&2
      exit 1
    fi
    echo "scripts/test.sh: installing Node.js (for tests/api/browser.rs)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  fi
  if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "scripts/test.sh: /usr/bin/chromium is missing and apt-get is missing; install Chromium or set CHROMIUM (the browser test needs it)" >&2
      exit 1
    fi
    echo "scripts/test.sh: installing Chromium (for tests/api/browser.rs)" >&2
    if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); then
      echo "scripts/test.sh: installing chromium failed; install it by hand (apt-get install chromium)" >&2
      exit 1
    fi
  fi
  local dir=crates/gatehouse/tests/browser
  if [ ! -d "$dir/node_modules/playwright-core" ] || [ ! -d "$dir/node_modules/openid-client" ]; then
    echo "scripts/test.sh: installing the browser test's npm packages (npm ci in $dir)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
}

# Keep in step with SCHEMATHESIS in crates/gatehouse/tests/api/openapi.rs.
SCHEMATHESIS_VERSION=4.32.5

# pip-installs PACKAGE==VERSION (for TEST) and checks that COMMAND is then on
# PATH: pip_install_pinned COMMAND PACKAGE VERSION TEST.
pip_install_pinned() {
  local command=$1 package=$2 version=$3 test=$4 pip
  if command -v pip3 >/dev/null 2>&1; then pip=pip3
  elif command -v pip >/dev/null 2>&1; then pip=pip
  else
    echo "scripts/test.sh: $command is missing and so is pip; install Python 3.11 or later with pip, then pip install $package==$version" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing $package $version (for $test)" >&2
  if ! "$pip" install --quiet "$package==$version"; then
    echo "scripts/test.sh: installing $package failed (it needs Python 3.11 or later); install it by hand (pip install $package==$version)" >&2
    exit 1
  fi
  # pyenv installs console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  if ! command -v "$command" >/dev/null 2>&1; then
    echo "scripts/test.sh: $package installed but $command is not on PATH; add pip's script directory to PATH" >&2
    exit 1
  fi
}

ensure_schemathesis() {
  if command -v schemathesis >/dev/null 2>&1 \
    && schemathesis --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    return 0
  fi
  pip_install_pinned schemathesis schemathesis "$SCHEMATHESIS_VERSION" tests/api/openapi.rs
}

# Keep in step with OPENAPI_PYTHON_CLIENT in
# crates/gatehouse/tests/api/openapi_client.rs.
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1

ensure_openapi_python_client() {
  if command -v openapi-python-client >/dev/null 2>&1 \
    && [ "$(openapi-python-client --version 2>/dev/null)" = "openapi-python-client version: $OPENAPI_PYTHON_CLIENT_VERSION" ]; then
    return 0
  fi
  pip_install_pinned openapi-python-client openapi-python-client \
    "$OPENAPI_PYTHON_CLIENT_VERSION" tests/api/openapi_client.rs
}

# Keep in step with PYOTP in crates/gatehouse/tests/api/mfa.rs.
PYOTP_VERSION=2.9.0

# pyotp is a library (no command): checked by importing it.
ensure_pyotp() {
  if python3 -c "import importlib.metadata, sys; sys.exit(importlib.metadata.version('pyotp') != '$PYOTP_VERSION')" >/dev/null 2>&1; then
    return 0
  fi
  local pip
  if command -v pip3 >/dev/null 2>&1; then pip=pip3
  elif command -v pip >/dev/null 2>&1; then pip=pip
  else
    echo "scripts/test.sh: pyotp is missing and so is pip; install Python 3 with pip, then pip install pyotp==$PYOTP_VERSION" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing pyotp $PYOTP_VERSION (for tests/api/mfa.rs)" >&2
  if ! "$pip" install --quiet "pyotp==$PYOTP_VERSION"; then
    echo "scripts/test.sh: installing pyotp failed; install it by hand (pip install pyotp==$PYOTP_VERSION)" >&2
    exit 1
  fi
}

# Keep in step with AUTHLIB in crates/gatehouse/tests/api/oidc_rps.rs.
AUTHLIB_VERSION=1.9.10

# authlib is a library (no command): checked by importing it, with requests,
# which the relying party (tests/api/rp_authlib.py) drives the browser with.
ensure_authlib() {
  if python3 -c "import importlib.metadata, sys, authlib, requests; sys.exit(importlib.metadata.version('authlib') != '$AUTHLIB_VERSION')" >/dev/null 2>&1; then
    return 0
  fi
  local pip
  if command -v pip3 >/dev/null 2>&1; then pip=pip3
  elif command -v pip >/dev/null 2>&1; then pip=pip
  else
    echo "scripts/test.sh: authlib is missing and so is pip; install Python 3.10 or later with pip, then pip install authlib==$AUTHLIB_VERSION requests" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing authlib $AUTHLIB_VERSION (for tests/api/oidc_rps.rs)" >&2
  if ! "$pip" install --quiet "authlib==$AUTHLIB_VERSION" requests; then
    echo "scripts/test.sh: installing authlib failed; install it by hand (pip install authlib==$AUTHLIB_VERSION requests)" >&2
    exit 1
  fi
}

# aiosmtpd is a library (no command): checked by importing it, with the
# python3 on PATH or the system's, as tests/api/mail_sink.rs does.
ensure_aiosmtpd() {
  if python3 -c 'import aiosmtpd' >/dev/null 2>&1 \
    || /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: python3 cannot import aiosmtpd and apt-get is missing; install aiosmtpd 1.4.3 for python3 (the mail tests run it as their SMTP server)" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing python3-aiosmtpd (for tests/api/mail_sink.rs)" >&2
  if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-aiosmtpd); then
    echo "scripts/test.sh: installing python3-aiosmtpd failed; install it by hand (apt-get install python3-aiosmtpd)" >&2
    exit 1
  fi
}

ensure_packaging_tools() {
  local missing=()
  # sqlite3 and pg_dump for tests/api/backups.rs (PostgreSQL's client tools
  # come with ensure_postgres's server package, or on their own).
  command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
  command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  command -v strace >/dev/null 2>&1 || missing+=(strace)
  command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "scripts/test.sh: ${missing[*]} missing and apt-get is missing; install them (the packaging test needs systemd-analyze, strace and dpkg-shlibdeps)" >&2
      exit 1
    fi
    echo "scripts/test.sh: installing ${missing[*]} (for tests/api/packaging.rs)" >&2
    if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"); then
      echo "scripts/test.sh: installing ${missing[*]} failed; install them by hand (apt-get install ${missing[*]})" >&2
      exit 1
    fi
  fi
}

# Keep in step with CARGO_DEB in crates/gatehouse/tests/api/packaging.rs.
CARGO_DEB_VERSION=3.8.0

ensure_cargo_deb() {
  if cargo deb --version 2>/dev/null | grep -qxF "cargo-deb $CARGO_DEB_VERSION"; then
    return 0
  fi
  echo "scripts/test.sh: installing cargo-deb $CARGO_DEB_VERSION (for tests/api/packaging.rs)" >&2
  if ! cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"; then
    echo "scripts/test.sh: installing cargo-deb failed; install it by hand (cargo install cargo-deb --locked --version $CARGO_DEB_VERSION)" >&2
    exit 1
  fi
}

ensure_nginx
ensure_postgres
ensure_redis
ensure_browser
ensure_schemathesis
ensure_openapi_python_client
ensure_pyotp
ensure_authlib
ensure_aiosmtpd
ensure_packaging_tools
ensure_cargo_deb

exec cargo test --workspace --locked
