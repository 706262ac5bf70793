#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The main job: build gopswarm and run the demo swarm: embedded MQTT broker and orchestrator, a
# live-looped sample clip, four encoder host processes and the merger. Part-way it kills a host
# and later performs a planned handoff; it ends with a summary and checks the output by ffprobe.
#   bash scripts/demo.sh [gopswarm demo options, e.g. --duration 120]
# Output: out/demo/demo.mp4, out/demo/demo-hls/, out/demo/summary.txt, logs in out/demo/logs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR"
export GST_REGISTRY="$TARGET_DIR/gst-registry-demo.bin"

START=$SECONDS
step() { printf '\n==== [%4ds] %s ====\n' "$((SECONDS - START))" "$*"; }

step "setup: Debian packages and Rust toolchain"
bash scripts/setup-debian.sh

step "sample media"
bash test-media/fetch.sh

step "cargo build --workspace --release"
cargo build --workspace --release

step "gopswarm demo $*"
target/release/gopswarm demo --out out/demo "$@"
step "demo ok: out/demo/demo.mp4 (summary in out/demo/summary.txt)"
