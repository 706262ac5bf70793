// SPDX-License-Identifier: MPL-2.0
//! `gopselect`: keep the GOPs assigned to this swarm member on a fixed GOP grid.
//!
//! GOP `k` covers `[grid-origin + k * gop-duration, grid-origin + (k + 1) * gop-duration)` on the
//! common timeline (the stream running time, or the pipeline clock with `timeline=clock-time`).
//! With `slot-count=n`, `slot-index=i` and `redundancy=r` this instance keeps `k mod n == i` as
//! primary and the `r` slots before it as redundant copies, so every GOP is encoded `1 + r`
//! times across the swarm. With `copy-only=true` it keeps the same GOPs but all as redundant
//! copies: a backup encoder for slot `i` that owns no GOP (the merger prefers any primary), so
//! the swarm can give copies to its less stable hosts and losing one loses nothing.
//! `gops="0-9,20-"` selects an explicit set instead.
//!
//! On raw video each kept frame carries a `GstGopSwarmFrameMeta` (GOP index, grid start, epoch,
//! role) that `profileenc` and `partialpay` read. On parsed H.264/H.265 it selects before
//! decoding: when the source's keyframes fall on the grid it passes exactly the kept GOPs; when
//! they do not it also passes the decoder pre-roll from the previous keyframe, marked `preroll`
//! so that `profileenc` drops those frames after decoding.
//!
//! Assignment changes (`slot-*`, `redundancy`, `gops`, `epoch`, or the atomic `assignment`)
//! take effect at the first GOP boundary at or after `switch-gop` (`-1`: the next boundary), and
//! post an element message `gopswarm-assignment-applied` (gop, epoch, slots). The atomic
//! `assignment` is a `GstStructure` (boxed property; its string form on a `gst-launch-1.0`
//! line, e.g. `assignment="assignment, index=1, count=3, epoch=7, switch-gop=12"`): every field
//! it carries changes together; applications build it with `gst::Structure::builder`. A
//! refused one (unknown field, `index` not below `count`, ...) is an element error quoting the
//! structure; reading it back gives the current assignment as a structure. Changes queue: one
//! for GOP 20 set before the change for GOP 14 has applied waits behind it, while a change
//! scheduled at or before a waiting one's switch GOP replaces it.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! qtdemux ! h264parse ! avdec_h264 ! tee name=t \
//!   t. ! queue ! gopselect slot-index=0 slot-count=2 ! profileenc ! partialpay ! queue ! m.sink_0 \
//!   t. ! queue ! gopselect slot-index=1 slot-count=2 ! profileenc ! partialpay ! queue ! m.sink_1 \
//!   gopmerge name=m ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```
//!
//! ## Bus messages
//!
//! `gopswarm-assignment-applied` (gop: u64, epoch: u64, slots: string) when an assignment
//! change lands on its GOP.
//!
//! ## Units
//!
//! `gop-duration` and `grid-origin` in nanoseconds (ClockTime); slot and GOP numbers, epochs and
//! `max-reorder` (frames) are counts.
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
    pub struct GopSelect(ObjectSubclass<imp::GopSelect>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::grid::Timeline::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "gopselect",
        gst::Rank::NONE,
        GopSelect::static_type(),
    )
}
