#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Install what gopswarm needs on Debian 12 (bookworm). Idempotent: only missing packages are
# installed, and `apt-get update` runs only when something is missing. Needs root or sudo.
# A Rust toolchain is required but not installed here (use rustup).
#   --player   also what the browser-player tests need: Chromium and Node.js (the harness's npm
#              packages are installed by scripts/test.sh from tests/player/package-lock.json)
set -euo pipefail

WITH_PLAYER=0
for arg in "$@"; do
  case "$arg" in
    --player) WITH_PLAYER=1 ;;
    *) printf '[setup] ERROR: unknown option %s (known: --player)\n' "$arg" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-tools
  gstreamer1.0-x
  ffmpeg
  mosquitto
  pkg-config
  libssl-dev
  openssl
  unzip
  ca-certificates
)

log() { printf '[setup] %s\n' "$*"; }

if [[ $WITH_PLAYER -eq 1 ]]; then
  PACKAGES+=(chromium fonts-liberation)
  # Node.js from Debian only where the machine has none of its own.
  command -v node >/dev/null || PACKAGES+=(nodejs)
  command -v npm >/dev/null || PACKAGES+=(npm)
fi

is_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

command -v dpkg-query >/dev/null || {
  log "ERROR: dpkg-query not found; this script is for Debian/Ubuntu"
  exit 1
}

# python3 comes from the system or pyenv; add Debian's pip only when no pip is usable.
if ! command -v python3 >/dev/null; then
  PACKAGES+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1 && ! command -v pip3 >/dev/null; then
  PACKAGES+=(python3-pip)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  is_installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} Debian packages already installed"
else
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || {
      log "ERROR: not root and sudo is missing; install as root: apt-get install ${missing[*]}"
      exit 1
    }
    SUDO=(sudo)
  fi
  log "installing ${#missing[@]} missing package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  log "installed: ${missing[*]}"
fi

# Rust toolchain: must already exist (it cannot be installed by this script).
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  cat >&2 <<'EOF'
[setup] ERROR: no Rust toolchain found (no `cargo` on PATH or in ~/.cargo/bin).
[setup]        Install one with rustup (https://rustup.rs), e.g.
[setup]          curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
[setup]        then add ~/.cargo/bin to PATH (or `source ~/.cargo/env`) and re-run.
[setup]        The workspace needs rustc >= 1.92 with rustfmt and clippy.
EOF
  exit 1
fi
log "rust: $(cargo --version 2>/dev/null), $(rustc --version 2>/dev/null || echo 'rustc ?')"
log "gstreamer: $(gst-launch-1.0 --version 2>/dev/null | sed -n 's/^.*version //p' | head -n1)"

# Elements the pipelines, the sample-media generator and the tests use: a package that is
# installed but lacks one (a plugin split out into another package) fails here, by name.
ELEMENTS=(
  x264enc x265enc vp9enc avenc_aac avdec_h264 decodebin h264parse qtdemux mp4mux mpegtsmux
  hlssink2 srtsrc srtsink tcpserversrc gdppay videotestsrc audiotestsrc timeoverlay
)
absent=()
for e in "${ELEMENTS[@]}"; do
  gst-inspect-1.0 --exists "$e" || absent+=("$e")
done
if [[ ${#absent[@]} -gt 0 ]]; then
  log "ERROR: GStreamer elements missing after install: ${absent[*]}"
  exit 1
fi
log "gstreamer elements: all ${#ELEMENTS[@]} present"
log "done"
