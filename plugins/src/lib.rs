#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]
//! gopswarm GStreamer plugin: split a source at GOP boundaries, encode per profile, emit partial
//! streams cut at GOP boundaries, and merge them back frame-exactly.

use gst::glib;

pub mod grid;
pub mod meta;

mod gopmerge;
mod gopselect;
mod partialdepay;
mod partialpay;
mod profileenc;

/// The `profile` string of `profileenc`: the one parser that the element, `gopswarm stream add`
/// and the encoder hosts use, so a profile one of them refuses is refused by all of them.
pub use profileenc::profile;

/// Caps of a chunked partial stream (see the `gopswarm-chunk` crate for the wire format).
pub const PARTIAL_CAPS_NAME: &str = "application/x-gopswarm-partial";

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    gopselect::register(plugin)?;
    profileenc::register(plugin)?;
    partialpay::register(plugin)?;
    partialdepay::register(plugin)?;
    gopmerge::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    gopswarm,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    "MPL",
    "gopswarm",
    "gopswarm",
    "https://github.com/gopswarm/gopswarm"
);
