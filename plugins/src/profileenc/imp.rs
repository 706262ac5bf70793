// SPDX-License-Identifier: MPL-2.0
//! `profileenc` implementation. See the module documentation in `mod.rs` for the behaviour.
//!
//! Inside the bin:
//!
//! ```text
//! sink ─► [decodebin, compressed input only] ─► in-anchor (identity) ─X─► branch ─► out-anchor (identity) ─► src
//! branch = videoconvert ! videoscale ! capsfilter(width,height,par) ! <encoder> [! <parser> ! capsfilter]
//! ```
//!
//! All the per-frame logic sits in a pad probe at `X` (the in-anchor's source pad): it drops
//! pre-roll frames, decimates the frame rate, detects the first frame of every GOP, replaces the
//! branch when a new profile lands there, and sends the force-key-unit and `gopswarm-profile`
//! events in-band right before that frame. The branch is replaced (old one drained with EOS,
//! new one linked) rather than reconfigured, so a change never leaks into the previous GOP: the
//! encoders' look-ahead would otherwise apply a new bitrate to frames queued before the boundary.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use super::profile::{self, Geometry, Profile, PropValue};
use crate::meta::FrameInfo;

// Probes drop data with `Handled`, not `Drop`: gstreamer-rs takes the item out of the probe
// info, and GStreamer 1.22 then unrefs the NULL left behind for a dropped event (CRITICAL).

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "profileenc",
        gst::DebugColorFlags::empty(),
        Some("gopswarm per-profile GOP-aligned encoder"),
    )
});

/// Inside the bin the encoders run on a timeline of their own: PTS = running time + 1000 h,
/// in a segment whose start equals its base, so running time == PTS there whatever segment
/// the encoder uses. This works around GStreamer 1.22's `GstVideoEncoder`, which matches
/// force-key-unit running times against its *output* segment, only set with its first output
/// frame: before that, x264enc's own 1000 h minimum-PTS shift leaks into the running time, the
/// first request is recorded 1000 h late and every later one is refused (GOPs shorter than
/// the encoder's look-ahead, e.g. 2 s GOPs with `medium` and 24 threads, lost their IDRs).
/// 1000 h is x264enc's minimum PTS, so no encoder shifts again. The output segment is shifted
/// back (base - 1000 h): downstream running time is the input's, PTS = running time + 1000 h,
/// as x264enc gives anyway.
const INNER_OFFSET: gst::ClockTime = gst::ClockTime::from_seconds(1000 * 3600);

/// Default `profile` property value.
pub const DEFAULT_PROFILE: &str = "h264";
/// Name of the sticky downstream event carrying the applied profile.
pub const PROFILE_EVENT_NAME: &str = "gopswarm-profile";
/// Name of the element message posted when a profile change lands.
pub const PROFILE_APPLIED_MESSAGE: &str = "gopswarm-profile-applied";

struct Settings {
    /// The last accepted profile (what `profile` reads back); it becomes the applied profile at
    /// the next GOP boundary at or after `switch_gop`.
    profile: Profile,
    /// GOP from which a profile change may land (-1: the next boundary), so that every member
    /// of a swarm switches on the same GOP.
    switch_gop: i64,
    /// Why the last profile set before the element started was refused: starting then fails
    /// with this error instead of encoding the previous profile.
    refused: Option<String>,
}

const DEFAULT_SWITCH_GOP: i64 = -1;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            profile: Profile::parse(DEFAULT_PROFILE).expect("default profile parses"),
            switch_gop: DEFAULT_SWITCH_GOP,
            refused: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames_in: u64,
    frames_encoded: u64,
    keyframes_out: u64,
    preroll_dropped: u64,
    rate_dropped: u64,
    keyframes_forced: u64,
    profile_changes: u64,
    chains_built: u64,
    encoder: String,
}

/// One encoding chain (converter, scaler, encoder, parser) built for one profile.
struct Branch {
    elements: Vec<gst::Element>,
    sink: gst::Pad,
    src: gst::Pad,
    /// Set before the drain EOS, so the probe on `src` drops that EOS.
    retiring: Arc<AtomicBool>,
}

struct State {
    /// The profile in effect in the stream.
    applied: Profile,
    branch: Option<Branch>,
    decoder: Option<gst::Element>,
    /// Raw caps entering the bin's converter (before the frame-rate rewrite).
    in_info: Option<gst_video::VideoInfo>,
    /// The input segment, as upstream sent it.
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// Timestamp shift into the branch's timeline (see [`INNER_OFFSET`]); `None` when the
    /// segment's rate is not 1.
    shift: Option<i64>,
    current_gop: Option<u64>,
    last_slot: Option<u64>,
    /// Whether any frame went into a branch yet.
    started: bool,
    /// Whether the current branch has not received a frame yet (its first frame is a keyframe
    /// anyway).
    branch_fresh: bool,
    /// Whether the current branch's encoder has output a frame (only matters without the
    /// timeline shift, see [`INNER_OFFSET`]).
    branch_output: bool,
    profile_event_pending: bool,
    gop_mismatch_warned: bool,
}

impl State {
    fn new(applied: Profile) -> Self {
        State {
            applied,
            branch: None,
            decoder: None,
            in_info: None,
            segment: None,
            shift: None,
            current_gop: None,
            last_slot: None,
            started: false,
            branch_fresh: true,
            branch_output: false,
            profile_event_pending: true,
            gop_mismatch_warned: false,
        }
    }
}

