#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# benches/merger-eos-soak.sh — run the static TCP merger (pipelines/merger.pipeline) with three
# encoder hosts (pipelines/host.pipeline) over loopback again and again, and count the runs whose
# merger did not exit within a grace period after its hosts finished although it should have.
#
# Usage: benches/merger-eos-soak.sh [RUNS] [LAUNCHER] [PARALLEL]
#   RUNS      runs per lane (default: 20)
#   LAUNCHER  gopswarm (pipelines/run's default: `gopswarm launch`) or gst-launch-1.0
#   PARALLEL  lanes running at once (default: 2; contention is what exposes start-up races)
# Needs `cargo build --workspace` first. Writes under target/soak/merger-eos/; prints one line per
# run and a summary; exits 1 when any merger hung or failed.
#
# With gst-launch-1.0 1.22 about 1 run in 13 hangs on a 2-core machine at PARALLEL=2: the MP4 and
# the HLS playlist are finished, the pipeline never posts EOS (GstBin PAUSED->PLAYING race, see
# docs/control-plane.md). With `gopswarm launch` none should.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS="${1:-20}"
LAUNCHER="${2:-gopswarm}"
PARALLEL="${3:-2}"
GRACE=40
SRC=test-media/cache/bikes.mp4
OUT_ROOT=target/soak/merger-eos
[[ $RUNS =~ ^[0-9]+$ && $PARALLEL =~ ^[0-9]+$ && $RUNS -gt 0 && $PARALLEL -gt 0 ]] || {
  echo "usage: $0 [RUNS] [gopswarm|gst-launch-1.0] [PARALLEL]" >&2
  exit 2
}
case $LAUNCHER in
  gopswarm) unset PIPELINES_LAUNCHER ;;
  gst-launch-1.0) export PIPELINES_LAUNCHER=gst-launch-1.0 ;;
  *)
    echo "unknown launcher '$LAUNCHER' (gopswarm or gst-launch-1.0)" >&2
    exit 2
    ;;
esac
[[ -f $SRC ]] || {
  echo "no $SRC: run test-media/fetch.sh" >&2
  exit 2
}
rm -rf "$OUT_ROOT"
mkdir -p "$OUT_ROOT"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# One lane: RUNS runs one after the other; prints "ok", "HUNG" or "FAILED" per run.
lane() {
  local lane=$1 i k d mpid rc waited
  for ((i = 1; i <= RUNS; i++)); do
    d="$OUT_ROOT/lane$lane-run$i"
    mkdir -p "$d"
    local ports=() hosts=()
    for k in 0 1 2; do ports+=("$(free_port)"); done
    pipelines/run merger OUT="$d/merged" TIMEOUT=300 \
      PORT0="${ports[0]}" PORT1="${ports[1]}" PORT2="${ports[2]}" >"$d/merger.log" 2>&1 &
    mpid=$!
    for k in 0 1 2; do
      # Wait for the merger's port (read from /proc: a probe connection would take its one slot).
      local hex
      hex=$(printf ':%04X' "${ports[$k]}")
      for _ in $(seq 100); do grep -q "$hex 00000000:0000 0A" /proc/net/tcp && break || sleep 0.1; done
    done
    for k in 0 1 2; do
      pipelines/run host SRC="$SRC" PORT="${ports[$k]}" INDEX=$k HOST="host$k" GOP=1000000000 \
        TIMEOUT=300 >"$d/host$k.log" 2>&1 &
      hosts+=($!)
    done
    for k in "${hosts[@]}"; do wait "$k" || true; done
    waited=0
    while kill -0 "$mpid" 2>/dev/null && ((waited < GRACE * 10)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$mpid" 2>/dev/null; then
      echo "lane $lane run $i: HUNG ($GRACE s after its hosts finished; $(ls "$d/merged-hls" | wc -l) HLS files)"
      # An interrupt asks for EOS, which a hung gst-launch-1.0 never sees either: kill it.
      pkill -KILL -f -- "location=$d/merged.mp4" 2>/dev/null || true
      wait "$mpid" 2>/dev/null || true
    else
      rc=0
      wait "$mpid" || rc=$?
      if [[ $rc == 0 ]]; then echo "lane $lane run $i: ok"; else echo "lane $lane run $i: FAILED (exit $rc)"; fi
    fi
  done
}

echo "merger EOS soak: $RUNS runs x $PARALLEL lanes with $LAUNCHER"
start=$SECONDS
for ((l = 1; l <= PARALLEL; l++)); do lane "$l" >"$OUT_ROOT/lane$l.txt" &
done
wait
cat "$OUT_ROOT"/lane*.txt
total=$(cat "$OUT_ROOT"/lane*.txt | wc -l)
hung=$(cat "$OUT_ROOT"/lane*.txt | grep -c HUNG || true)
failed=$(cat "$OUT_ROOT"/lane*.txt | grep -c FAILED || true)
echo "summary: $total runs with $LAUNCHER, $hung hung, $failed failed ($((SECONDS - start)) s)"
[[ $hung == 0 && $failed == 0 ]]
