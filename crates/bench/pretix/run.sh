#!/usr/bin/env bash
# Installs pretix from PyPI under a temporary folder (never committed), gives
# it a PostgreSQL database, an event with its waiting list on and one sold-out
# product, and serves it with gunicorn on 127.0.0.1:18100, so that
# `standby-bench signup --target pretix` can replay the same launch against it.
#
#   bash crates/bench/pretix/run.sh [DIR]      # default DIR: /tmp/pretix
#
# Needs python3 with venv and PostgreSQL on 127.0.0.1:5432 (user postgres,
# trust). Stop it with: pkill -f 'gunicorn pretix.wsgi'
set -euo pipefail
DIR=${1:-/tmp/pretix}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR/data"
cd "$DIR"
[ -x venv/bin/gunicorn ] || { python3 -m venv venv && venv/bin/pip install -q pretix gunicorn; }
cat > pretix.cfg <<CFG
[pretix]
instance_name=bench
url=http://127.0.0.1:18100
currency=EUR
datadir=$DIR/data
registration=off

[django]
secret=bench-secret-not-for-production-0123456789
debug=off

[database]
backend=postgresql
name=pretix_bench
user=postgres
host=127.0.0.1
port=5432

[mail]
from=bench@example.org
host=127.0.0.1
port=2525

[locale]
default=en
timezone=Europe/Luxembourg
CFG
export PRETIX_CONFIG_FILE=$DIR/pretix.cfg
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'pretix_bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE pretix_bench" >/dev/null
venv/bin/python -m pretix migrate >migrate.log 2>&1
[ -f data/.rebuilt ] || { venv/bin/python -m pretix rebuild >rebuild.log 2>&1 && touch data/.rebuilt; }
venv/bin/python -m pretix shell <"$HERE/setup_event.py" | grep ITEM
psql -h 127.0.0.1 -U postgres pretix_bench -c "DELETE FROM pretixbase_waitinglistentry" >/dev/null
# 2 x cores + 1 workers, as gunicorn's documentation suggests.
venv/bin/gunicorn pretix.wsgi --name pretix --workers $((2 * $(nproc) + 1)) \
  --bind 127.0.0.1:18100 --timeout 60 >gunicorn.log 2>&1 &
sleep 5
curl -sf -o /dev/null "http://127.0.0.1:18100/bench/vaccine/waitinglist/?item=1" && echo "pretix serving on http://127.0.0.1:18100"
