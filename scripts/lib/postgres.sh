# Starts a throwaway PostgreSQL server (Debian's packages) on 127.0.0.1 with a data
# directory of its own, exports SLUICE_TEST_DATABASE_URL, and stops and removes it when
# the calling script exits. No Docker, nothing left behind. Sourced by scripts/test.
start_throwaway_postgres() {
  local bin
  bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1)
  if [[ -z $bin ]]; then
    echo "PostgreSQL is not installed (scripts/setup installs Debian's postgresql)" >&2
    return 1
  fi
  PG_DIR=$(mktemp -d -t sluice-postgres-XXXXXX)
  PG_AS=()
  # initdb refuses to run as root: the server runs as Debian's postgres user then.
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  PG_BIN=$bin
  "${PG_AS[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U sluice --no-sync -E UTF8 >"$PG_DIR/initdb.log"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  trap stop_throwaway_postgres EXIT
  export SLUICE_TEST_DATABASE_URL="postgres://sluice@127.0.0.1:$port/postgres"
  echo "==> PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throwaway)"
}

stop_throwaway_postgres() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
