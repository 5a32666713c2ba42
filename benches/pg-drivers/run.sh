#!/usr/bin/env bash
# Measures the PostgreSQL drivers against a throwaway PostgreSQL server (or
# $SLUICE_TEST_DATABASE_URL): benches/pg-drivers/run.sh [--jobs N] [--group N] [--rounds N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -z ${SLUICE_TEST_DATABASE_URL:-} ]]; then
  source ../../scripts/lib/postgres.sh
  start_throwaway_postgres
fi
cargo run --quiet --release -- --url "$SLUICE_TEST_DATABASE_URL" "$@"
