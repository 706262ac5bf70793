// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]
//! gopswarm GStreamer plugin: split a source at GOP boundaries, encode per profile, emit partial
//! streams cut at GOP boundaries, and merge them back frame-exactly.

use gst::glib;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod grid;
pub mod meta;

mod gopmerge;
mod gopselect;
mod partialdepay;
mod partialpay;
mod profileenc;

/// Locks an element's settings or state, recovering the data of a poisoned lock: a panic on
/// one streaming thread (caught by the pad function and turned into an element error) must not
/// turn every later property read or network chunk into a second panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A time in nanoseconds from a chunk or a buffer field, as a `ClockTime`: `None` for
/// `u64::MAX` (`GST_CLOCK_TIME_NONE`), which `gst::ClockTime::from_nseconds` would panic on.
pub(crate) fn clock_time(nseconds: u64) -> Option<gst::ClockTime> {
    (nseconds <= gst::ClockTime::MAX.nseconds()).then(|| gst::ClockTime::from_nseconds(nseconds))
}

/// The split-encode-merge example shown in every element's docs and `gst-inspect-1.0` output.
pub const SWARM_EXAMPLE: &str = include_str!("swarm-example.txt");

/// An element's `gst-inspect-1.0` description: what it does, the runnable example, the bus
/// messages it posts and the units of its properties.
pub(crate) fn inspect_description(summary: &str, messages: &str, units: &str) -> String {
    format!(
        "{summary}\n\nExample (split, encode, merge; runs as written):\n{SWARM_EXAMPLE}\n\
         Bus messages: {messages}\n\nUnits: {units}"
    )
}

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
    // Version, commit id and release date from build.rs (gst-plugin-version-helper).
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    // GStreamer's name for MPL-2.0 (the crate's license).
    "MPL",
    "gopswarm",
    "gopswarm",
    "https://github.com/gopswarm/gopswarm",
    env!("BUILD_REL_DATE")
);
