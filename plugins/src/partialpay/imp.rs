// SPDX-License-Identifier: MPL-2.0
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

use gopswarm_chunk::{ChunkHeader, FrameRecord, ParityInfo, flags, frame_flags};

use crate::meta::{FrameInfo, signed_running_time};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "partialpay",
        gst::DebugColorFlags::empty(),
        Some("gopswarm partial stream payloader"),
    )
});

const DEFAULT_STREAM_ID: &str = "stream";
const DEFAULT_PROFILE_ID: &str = "default";
const DEFAULT_HOST_ID: &str = "local";
const DEFAULT_GOP_DURATION: gst::ClockTime = gst::ClockTime::from_seconds(2);
/// The shortest GOP the element's own grid accepts.
const MIN_GOP_DURATION: gst::ClockTime = gst::ClockTime::MSECOND;
const DEFAULT_FEC: i32 = -1;
/// -1: the decode reorder depth comes from profileenc's profile event.
const DEFAULT_REORDER_FRAMES: i32 = -1;

#[derive(Debug, Clone)]
struct Settings {
    stream_id: String,
    profile_id: String,
    host_id: String,
    gop_duration: gst::ClockTime,
    fec_k: i32,
    fec_m: i32,
    reorder_frames: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_id: DEFAULT_STREAM_ID.into(),
            profile_id: DEFAULT_PROFILE_ID.into(),
            host_id: DEFAULT_HOST_ID.into(),
            gop_duration: DEFAULT_GOP_DURATION,
            fec_k: DEFAULT_FEC,
            fec_m: DEFAULT_FEC,
            reorder_frames: DEFAULT_REORDER_FRAMES,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    chunks: u64,
    redundant_chunks: u64,
    parity_chunks: u64,
    frames: u64,
    bytes: u64,
    short_chunks: u64,
    dropped_gops: u64,
    dropped_frames: u64,
}

struct OpenChunk {
    info: FrameInfo,
    /// Running time of the grid start.
    start_rt: i64,
    frames: Vec<FrameRecord>,
    /// Running time where the last frame ends, to detect a GOP cut short by EOS.
    end_rt: i64,
    /// Broken (did not start with a keyframe): frames are counted and discarded.
    broken: bool,
    /// Caps in force at the GOP's first frame.
    codec: String,
    /// Reorder depth of the profile in force at the GOP's first frame.
    reorder_frames: Option<u8>,
}

struct State {
    segment: gst::FormattedSegment<gst::ClockTime>,
    caps: Option<gst::Caps>,
    codec: String,
    /// From the caps' frame rate.
    frame_duration: Option<gst::ClockTime>,
    open: Option<OpenChunk>,
    last_gop: Option<u64>,
    /// FEC parameters from the upstream `gopswarm-profile` event.
    profile_fec: (u8, u8),
    /// Decode reorder depth from the upstream `gopswarm-profile` event.
    profile_reorder: Option<u8>,
    /// Serialised data chunks of the FEC group being filled.
    group: Vec<(u64, u64, u64, Vec<u8>)>,
    need_segment: bool,
    stats: Stats,
}

impl State {
    fn new() -> Self {
        State {
            segment: gst::FormattedSegment::new(),
            caps: None,
            codec: String::new(),
            frame_duration: None,
            open: None,
            last_gop: None,
            profile_fec: (0, 0),
            profile_reorder: None,
            group: Vec::new(),
            need_segment: true,
            stats: Stats::default(),
        }
    }
}

pub struct PartialPay {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

/// What the streaming thread pushes once the state lock is released.
enum Out {
    Event(gst::Event),
    Buffer(gst::Buffer),
    Message(gst::Message),
}

impl PartialPay {
    fn fec(&self, settings: &Settings, state: &State) -> (u8, u8) {
        let k = if settings.fec_k >= 0 {
            settings.fec_k as u8
        } else {
            state.profile_fec.0
        };
        let m = if settings.fec_m >= 0 {
            settings.fec_m as u8
        } else {
            state.profile_fec.1
        };
        if k == 0 || m == 0 { (0, 0) } else { (k, m) }
    }

