#!/usr/bin/env bash
# Peer benchmark: Graphile Worker draining no-op jobs. See README.md.
#
#   SLUICE_TEST_DATABASE_URL=postgres://user@127.0.0.1:PORT/postgres \
#     benches/peer/graphile/run.sh [--jobs N] [--concurrency C] [--local-queue S] ...
#
# Creates a fresh database peer_<timestamp> on that server, runs run.mjs
# against it, and drops it afterwards (also on failure or Ctrl-C).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${SLUICE_TEST_DATABASE_URL:?set SLUICE_TEST_DATABASE_URL to a postgres://user@host:port/postgres URL}"
for tool in node npm psql; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 2; }
done

if [[ ! -d "$here/node_modules/graphile-worker" ]]; then
  (cd "$here" && npm ci --silent --no-audit --no-fund)
fi

# Swap the database name in the admin URL for a fresh one (keeps user, host,
# port and any ?query string).
admin_url="$SLUICE_TEST_DATABASE_URL"
db="peer_$(date +%Y%m%d_%H%M%S)_$$"
if [[ "$admin_url" =~ ^(postgres(ql)?://[^/]+)(/[^?]*)?(\?.*)?$ ]]; then
  db_url="${BASH_REMATCH[1]}/${db}${BASH_REMATCH[4]}"
else
  echo "run.sh: cannot parse SLUICE_TEST_DATABASE_URL" >&2
  exit 2
fi

psql "$admin_url" -v ON_ERROR_STOP=1 -qc "create database \"$db\"" >/dev/null
cleanup() {
  psql "$admin_url" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 \
    || psql "$admin_url" -qc "drop database if exists \"$db\"" >/dev/null 2>&1 \
    || echo "run.sh: could not drop database $db" >&2
}
trap cleanup EXIT

echo "database: $db (dropped afterwards)"
DATABASE_URL="$db_url" node "$here/run.mjs" "$@"
