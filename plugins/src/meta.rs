// SPDX-License-Identifier: MPL-2.0
//! Per-frame gopswarm information carried on buffers as a custom meta.
//!
//! `gopselect` attaches it; it survives decoders, `videoconvert`/`videoscale` and encoders (all of
//! which copy untagged metas), so `profileenc` and `partialpay` know each frame's GOP, role and
//! assignment epoch without repeating the slot configuration.

pub const FRAME_META_NAME: &str = "GstGopSwarmFrameMeta";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    pub gop: u64,
    /// Grid start of the GOP on the common timeline (ns).
    pub gop_start: u64,
    pub gop_duration: u64,
    /// Timeline time minus running time for this stream (0 for running-time, base time for
    /// clock-time).
    pub time_offset: i64,
    pub epoch: u64,
    pub redundant: bool,
    /// Decoder pre-roll: needed to decode the GOP, dropped after decoding.
    pub preroll: bool,
}

pub fn register() {
    if !gst::meta::CustomMeta::is_registered(FRAME_META_NAME) {
        gst::meta::CustomMeta::register_with_transform(
            FRAME_META_NAME,
            &[],
            |dest, meta, _src, _transform| {
                // Copy on every transform (copy, scale, convert): the information is per frame,
                // not per pixel.
                match gst::meta::CustomMeta::add(dest, FRAME_META_NAME) {
                    Ok(mut m) => {
                        let s = m.mut_structure();
                        for (field, value) in meta.structure().iter() {
                            s.set_value(field, value.clone());
                        }
                        true
                    }
                    Err(_) => false,
                }
            },
        );
    }
}

impl FrameInfo {
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        if let Ok(mut m) = gst::meta::CustomMeta::from_mut_buffer(buffer, FRAME_META_NAME) {
            m.mut_structure().set("gop", self.gop);
            self.fill(m.mut_structure());
            return;
        }
        let mut m = gst::meta::CustomMeta::add(buffer, FRAME_META_NAME)
            .expect("gopswarm frame meta registered in plugin_init");
        self.fill(m.mut_structure());
    }

    fn fill(&self, s: &mut gst::StructureRef) {
        s.set("gop", self.gop);
        s.set("gop-start", self.gop_start);
        s.set("gop-duration", self.gop_duration);
        s.set("time-offset", self.time_offset);
        s.set("epoch", self.epoch);
        s.set("redundant", self.redundant);
        s.set("preroll", self.preroll);
    }

    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<FrameInfo> {
        let m = gst::meta::CustomMeta::from_buffer(buffer, FRAME_META_NAME).ok()?;
        let s = m.structure();
        Some(FrameInfo {
            gop: s.get("gop").ok()?,
            gop_start: s.get("gop-start").ok()?,
            gop_duration: s.get("gop-duration").ok()?,
            time_offset: s.get("time-offset").ok()?,
            epoch: s.get("epoch").ok()?,
            redundant: s.get("redundant").ok()?,
            preroll: s.get("preroll").ok()?,
        })
    }

    pub fn remove(buffer: &mut gst::BufferRef) {
        buffer.foreach_meta_mut(|meta| {
            let is_ours = meta
                .try_as_custom_meta()
                .is_some_and(|m| m.has_name(FRAME_META_NAME));
            if is_ours {
                std::ops::ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Remove)
            } else {
                std::ops::ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Keep)
            }
        });
    }
}

/// Running time of a buffer timestamp as a signed value (DTS of B-frame streams can lie before the
/// segment start).
pub fn signed_running_time(
    segment: &gst::FormattedSegment<gst::ClockTime>,
    ts: gst::ClockTime,
) -> Option<i64> {
    match segment.to_running_time_full(ts)? {
        gst::Signed::Positive(t) => Some(t.nseconds() as i64),
        gst::Signed::Negative(t) => Some(-(t.nseconds() as i64)),
    }
}
