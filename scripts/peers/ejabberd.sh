#!/usr/bin/env bash
# ejabberd as a benchmark peer for chattr-bench (`--target ejabberd`).
#
#   ejabberd.sh install               installs Debian's ejabberd, its PostgreSQL driver,
#                                     PostgreSQL and curl (if missing)
#   ejabberd.sh start STATE_DIR PORT  starts a private ejabberd, XMPP over WebSocket on
#                                     ws://127.0.0.1:PORT/ws, backed by a private
#                                     PostgreSQL cluster; writes their pids to
#                                     STATE_DIR/pids (beam.smp's, then the postmaster's)
#                                     and returns once the endpoint answers
#   ejabberd.sh stop STATE_DIR        stops both; nothing is left running
#
# CHATTR_PEER_SYNCHRONOUS_COMMIT=on (default off, see below) makes every commit wait for
# its WAL flush.
#
# Everything of an instance lives in STATE_DIR: the PostgreSQL cluster (with ejabberd's
# schema), ejabberd's config (from ejabberd/ejabberd.yml beside this script, where every
# limit changed from the defaults is commented), its Mnesia spool and its logs. The Erlang
# node has its own name, cookie and distribution port (no epmd), so several instances and
# a system ejabberd do not clash. The Debian system service is never used. Run as root:
# ejabberd runs as the `ejabberd` user and PostgreSQL as `postgres`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
schema=/usr/share/ejabberd/sql/pg.sql
# How long each server may take to come up, in seconds.
startup_timeout=90

die() {
  echo "ejabberd.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 install | start STATE_DIR PORT | stop STATE_DIR"
}

# The newest Debian-packaged PostgreSQL's bin directory.
pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    die "no PostgreSQL server binaries in /usr/lib/postgresql: apt-get install postgresql"
  fi
  echo "$dir"
}

# What start needs: ejabberd, its PostgreSQL driver and schema, PostgreSQL, curl.
installed() {
  [ -x /usr/sbin/ejabberdctl ] && [ -f "$schema" ] &&
    compgen -G '/usr/lib/erlang/lib/p1_pgsql-*' >/dev/null &&
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null &&
    command -v curl >/dev/null
}

