#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Run every fuzz target (gopswarm-chunk, signed control) for a while, one after the other, single process.
# For running by hand; not part of CI.
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # 10 min per target
#   fuzz/run.sh 60 deframer parse_chunk   # only these targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on a stable toolchain through
# RUSTC_BOOTSTRAP=1 (cargo fuzz uses -Z flags). Extra libFuzzer flags: FUZZ_ARGS="-timeout=20".
set -euo pipefail

cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(parse_chunk deframer fec_recover open_signed)
fi

export RUSTC_BOOTSTRAP=1
# Seed corpus (only adds files; the corpus is gitignored).
cargo run --quiet --example gen_corpus

status=0
for t in "${targets[@]}"; do
    echo "=== $t: ${secs} s"
    # -timeout: report a hang as a failure instead of waiting for libFuzzer's 20 min default.
    if ! cargo fuzz run "$t" -- -max_total_time="$secs" -timeout=10 ${FUZZ_ARGS:-}; then
        echo "=== $t FAILED: see fuzz/artifacts/$t/"
        status=1
    fi
done
exit $status
