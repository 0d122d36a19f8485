#!/usr/bin/env bash
# Chattr's benchmarks, on demand: builds the release binaries, starts each server under
# test privately on this machine, runs chattr-bench's scenarios against it, and writes the
# JSON reports to docs/bench/results and the charts to docs/bench (docs/benchmarks.md reads
# them). Every run verifies every delivery: a scenario that loses, duplicates or reorders
# anything fails the script.
#
#   ./scripts/bench.sh            everything (about 30 minutes; installs ejabberd and Synapse)
#   ./scripts/bench.sh chattr     Chattr embedded only: idle, 1:1, fan-out, storms
#   ./scripts/bench.sh distributed | wide | ejabberd | synapse | charts
#                                 (wide: only the 100,000 idle sockets over six gateways)
#
# CHATTR_BENCH_QUICK=1 shrinks every scenario to seconds (a check that the script works).
# CHATTR_BENCH_KAFKA=memory runs tansu on its in-memory engine; CHATTR_BENCH_KAFKA_OPTIONS
# adds options to the bus URL (e.g. fetch_wait_ms=100).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=lib/postgres.sh
. scripts/lib/postgres.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chattr-target}"
out="${CHATTR_BENCH_OUT:-$root/docs/bench}"
results="$out/results"
quick="${CHATTR_BENCH_QUICK:-}"
what="${1:-all}"
mkdir -p "$results"

# Sizes: the real run, or seconds-long ones.
if [ -n "$quick" ]; then
  secs=2 idle_conns=400 idle_workers=2 pairs=50 pair_rates=200,400 groups=4 members=20
  fan_rates=40,80 storm_sockets=200 storm_users=20 logins=40 peer_groups=3 peer_members=10
  peer_fan_rates=10,20 peer_pairs=10 peer_pair_rates=20,40 wide_gateways=2 wide_conns=600
  wide_hold=2
  synapse_fan_rates=1,2 synapse_pair_rates=2,4 chattr_more_rates=,40 persist_rates=100,200
else
  secs=15 idle_conns=19000 idle_workers=2 pairs=500 pair_rates=1000,2000,3000,5000,7000,9000
  groups=40 members=250 fan_rates=100,200,400,700,1000,1400,1800 storm_sockets=10000
  storm_users=200 logins=400 peer_groups=10 peer_members=50 peer_fan_rates=20,50,100,200,400,700
  peer_pairs=100 peer_pair_rates=100,200,500,1000,2000 wide_gateways=6 wide_conns=102000
  # Held past three heartbeat intervals (75 s): a socket whose heartbeats went unanswered
  # would be closed as idle within the hold and count as dropped.
  wide_hold=90
  # Synapse takes 70-160 ms for a single send here: its sweeps start far lower, and stop at a
  # p99 of 1 s rather than 50 ms (it never gets near 50 ms).
  synapse_fan_rates=0.5,1,2,4,8 synapse_pair_rates=5,10,20,40
  # Chattr at the peers' sizes goes on where they stopped.
  chattr_more_rates=,1000,1400,2000,2800
  persist_rates=100,200,400,800,1600,3200
fi

cargo build --release -q -p chattr-server -p chattr-bench
bin="$CARGO_TARGET_DIR/release"
bench="$bin/chattr-bench"
# One process may hold 20,000 open files here (the hard limit).
ulimit -n "$(ulimit -Hn)"

state=$(mktemp -d /tmp/chattr-bench.XXXXXX)
chmod 755 "$state"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pg_stop "$state/distributed" 2>/dev/null || true
  [ -f "$state/ejabberd/pids" ] && scripts/peers/ejabberd.sh stop "$state/ejabberd" >/dev/null 2>&1
  [ -f "$state/synapse/pids" ] && scripts/peers/synapse.sh stop "$state/synapse" >/dev/null 2>&1
  [ -n "${CHATTR_BENCH_KEEP:-}" ] && echo "kept $state" >&2 || rm -rf "$state"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }

# A server for benchmarks: the defaults, except the limits meant for people that the load
# generator's bots would hit: signups and logins from one address, and frames a second per
# socket (a fan-out sender sends faster than a person types).
bench_env=(
  CHATTR__AUTH__SIGNUP_PER_IP_PER_HOUR=10000000
  CHATTR__AUTH__LOGIN_PER_IP_PER_MINUTE=10000000
  CHATTR__AUTH__LOGIN_PER_USERNAME_PER_MINUTE=10000000
  CHATTR__GATEWAY__FRAMES_PER_SECOND=1000
  CHATTR__GATEWAY__FRAME_BURST=1000
  RUST_LOG=warn
)

# start_chattr NAME ARGS...: starts `chattr serve ARGS` in the background, waits for its
# `listening` line, and sets $started_pid and $started_addr.
start_chattr() {
  local name=$1
  shift
  env "${bench_env[@]}" "$bin/chattr" serve "$@" >"$state/$name.log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 1 300); do
    started_addr=$(sed -n 's/^chattr listening http=\([^ ]*\).*/\1/p' "$state/$name.log" | head -n 1)
    if [ -n "$started_addr" ]; then return 0; fi
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "chattr ($name) did not start: $(tail -n 20 "$state/$name.log")" >&2
  return 1
}

