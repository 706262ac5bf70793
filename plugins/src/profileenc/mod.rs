// SPDX-License-Identifier: MPL-2.0
//! `profileenc`: encode one profile with an IDR exactly on the first frame of every GOP.
//!
//! ```text
//! gst-launch-1.0 videotestsrc num-buffers=250 ! video/x-raw,width=640,height=360,framerate=25/1 \
//!   ! profileenc profile="h264, width=320, height=180, bitrate=500, complexity=5, gop=2.0" \
//!   ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```
//!
//! Behind `gopselect` (which drops the GOPs other hosts encode and marks every frame with a
//! `FrameInfo` meta), it encodes this host's GOPs; alone, it gives a grid-aligned single encode
//! (the reference in quality comparisons).
//!
//! # Chain
//!
//! `sink` takes raw video or compressed video (H.264/H.265/VP8/VP9/AV1/MPEG/JPEG, parsed); compressed
//! input is decoded by a `decodebin` plugged at the first caps. Frames whose meta says
//! `preroll=true` (decoder pre-roll before the GOP start) are dropped after decoding. Then
//! `videoconvert ! videoscale ! capsfilter ! <encoder> [! <parser> ! capsfilter]`. Output caps:
//! H.264/H.265 `stream-format=byte-stream, alignment=au` with SPS/PPS (and VPS) in-band at every
//! keyframe (`config-interval=-1`), VP9 and AV1 as the encoders give them. For MP4, add
//! `h264parse`/`h265parse` before `mp4mux`.
//!
//! # GOP grid and keyframes
//!
//! The GOP index of a frame comes from its `FrameInfo` meta when present, otherwise from the
//! profile's `gop` on the stream running time (origin 0). On the first frame of every GOP the
//! element sends a downstream force-key-unit event (running time of that frame, all-headers)
//! into the encoder right before the frame. The encoders never place keyframes themselves:
//! keyframe interval 10 GOPs, x264 `scenecut=0`; x265 `scenecut=0:open-gop=0`; vp9enc/av1enc
//! `keyframe-mode=disabled`. Upstream force-key-unit requests from downstream elements are
//! dropped: keyframes come from the grid only. GOPs are closed (x264/x265 closed GOP; VP9/AV1
//! keyframes reset all references).
//!
//! GStreamer 1.22 workarounds:
//! - `av1enc` 1.22 ignores force-key-unit requests: every AV1 GOP gets a fresh encoder (the old
//!   one drained with EOS), whose first frame is a keyframe.
//! - `GstVideoEncoder` 1.22 matches requests against running times computed with its *output*
//!   segment, which it only sets with its first output frame; before that x264enc's 1000 h
//!   minimum-PTS shift leaks in, the first request is recorded 1000 h late and every later one
//!   is refused (seen with GOPs shorter than the encoder's look-ahead: 2 s GOPs with `medium`
//!   and 24 threads have 67 frames of delay). Inside the bin the encoders therefore run on a
//!   timeline where running time == PTS (running time + 1000 h, segment start == base); the
//!   output segment is shifted back, so downstream running time is the input's and PTS are
//!   running time + 1000 h, as x264enc gives anyway. Compare running time, not PTS.
//!
//! Frame rate: only downward conversion, and not with `videorate`. A lower `framerate` keeps
//! the first frame of every output frame slot counted from the GOP start, so each host keeps
//! the same frames of a GOP whatever it saw before (`videorate drop-only=true` depends on the
//! previous frames and, after the gaps `gopselect` leaves between GOPs, lets every frame through
//! until it catches up). Timestamps stay the source's. A `framerate` above the input's is refused
//! (property set rejected when the input rate is known, element error otherwise).
//! Scaling letterboxes to `pixel-aspect-ratio=1/1` when `width` and `height` are both given;
//! with one of them the other follows the source's aspect ratio.
//!
//! # The `profile` property
//!
//! A `GstStructure` (boxed property), the structure name being the codec. On a `gst-launch-1.0`
//! line (or `gst::parse::launch`) it is given in its string form, which GStreamer deserialises:
//!
//! ```text
//! h264, width=1280, height=720, framerate=25/1, bitrate=3000, complexity=5, gop=2.0,
//!       redundancy=1, fec-k=4, fec-m=1, device=desktop
//! ```
//!
//! Applications build it instead of formatting a string, and the element validates the
//! structure's fields directly:
//!
//! ```ignore
//! enc.set_property(
//!     "profile",
//!     gst::Structure::builder("h264")
//!         .field("bitrate", 3000)
//!         .field("gop", 2.0)
//!         .build(),
//! );
//! ```
//!
//! | field | values | default |
//! |---|---|---|
//! | name | `h264` (x264enc), `h265` (x265enc), `vp9` (vp9enc), `av1` (av1enc) | `h264` |
//! | `width`, `height` | even, 16..=8192 | device's, else the source's |
//! | `framerate` | fraction (or integer), at most the input's | the source's |
//! | `bitrate` | kbit/s, 16..=100000: the cap (capped-crf) or target (abr/cbr) | device's, else 2000 |
//! | `complexity` | 1..=10, see the table below | 5 |
//! | `crf` | quality in the encoder's scale (x264/x265 0..51, VP9/AV1 0..63) | derived |
//! | `rate-control` | `capped-crf`, `crf`, `abr`, `cbr` | `capped-crf` |
//! | `vbv-buffer` | ms, 100..=10000 | 1500 |
//! | `gop` | seconds, 0.1..=60 (grid when no meta; keyframe interval sizing) | 2.0 |
//! | `redundancy` | 0..=8, carried for downstream | 0 |
//! | `fec-k`, `fec-m` | data/parity chunks per FEC group (0..=128, 0..=64), for `partialpay` | 0, 0 |
//! | `device` | `mobile`, `desktop`, `tv`, `vr` | none |
//!
//! Device table (used for what the profile leaves out):
//!
//! | device | resolution | bitrate |
//! |---|---|---|
//! | mobile | 640x360 | 800 kbit/s |
//! | desktop | 1280x720 | 3000 kbit/s |
//! | tv | 1920x1080 | 6000 kbit/s |
//! | vr | 3840x1920 | 16000 kbit/s |
//!
//! An unknown field or a bad value is refused, never replaced by a default: the element posts
//! a `GST_LIBRARY_ERROR_SETTINGS` error that quotes the structure it received and names the
//! field and its allowed values or range (`profile "nvh264, bitrate=(int)999999" refused:
//! unknown codec 'nvh264' (the structure name must be one of h264, h265, vp9, av1)`). A string
//! that is no structure at all never reaches the element: the launch line fails (`could not
//! set property "profile"`). Set before the element
//! starts (a `gst-launch-1.0` line), the state change to READY fails, so the pipeline does not
//! start and `gst-launch-1.0` exits non-zero; set while running, the error is posted at once
//! and the profile in effect stays until the application stops the pipeline. Reading `profile`
//! returns the last accepted profile as a normalised structure (every field, device defaults
//! resolved); setting NULL sets the default profile (`h264`); `applied-profile` returns the one
//! in effect in the stream, as a string. `gopswarm stream add` and the
//! encoder hosts check profiles with the same parser ([`profile::Profile::parse`]).
//!
//! ## Changes while PLAYING
//!
//! A new profile lands exactly on the first frame of the next GOP, never mid-GOP. If anything
//! that changes pixels or bits differs (codec, size, frame rate, bitrate, complexity, crf, rate
//! control, vbv-buffer, gop), the encoding chain is replaced at that frame: the old chain is
//! drained with an EOS (its EOS is dropped, so every frame of the previous GOP comes out
//! first), a new `videoconvert ! videoscale ! capsfilter ! encoder ! parser` is linked in its
//! place. This also covers codec changes. Setting encoder properties in place was rejected:
//! x264's look-ahead applies a new bitrate to the frames it still holds, i.e. to the end of the
//! previous GOP, and x264enc's `speed-preset` cannot change while PLAYING. Changes to
//! redundancy/FEC/device only travel in the event below. Every landed change posts an element
//! message `gopswarm-profile-applied` (`gop`: u64, `profile`: normalised string).
//!
//! The applied profile also travels in-band as a sticky custom downstream event
//! `gopswarm-profile` (the normalised fields plus `codec`, `profile`, `gop-duration` (ns) and
//! `gop-index`, the first GOP it applies to), sent before the first buffer and whenever the
//! applied profile changes, right before the first frame of the GOP it applies to.
//!
//! ## Complexity table
//!
//! | level | x264enc / x265enc speed-preset | vp9enc deadline, cpu-used | av1enc usage-profile, cpu-used |
//! |---|---|---|---|
//! | 1 | ultrafast | realtime, 8 | realtime, 10 |
//! | 2 | superfast | realtime, 7 | realtime, 9 |
//! | 3 | veryfast | realtime, 6 | realtime, 8 |
//! | 4 | faster | realtime, 5 | realtime, 7 |
//! | 5 | fast | good, 4 | good-quality, 6 |
//! | 6 | medium | good, 3 | good-quality, 5 |
//! | 7 | slow | good, 2 | good-quality, 4 |
//! | 8 | slower | good, 1 | good-quality, 3 |
//! | 9 | veryslow | good, 0 | good-quality, 2 |
//! | 10 | veryslow + x264 `subme=11:merange=32` | best, 0 | good-quality, 1 |
//!
//! ## Rate control
//!
//! Default `capped-crf`: constant quality with the bitrate as a VBV cap. Per-GOP chunks encoded
//! at an average bitrate undershoot (each chunk's rate control restarts and plays safe) and lose
//! about 1.3 dB PSNR at equal size against a single encode; capped CRF spends bits where the
//! content needs them, the same way on every host, and loses about 0.2 dB.
//!
//! | codec | capped-crf | crf | abr | cbr |
//! |---|---|---|---|---|
//! | h264 | `pass=qual quantizer=CRF bitrate=CAP vbv-buf-capacity=VBV` (x264enc's qual pass is CRF with `bitrate` as VBV max rate, buffer = bitrate x capacity) | `pass=qual vbv-buf-capacity=0` (no VBV) | `pass=cbr vbv-buf-capacity=0` (plain ABR) | `pass=cbr vbv-buf-capacity=VBV` (max rate = bitrate) |
//! | h265 | `crf=CRF:vbv-maxrate=CAP:vbv-bufsize=CAPxVBV` | `crf=CRF` | `bitrate=B` | `+vbv-maxrate=B:vbv-bufsize:strict-cbr=1` |
//! | vp9 | `end-usage=cq cq-level=CRF target-bitrate=CAP` | cq, no practical cap | `end-usage=vbr` | `end-usage=cbr` |
//! | av1 | `end-usage=cq min-quantizer=CRF target-bitrate=CAP` (1.22's av1enc has no cq-level) | `end-usage=q min=max-quantizer=CRF` | `vbr` | `cbr` |
//!
//! The default CRF (x264 scale) comes from the bits per pixel the cap allows,
//! `bitrate / (width x height x fps)` of the output:
//!
//! | bits/pixel | >= 0.20 | >= 0.12 | >= 0.07 | >= 0.04 | >= 0.02 | less |
//! |---|---|---|---|---|---|---|
//! | CRF | 18 | 20 | 22 | 24 | 26 | 28 |
//!
//! minus 1 for complexity 8-10, plus 1 for complexity 1-2. x265 uses CRF + 4, VP9/AV1
//! round(CRF x 1.4) on their 0..63 scale. An explicit `crf` is in the encoder's own scale.
//!
//! # `stats`
//!
//! Read-only structure: `frames-in`, `frames-encoded`, `keyframes-out`, `preroll-dropped`,
//! `rate-dropped`, `keyframes-forced`, `profile-changes`, `chains-built`, `encoder` (the
//! current encoder settings as a launch-line fragment).
//!
//! # Bus messages
//!
//! `gopswarm-profile-applied` (gop: u64, profile: string) when a profile lands; a warning
//! naming the field when a profile is rejected.
//!
//! # Units
//!
//! In `profile`: `bitrate` in kbit/s, `gop` in seconds, `vbv-buffer` in ms, `width`/`height`
//! in pixels; `switch-gop` is a GOP index.
//!
//! ## Swarm example
//!
//! A complete split-encode-merge on one machine (runs as written; `gst-inspect-1.0` shows it too):
//!
#![doc = concat!("```text\n", include_str!("../swarm-example.txt"), "```")]

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod profile;

#[cfg(test)]
mod tests;

glib::wrapper! {
    pub struct ProfileEnc(ObjectSubclass<imp::ProfileEnc>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "profileenc",
        gst::Rank::NONE,
        ProfileEnc::static_type(),
    )
}
