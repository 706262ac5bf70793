#!/usr/bin/env bash
# The main job: build gopswarm and run a local 3-way swarm on the synthetic 60 s 720p25 clip.
#   bash scripts/demo.sh
# Output: out/local-swarm.mp4 (and out/local-swarm-hls/), compared with the source by ffprobe.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR"
export GST_REGISTRY="$TARGET_DIR/gst-registry-demo.bin"

SRC=test-media/cache/synthetic-720p25.mp4
OUT=out/local-swarm

START=$SECONDS
step() { printf '\n==== [%4ds] %s ====\n' "$((SECONDS - START))" "$*"; }

step "setup: Debian packages and Rust toolchain"
bash scripts/setup-debian.sh

step "sample media"
bash test-media/fetch.sh

step "cargo build --workspace --release"
cargo build --workspace --release

step "pipelines/run local-swarm SRC=$SRC OUT=$OUT"
rm -rf "$OUT.mp4" "$OUT-hls"
pipelines/run local-swarm SRC="$SRC" OUT="$OUT"

step "compare output with source (ffprobe)"
count_frames() {
  ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
    -of default=nw=1:nk=1 "$1"
}
src_frames="$(count_frames "$SRC")"
out_frames="$(count_frames "$OUT.mp4")"
printf '%-40s %8s\n' file "frames"
printf '%-40s %8s\n' "$SRC" "$src_frames"
printf '%-40s %8s\n' "$OUT.mp4" "$out_frames"
if [[ $src_frames == "$out_frames" ]]; then
  step "demo ok: $OUT.mp4 has all $src_frames frames of the source"
else
  step "demo FAILED: $OUT.mp4 has $out_frames frames, the source $src_frames"
  exit 1
fi