pub struct ProfileEnc {
    sinkpad: gst::GhostPad,
    srcpad: gst::GhostPad,
    in_anchor: gst::Element,
    out_anchor: gst::Element,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

fn fps_of(info: &gst_video::VideoInfo) -> Option<(i32, i32)> {
    let f = info.fps();
    (f.numer() > 0 && f.denom() > 0).then(|| (f.numer(), f.denom()))
}

fn frac_gt(a: (i32, i32), b: (i32, i32)) -> bool {
    (a.0 as i64) * (b.1 as i64) > (b.0 as i64) * (a.1 as i64)
}

/// What a GOP boundary must do once the state lock is released.
struct BoundaryActions {
    gop: u64,
    running_time: gst::ClockTime,
    pts: gst::ClockTime,
    rebuild: bool,
    force_key_unit: bool,
    changed: Option<Profile>,
    send_profile_event: Option<Profile>,
}

impl ProfileEnc {
    fn in_src(&self) -> gst::Pad {
        self.in_anchor.static_pad("src").expect("identity has src")
    }

    fn out_sink(&self) -> gst::Pad {
        self.out_anchor
            .static_pad("sink")
            .expect("identity has sink")
    }

    /// Output geometry for encoder settings that depend on it (CRF default, keyint).
    fn geometry(profile: &Profile, in_info: Option<&gst_video::VideoInfo>) -> Geometry {
        let (in_w, in_h, in_fps) = match in_info {
            Some(i) => (
                i.width(),
                i.height(),
                fps_of(i).map(|(n, d)| n as f64 / d as f64),
            ),
            None => (1280, 720, None),
        };
        let (w, h) = match (profile.width, profile.height) {
            (Some(w), Some(h)) => (w, h),
            (Some(w), None) => (w, (w as u64 * in_h as u64 / in_w.max(1) as u64) as u32),
            (None, Some(h)) => ((h as u64 * in_w as u64 / in_h.max(1) as u64) as u32, h),
            (None, None) => (in_w, in_h),
        };
        let fps = profile
            .framerate
            .map(|(n, d)| n as f64 / d as f64)
            .or(in_fps)
            .unwrap_or(30.0);
        Geometry {
            width: w,
            height: h,
            fps,
        }
    }

    fn make(factory: &str) -> Result<gst::Element, String> {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| format!("element '{factory}' is not available (missing plugin?)"))
    }

    fn apply_prop(element: &gst::Element, name: &str, value: &PropValue) -> Result<(), String> {
        let Some(pspec) = element.find_property(name) else {
            return Err(format!(
                "{} has no property '{name}'",
                element
                    .factory()
                    .map(|f| f.name().to_string())
                    .unwrap_or_default()
            ));
        };
        let t = pspec.value_type();
        match value {
            PropValue::Bool(b) => element.set_property(name, *b),
            PropValue::Str(s) if t == glib::Type::STRING => element.set_property(name, s.as_str()),
            PropValue::Str(s) => element.set_property_from_str(name, s),
            PropValue::Int(i) => {
                let i = *i;
                let out_of_range = || format!("value {i} out of range for property '{name}'");
                if t == glib::Type::U32 {
                    element.set_property(name, u32::try_from(i).map_err(|_| out_of_range())?)
                } else if t == glib::Type::I32 {
                    element.set_property(name, i32::try_from(i).map_err(|_| out_of_range())?)
                } else if t == glib::Type::U64 {
                    element.set_property(name, u64::try_from(i).map_err(|_| out_of_range())?)
                } else if t == glib::Type::I64 {
                    element.set_property(name, i)
                } else {
                    element.set_property_from_str(name, &i.to_string())
                }
            }
        }
        Ok(())
    }