    /// The decode reorder depth chunks declare: the property, else the upstream profile's.
    fn reorder_frames(&self, settings: &Settings, state: &State) -> Option<u8> {
        if settings.reorder_frames >= 0 {
            Some(settings.reorder_frames as u8)
        } else {
            state.profile_reorder
        }
    }

    fn header(&self, settings: &Settings, state: &State, fec: (u8, u8)) -> ChunkHeader {
        ChunkHeader {
            stream_id: settings.stream_id.clone(),
            profile_id: settings.profile_id.clone(),
            host_id: settings.host_id.clone(),
            codec: state.codec.clone(),
            fec_k: fec.0,
            fec_m: fec.1,
            reorder_frames: self.reorder_frames(settings, state),
            ..Default::default()
        }
    }

    /// Close the open chunk: serialise it, and the group's parity when the group is full or
    /// `final_group` is set.
    fn close_chunk(&self, state: &mut State, at_eos: bool, out: &mut Vec<Out>) {
        let settings = crate::lock(&self.settings).clone();
        let fec = self.fec(&settings, state);
        if let Some(open) = state.open.take() {
            if open.broken {
                state.stats.dropped_gops += 1;
                state.stats.dropped_frames += open.frames.len() as u64;
            } else {
                let mut header = self.header(&settings, state, fec);
                header.codec = open.codec.clone();
                header.reorder_frames = open.reorder_frames;
                header.gop_index = open.info.gop;
                header.start_ns = open.info.gop_start;
                header.duration_ns = open.info.gop_duration;
                header.frame_count = open.frames.len() as u32;
                header.epoch = open.info.epoch;
                if open.info.redundant {
                    header.flags |= flags::REDUNDANT;
                }
                let grid_end = open
                    .start_rt
                    .saturating_add(i64::try_from(open.info.gop_duration).unwrap_or(i64::MAX));
                let half_frame = state.frame_duration.map_or(0, |d| d.nseconds() / 2) as i64;
                if at_eos && open.end_rt.saturating_add(half_frame) < grid_end {
                    header.flags |= flags::SHORT;
                    state.stats.short_chunks += 1;
                }
                let payload = gopswarm_chunk::encode_frames(&open.frames);
                match gopswarm_chunk::serialize(&header, &payload) {
                    Ok(bytes) => {
                        state.stats.chunks += 1;
                        if open.info.redundant {
                            state.stats.redundant_chunks += 1;
                        }
                        state.stats.frames += open.frames.len() as u64;
                        state.stats.bytes += bytes.len() as u64;
                        state.last_gop = Some(open.info.gop);
                        gst::log!(
                            CAT,
                            imp = self,
                            "GOP {} closed: {} frames, {} bytes",
                            open.info.gop,
                            open.frames.len(),
                            bytes.len()
                        );
                        out.push(Out::Buffer(self.chunk_buffer(
                            &bytes,
                            open.start_rt,
                            crate::clock_time(open.info.gop_duration),
                        )));
                        if fec.0 > 0 {
                            state.group.push((
                                open.info.gop,
                                open.info.gop_start,
                                open.info.gop_duration,
                                bytes,
                            ));
                        }
                    }
                    Err(err) => {
                        state.stats.dropped_gops += 1;
                        out.push(Out::Message(
                            gst::message::Warning::builder(
                                gst::StreamError::Encode,
                                &format!("GOP {} could not be packed: {err}", open.info.gop),
                            )
                            .src(&*self.obj())
                            .build(),
                        ));
                    }
                }
            }
        }
        if fec.0 > 0 && (state.group.len() >= fec.0 as usize || (at_eos && !state.group.is_empty()))
        {
            self.emit_parity(&settings, state, fec, out);
        }
    }

