# Shell functions that run a private PostgreSQL cluster for benchmarks (sourced, not run):
# a fresh data directory under a state directory, on a chosen localhost port, with trust
# authentication for one role. The same settings serve Chattr's distributed shape and the
# peers (ejabberd, Synapse), so every server writes to an equally configured database:
# Debian's defaults, fsync and synchronous_commit on.
#
# PostgreSQL refuses to run as root: as root it runs as the `postgres` OS user, which must
# be able to reach the state directory.

# The newest Debian-packaged server binaries (or $CHATTR_PG_BIN).
pg_bin() {
  if [ -n "${CHATTR_PG_BIN:-}" ]; then echo "$CHATTR_PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    echo "no PostgreSQL server binaries in /usr/lib/postgresql: apt-get install postgresql" >&2
    return 1
  fi
  echo "$dir"
}

# Runs a PostgreSQL program as the `postgres` OS user when we are root.
pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DIR PORT ROLE: initialises DIR/pg (once) and starts the server; waits for it.
pg_start() {
  local dir=$1 port=$2 role=$3 bin
  bin=$(pg_bin) || return 1
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir/pg"
    chmod o+x "$dir"
  fi
  if [ ! -f "$dir/pg/data/PG_VERSION" ]; then
    pg_as "$bin/initdb" -D "$dir/pg/data" -U "$role" -A trust -E UTF8 --locale=C \
      --no-instructions >"$dir/pg/initdb.log" 2>&1 || {
      echo "initdb failed: see $dir/pg/initdb.log" >&2
      return 1
    }
  fi
  pg_as "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w -t 60 \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null || {
    echo "PostgreSQL did not start: see $dir/pg/postgres.log" >&2
    return 1
  }
}

# pg_pid DIR: the postmaster's pid.
pg_pid() {
  head -n 1 "$1/pg/data/postmaster.pid"
}

# pg_stop DIR: stops the server (fast shutdown) if it runs.
pg_stop() {
  local dir=$1 bin
  bin=$(pg_bin) || return 1
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    pg_as "$bin/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
