#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker that the Kafka bus tests start (see
# crates/chattr-testkit/src/kafka.rs) into ${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}/bin.
# tansu is built from crates.io (about 10 minutes on 2 cores), once: the build is skipped
# when the binary is there, and its build cache under ~/.cache is reused.
set -euo pipefail

TANSU_VERSION=0.6.0
tools="${CHATTR_TOOLS:-$HOME/.cache/chattr-tools}"
binary="$tools/bin/tansu"

if [ -x "$binary" ] && "$binary" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
  exit 0
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
echo "building tansu $TANSU_VERSION into $binary (takes a while, once)"
CARGO_TARGET_DIR="$HOME/.cache/chattr-tansu-target" \
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$tools"
"$binary" --version