    fn emit_parity(
        &self,
        settings: &Settings,
        state: &mut State,
        fec: (u8, u8),
        out: &mut Vec<Out>,
    ) {
        let group = std::mem::take(&mut state.group);
        let shards: Vec<&[u8]> = group.iter().map(|g| g.3.as_slice()).collect();
        let parity = match gopswarm_chunk::make_parity(&shards, fec.1 as usize) {
            Ok(p) => p,
            Err(err) => {
                gst::warning!(CAT, imp = self, "parity not computed: {err}");
                return;
            }
        };
        let members: Vec<(u64, u32)> = group.iter().map(|g| (g.0, g.3.len() as u32)).collect();
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return;
        };
        let start_rt = i64::try_from(first.1).unwrap_or(i64::MAX);
        for (index, shard) in parity.iter().enumerate() {
            let info = ParityInfo {
                k: group.len() as u8,
                m: fec.1,
                index: index as u8,
                members: members.clone(),
            };
            let mut header = self.header(settings, state, fec);
            header.flags = flags::PARITY;
            header.gop_index = last.0;
            header.start_ns = first.1;
            header.duration_ns = last.1.saturating_add(last.2).saturating_sub(first.1);
            header.epoch = 0;
            match gopswarm_chunk::serialize(&header, &info.encode(shard)) {
                Ok(bytes) => {
                    state.stats.parity_chunks += 1;
                    state.stats.bytes += bytes.len() as u64;
                    out.push(Out::Buffer(self.chunk_buffer(&bytes, start_rt, None)));
                }
                Err(err) => gst::warning!(CAT, imp = self, "parity not packed: {err}"),
            }
        }
    }

