#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The test command: system packages, sample media, format, lint, build, tests.
#   bash scripts/test.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
# A fresh clone gains nothing from incremental state, and it costs gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR"
# A private registry so a stale user registry (or an old build of the plugin) never bites.
export GST_REGISTRY="$TARGET_DIR/gst-registry-test.bin"
# gst-inspect-1.0 / gst-launch-1.0 (and pipelines/run) find libgstgopswarm.so here.
export GST_PLUGIN_PATH="$TARGET_DIR/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"

START=$SECONDS
step() { printf '\n==== [%4ds] %s ====\n' "$((SECONDS - START))" "$*"; }

step "setup: Debian packages (with the browser player's) and Rust toolchain"
bash scripts/setup-debian.sh --player

step "player harness: hls.js and puppeteer-core from tests/player/package-lock.json"
if ! npm ls --prefix tests/player --depth=0 >/dev/null 2>&1; then
  npm ci --prefix tests/player --no-audit --no-fund
fi
npm ls --prefix tests/player --depth=0

step "sample media"
bash test-media/fetch.sh

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace"
cargo build --workspace

step "plugin registers with GStreamer"
gst-inspect-1.0 gopswarm

step "pipelines/run self-test"
pipelines/run selftest FRAMES=25 TIMEOUT=60

step "cargo test --workspace --no-fail-fast -- --test-threads=2"
cargo test --workspace --no-fail-fast -- --test-threads=2

step "all tests passed in $((SECONDS - START)) s"
