// SPDX-License-Identifier: MPL-2.0
//! `gopmerge`: reassemble one profile's complete stream from gopswarm partial streams.
//!
//! Request sink pads (`sink_%u`) take chunks, one partial stream each (straight from
//! `partialpay`, or from `partialdepay` after a byte transport). The merger orders chunks by GOP
//! index, keeps one copy of each GOP (the primary one when redundant copies arrive), drops stale
//! (`min-epoch`), foreign (other stream/profile) and corrupt chunks, rebuilds lost chunks from
//! Reed-Solomon parity chunks byte-identically, and outputs one continuous encoded stream with
//! the chunks' codec caps, a single TIME segment and the source's timestamps (running time =
//! timeline time), ready for `h264parse ! mp4mux`, `mpegtsmux`, `hlssink2` or `cmafmux`.
//!
//! Decode timestamps are the merger's own: every host's encoder stamps DTS on its GOPs alone, so
//! at a join the first DTS of a GOP can land on or before the last DTS of the one before it
//! (another host's). The merger stamps them the way one encoder would, with the rendition's
//! reorder depth (declared by `partialpay` in every chunk, 2 frames for x264/x265 with B-frames):
//! DTS strictly increase across every join, PTS >= DTS, and the decode delay is constant. A GOP
//! that needs a deeper reordering than declared raises the depth once and posts a
//! `gopswarm-decode-delay` message (gop, from-frames, to-frames).
//!
//! A GOP that no input will deliver any more (every input has moved past it or ended) and that
//! parity cannot rebuild is a *gap*: with `latency` set, the merger also gives up on a missing
//! GOP that long after a later GOP arrived. A gap is never silent: it posts a `gopswarm-gap`
//! element message (gop, start, duration, reason), counts in `stats`, and the next buffer is
//! flagged DISCONT. At EOS it posts `gopswarm-merge-summary`.
//!
//! Inputs are pads; with `inputs-by-host=true` they are the chunks' hosts instead, for one pad
//! that carries many hosts (chunks taken from MQTT by an `appsrc`). A host's chunks may come
//! out of order (resent after a transport outage), so a missing GOP is settled when every
//! host that could send it has ended, or after `latency`. The `end-input` action
//! signal (a pad name, or a host id) tells the merger an input will send nothing more (its host
//! died), so missing GOPs are settled at once (redundant copy or gap) instead of at `latency`.
//!
//! With `verify-payload` set, each GOP is checked before it goes out (`parse`: Annex-B frames
//! with sane NAL headers, SPS + PPS + IDR at the start, the SPS's picture size = the caps';
//! `decode`: also decoded alone by `openh264dec`, every frame must come out). A CRC proves
//! nothing against a sender that computes it: a copy that fails is dropped and posts
//! `gopswarm-rejected`; a good redundant copy takes its place, otherwise the GOP is settled as a
//! missing one and its gap says why. The output goes on with the next good GOP.
//!
//! ## Limits for hosts on the network
//!
//! With `inputs-by-host=true` the chunks come from the network and may be forged, so what the
//! element holds is bounded: a chunk for a GOP more than `max-ahead-gops` past the newest GOP
//! taken is dropped (`too-far-ahead`); a chunk over `max-chunk-bytes` is dropped (`oversized`);
//! past `max-pending-bytes` held, the farthest GOPs go first, never the next one out
//! (`overflow`). Pad inputs (files, which run ahead of the output) are never dropped for the
//! window or the budget.
//!
//! ## Bus messages
//!
//! Element messages from `gopmerge`:
//! - `gopswarm-gap`: a GOP that will not come: `gop` (u64), `reason` (string: `missing`, every
//!   input moved past it or ended; `deadline`, `latency` ran out; `unparsable-caps`;
//!   `unreadable`, its frame records did not parse; `invalid-payload` or `undecodable`, its
//!   only copies failed `verify-payload`), and once a chunk has shown the grid `start`
//!   (ClockTime, ns on the common timeline) and `duration` (ClockTime, ns). Counts in `lost`.
//! - `gopswarm-rejected`: a copy of a GOP failed `verify-payload`: `gop` (u64), `host`
//!   (string), `redundant` (bool), `reason` (`invalid-payload` or `undecodable`), `detail`
//!   (string). Counts in `rejected`.
//! - `gopswarm-decode-delay`: the decode reorder depth grew: `gop`, `from-frames`, `to-frames`
//!   (u64).
//! - `gopswarm-merge-summary` at EOS: the `stats` fields (u64 counters, see the property).
//!
//! ## Latency
//!
//! A GOP goes out when its whole chunk is here, and an input's chunk is complete only when that
//! input's next GOP starts. The LATENCY query answers the inputs' latency plus
//! GOP duration x the GOPs between an input's chunks (the slot count without redundancy; the
//! number of inputs until each has shown its spacing) plus `latency`; the element posts a
//! latency message when it learns the GOP duration from the first chunk or the spacing changes.
//! QoS events are not forwarded upstream: skipping frames there would break whole GOPs.
//!
//! ## Properties and units
//!
//! Times are nanoseconds (`latency`), as GStreamer's ClockTime; GOP indices and epochs are
//! counts (`start-gop`, `min-epoch`, `max-ahead-gops`, `next-gop`); sizes are bytes
//! (`max-pending-bytes`, `max-chunk-bytes`).
//!
//! ## Example
//!
//! A complete split-encode-merge on one machine, two swarm members as two branches (runs as
//! written; a test runs the copy that `gst-inspect-1.0 gopmerge` shows):
//!
#![doc = concat!("```text\n", include_str!("../swarm-example.txt"), "```")]
//!
//! Merging partial streams that hosts wrote to files:
//!
//! ```text
//! gst-launch-1.0 filesrc location=host-a.gsw ! partialdepay ! m.sink_0 \
//!   filesrc location=host-b.gsw ! partialdepay ! m.sink_1 \
//!   gopmerge name=m ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```

use gst::glib;
use gst::prelude::*;

mod decode_order;
mod imp;
mod verify;

glib::wrapper! {
    pub struct GopMerge(ObjectSubclass<imp::GopMerge>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "gopmerge",
        gst::Rank::NONE,
        GopMerge::static_type(),
    )
}
