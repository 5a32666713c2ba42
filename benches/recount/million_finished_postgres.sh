#!/usr/bin/env bash
# How long `sluice store recount` takes over a million finished jobs on PostgreSQL: a
# throwaway server (scripts/lib/postgres.sh), a database with Sluice's schema filled
# with 1,000,000 finished jobs over 50 orgs and their counts, one count put 3 off,
# three recounts timed (the first corrects it). Run from the repository's root.
# Usage: benches/recount/million_finished_postgres.sh [path to the sluice binary]
set -euo pipefail
sluice=${1:-target/release/sluice}
source scripts/lib/postgres.sh
start_throwaway_postgres >/dev/null
URL="${SLUICE_TEST_DATABASE_URL%/*}/recount"
psql -q "$SLUICE_TEST_DATABASE_URL" -c "CREATE DATABASE recount"
"$sluice" store recount --database "$URL" >/dev/null
psql -q "$URL" <<'SQL'
INSERT INTO jobs (org_id, lane, operation, definition_id, definition_version, correlation_id, depth, status, created_at, completed_at)
SELECT 1 + i % 50, i % 3, 'async-plugin', 7, 1, 'c' || i, 1, 30 + (i % 7 = 0)::int, i, i FROM generate_series(1, 1000000) AS i;
INSERT INTO finished_job_counts (org_id, lane, status, n)
SELECT org_id, lane, status, COUNT(*) FROM jobs WHERE status >= 30 GROUP BY 1, 2, 3
ON CONFLICT (org_id, lane, status) DO UPDATE SET n = EXCLUDED.n;
UPDATE finished_job_counts SET n = n + 3 WHERE org_id = 5 AND lane = 1 AND status = 30;
VACUUM ANALYZE jobs;
SQL
for i in 1 2 3; do /usr/bin/time -f 'recount: %e s wall' "$sluice" store recount --database "$URL"; done