    fn chunk_buffer(
        &self,
        bytes: &[u8],
        start_rt: i64,
        duration: Option<gst::ClockTime>,
    ) -> gst::Buffer {
        let mut buffer = gst::Buffer::from_slice(bytes.to_vec());
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(start_rt.max(0) as u64));
            b.set_duration(duration.filter(|d| !d.is_zero()));
        }
        buffer
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = crate::lock(&self.settings).clone();
        let mut out = Vec::new();
        {
            let mut guard = crate::lock(&self.state);
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            if state.need_segment {
                state.need_segment = false;
                out.push(Out::Event(gst::event::Segment::new(
                    &gst::FormattedSegment::<gst::ClockTime>::new(),
                )));
            }
            let pts_rt = buffer
                .pts()
                .and_then(|t| signed_running_time(&state.segment, t));
            let dts_rt = buffer
                .dts()
                .and_then(|t| signed_running_time(&state.segment, t));
            let info = match FrameInfo::from_buffer(&buffer) {
                Some(info) => info,
                None => {
                    // No gopselect upstream: one primary slot on our own grid.
                    let Some(rt) = pts_rt.or(dts_rt) else {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ["frame without timestamps and without gopswarm frame meta"]
                        );
                        return Err(gst::FlowError::Error);
                    };
                    let gop_duration = settings.gop_duration.nseconds();
                    let gop = rt.max(0) as u64 / gop_duration;
                    FrameInfo {
                        gop,
                        // At most `rt`: no overflow.
                        gop_start: gop * gop_duration,
                        gop_duration,
                        time_offset: 0,
                        epoch: 0,
                        redundant: false,
                        preroll: false,
                    }
                }
            };
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let new_gop = state.open.as_ref().is_none_or(|o| o.info.gop != info.gop);
            if new_gop {
                self.close_chunk(state, false, &mut out);
                let start_rt = i64::try_from(info.gop_start)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(info.time_offset);
                let broken = !keyframe;
                if broken {
                    out.push(Out::Message(
                        gst::message::Warning::builder(
                            gst::StreamError::Encode,
                            &format!(
                                "GOP {} does not start with a keyframe; dropped (is the encoder forced to key on the grid?)",
                                info.gop
                            ),
                        )
                        .src(&*self.obj())
                        .build(),
                    ));
                }
                state.open = Some(OpenChunk {
                    info: info.clone(),
                    start_rt,
                    frames: Vec::new(),
                    end_rt: start_rt,
                    broken,
                    codec: state.codec.clone(),
                    reorder_frames: self.reorder_frames(&settings, state),
                });
            }
            let open = state.open.as_mut().unwrap();
            let mut fflags = 0;
            if !keyframe {
                fflags |= frame_flags::DELTA;
            }
            if buffer.flags().contains(gst::BufferFlags::HEADER) {
                fflags |= frame_flags::HEADER;
            }
            let duration = buffer
                .duration()
                .or(state.frame_duration)
                .map(gst::ClockTime::nseconds);
            if let Some(pts) = pts_rt {
                let end = pts.saturating_add(duration.map_or(0, |d| d.min(i64::MAX as u64) as i64));
                open.end_rt = open.end_rt.max(end);
            }
            let map = buffer.map_readable().map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Read,
                    ["input buffer not readable: {err}"]
                );
                gst::FlowError::Error
            })?;
            open.frames.push(FrameRecord {
                pts_offset: pts_rt.map(|t| t.saturating_sub(open.start_rt)),
                dts_offset: dts_rt.map(|t| t.saturating_sub(open.start_rt)),
                duration,
                flags: fflags,
                data: map.as_slice().to_vec(),
            });
        }
        self.push_all(out)
    }

    fn push_all(&self, out: Vec<Out>) -> Result<gst::FlowSuccess, gst::FlowError> {
        for item in out {
            match item {
                Out::Event(e) => {
                    self.srcpad.push_event(e);
                }
                Out::Buffer(b) => {
                    self.srcpad.push(b)?;
                }
                Out::Message(m) => {
                    let _ = self.obj().post_message(m);
                }
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.codec = caps.to_string();
                    state.frame_duration = caps
                        .structure(0)
                        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                        .filter(|f| f.numer() > 0)
                        .and_then(|f| {
                            gst::ClockTime::SECOND.mul_div_round(f.denom() as u64, f.numer() as u64)
                        });
                    state.caps = Some(caps);
                }
                let src_caps = gst::Caps::builder(crate::PARTIAL_CAPS_NAME)
                    .field("version", gopswarm_chunk::VERSION as i32)
                    .build();
                return self.srcpad.push_event(gst::event::Caps::new(&src_caps));
            }
            EventView::Segment(s) => {
                match s.segment().clone().downcast::<gst::ClockTime>() {
                    Ok(segment) => {
                        if let Some(state) = crate::lock(&self.state).as_mut() {
                            state.segment = segment;
                        }
                    }
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ["partialpay needs a TIME segment"]
                        );
                        return false;
                    }
                }
                // Our output timestamps are running times: downstream gets a plain segment.
                return true;
            }
            EventView::CustomDownstreamSticky(c) => {
                if let Some(s) = c.structure().filter(|s| s.name() == "gopswarm-profile") {
                    let field = |name: &str| -> u8 {
                        s.get::<i32>(name)
                            .map(|v| v.clamp(0, 255) as u8)
                            .or_else(|_| s.get::<u32>(name).map(|v| v.min(255) as u8))
                            .unwrap_or(0)
                    };
                    if let Some(state) = crate::lock(&self.state).as_mut() {
                        state.profile_fec = (field("fec-k"), field("fec-m"));
                        state.profile_reorder = s
                            .has_field("reorder-frames")
                            .then(|| field("reorder-frames").min(254));
                    }
                }
            }
            EventView::Eos(_) => {
                let mut out = Vec::new();
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    self.close_chunk(state, true, &mut out);
                }
                let _ = self.push_all(out);
            }
            EventView::FlushStop(_) => {
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.open = None;
                    state.group.clear();
                    state.need_segment = true;
                }
            }
            _ => (),
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn stats(&self) -> gst::Structure {
        let s = crate::lock(&self.state)
            .as_ref()
            .map(|s| s.stats.clone())
            .unwrap_or_default();
        gst::Structure::builder("partialpay-stats")
            .field("chunks", s.chunks)
            .field("redundant-chunks", s.redundant_chunks)
            .field("parity-chunks", s.parity_chunks)
            .field("frames", s.frames)
            .field("bytes", s.bytes)
            .field("short-chunks", s.short_chunks)
            .field("dropped-gops", s.dropped_gops)
            .field("dropped-frames", s.dropped_frames)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for PartialPay {
    const NAME: &'static str = "GstPartialPay";
    type Type = super::PartialPay;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                PartialPay::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                PartialPay::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ).build();
        PartialPay {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
        }
    }
}

