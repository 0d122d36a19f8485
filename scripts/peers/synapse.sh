#!/usr/bin/env bash
# Synapse, the Matrix homeserver, as a peer for chattr-bench (the `synapse` target): a
# private homeserver on loopback, on its own PostgreSQL cluster, tuned so a benchmark
# measures Synapse's throughput and not its rate limiters.
#
#   synapse.sh install              pip-installs Synapse (pinned below) with PostgreSQL
#                                   support into ${CHATTR_TOOLS:-~/.cache/chattr-tools}/synapse-venv
#   synapse.sh start STATE_DIR PORT starts PostgreSQL (a cluster in STATE_DIR/pg, on a free
#                                   port) and Synapse (client API on 127.0.0.1:PORT,
#                                   server_name localhost, no federation listener); writes
#                                   their pids to STATE_DIR/pids (Synapse first, then the
#                                   postmaster) and returns once /_matrix/client/versions
#                                   answers, leaving both running
#   synapse.sh stop STATE_DIR       stops both, and waits until they are gone
#
# Everything a run writes (config, signing key, media, logs, database) stays in STATE_DIR;
# a second start reuses it. Users register through open registration without verification
# (m.login.dummy), so the benchmark needs no admin secret. The config, with a comment on
# every setting changed from Synapse's defaults, is scripts/peers/synapse/homeserver.yaml.
#
# As root (CI containers), PostgreSQL runs as the `postgres` OS user (it refuses root);
# Synapse itself runs as the caller. PostgreSQL binaries: $CHATTR_PG_BIN, else the newest
# /usr/lib/postgresql/*/bin.
set -euo pipefail

SYNAPSE_VERSION=1.163.2
here="$(cd "$(dirname "$0")" && pwd)"
tools="${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}"
venv="$tools/synapse-venv"
python="$venv/bin/python"
# How long Synapse may take to come up (a fresh database gets its whole schema first).
STARTUP_SECONDS=180

die() {
  echo "synapse.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: synapse.sh install | start STATE_DIR PORT | stop STATE_DIR"
}

installed() {
  [ -x "$python" ] &&
    [ "$("$python" -c 'import psycopg2, synapse; print(synapse.__version__)' 2>/dev/null)" = "$SYNAPSE_VERSION" ]
}

install() {
  if installed; then
    return 0
  fi
  # psycopg2 (Synapse's `postgres` extra) builds from source: it needs pg_config and a C
  # compiler.
  local need=()
  command -v pg_config >/dev/null || need+=(libpq-dev)
  command -v cc >/dev/null || need+=(build-essential)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need ${need[*]} (apt-get install them as root)"
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  echo "installing matrix-synapse $SYNAPSE_VERSION into $venv"
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$python" -m pip install -q --upgrade pip
  "$python" -m pip install -q "matrix-synapse[postgres]==$SYNAPSE_VERSION"
  installed || die "matrix-synapse $SYNAPSE_VERSION did not install into $venv"
}

pg_bin() {
  if [ -n "${CHATTR_PG_BIN:-}" ]; then
    echo "$CHATTR_PG_BIN"
    return
  fi
  local dir
  dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  if [ ! -x "$dir/postgres" ]; then
    die "PostgreSQL server binaries not found: apt-get install postgresql, or set CHATTR_PG_BIN"
  fi
  echo "$dir"
}

# Runs a PostgreSQL program as the `postgres` OS user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether GET $1 answers 200.
answers() {
  "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1" 2>/dev/null
}

alive() {
  kill -0 "$1" 2>/dev/null
}