# run NAME SCENARIO ARGS...: one chattr-bench run, its report saved as NAME.json. A rate
# sweep's last step may fail to verify (the server fell behind: that is where the sweep
# ends); such runs are followed by `|| true`, the others must verify.
run() {
  local name=$1
  shift
  log "$name: chattr-bench $*"
  "$bench" "$@" --json "$results/$name.json"
}

chattr_embedded() {
  start_chattr embedded --listen 127.0.0.1:0 --data-dir "$state/embedded"
  local url="http://$started_addr" pid=$started_pid
  run chattr-idle idle --server "$url" --server-pid "$pid" --connections "$idle_conns" \
    --users 1000 --hold "$secs" --workers "$idle_workers" --sources 16
  run chattr-pairs pairs --server "$url" --server-pid "$pid" --pairs "$pairs" \
    --rate "$pair_rates" --duration "$secs" --stop-p99-ms 50 --sources 16 || true
  run chattr-fanout fanout --server "$url" --server-pid "$pid" --groups "$groups" \
    --members "$members" --rate "$fan_rates" --duration "$secs" --stop-p99-ms 50 --sources 32 || true
  run chattr-reconnect reconnect --server "$url" --server-pid "$pid" --sockets "$storm_sockets" \
    --users "$storm_users" --missed 3 --sources 16
  run chattr-login login --server "$url" --server-pid "$pid" --users 20 --logins "$logins" \
    --concurrency 8
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

# start_distributed: PostgreSQL, Redis, Kafka (tansu) and one process per role, with
# $wide_gateways gateways; sets $gateways (their URLs) and $all (every pid).
start_distributed() {
  local dir="$state/distributed"
  mkdir -p "$dir"
  local pg_port redis_port kafka_port
  pg_port=$(free_port) redis_port=$(free_port) kafka_port=$(free_port)
  pg_start "$dir" "$pg_port" chattr
  pg_as "$(pg_bin)/createdb" -h 127.0.0.1 -p "$pg_port" -U chattr chattr
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  local redis_pid=$!
  local tansu="${CHATTR_TANSU:-$HOME/.cache/chattr-tools/bin/tansu}"
  [ -x "$tansu" ] || ./scripts/install-tansu.sh
  mkdir -p "$dir/kafka"
  # The durable engine (SQLite, relative to the broker's working directory), or with
  # CHATTR_BENCH_KAFKA=memory tansu's in-memory one (what the bus costs without storage).
  local engine="sqlite://tansu.db"
  [ "${CHATTR_BENCH_KAFKA:-sqlite}" = memory ] && engine="memory://tansu/"
  (cd "$dir/kafka" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine "$engine" >"$dir/kafka.log" 2>&1) &
  pids+=($!)
  local kafka_pid=$!
  sleep 2
  export CHATTR_STORE="postgres://chattr@127.0.0.1:$pg_port/chattr"
  export CHATTR_CACHE="redis://127.0.0.1:$redis_port" CHATTR_BUS="kafka://127.0.0.1:$kafka_port${CHATTR_BENCH_KAFKA_OPTIONS:+?$CHATTR_BENCH_KAFKA_OPTIONS}"
  export CHATTR_JWT_SECRET=bench-jwt-secret-bench-jwt-secret CHATTR_RPC_SECRET=bench-rpc-secret
  "$bin/chattr" migrate --store "$CHATTR_STORE" >/dev/null
  all=("$(pg_pid "$dir")" "$redis_pid" "$kafka_pid")
  start_chattr auth --services auth --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0
  all+=("$started_pid")
  local auth_grpc
  auth_grpc=$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' "$state/auth.log" | head -n 1)
  start_chattr messaging --services messaging --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0
  all+=("$started_pid")
  local messaging_grpc
  messaging_grpc=$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' "$state/messaging.log" | head -n 1)
  start_chattr video --services video --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
    --messaging-addrs "$messaging_grpc"
  all+=("$started_pid")
  local video_grpc
  video_grpc=$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' "$state/video.log" | head -n 1)
  start_chattr relay --services relay --listen 127.0.0.1:0
  all+=("$started_pid")
  start_chattr fanout --services fanout --listen 127.0.0.1:0
  all+=("$started_pid")
  gateways=()
  local g
  for g in $(seq 1 "$wide_gateways"); do
    start_chattr "gateway$g" --services gateway --listen 127.0.0.1:0 \
      --auth-addrs "$auth_grpc" --messaging-addrs "$messaging_grpc" --video-addrs "$video_grpc"
    all+=("$started_pid")
    gateways+=("http://$started_addr")
  done
}

chattr_distributed() {
  start_distributed
  local pid_args=() p
  for p in "${all[@]}"; do pid_args+=(--server-pid "$p"); done
  run distributed-persist pairs --server "${gateways[0]}" "${pid_args[@]}" --pairs "$pairs" \
    --rate "$persist_rates" --duration "$secs" --stop-p99-ms 100 --sources 16 || true
  run distributed-reconnect reconnect --server "${gateways[0]}" "${pid_args[@]}" \
    --sockets "$storm_sockets" --users "$storm_users" --missed 3 --sources 16 || true
  wide_idle
}

# The wide idle step alone, on a fresh distributed shape.
chattr_wide() {
  start_distributed
  wide_idle
}

wide_idle() {
  # Idle connections over every gateway, one load generator per gateway, each from its own
  # source addresses (each address has ~28,000 ephemeral ports).
  local per=$((wide_conns / wide_gateways)) i=0 runs=()
  for url in "${gateways[@]}"; do
    i=$((i + 1))
    log "wide idle: $per connections to $url"
    "$bench" idle --server "$url" --connections "$per" --users 500 --hold "$wide_hold" \
      --sources 250 --json "$state/wide-$i.json" &
    runs+=($!)
  done
  for r in "${runs[@]}"; do wait "$r"; done
  python3 - "$results/distributed-idle-wide.json" "$state"/wide-*.json <<'PY'
import json, sys
parts = [json.load(open(p)) for p in sys.argv[2:]]
total = {k: sum(p[k] for p in parts) for k in ("connections", "opened", "failed", "dropped")}
failures = {}
for p in parts:
    for reason, n in (p.get("failures") or {}).items():
        failures[reason] = failures.get(reason, 0) + n
total.update(scenario="idle-wide", gateways=len(parts), failures=failures, parts=parts)
json.dump(total, open(sys.argv[1], "w"), indent=2)
print(json.dumps({k: total[k] for k in ("gateways", "connections", "opened", "failed", "dropped")}))
PY
  for p in "${all[@]}"; do kill "$p" 2>/dev/null || true; done
  pg_stop "$state/distributed"
  unset CHATTR_STORE CHATTR_CACHE CHATTR_BUS
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# peer NAME URL_TEMPLATE: installs, starts, runs fan-out and 1:1 against, and stops a peer.
peer() {
  local name=$1 dir="$state/$1" port
  port=$(free_port)
  scripts/peers/"$name".sh install
  scripts/peers/"$name".sh start "$dir" "$port"
  local url pid_args=()
  case $name in
    ejabberd) url="ws://127.0.0.1:$port/ws" ;;
    synapse) url="http://127.0.0.1:$port" ;;
  esac
  while read -r p; do pid_args+=(--server-pid "$p"); done <"$dir/pids"
  local fan_rates=$peer_fan_rates pair_rates=$peer_pair_rates bound=50
  if [ "$name" = synapse ]; then
    fan_rates=$synapse_fan_rates pair_rates=$synapse_pair_rates bound=1000
  fi
  # A sweep's last step may fail to verify (the peer fell behind): the steps before it
  # are still results, so a failed sweep does not end the script.
  run "$name-fanout" fanout --target "$name" --server "$url" "${pid_args[@]}" \
    --groups "$peer_groups" --members "$peer_members" --rate "$fan_rates" \
    --duration "$secs" --stop-p99-ms "$bound" --sources 16 || true
  run "$name-pairs" pairs --target "$name" --server "$url" "${pid_args[@]}" \
    --pairs "$peer_pairs" --rate "$pair_rates" --duration "$secs" --stop-p99-ms "$bound" \
    --sources 16 || true
  scripts/peers/"$name".sh stop "$dir"
}