impl ObjectImpl for PartialPay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream ID")
                    .blurb("Source stream this partial stream belongs to (at most 255 bytes)")
                    .default_value(Some(DEFAULT_STREAM_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("profile-id")
                    .nick("Profile ID")
                    .blurb("Encoding profile of this partial stream (at most 255 bytes)")
                    .default_value(Some(DEFAULT_PROFILE_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("host-id")
                    .nick("Host ID")
                    .blurb("Encoder host that produced the chunks (at most 255 bytes)")
                    .default_value(Some(DEFAULT_HOST_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("gop-duration")
                    .nick("GOP duration")
                    .blurb("Grid GOP duration in nanoseconds, used only for frames without gopselect's meta")
                    .minimum(MIN_GOP_DURATION.nseconds())
                    .maximum(gst::ClockTime::MAX.nseconds())
                    .default_value(DEFAULT_GOP_DURATION.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("fec-k")
                    .nick("FEC data chunks")
                    .blurb("Data chunks per Reed-Solomon group (0: no parity, -1: from the upstream profile)")
                    .minimum(-1)
                    .maximum(128)
                    .default_value(DEFAULT_FEC)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("fec-m")
                    .nick("FEC parity chunks")
                    .blurb("Parity chunks per group: up to this many lost chunks per group are rebuilt (0: none, -1: from the upstream profile)")
                    .minimum(-1)
                    .maximum(64)
                    .default_value(DEFAULT_FEC)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("reorder-frames")
                    .nick("Decode reorder depth")
                    .blurb("Decode reorder depth of the encoder in frames, declared in every chunk so gopmerge gives the rendition one constant decode delay (x264/x265 with B-frames: 2, no B-frames: 0; -1: from the upstream profileenc, else undeclared and gopmerge learns it from the frames)")
                    .minimum(-1)
                    .maximum(254)
                    .default_value(DEFAULT_REORDER_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("chunks, redundant-chunks, parity-chunks, frames, bytes, short-chunks, dropped-gops, dropped-frames")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = crate::lock(&self.settings);
        let id = |value: &glib::Value, default: &str| -> String {
            let s: Option<String> = value.get().unwrap();
            let s = s.unwrap_or_else(|| default.to_string());
            if s.len() > gopswarm_chunk::MAX_ID_LEN {
                gst::error!(
                    CAT,
                    imp = self,
                    "identifier longer than 255 bytes truncated"
                );
                let mut end = gopswarm_chunk::MAX_ID_LEN;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            } else {
                s
            }
        };
        match pspec.name() {
            "stream-id" => settings.stream_id = id(value, DEFAULT_STREAM_ID),
            "profile-id" => settings.profile_id = id(value, DEFAULT_PROFILE_ID),
            "host-id" => settings.host_id = id(value, DEFAULT_HOST_ID),
            // The range stops below GST_CLOCK_TIME_NONE, so this never panics.
            "gop-duration" => {
                settings.gop_duration = gst::ClockTime::from_nseconds(value.get().unwrap())
            }
            "fec-k" => settings.fec_k = value.get().unwrap(),
            "fec-m" => settings.fec_m = value.get().unwrap(),
            "reorder-frames" => settings.reorder_frames = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let settings = crate::lock(&self.settings);
        match pspec.name() {
            "stream-id" => settings.stream_id.to_value(),
            "profile-id" => settings.profile_id.to_value(),
            "host-id" => settings.host_id.to_value(),
            "gop-duration" => settings.gop_duration.nseconds().to_value(),
            "fec-k" => settings.fec_k.to_value(),
            "fec-m" => settings.fec_m.to_value(),
            "reorder-frames" => settings.reorder_frames.to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for PartialPay {}

impl ElementImpl for PartialPay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gopswarm partial stream payloader",
                "Codec/Payloader/Video",
                &crate::inspect_description(
                    "Packs each encoded GOP into one self-delimiting, checksummed gopswarm chunk (with optional Reed-Solomon parity chunks) for any byte transport. A chunk leaves when the next GOP of its input starts.",
                    "warnings when a GOP does not start with a keyframe (dropped) or cannot be packed.",
                    "gop-duration in nanoseconds (ClockTime); fec-k, fec-m in chunks; reorder-frames in frames.",
                ),
                "gopswarm developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder_full()
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
            let src_caps = gst::Caps::builder(crate::PARTIAL_CAPS_NAME).build();
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
        if transition == gst::StateChange::ReadyToPaused {
            *crate::lock(&self.state) = Some(State::new());
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *crate::lock(&self.state) = None;
        }
        Ok(res)
    }
}
