# Sourced by .ci/run (and by hand: `source .ci/postgres.sh && start_test_postgres`):
# a throwaway PostgreSQL cluster for the tests, in a temporary directory,
# on a local port and a socket in that directory, stopped at exit.
# Exports TONGBAO_TEST_PG_URL (a key=value connection string).

pg_bin() {
  local b
  for b in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" \
           /usr/lib/postgresql/*/bin; do
    if [ -x "$b/initdb" ] && [ -x "$b/pg_ctl" ]; then
      echo "$b"
      return 0
    fi
  done
  return 1
}

start_test_postgres() {
  local bin
  if ! bin=$(pg_bin); then
    echo "== installing postgresql (initdb and pg_ctl are missing)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(pg_bin)
  fi
  PG_TEST_DIR=$(mktemp -d /tmp/tongbao-pg.XXXXXX)
  local port=$(( 20000 + RANDOM % 20000 ))
  # The server refuses to run as root: run it as an unprivileged user.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_TEST_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -U postgres -A trust --no-sync >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/log" -w -o \
    "-p $port -k $PG_TEST_DIR -c listen_addresses='' -c max_connections=300 -c fsync=on" start >/dev/null
  PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop)
  trap 'stop_test_postgres' EXIT
  export TONGBAO_TEST_PG_URL="host=$PG_TEST_DIR port=$port user=postgres"
  echo "== test PostgreSQL on $PG_TEST_DIR port $port"
}

stop_test_postgres() {
  if [ -n "${PG_TEST_DIR:-}" ]; then
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PG_TEST_DIR"
    PG_TEST_DIR=
  fi
}
