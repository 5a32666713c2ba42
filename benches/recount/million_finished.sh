#!/usr/bin/env bash
# How long `sluice store recount` takes over a million finished jobs on SQLite.
#
# Makes a node's data directory (a few seconds of `sluice serve`), fills its store with
# 1,000,000 finished jobs over 50 orgs and their counts, puts one count 3 off, then
# times three recounts: the first corrects that count, the others find nothing.
# Usage: benches/recount/million_finished.sh [path to the sluice binary]
set -euo pipefail
sluice=${1:-target/release/sluice}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
timeout 20 "$sluice" serve --data "$dir/node" --seconds 2 --listen 127.0.0.1:0 >/dev/null 2>&1 || true
python3 - "$dir/node/sluice.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
    INSERT INTO jobs (org_id, lane, operation, definition_id, definition_version, correlation_id,
                      depth, payload, status, created_at, completed_at)
    SELECT 1 + i % 50, i % 3, 'async-plugin', 7, 1, 'c' || i, 1, x'00', 30 + (i % 7 = 0), i, i FROM n""")
db.execute("""INSERT INTO finished_job_counts (org_id, lane, status, n)
    SELECT org_id, lane, status, COUNT(*) FROM jobs WHERE status >= 30 GROUP BY 1, 2, 3
    ON CONFLICT DO UPDATE SET n = excluded.n""")
db.execute("UPDATE finished_job_counts SET n = n + 3 WHERE org_id = 5 AND lane = 1 AND status = 30")
db.commit()
PY
for _ in 1 2 3; do
    /usr/bin/time -f 'recount: %e s wall, %M KB peak' "$sluice" store recount --data "$dir/node"
done