# Whether process $1 runs (a zombie waiting for its parent to reap it does not).
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state=$(sed 's/.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Sends signal $1 to pid $2, then waits up to $3 seconds for it to go; kills it then.
stop_pid() {
  local signal=$1 pid=$2 wait=$3 i
  alive "$pid" || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < wait * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "ejabberd.sh: pid $pid did not stop on SIG$signal in ${wait}s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  die "pid $pid survived SIGKILL"
}

# A TCP port nobody listens on at 127.0.0.1 (racy, like any free-port pick; good enough
# for a private instance).
free_port() {
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "no free port found"
}

cmd_install() {
  if installed; then
    echo "ejabberd is installed: $(dpkg-query -W -f '${Version}' ejabberd)"
    return
  fi
  # The package's postinst would start the system service where an init system allows it;
  # it is stopped again below, as the benchmark runs private instances only.
  local packages=(ejabberd erlang-p1-pgsql)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
  command -v curl >/dev/null || packages+=(curl)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  if [ -x /etc/init.d/ejabberd ] && pgrep -u ejabberd beam >/dev/null 2>&1; then
    /etc/init.d/ejabberd stop >/dev/null 2>&1 || true
  fi
  installed || die "installing did not give ejabberdctl, $schema, the p1_pgsql driver, PostgreSQL and curl"
  echo "ejabberd installed: $(dpkg-query -W -f '${Version}' ejabberd)"
}

cmd_start() {
  local state=$1 port=$2
  [ "$(id -u)" = 0 ] || die "start must run as root (ejabberd runs as the ejabberd user, PostgreSQL as postgres)"
  installed || die "ejabberd is not installed: run scripts/peers/ejabberd.sh install"
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
  # Else the readiness probe below would find whoever holds it.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is already in use"
  fi
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  [ "$state" != / ] || die "STATE_DIR must not be /"
  if [ -f "$state/pids" ]; then
    local pid
    while read -r pid; do
      [ -n "$pid" ] && alive "$pid" && die "an instance already runs from $state (pid $pid): stop it first"
    done <"$state/pids"
    rm -f "$state/pids"
  fi
  local sync_commit=${CHATTR_PEER_SYNCHRONOUS_COMMIT:-off}
  [[ $sync_commit =~ ^(on|off)$ ]] || die "CHATTR_PEER_SYNCHRONOUS_COMMIT must be on or off, not '$sync_commit'"
  # From here a failed start stops whatever it started.
  trap 'echo "ejabberd.sh: start failed, stopping what it started" >&2; cmd_stop "$state"' EXIT
  local bin pg_port dist_port cookie
  bin=$(pg_bin)
  pg_port=$(free_port)
  dist_port=$(free_port)
  cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

  # The servers' users must reach their directories inside STATE_DIR.
  chmod 755 "$state"
  rm -rf "${state:?}/pg" "${state:?}/etc" "${state:?}/spool" "${state:?}/log"
  mkdir -p "$state/pg" "$state/etc" "$state/spool" "$state/log"
  chown postgres: "$state/pg"
  chown ejabberd: "$state/spool" "$state/log"

  # PostgreSQL: a fresh cluster, its own port and socket directory, loopback only.
  # Commits do not wait for their WAL flush (synchronous_commit=off), the same trade as
  # Chattr's embedded store (SQLite in WAL mode with synchronous=NORMAL, no fsync per
  # commit): a crash can lose the last moments of commits but never corrupts anything
  # (fsync stays on). CHATTR_PEER_SYNCHRONOUS_COMMIT=on measures the fully durable setting.
  runuser -u postgres -- "$bin/initdb" -D "$state/pg/data" -A trust -U ejabberd -E UTF8 \
    --locale=C.UTF-8 --no-instructions >"$state/pg/initdb.log" 2>&1 ||
    die "initdb failed: $(cat "$state/pg/initdb.log")"
  runuser -u postgres -- "$bin/pg_ctl" -D "$state/pg/data" -l "$state/pg/postgres.log" -w \
    -t "$startup_timeout" -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $state/pg -c synchronous_commit=$sync_commit" start >/dev/null ||
    die "PostgreSQL did not start: $(tail -n 20 "$state/pg/postgres.log")"
  local pg_pid
  pg_pid=$(head -n 1 "$state/pg/data/postmaster.pid")
  echo "$pg_pid" >"$state/pids"
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U ejabberd)
  "${psql[@]}" -d postgres -c "CREATE DATABASE ejabberd" >/dev/null
  "${psql[@]}" -d ejabberd -f "$schema" >/dev/null

  # ejabberd: its config, ejabberdctl's config (node name, a cookie of its own, the
  # distribution port on loopback without epmd, the pid file) and the resolver config
  # ejabberdctl points Erlang at.
  sed -e "s/@PORT@/$port/g" -e "s/@PG_PORT@/$pg_port/g" "$here/ejabberd/ejabberd.yml" >"$state/etc/ejabberd.yml"
  cat >"$state/etc/ejabberdctl.cfg" <<EOF
ERLANG_NODE=ejabberd_$port@localhost
ERL_DIST_PORT=$dist_port
INET_DIST_INTERFACE=127.0.0.1
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -setcookie $cookie"
EJABBERD_PID_PATH=$state/spool/ejabberd.pid
EJABBERD_BYPASS_WARNINGS=true
EOF
  cat >"$state/etc/inetrc" <<'EOF'
{lookup, ["file", "native"]}.
{host, {127,0,0,1}, ["localhost"]}.
{file, resolv, "/etc/resolv.conf"}.
EOF
  chown -R root:ejabberd "$state/etc"
  chmod 750 "$state/etc"
  chmod 640 "$state/etc"/*

  ejabberdctl start || die "ejabberdctl start failed (logs in $state/log)"
  local i beam_pid="" code=""
  for ((i = 0; i < startup_timeout * 5; i++)); do
    if [ -z "$beam_pid" ] && [ -s "$state/spool/ejabberd.pid" ]; then
      beam_pid=$(cat "$state/spool/ejabberd.pid")
      printf '%s\n%s\n' "$beam_pid" "$pg_pid" >"$state/pids"
    fi
    if [ -n "$beam_pid" ]; then
      alive "$beam_pid" || break
      # A WebSocket upgrade with the XMPP subprotocol: 101 once ejabberd serves /ws.
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
        -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
        -H 'Sec-WebSocket-Key: Y2hhdHRyLWJlbmNoLXByb2Jl' -H 'Sec-WebSocket-Protocol: xmpp' \
        "http://127.0.0.1:$port/ws" || true)
      [ "$code" = 101 ] && break
    fi
    sleep 0.2
  done
  if [ "$code" != 101 ]; then
    echo "ejabberd.sh: ejabberd did not serve ws://127.0.0.1:$port/ws (pid '${beam_pid}'); its log:" >&2
    tail -n 40 "$state/log/"*.log >&2 2>/dev/null || true
    exit 1
  fi
  trap - EXIT
  echo "ejabberd serves ws://127.0.0.1:$port/ws (beam.smp pid $beam_pid, PostgreSQL pid $pg_pid on port $pg_port)"
}

# ejabberdctl for this instance (runs as the ejabberd user: it drops root itself).
ejabberdctl() {
  /usr/sbin/ejabberdctl --config-dir "$state/etc" --logs "$state/log" --spool "$state/spool" "$@"
}

cmd_stop() {
  local state=$1 pid
  [ -d "$state" ] || return 0
  local pids=()
  [ -f "$state/pids" ] && mapfile -t pids <"$state/pids"
  # A cluster whose pid was not recorded yet (start failed early) is stopped too.
  if [ -s "$state/pg/data/postmaster.pid" ]; then
    pids+=("$(head -n 1 "$state/pg/data/postmaster.pid")")
  fi
  # So is an Erlang VM that never wrote its pid file: its command line names the spool.
  if [ -d "$state/spool" ]; then
    mapfile -t -O "${#pids[@]}" pids < <(pgrep -f -- "-mnesia dir \"$state/spool\"" || true)
  fi
  # ejabberd first (SIGTERM: the Erlang VM stops its applications and exits), then
  # PostgreSQL (SIGINT: fast shutdown, its clients are gone).
  for pid in "${pids[@]}"; do
    [ -n "$pid" ] || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ]; then stop_pid TERM "$pid" 30; fi
  done
  for pid in "${pids[@]}"; do
    [ -n "$pid" ] || continue
    stop_pid INT "$pid" 30
  done
  rm -f "$state/pids"
}

case "${1:-}" in
  install) [ $# -eq 1 ] || usage; cmd_install ;;
  start) [ $# -eq 3 ] || usage; cmd_start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  *) usage ;;
esac