    /// Creates the elements of a branch for `profile`, adds them to the bin and links them
    /// between the two anchors. Called from the streaming thread with no lock held.
    fn install_branch(
        &self,
        profile: &Profile,
        in_info: Option<&gst_video::VideoInfo>,
    ) -> Result<Branch, String> {
        let geo = Self::geometry(profile, in_info);
        let cfg = profile::encoder_config(profile, geo);

        let convert = Self::make("videoconvert")?;
        let scale = Self::make("videoscale")?;
        let filter = Self::make("capsfilter")?;
        let mut raw = gst::Caps::builder("video/x-raw");
        if let Some(w) = profile.width {
            raw = raw.field("width", w as i32);
        }
        if let Some(h) = profile.height {
            raw = raw.field("height", h as i32);
        }
        // 4:2:0 8 bit: what every target decoder plays (x264enc would pick 4:4:4 otherwise).
        raw = raw.field("format", "I420");
        if profile.width.is_some() && profile.height.is_some() {
            raw = raw.field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
        }
        filter.set_property("caps", raw.build());

        let encoder = Self::make(cfg.factory)?;
        for (name, value) in &cfg.props {
            Self::apply_prop(&encoder, name, value)?;
        }
        let mut elements = vec![convert, scale, filter, encoder];
        if let Some(parser) = cfg.parser {
            let parser = Self::make(parser)?;
            parser.set_property("config-interval", -1i32);
            elements.push(parser);
        }
        if let Some(caps) = cfg.out_caps {
            let f = Self::make("capsfilter")?;
            f.set_property(
                "caps",
                caps.parse::<gst::Caps>()
                    .map_err(|_| format!("bad output caps {caps}"))?,
            );
            elements.push(f);
        }

        let obj = self.obj();
        obj.add_many(&elements)
            .map_err(|e| format!("cannot add the encoding chain: {e}"))?;
        gst::Element::link_many(&elements).map_err(|e| format!("cannot link the chain: {e}"))?;
        let sink = elements[0].static_pad("sink").expect("videoconvert sink");
        let src = elements
            .last()
            .and_then(|e| e.static_pad("src"))
            .expect("chain src");
        let retiring = Arc::new(AtomicBool::new(false));
        {
            let retiring = retiring.clone();
            src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(ref ev)) = info.data
                    && ev.type_() == gst::EventType::Eos
                    && retiring.load(Ordering::SeqCst)
                {
                    return gst::PadProbeReturn::Handled;
                }
                gst::PadProbeReturn::Ok
            });
        }
        src.link(&self.out_sink())
            .map_err(|e| format!("cannot link the chain to the output: {e:?}"))?;
        self.in_src()
            .link(&sink)
            .map_err(|e| format!("cannot link the chain to the input: {e:?}"))?;
        for e in elements.iter().rev() {
            e.sync_state_with_parent()
                .map_err(|_| format!("cannot start {}", e.name()))?;
        }
        let description = cfg.describe();
        gst::info!(
            CAT,
            imp = self,
            "encoding chain for '{profile}': {description}"
        );
        {
            let mut stats = crate::lock(&self.stats);
            stats.chains_built += 1;
            stats.encoder = description;
        }
        Ok(Branch {
            elements,
            sink,
            src,
            retiring,
        })
    }

    /// Drains a branch (EOS pushes out every frame it holds, the EOS itself is dropped), then
    /// unlinks and disposes of it.
    fn retire_branch(&self, branch: Branch) {
        branch.retiring.store(true, Ordering::SeqCst);
        gst::debug!(CAT, imp = self, "draining the previous encoding chain");
        let _ = branch.sink.send_event(gst::event::Eos::new());
        let _ = self.in_src().unlink(&branch.sink);
        let _ = branch.src.unlink(&self.out_sink());
        let obj = self.obj();
        for e in branch.elements {
            let _ = e.set_state(gst::State::Null);
            let _ = obj.remove(&e);
        }
    }

    fn rebuild_branch(&self) -> Result<(), String> {
        let (old, profile, in_info) = {
            let mut state = crate::lock(&self.state);
            let Some(state) = state.as_mut() else {
                return Ok(());
            };
            (
                state.branch.take(),
                state.applied.clone(),
                state.in_info.clone(),
            )
        };
        if let Some(old) = old {
            self.retire_branch(old);
        }
        let branch = self.install_branch(&profile, in_info.as_ref())?;
        let mut state = crate::lock(&self.state);
        match state.as_mut() {
            Some(state) => {
                state.branch = Some(branch);
                state.branch_fresh = true;
                state.branch_output = false;
            }
            None => {
                drop(state);
                self.retire_branch(branch);
            }
        }
        Ok(())
    }

    fn profile_event(profile: &Profile, gop: u64) -> gst::Event {
        let mut s = profile.to_structure();
        s.set_name(PROFILE_EVENT_NAME);
        s.set("codec", profile.codec.name());
        s.set("profile", profile.to_string());
        s.set("gop-duration", profile.gop_ns());
        s.set("gop-index", gop);
        s.set("reorder-frames", profile.reorder_frames() as u32);
        gst::event::CustomDownstreamSticky::builder(s).build()
    }

    /// Input side: counts frames and plugs a decoder for compressed input at the first caps.
    fn sink_probe(&self, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        match info.data {
            Some(gst::PadProbeData::Buffer(_)) => {
                crate::lock(&self.stats).frames_in += 1;
            }
            Some(gst::PadProbeData::BufferList(ref list)) => {
                crate::lock(&self.stats).frames_in += list.len() as u64;
            }
            Some(gst::PadProbeData::Event(ref ev)) => {
                if let gst::EventView::Caps(c) = ev.view() {
                    let caps = c.caps();
                    let raw = caps
                        .structure(0)
                        .is_some_and(|s| s.name().as_str() == "video/x-raw");
                    if !raw && let Err(err) = self.ensure_decoder() {
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::MissingPlugin,
                            ["Cannot decode {caps}: {err}"]
                        );
                        return gst::PadProbeReturn::Handled;
                    }
                }
            }
            _ => (),
        }
        gst::PadProbeReturn::Ok
    }

    fn ensure_decoder(&self) -> Result<(), String> {
        {
            let state = crate::lock(&self.state);
            match state.as_ref() {
                Some(s) if s.decoder.is_some() => return Ok(()),
                Some(_) => (),
                None => return Err("not started".into()),
            }
        }
        let decoder = gst::ElementFactory::make("decodebin")
            .name("decoder")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw").any_features().build(),
            )
            .build()
            .map_err(|_| "decodebin is not available".to_string())?;
        let in_sink = self.in_anchor.static_pad("sink").expect("identity sink");
        decoder.connect_pad_added(move |_, pad| {
            let raw = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|c| c.structure(0).map(|s| s.name().as_str() == "video/x-raw"))
                .unwrap_or(false);
            if !raw || in_sink.is_linked() {
                return;
            }
            if let Err(e) = pad.link(&in_sink) {
                gst::error!(CAT, obj = pad, "cannot link decoded pad: {e:?}");
            }
        });
        let obj = self.obj();
        obj.add(&decoder).map_err(|e| e.to_string())?;
        // Unlink the raw path first so the decoder's pad can take the anchor's sink pad.
        self.sinkpad
            .set_target(None::<&gst::Pad>)
            .map_err(|e| e.to_string())?;
        decoder
            .sync_state_with_parent()
            .map_err(|_| "cannot start decodebin".to_string())?;
        self.sinkpad
            .set_target(Some(&decoder.static_pad("sink").expect("decodebin sink")))
            .map_err(|e| e.to_string())?;
        gst::info!(CAT, imp = self, "compressed input: decoding with decodebin");
        if let Some(s) = crate::lock(&self.state).as_mut() {
            s.decoder = Some(decoder);
        }
        Ok(())
    }

    /// Records the raw input caps before the frame-rate rewrite.
    fn anchor_sink_probe(&self, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        if let Some(gst::PadProbeData::Event(ref ev)) = info.data
            && let gst::EventView::Caps(c) = ev.view()
        {
            match gst_video::VideoInfo::from_caps(c.caps()) {
                Ok(vi) => {
                    if let Some(s) = crate::lock(&self.state).as_mut() {
                        s.in_info = Some(vi);
                    }
                }
                Err(_) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["Unsupported input caps {}", c.caps()]
                    );
                    return gst::PadProbeReturn::Handled;
                }
            }
        }
        gst::PadProbeReturn::Ok
    }

    fn x_probe(&self, pad: &gst::Pad, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        match info.data {
            Some(gst::PadProbeData::Buffer(ref mut buffer)) => self.x_buffer(pad, buffer),
            Some(gst::PadProbeData::Event(ref mut event)) => self.x_event(event),
            _ => gst::PadProbeReturn::Ok,
        }
    }

    fn x_event(&self, event: &mut gst::Event) -> gst::PadProbeReturn {
        match event.view() {
            gst::EventView::Caps(c) => {
                let caps = c.caps_owned();
                let (need_branch, applied, in_info) = {
                    let mut state = crate::lock(&self.state);
                    let Some(state) = state.as_mut() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    if state.branch.is_none() && !state.started {
                        // Nothing encoded yet: take the latest accepted profile right away.
                        let requested = crate::lock(&self.settings).profile.clone();
                        state.applied = requested;
                    }
                    (
                        state.branch.is_none(),
                        state.applied.clone(),
                        state.in_info.clone(),
                    )
                };
                let in_fps = in_info.as_ref().and_then(fps_of);
                if let (Some(out), Some(inp)) = (applied.framerate, in_fps)
                    && frac_gt(out, inp)
                {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        [
                            "Profile frame rate {}/{} is above the input's {}/{}: upward frame-rate conversion is refused (it would duplicate frames across the gaps between GOPs)",
                            out.0,
                            out.1,
                            inp.0,
                            inp.1
                        ]
                    );
                    return gst::PadProbeReturn::Handled;
                }
                if need_branch && let Err(err) = self.rebuild_branch() {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ["Cannot build the encoding chain: {err}"]
                    );
                    return gst::PadProbeReturn::Handled;
                }
                if let Some((n, d)) = applied.framerate {
                    let mut caps = caps;
                    caps.make_mut().set("framerate", gst::Fraction::new(n, d));
                    let seqnum = event.seqnum();
                    *event = gst::event::Caps::builder(&caps).seqnum(seqnum).build();
                }
            }
            gst::EventView::Segment(s) => {
                let segment = s.segment();
                match segment.downcast_ref::<gst::ClockTime>() {
                    Some(seg) if seg.rate() > 0.0 => {
                        let seg = seg.clone();
                        // Branch timeline (see INNER_OFFSET): running time + offset, with
                        // start == base so any segment gives running time == PTS.
                        let shift = (seg.rate() == 1.0).then(|| {
                            seg.base().unwrap_or_default().nseconds() as i64
                                - seg.start().unwrap_or_default().nseconds() as i64
                                + INNER_OFFSET.nseconds() as i64
                        });
                        if let Some(state) = crate::lock(&self.state).as_mut() {
                            state.segment = Some(seg.clone());
                            state.shift = shift;
                        }
                        if let Some(d) = shift {
                            let add = |t: gst::ClockTime| {
                                gst::ClockTime::from_nseconds(
                                    (t.nseconds().min(i64::MAX as u64) as i64)
                                        .saturating_add(d)
                                        .max(0) as u64,
                                )
                            };
                            let mut inner = seg.clone();
                            let base = seg.base().unwrap_or_default().saturating_add(INNER_OFFSET);
                            inner.set_start(base);
                            inner.set_base(base);
                            inner.set_stop(seg.stop().map(add));
                            inner.set_position(seg.position().map(add));
                            let seqnum = event.seqnum();
                            *event = gst::event::Segment::builder(&inner).seqnum(seqnum).build();
                        } else {
                            gst::warning!(
                                CAT,
                                imp = self,
                                "segment rate {} != 1: force-key-unit requests may be mis-timed, \
                                 GOPs that start before the encoder's first output get a fresh encoder",
                                seg.rate()
                            );
                        }
                    }
                    Some(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ["Reverse playback is not supported"]
                        );
                        return gst::PadProbeReturn::Handled;
                    }
                    None => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            [
                                "Only TIME segments are supported, got {:?}",
                                segment.format()
                            ]
                        );
                        return gst::PadProbeReturn::Handled;
                    }
                }
            }
            gst::EventView::FlushStop(_) | gst::EventView::StreamStart(_) => {
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.current_gop = None;
                    state.last_slot = None;
                }
            }
            _ => (),
        }
        gst::PadProbeReturn::Ok
    }

    fn x_buffer(&self, pad: &gst::Pad, buffer: &mut gst::Buffer) -> gst::PadProbeReturn {
        let meta = FrameInfo::from_buffer(buffer);
        if meta.as_ref().is_some_and(|m| m.preroll) {
            crate::lock(&self.stats).preroll_dropped += 1;
            gst::trace!(
                CAT,
                imp = self,
                "dropping pre-roll frame {:?}",
                buffer.pts()
            );
            return gst::PadProbeReturn::Handled;
        }
        let Some(pts) = buffer.pts() else {
            gst::warning!(CAT, imp = self, "frame without PTS, passed as is");
            return gst::PadProbeReturn::Ok;
        };

        let actions = {
            let mut state = crate::lock(&self.state);
            let Some(state) = state.as_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(rt) = state
                .segment
                .as_ref()
                .and_then(|seg| crate::meta::signed_running_time(seg, pts))
            else {
                gst::debug!(CAT, imp = self, "frame {pts} outside the segment");
                return gst::PadProbeReturn::Ok;
            };
            // Position on the GOP grid: from gopselect's meta when present, otherwise our own
            // grid (origin 0 of the running time, the profile's GOP duration).
            let locate = |applied: &Profile| -> (u64, i64, i64) {
                match &meta {
                    Some(m) => (m.gop, m.gop_start as i64, rt + m.time_offset),
                    None => {
                        let g = applied.gop_ns().max(1) as i64;
                        let k = rt.max(0) / g;
                        (k as u64, k * g, rt)
                    }
                }
            };
            let (mut k, mut gop_start, t) = locate(&state.applied);
            let boundary = state.current_gop != Some(k);
            let mut actions = None;
            if boundary {
                let (requested, switch_gop) = {
                    let settings = crate::lock(&self.settings);
                    (settings.profile.clone(), settings.switch_gop)
                };
                let due = switch_gop < 0 || k >= switch_gop as u64;
                let mut changed = None;
                let mut rebuild = state.branch.is_none();
                if requested != state.applied && due {
                    rebuild |= state.applied.encoding_differs(&requested);
                    gst::info!(
                        CAT,
                        imp = self,
                        "GOP {k}: applying profile '{requested}' (was '{}')",
                        state.applied
                    );
                    state.applied = requested.clone();
                    state.profile_event_pending = true;
                    changed = Some(requested);
                    (k, gop_start, _) = locate(&state.applied);
                }
                if let Some(m) = &meta
                    && m.gop_duration != state.applied.gop_ns()
                    && !state.gop_mismatch_warned
                {
                    state.gop_mismatch_warned = true;
                    gst::warning!(
                        CAT,
                        imp = self,
                        "gopselect's GOP ({} ns) differs from the profile's gop ({} ns): the frame meta wins",
                        m.gop_duration,
                        state.applied.gop_ns()
                    );
                }
                if !state.branch_fresh
                    && (!profile::honours_force_key_unit(state.applied.codec)
                        || (state.shift.is_none() && !state.branch_output))
                {
                    // The encoder ignores force-key-unit requests (av1enc), or could mis-time
                    // them (no timeline shift and no output yet, see INNER_OFFSET): a fresh
                    // encoder starts this GOP with a keyframe.
                    rebuild = true;
                }
                state.current_gop = Some(k);
                state.last_slot = None;
                let send_profile_event = state.profile_event_pending.then(|| state.applied.clone());
                state.profile_event_pending = false;
                actions = Some(BoundaryActions {
                    gop: k,
                    // In the branch's timeline (see INNER_OFFSET).
                    running_time: gst::ClockTime::from_nseconds(rt.max(0) as u64).saturating_add(
                        if state.shift.is_some() {
                            INNER_OFFSET
                        } else {
                            gst::ClockTime::ZERO
                        },
                    ),
                    pts,
                    rebuild,
                    force_key_unit: !rebuild && !state.branch_fresh,
                    changed,
                    send_profile_event,
                });
            }

            // Frame-rate reduction: keep the first frame of every output frame slot, slots
            // counted from the GOP start, so every host keeps the same frames of a GOP whatever
            // came before it (videorate's drop-only mode depends on the previous frames and lets
            // every frame through after a gap).
            let in_fps = state.in_info.as_ref().and_then(fps_of);
            if let Some((n, d)) = state.applied.framerate {
                let decimate = match in_fps {
                    Some(inp) => frac_gt(inp, (n, d)),
                    None => true,
                };
                if decimate {
                    let out_dur = 1_000_000_000u128 * d as u128 / n as u128;
                    let tol = match in_fps {
                        Some((fn_, fd)) => 1_000_000_000u128 * fd as u128 / fn_ as u128 / 4,
                        None => out_dur / 4,
                    };
                    let rel = (t - gop_start).max(0) as u128;
                    let slot = ((rel + tol) * n as u128 / (d as u128 * 1_000_000_000)) as u64;
                    if !boundary && state.last_slot == Some(slot) {
                        crate::lock(&self.stats).rate_dropped += 1;
                        return gst::PadProbeReturn::Handled;
                    }
                    state.last_slot = Some(slot);
                    let buf = buffer.make_mut();
                    buf.set_duration(gst::ClockTime::from_nseconds(out_dur as u64));
                }
            }
            state.started = true;
            state.branch_fresh = false;
            if let Some(d) = state.shift {
                let buf = buffer.make_mut();
                buf.set_pts(gst::ClockTime::from_nseconds(
                    (pts.nseconds() as i64 + d) as u64,
                ));
                let dts = buf.dts().map(|t| t.nseconds() as i64 + d);
                buf.set_dts(
                    dts.filter(|t| *t >= 0)
                        .map(|t| gst::ClockTime::from_nseconds(t as u64)),
                );
            }
            actions
        };

        let Some(actions) = actions else {
            return gst::PadProbeReturn::Ok;
        };
        // A GOP starts at this frame: everything below runs without any lock held.
        if actions.rebuild
            && let Err(err) = self.rebuild_branch()
        {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["Cannot build the encoding chain: {err}"]
            );
            return gst::PadProbeReturn::Handled;
        }
        if let Some(profile) = &actions.send_profile_event {
            let _ = pad.push_event(Self::profile_event(profile, actions.gop));
        }
        if actions.force_key_unit {
            let fku = gst_video::DownstreamForceKeyUnitEvent::builder()
                .timestamp(actions.pts)
                .running_time(actions.running_time)
                .all_headers(true)
                .count(actions.gop.min(u32::MAX as u64) as u32)
                .build();
            gst::debug!(
                CAT,
                imp = self,
                "GOP {}: forcing a keyframe at running time {}",
                actions.gop,
                actions.running_time
            );
            let _ = pad.push_event(fku);
        } else {
            gst::debug!(
                CAT,
                imp = self,
                "GOP {}: first frame of a new encoder, a keyframe by itself",
                actions.gop
            );
        }
        {
            let mut stats = crate::lock(&self.stats);
            if actions.force_key_unit {
                stats.keyframes_forced += 1;
            }
            if actions.changed.is_some() {
                stats.profile_changes += 1;
            }
        }
        if let Some(profile) = actions.changed {
            let s = gst::Structure::builder(PROFILE_APPLIED_MESSAGE)
                .field("gop", actions.gop)
                .field("profile", profile.to_string())
                .build();
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        }
        gst::PadProbeReturn::Ok
    }

    /// Output side of the branch timeline (see [`INNER_OFFSET`]): shifts segments and
    /// force-key-unit events coming out of the encoder back to the input's running time.
    fn out_sink_probe(&self, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        let Some(gst::PadProbeData::Event(ref mut event)) = info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let offset = INNER_OFFSET;
        let replacement = match event.view() {
            gst::EventView::Segment(s) => s
                .segment()
                .downcast_ref::<gst::ClockTime>()
                .filter(|seg| seg.base().is_some_and(|b| b >= offset))
                .map(|seg| {
                    let mut seg = seg.clone();
                    seg.set_base(seg.base().unwrap() - offset);
                    gst::event::Segment::builder(&seg)
                        .seqnum(event.seqnum())
                        .build()
                }),
            gst::EventView::CustomDownstream(_) => {
                gst_video::DownstreamForceKeyUnitEvent::parse(event)
                    .ok()
                    .filter(|f| f.running_time.is_some_and(|t| t >= offset))
                    .map(|f| {
                        gst_video::DownstreamForceKeyUnitEvent::builder()
                            .timestamp(f.timestamp)
                            .stream_time(f.stream_time)
                            .running_time(f.running_time.map(|t| t - offset))
                            .all_headers(f.all_headers)
                            .count(f.count)
                            .seqnum(event.seqnum())
                            .build()
                    })
            }
            _ => None,
        };
        if let Some(e) = replacement {
            *event = e;
        }
        gst::PadProbeReturn::Ok
    }

    fn out_probe(&self, info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
        match info.data {
            Some(gst::PadProbeData::Buffer(ref buffer)) => {
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.branch_output = true;
                }
                let mut stats = crate::lock(&self.stats);
                stats.frames_encoded += 1;
                if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    stats.keyframes_out += 1;
                }
            }
            Some(gst::PadProbeData::Event(ref ev))
                if ev.is_upstream() && gst_video::ForceKeyUnitEvent::is(ev) =>
            {
                // Keyframes come from the GOP grid only; a downstream muxer or sink asking for
                // others would break the chunking.
                gst::debug!(CAT, imp = self, "ignoring upstream force-key-unit request");
                return gst::PadProbeReturn::Handled;
            }
            _ => (),
        }
        gst::PadProbeReturn::Ok
    }

    fn stats_structure(&self) -> gst::Structure {
        let s = crate::lock(&self.stats).clone();
        gst::Structure::builder("application/x-profileenc-stats")
            .field("frames-in", s.frames_in)
            .field("frames-encoded", s.frames_encoded)
            .field("keyframes-out", s.keyframes_out)
            .field("preroll-dropped", s.preroll_dropped)
            .field("rate-dropped", s.rate_dropped)
            .field("keyframes-forced", s.keyframes_forced)
            .field("profile-changes", s.profile_changes)
            .field("chains-built", s.chains_built)
            .field("encoder", s.encoder)
            .build()
    }

    /// Validates a new `profile` straight from the structure (no string round trip); `None`
    /// (NULL) is the default profile.
    fn set_profile(&self, structure: Option<&gst::StructureRef>) {
        let parsed = match structure {
            Some(s) => Profile::from_structure(s),
            None => Profile::parse(DEFAULT_PROFILE),
        };
        let parsed = parsed.and_then(|p| {
            // Refuse an upward frame-rate conversion right away when the input rate is known.
            let in_fps = crate::lock(&self.state)
                .as_ref()
                .and_then(|s| s.in_info.as_ref().and_then(fps_of));
            if let (Some(out), Some(inp)) = (p.framerate, in_fps)
                && frac_gt(out, inp)
            {
                return Err(format!(
                    "framerate {}/{} is above the input's {}/{} (upward conversion is refused)",
                    out.0, out.1, inp.0, inp.1
                ));
            }
            Ok(p)
        });
        match parsed {
            Ok(p) => {
                let mut settings = crate::lock(&self.settings);
                gst::info!(
                    CAT,
                    imp = self,
                    "profile '{p}' accepted (was '{}'), applies at the next GOP boundary",
                    settings.profile
                );
                settings.profile = p;
                settings.refused = None;
            }
            Err(err) => {
                // No silent fallback: a refused profile fails the element. Before it starts
                // (gst-launch lines, applications setting it up) there is no bus yet, so the
                // error is posted when it starts; while running, at once.
                let text = structure.map_or_else(|| "NULL".to_string(), |s| s.to_string());
                // GStreamer 1.22 ends a serialised structure with ';': not part of the syntax.
                let text = text.trim_end_matches(';');
                let message = format!("profile \"{text}\" refused: {err}");
                gst::error!(CAT, imp = self, "{message}");
                let running = crate::lock(&self.state).is_some();
                if running {
                    gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", message));
                } else {
                    crate::lock(&self.settings).refused = Some(message);
                }
            }
        }
    }

    fn start(&self) {
        let profile = crate::lock(&self.settings).profile.clone();
        *crate::lock(&self.state) = Some(State::new(profile));
        *crate::lock(&self.stats) = Stats::default();
    }

    fn stop(&self) {
        let state = crate::lock(&self.state).take();
        let Some(state) = state else {
            return;
        };
        let obj = self.obj();
        if let Some(branch) = state.branch {
            let _ = self.in_src().unlink(&branch.sink);
            let _ = branch.src.unlink(&self.out_sink());
            for e in branch.elements {
                let _ = e.set_state(gst::State::Null);
                let _ = obj.remove(&e);
            }
        }
        if let Some(decoder) = state.decoder {
            let _ = decoder.set_state(gst::State::Null);
            let _ = obj.remove(&decoder);
            let in_sink = self.in_anchor.static_pad("sink").expect("identity sink");
            if let Some(peer) = in_sink.peer() {
                let _ = peer.unlink(&in_sink);
            }
            let _ = self.sinkpad.set_target(Some(&in_sink));
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for ProfileEnc {
    const NAME: &'static str = "GstGopSwarmProfileEnc";
    type Type = super::ProfileEnc;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad =
            gst::GhostPad::builder_from_template(&klass.pad_template("sink").unwrap()).build();
        let srcpad =
            gst::GhostPad::builder_from_template(&klass.pad_template("src").unwrap()).build();
        let in_anchor = gst::ElementFactory::make("identity")
            .name("in-anchor")
            .property("silent", true)
            .build()
            .expect("identity (coreelements) is always available");
        let out_anchor = gst::ElementFactory::make("identity")
            .name("out-anchor")
            .property("silent", true)
            .build()
            .expect("identity (coreelements) is always available");
        ProfileEnc {
            sinkpad,
            srcpad,
            in_anchor,
            out_anchor,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
        }
    }
}

impl ObjectImpl for ProfileEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoxed::builder::<gst::Structure>("profile")
                    .nick("Profile")
                    .blurb(
                        "Encoding profile, a GstStructure (on a gst-launch line its string \
                         form, default \"h264\"): \
                         \"<h264|h265|vp9|av1>, width=W, height=H, framerate=N/D, bitrate=KBPS, \
                         complexity=1..10, crf=Q, rate-control=capped-crf|crf|abr|cbr, \
                         vbv-buffer=MS, gop=SECONDS, redundancy=R, fec-k=K, fec-m=M, \
                         device=mobile|desktop|tv|vr\". Device defaults (when width/height/bitrate \
                         are absent): mobile 640x360 800, desktop 1280x720 3000, tv 1920x1080 \
                         6000, vr 3840x1920 16000 kbit/s. Complexity 1..10 = x264/x265 \
                         speed-preset ultrafast, superfast, veryfast, faster, fast, medium, slow, \
                         slower, veryslow, veryslow+subme=11; vp9 realtime cpu-used 8..5 (1-4), \
                         good cpu-used 4..0 (5-9), best (10); av1 realtime cpu-used 10..7 (1-4), \
                         good cpu-used 6..1 (5-10). Units: width/height in pixels, bitrate in \
                         kbit/s, vbv-buffer in ms, gop in seconds. Default rate control \
                         capped-crf: CRF from bits per pixel, bitrate = VBV max rate. Settable \
                         while PLAYING: a change lands exactly on the first frame of the next \
                         GOP. An invalid profile is an error naming the field and its allowed \
                         values: set before the element starts, starting fails; set while \
                         running, the element posts an error (the profile in effect stays until \
                         the application stops the pipeline); a string that is no structure \
                         fails the launch line. Reads back as the normalised structure \
                         (device defaults resolved); NULL sets the default.",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecInt64::builder("switch-gop")
                    .nick("Switch GOP")
                    .blurb("GOP index from which a new profile may take effect (-1: the next GOP boundary); set it with the profile so every host of a swarm switches on the same GOP")
                    .minimum(-1)
                    .default_value(DEFAULT_SWITCH_GOP)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("applied-profile")
                    .nick("Applied profile")
                    .blurb("The profile in effect in the stream (normalised)")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "frames-in, frames-encoded, keyframes-out, preroll-dropped, rate-dropped, \
                         keyframes-forced, profile-changes, chains-built, encoder (the current \
                         encoder settings)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "profile" => {
                let structure: Option<gst::Structure> = value.get().expect("type checked upstream");
                self.set_profile(structure.as_deref());
            }
            "switch-gop" => crate::lock(&self.settings).switch_gop = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "profile" => crate::lock(&self.settings)
                .profile
                .to_structure()
                .to_value(),
            "switch-gop" => crate::lock(&self.settings).switch_gop.to_value(),
            "applied-profile" => {
                let applied = crate::lock(&self.state)
                    .as_ref()
                    .map(|s| s.applied.to_string());
                applied
                    .unwrap_or_else(|| crate::lock(&self.settings).profile.to_string())
                    .to_value()
            }
            "stats" => self.stats_structure().to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_many([&self.in_anchor, &self.out_anchor])
            .expect("anchors added");
        self.sinkpad
            .set_target(Some(&self.in_anchor.static_pad("sink").unwrap()))
            .expect("sink ghost target");
        self.srcpad
            .set_target(Some(&self.out_anchor.static_pad("src").unwrap()))
            .expect("src ghost target");

        let weak = obj.downgrade();
        self.sinkpad.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::BUFFER_LIST
                | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match weak.upgrade() {
                Some(obj) => obj.imp().sink_probe(info),
                None => gst::PadProbeReturn::Ok,
            },
        );
        let weak = obj.downgrade();
        self.in_anchor.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match weak.upgrade() {
                Some(obj) => obj.imp().anchor_sink_probe(info),
                None => gst::PadProbeReturn::Ok,
            },
        );
        let weak = obj.downgrade();
        self.in_src().add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::EVENT_DOWNSTREAM
                | gst::PadProbeType::EVENT_FLUSH,
            move |pad, info| match weak.upgrade() {
                Some(obj) => obj.imp().x_probe(pad, info),
                None => gst::PadProbeReturn::Ok,
            },
        );
        let weak = obj.downgrade();
        self.out_anchor.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match weak.upgrade() {
                Some(obj) => obj.imp().out_sink_probe(info),
                None => gst::PadProbeReturn::Ok,
            },
        );
        let weak = obj.downgrade();
        self.out_anchor.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_UPSTREAM,
            move |_, info| match weak.upgrade() {
                Some(obj) => obj.imp().out_probe(info),
                None => gst::PadProbeReturn::Ok,
            },
        );

        obj.add_pad(&self.sinkpad).expect("sink pad added");
        obj.add_pad(&self.srcpad).expect("src pad added");
    }
}