# Chattr at the peers' sizes, so the fan-out comparison is like for like.
chattr_at_peer_sizes() {
  start_chattr peersize --listen 127.0.0.1:0 --data-dir "$state/peersize"
  run chattr-fanout-peer-size fanout --server "http://$started_addr" --server-pid "$started_pid" \
    --groups "$peer_groups" --members "$peer_members" --rate "$peer_fan_rates$chattr_more_rates" \
    --duration "$secs" --stop-p99-ms 50 --sources 16 || true
  kill "$started_pid"
  wait "$started_pid" 2>/dev/null || true
}

charts() {
  log "charts and tables"
  "$bench" chart --out "$out" "$results"/*.json
  # docs/benchmarks.md's tables come from the reports.
  [ "$out" = "$root/docs/bench" ] && python3 scripts/bench-tables.py docs/benchmarks.md "$results"
  return 0
}

case $what in
  all) chattr_embedded; chattr_at_peer_sizes; chattr_distributed; peer ejabberd; peer synapse; charts ;;
  chattr) chattr_embedded; chattr_at_peer_sizes; charts ;;
  chattr-peer-size) chattr_at_peer_sizes; charts ;;
  distributed) chattr_distributed; charts ;;
  wide) chattr_wide; charts ;;
  ejabberd | synapse) peer "$what"; charts ;;
  charts) charts ;;
  # Starts the distributed shape and keeps it up until interrupted (for profiling).
  up-distributed)
    start_distributed
    printf 'gateways: %s\npids: %s\n' "${gateways[*]}" "${all[*]}"
    sleep infinity
    ;;
  *) echo "usage: $0 [all|chattr|chattr-peer-size|distributed|wide|ejabberd|synapse|charts|up-distributed]" >&2; exit 2 ;;
esac
