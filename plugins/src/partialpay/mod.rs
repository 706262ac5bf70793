// SPDX-License-Identifier: MPL-2.0
//! `partialpay`: cut an encoded video stream into gopswarm chunks, one per GOP.
//!
//! Each chunk carries a versioned, CRC32C-protected header (stream, profile, host, GOP index,
//! grid start and duration on the common timeline, frame count, codec caps, assignment epoch,
//! redundant/parity flags) and the GOP's frames with their timestamps relative to the grid start,
//! so the partial stream can cross any byte transport (file, tcp, srt, MQTT) and be merged by
//! `gopmerge` on another machine. The GOP of each frame comes from the `GstGopSwarmFrameMeta`
//! that `gopselect` attached; without it the element uses its own grid (`gop-duration`) on the
//! running time. Every chunk must start with a keyframe: a GOP that does not is dropped with a
//! warning and counted, never emitted broken.
//!
//! With `fec-k` and `fec-m` (or the `fec-k`/`fec-m` fields of the upstream `gopswarm-profile`
//! event) it emits `m` Reed-Solomon parity chunks after every `k` data chunks; `gopmerge`
//! rebuilds any `m` lost chunks of a group byte-identically.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 videotestsrc num-buffers=250 ! gopselect slot-index=0 slot-count=2 \
//!   ! profileenc ! partialpay stream-id=cam1 host-id=host-a fec-k=4 fec-m=1 \
//!   ! filesink location=host-a.gsw
//! ```
//!
//! ## Bus messages
//!
//! Warnings (not element messages) when a GOP does not start with a keyframe (dropped) or
//! cannot be packed.
//!
//! ## Units
//!
//! `gop-duration` in nanoseconds (ClockTime); `fec-k`, `fec-m` in chunks; `reorder-frames` in
//! frames. A chunk leaves when its input's next GOP starts, which is what `gopmerge` counts
//! in its latency.
//!
//! ## Swarm example
//!
//! A complete split-encode-merge on one machine (runs as written; `gst-inspect-1.0` shows it too):
//!
#![doc = concat!("```text\n", include_str!("../swarm-example.txt"), "```")]

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct PartialPay(ObjectSubclass<imp::PartialPay>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "partialpay",
        gst::Rank::NONE,
        PartialPay::static_type(),
    )
}
