#!/usr/bin/env bash
# Runs Chattr's whole test suite on a fresh Debian machine with Rust.
# The end-to-end suite runs twice: embedded profile, then distributed profile.
# It installs whatever the tests need (a C compiler and make for the bundled SQLite and
# librdkafka; the tansu Kafka broker; Chromium, Node and fonts for the browser tests;
# ejabberd and Synapse for the load generator's peers), then
# runs every unit, conformance and end-to-end test of the workspace, then the web app's
# tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build cache across clones (CI clones afresh each run).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chattr-target}"
# Argon2 and SQLite are slow unoptimised; the dev profile already optimises dependencies.
export RUST_BACKTRACE=1

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# What the tests start for real: Redis and PostgreSQL (Debian packages; the tests run
# private instances on free ports, so the system services stay off), and a C compiler and
# make for the bundled SQLite and librdkafka.
need_apt=()
{ command -v cc && command -v make; } >/dev/null || need_apt+=(build-essential)
command -v redis-server >/dev/null || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# coturn: the TURN server the call tests start privately (turnserver, turnutils_uclient).
command -v turnserver >/dev/null || need_apt+=(coturn)
# Prometheus: the observability test scrapes a live cluster with a private instance and
# evaluates every dashboard panel and alert against it; promtool checks the rules.
command -v prometheus >/dev/null || need_apt+=(prometheus)
# A TrueType font: the load generator draws its charts with it.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Kafka bus tests start a private tansu broker (a Kafka-protocol broker from crates.io).
./scripts/install-tansu.sh
# The load generator's smoke tests also drive the peers it compares Chattr with: ejabberd
# (Debian) and Synapse (PyPI, in a venv), each started privately on its own PostgreSQL.
./scripts/peers/ejabberd.sh install
./scripts/peers/synapse.sh install
export CHATTR_TANSU="${CHATTR_TANSU:-${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}/bin/tansu}"

# The deployment files: Prometheus rules and their unit tests, the Grafana dashboards, the
# Dockerfile (hadolint), the Kubernetes manifests (kubernetes-validate) and compose.
./scripts/check-prometheus.sh
./scripts/check-deploy.sh

# Every test, the end-to-end suite in the embedded profile (one process, SQLite, in-process
# bus and cache)...
cargo test --workspace --all-targets --locked "$@"
# ...then the end-to-end suite again in the distributed profile: every role in its own
# process, over gRPC, on PostgreSQL + Redis + Kafka.
CHATTR_E2E_PROFILE=distributed cargo test -p chattr-server --test e2e --locked "$@"
./scripts/browser-tests.sh
