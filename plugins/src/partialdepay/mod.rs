// SPDX-License-Identifier: MPL-2.0
//! `partialdepay`: recover gopswarm chunks from a byte stream.
//!
//! Reads whatever a byte transport delivers (`filesrc`, `tcpserversrc`, `srtsrc`, `appsrc`), in
//! any split, and outputs one buffer per complete chunk whose header and payload CRC32C check
//! out. After garbage, corruption or truncation it resynchronises on the next chunk magic, counts
//! what it threw away (`stats` property) and posts a `gopswarm-depay-resync` element message
//! (bytes-skipped, corrupt, chunks) when it finds its footing again; it never crashes and never
//! emits a damaged chunk.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 tcpserversrc port=7001 ! partialdepay ! m.sink_0 \
//!   tcpserversrc port=7002 ! partialdepay ! m.sink_1 \
//!   gopmerge name=m ! h264parse ! mp4mux ! filesink location=out.mp4
//! ```
//!
//! ## Bus messages
//!
//! `gopswarm-depay-resync` (bytes-skipped, corrupt, unsupported-version, chunks: u64) after
//! bytes were skipped to find the next chunk.
//!
//! ## Units
//!
//! `max-chunk-size` in bytes.
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
    pub struct PartialDepay(ObjectSubclass<imp::PartialDepay>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "partialdepay",
        gst::Rank::NONE,
        PartialDepay::static_type(),
    )
}