impl GstObjectImpl for ProfileEnc {}

impl ElementImpl for ProfileEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gopswarm profile encoder",
                "Codec/Encoder/Video/Bin",
                &crate::inspect_description(
                    "Decodes if needed, drops pre-roll frames, scales and encodes one profile (h264/h265/vp9/av1, capped-CRF rate control) with an IDR exactly on the first frame of every GOP of the grid; the profile can change while playing, at the next GOP.",
                    "gopswarm-profile-applied (gop: u64, profile: string) when a profile lands; an element error naming the field when a profile is refused.",
                    "in profile: bitrate in kbit/s, gop in seconds, vbv-buffer in ms, width/height in pixels; switch-gop is a GOP index.",
                ),
                "gopswarm developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder_full()
                .structure_with_any_features(gst::Structure::new_empty("video/x-raw"))
                .structure(gst::Structure::new_empty("video/x-h264"))
                .structure(gst::Structure::new_empty("video/x-h265"))
                .structure(gst::Structure::new_empty("video/x-vp8"))
                .structure(gst::Structure::new_empty("video/x-vp9"))
                .structure(gst::Structure::new_empty("video/x-av1"))
                .structure(gst::Structure::new_empty("video/mpeg"))
                .structure(gst::Structure::new_empty("image/jpeg"))
                .build();
            let src_caps = gst::Caps::builder_full()
                .structure(
                    gst::Structure::builder("video/x-h264")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )
                .structure(
                    gst::Structure::builder("video/x-h265")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )
                .structure(gst::Structure::new_empty("video/x-vp9"))
                .structure(gst::Structure::new_empty("video/x-av1"))
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if matches!(
            transition,
            gst::StateChange::NullToReady | gst::StateChange::ReadyToPaused
        ) && let Some(message) = crate::lock(&self.settings).refused.clone()
        {
            gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", message));
            return Err(gst::StateChangeError);
        }
        if transition == gst::StateChange::ReadyToPaused {
            self.start();
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        if ret.is_err() && transition == gst::StateChange::ReadyToPaused {
            self.stop();
        }
        ret
    }
}

impl BinImpl for ProfileEnc {}
