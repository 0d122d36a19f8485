#!/usr/bin/env bash
# Runs the web app's browser tests: real headless Chromium (Debian's package) driven by
# playwright-core, against the real `chattr` binary. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chattr-target}"

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# coturn: the call tests relay media through a private TURN server.
command -v turnserver >/dev/null || need_apt+=(coturn)
# Fonts: Liberation renders the UI the same on every machine, Noto shows emoji.
fc-list 2>/dev/null | grep -qi "Liberation Sans" || need_apt+=(fonts-liberation)
fc-list 2>/dev/null | grep -qi "Noto Color Emoji" || need_apt+=(fonts-noto-color-emoji)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# playwright-core only (no browser download): the version is pinned in web/package-lock.json.
(cd web && npm ci --no-audit --no-fund --loglevel=error)

cargo build --locked --bin chattr
CHATTR_BIN="$CARGO_TARGET_DIR/debug/chattr" node --test --test-concurrency=1 web/tests/
