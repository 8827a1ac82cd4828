#!/usr/bin/env bash
# Installs and prepares what the test suite needs on a fresh machine:
# Debian's chromium and chromium-driver, Python's aiosmtpd (from PyPI), and a
# PostgreSQL role and database for the tests. Writes .ci/env.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install $*" >&2; return 1; fi
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "setup: installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi

if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  echo "setup: installing aiosmtpd from PyPI"
  python3 -m pip install --quiet 'aiosmtpd>=1.4,<2' 2>/dev/null || apt_install python3-aiosmtpd
fi

if ! command -v schemathesis >/dev/null; then
  echo "setup: installing schemathesis from PyPI"
  python3 -m pip install --quiet 'schemathesis>=4.32,<5'
fi

PGHOST=127.0.0.1
PGPORT=5432
if ! command -v psql >/dev/null; then
  echo "setup: installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  echo "setup: starting PostgreSQL"
  if ls /etc/postgresql/ >/dev/null 2>&1; then
    for v in /etc/postgresql/*; do pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true; done
  fi
  for _ in $(seq 1 30); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
fi
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  echo "setup: PostgreSQL does not answer on $PGHOST:$PGPORT" >&2
  exit 1
fi

# Trust auth over TCP (this kind of machine); otherwise the postgres system
# user over the local socket (a fresh Debian install uses peer auth there).
if psql -h "$PGHOST" -p "$PGPORT" -U postgres -qtAc "SELECT 1" >/dev/null 2>&1; then
  admin() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
else
  admin() { su postgres -c "psql -p $PGPORT -v ON_ERROR_STOP=1 -qtA $(printf '%q ' "$@")"; }
fi
if [ "$(admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'standby'")" != 1 ]; then
  admin -c "CREATE ROLE standby LOGIN CREATEDB PASSWORD 'standby'"
fi
if [ "$(admin -c "SELECT 1 FROM pg_database WHERE datname = 'standby_test'")" != 1 ]; then
  admin -c "CREATE DATABASE standby_test OWNER standby"
fi
# Each test makes its own database; clear those of earlier runs.
for db in $(admin -c "SELECT datname FROM pg_database WHERE datname ~ '^standby_t_[a-z0-9]+$'"); do
  admin -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
done

cat > .ci/env <<ENV
export STANDBY_TEST_DATABASE_URL=postgres://standby:standby@$PGHOST:$PGPORT/standby_test
ENV
echo "setup: ready (PostgreSQL $PGHOST:$PGPORT, chromium, aiosmtpd)"