# Stops the process $1 with signal $2, waiting up to 30 s before SIGKILL.
stop_pid() {
  local pid=$1 signal=$2
  alive "$pid" || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "synapse.sh: pid $pid ignored SIG$signal for 30 s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

# Stops whatever of this state directory is running: Synapse first (it holds connections
# to the database), then PostgreSQL (SIGINT: fast shutdown).
stop() {
  local state=$1
  if [ -f "$state/synapse.pid" ]; then
    stop_pid "$(cat "$state/synapse.pid")" TERM
  fi
  if [ -f "$state/pg/data/postmaster.pid" ]; then
    stop_pid "$(head -n 1 "$state/pg/data/postmaster.pid")" INT
  fi
  rm -f "$state/pids" "$state/synapse.pid"
}

# A fresh PostgreSQL cluster in $state/pg (owned by the server user), with a `synapse`
# database as Synapse requires it: UTF8, C collation and ctype.
init_postgres() {
  local state=$1 bin=$2
  mkdir -p "$state/pg"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$state/pg"
    runuser -u postgres -- test -x "$state/pg" ||
      die "the postgres user cannot reach $state/pg: make STATE_DIR and its parents traversable (chmod o+x)"
  fi
  as_pg "$bin/initdb" -D "$state/pg/data" -U synapse -A trust -E UTF8 --locale=C \
    --no-instructions >"$state/pg/initdb.log" 2>&1 ||
    die "initdb failed: see $state/pg/initdb.log"
}

start() {
  local state=$1 port=$2
  installed || die "Synapse $SYNAPSE_VERSION is not installed: run scripts/peers/synapse.sh install"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
  mkdir -p "$state"
  state="$(cd "$state" && pwd)"
  if [ -f "$state/pids" ]; then
    while read -r pid; do
      alive "$pid" && die "already running in $state (pid $pid): stop it first"
    done <"$state/pids"
  fi
  # The postgres user must be able to reach its cluster inside STATE_DIR (a fresh
  # tempdir is 0700).
  [ "$(id -u)" = 0 ] && chmod o+x "$state"
  local bin
  bin="$(pg_bin)"
  [ -d "$state/pg/data" ] || init_postgres "$state" "$bin"

  # From here on, a failure stops whatever did start.
  trap 'stop "$state"' ERR

  local pg_port
  pg_port="$(free_port)"
  # Commits do not wait for their WAL flush (synchronous_commit=off; fsync stays on), the
  # same trade as ejabberd's peer and Chattr's embedded store (SQLite, WAL,
  # synchronous=NORMAL): a crash of the machine can lose the last moments of commits,
  # never corrupt anything. CHATTR_PEER_SYNCHRONOUS_COMMIT=on measures the durable setting.
  local sync_commit=${CHATTR_PEER_SYNCHRONOUS_COMMIT:-off}
  [[ $sync_commit =~ ^(on|off)$ ]] || die "CHATTR_PEER_SYNCHRONOUS_COMMIT must be on or off, not '$sync_commit'"
  as_pg "$bin/pg_ctl" -D "$state/pg/data" -l "$state/pg/postgres.log" -w -t 60 \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $state/pg -c synchronous_commit=$sync_commit" start >/dev/null ||
    { stop "$state"; die "PostgreSQL did not start: see $state/pg/postgres.log"; }
  as_pg "$bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U synapse -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'synapse'" | grep -q 1 ||
    as_pg "$bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U synapse -d postgres -c \
      "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"

  # Secrets are made once per state directory and kept, like the signing key.
  if [ ! -f "$state/secrets.yaml" ]; then
    secret() { "$python" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
    {
      echo "registration_shared_secret: \"$(secret)\""
      echo "macaroon_secret_key: \"$(secret)\""
      echo "form_secret: \"$(secret)\""
    } >"$state/secrets.yaml"
  fi
  mkdir -p "$state/media"
  sed -e "s|@STATE@|$state|g" -e "s|@PORT@|$port|g" -e "s|@PG_PORT@|$pg_port|g" \
    "$here/synapse/homeserver.yaml" >"$state/homeserver.yaml"
  sed -e "s|@STATE@|$state|g" "$here/synapse/log.yaml" >"$state/log.yaml"
  local config=(-c "$state/homeserver.yaml" -c "$state/secrets.yaml")
  [ -f "$state/signing.key" ] || "$python" -m synapse.app.homeserver "${config[@]}" --generate-keys >/dev/null

  # Its own session, so a Ctrl-C of whoever started it does not reach it; `stop` does.
  setsid "$python" -m synapse.app.homeserver "${config[@]}" \
    >>"$state/synapse.out" 2>&1 </dev/null &
  local synapse=$!
  echo "$synapse" >"$state/synapse.pid"
  printf '%s\n%s\n' "$synapse" "$(head -n 1 "$state/pg/data/postmaster.pid")" >"$state/pids"

  local deadline=$((SECONDS + STARTUP_SECONDS))
  until answers "http://127.0.0.1:$port/_matrix/client/versions"; do
    if ! alive "$synapse"; then
      tail -n 30 "$state/synapse.out" "$state/homeserver.log" >&2 2>/dev/null || true
      stop "$state"
      die "Synapse exited during startup (logs above, and in $state)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      stop "$state"
      die "Synapse did not answer on 127.0.0.1:$port within $STARTUP_SECONDS s (logs in $state)"
    fi
    sleep 0.5
  done
  trap - ERR
}

case "${1:-}" in
  install)
    [ $# -eq 1 ] || usage
    install
    ;;
  start)
    [ $# -eq 3 ] || usage
    start "$2" "$3"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || die "no state directory $2"
    stop "$(cd "$2" && pwd)"
    ;;
  *) usage ;;
esac
