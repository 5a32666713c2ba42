#!/usr/bin/env bash
# Sluice's throughput beside the peer queue's, in one session on one PostgreSQL server:
# `sluice bench throughput` on SQLite, on PostgreSQL with one node and with three, then
# Graphile Worker (benches/peer/graphile) with its completions batched and without.
# Every run prints its JSON line; BENCHMARKS.md records them.
#
#   benches/peer/compare.sh [--jobs N] [--rounds R]
#
# Needs the release binary (`cargo build --release`) and the sample plug-ins built
# (`scripts/test` or `scripts/demo` builds them). Uses $SLUICE_TEST_DATABASE_URL if set,
# else starts a throwaway PostgreSQL (server defaults: fsync and synchronous_commit on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

jobs=200000
rounds=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

sluice=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
[[ -x $sluice ]] || { echo "compare.sh: $sluice not found (cargo build --release)" >&2; exit 2; }
if [[ -z ${SLUICE_TEST_DATABASE_URL:-} ]]; then
  source scripts/lib/postgres.sh
  start_throwaway_postgres
fi

# A fresh, empty database on the server for each PostgreSQL run.
fresh() {
  local name=bench_$(date +%s%N)
  psql -q "$SLUICE_TEST_DATABASE_URL" -c "CREATE DATABASE $name"
  echo "${SLUICE_TEST_DATABASE_URL%/postgres}/$name"
}

for round in $(seq "$rounds"); do
  echo "== round $round of $rounds, $jobs jobs each"
  "$sluice" bench throughput --jobs "$jobs" | tail -1
  "$sluice" bench throughput --jobs "$jobs" --database "$(fresh)" | tail -1
  "$sluice" bench throughput --jobs "$jobs" --database "$(fresh)" --nodes 3 | tail -1
  benches/peer/graphile/run.sh --jobs "$jobs" --complete-job-batch-delay 0 | tail -1
  benches/peer/graphile/run.sh --jobs "$jobs" | tail -1
done
