#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against a real server built from this tree,
# with the OpenAPI document the server publishes: no 5xx, and every response
# conforms to the schema. Loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v schemathesis >/dev/null || python3 -m pip install --quiet 'schemathesis>=4.32,<5'
BIN=${STANDBY_BIN:-target/debug/standby}
[ -x "$BIN" ] || cargo build --quiet --bin standby
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export STANDBY_SECRET=schemathesis-secret-0123456789abcdef012 STANDBY_CLIENT_RATE=0 STANDBY_LOG=warn STANDBY_QUIET_HOURS=none \
  STANDBY_EMAIL="file:$WORK/outbox" STANDBY_SMS="file:$WORK/outbox" \
  STANDBY_RECEIPT_SECRET=receipts-secret-0123456789abcdef0123456
PASSWORD=$("$BIN" demo --database "sqlite://$WORK/db.sqlite" --registrants 50 | awk '/admin@standby.test/ { print $NF }')
"$BIN" serve --listen "127.0.0.1:$PORT" --database "sqlite://$WORK/db.sqlite" 2>"$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fs -H 'content-type: application/json' -d "{\"email\":\"admin@standby.test\",\"password\":\"$PASSWORD\"}" \
  "http://127.0.0.1:$PORT/api/v1/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
status=0
schemathesis run "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --exclude-path /api/v1/logout \
  -H "Authorization: Bearer $TOKEN" \
  --max-time "${SCHEMATHESIS_SECONDS:-60}" --workers 2 --suppress-health-check all || status=$?
if grep -q "request failed" "$WORK/server.log"; then
  echo "schemathesis: the server logged internal errors:" >&2
  grep "request failed" "$WORK/server.log" | head -5 >&2
  status=1
fi
exit $status
