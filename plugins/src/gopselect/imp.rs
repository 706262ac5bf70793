// SPDX-License-Identifier: MPL-2.0
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use crate::grid::{GopSet, Grid, Role, Slots, Timeline};
use crate::meta::{FrameInfo, signed_running_time};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gopselect",
        gst::DebugColorFlags::empty(),
        Some("gopswarm GOP selector"),
    )
});

const DEFAULT_GOP_DURATION: gst::ClockTime = gst::ClockTime::from_seconds(2);
/// The shortest GOP the grid accepts.
const MIN_GOP_DURATION: gst::ClockTime = gst::ClockTime::MSECOND;
const DEFAULT_GRID_ORIGIN: gst::ClockTime = gst::ClockTime::ZERO;
const DEFAULT_SLOT_INDEX: u32 = 0;
const DEFAULT_SLOT_COUNT: u32 = 1;
const DEFAULT_REDUNDANCY: u32 = 0;
const DEFAULT_COPY_ONLY: bool = false;
const DEFAULT_EPOCH: u64 = 0;
const DEFAULT_SWITCH_GOP: i64 = -1;
const DEFAULT_MAX_REORDER: u32 = 16;

/// `""` uses the slots, `"none"` keeps nothing (drain), anything else is a [`GopSet`].
fn parse_gops(text: &str) -> Result<Option<GopSet>, String> {
    match text.trim() {
        "" => Ok(None),
        "none" => Ok(Some(GopSet::default())),
        t => t.parse().map(Some),
    }
}

fn gops_text(gops: &Option<GopSet>) -> String {
    match gops {
        None => String::new(),
        Some(set) if set.is_empty() => "none".into(),
        Some(set) => set.to_string(),
    }
}

/// What the user asked for; becomes active at a GOP boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assignment {
    slot_index: u32,
    slot_count: u32,
    redundancy: u32,
    /// Keep the slot's GOPs only as redundant copies (a backup encoder).
    copy_only: bool,
    /// Explicit set overriding the slots; `Some(empty)` drains (keeps nothing).
    gops: Option<GopSet>,
    epoch: u64,
}

impl Assignment {
    fn slots(&self) -> Slots {
        match &self.gops {
            None => Slots::Modulo {
                index: self.slot_index,
                count: self.slot_count,
                redundancy: self.redundancy,
                copy_only: self.copy_only,
            },
            Some(set) => Slots::Explicit(set.clone()),
        }
    }

    fn describe(&self) -> String {
        match &self.gops {
            None => format!(
                "index={},count={},redundancy={}{}",
                self.slot_index,
                self.slot_count,
                self.redundancy,
                if self.copy_only { ",copy-only" } else { "" }
            ),
            Some(_) => format!("gops={}", gops_text(&self.gops)),
        }
    }
}

impl Default for Assignment {
    fn default() -> Self {
        Assignment {
            slot_index: DEFAULT_SLOT_INDEX,
            slot_count: DEFAULT_SLOT_COUNT,
            redundancy: DEFAULT_REDUNDANCY,
            copy_only: DEFAULT_COPY_ONLY,
            gops: None,
            epoch: DEFAULT_EPOCH,
        }
    }
}

/// An assignment change waiting for its switch GOP.
#[derive(Debug, Clone)]
struct Request {
    /// Order of arrival; the streaming thread has applied or passed every request up to the
    /// one it last applied.
    seq: u64,
    assignment: Assignment,
    /// `-1`: the next GOP boundary.
    switch_gop: i64,
}

impl Request {
    fn due_at(&self, k: u64) -> bool {
        self.switch_gop < 0 || k >= self.switch_gop as u64
    }
}

#[derive(Debug, Clone)]
struct Settings {
    gop_duration: gst::ClockTime,
    grid_origin: gst::ClockTime,
    timeline: Timeline,
    max_reorder: u32,
    /// The latest assignment asked for (what the properties read back).
    desired: Assignment,
    switch_gop: i64,
    /// Changes not yet applied, in arrival order with rising switch GOPs: a change scheduled
    /// for GOP 20 that arrives before the change for GOP 14 has applied waits behind it.
    requests: Vec<Request>,
    next_seq: u64,
    /// Why the last `gops`/`assignment` set before the element started was refused: starting
    /// then fails with this error instead of running the previous assignment.
    refused: Option<String>,
}

impl Settings {
    /// Queue a change. It supersedes the waiting changes scheduled at or after its own switch
    /// GOP (the sender decided later), and keeps those due before it.
    fn request(&mut self, assignment: Assignment, switch_gop: i64) {
        self.next_seq += 1;
        self.requests
            .retain(|r| switch_gop >= 0 && r.switch_gop >= 0 && r.switch_gop < switch_gop);
        self.requests.push(Request {
            seq: self.next_seq,
            assignment: assignment.clone(),
            switch_gop,
        });
        self.desired = assignment;
        self.switch_gop = switch_gop;
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gop_duration: DEFAULT_GOP_DURATION,
            grid_origin: DEFAULT_GRID_ORIGIN,
            timeline: Timeline::default(),
            max_reorder: DEFAULT_MAX_REORDER,
            desired: Assignment::default(),
            switch_gop: DEFAULT_SWITCH_GOP,
            requests: Vec::new(),
            next_seq: 0,
            refused: None,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames_in: u64,
    frames_passed: u64,
    frames_dropped: u64,
    preroll_frames: u64,
    gops_kept: u64,
    gops_skipped: u64,
    assignments_applied: u64,
}

struct State {
    segment: gst::FormattedSegment<gst::ClockTime>,
    compressed: bool,
    active: Assignment,
    /// The assignment before the last switch and the GOP the switch happened at: frames of
    /// earlier GOPs that arrive after the switch (decode order) still belong to it.
    previous: Option<(Assignment, u64)>,
    /// Requests up to this sequence number are applied or superseded.
    applied_seq: u64,
    current_gop: Option<u64>,
    /// GOP of the last frame pushed, and whether a frame was discarded since: the next push is
    /// DISCONT when the encoder/decoder downstream will not see a continuous stream.
    last_pushed_gop: Option<u64>,
    discarded_since_push: bool,
    /// Compressed mode: frames since the last keyframe, held until a kept frame shows up.
    held: VecDeque<gst::Buffer>,
    /// Compressed mode: inside a source GOP that is being passed.
    passing: bool,
    /// Compressed mode: consecutive passed frames past the last kept GOP.
    frames_beyond: u32,
    last_kept_gop: Option<u64>,
    /// Compressed mode: a keyframe has been seen since the start or the last flush.
    seen_keyframe: bool,
    stats: Stats,
}

impl State {
    /// The assignment in force at GOP `k`.
    fn assignment_at(&self, k: u64) -> &Assignment {
        match &self.previous {
            Some((prev, switched_at)) if k < *switched_at => prev,
            _ => &self.active,
        }
    }

    fn role_at(&self, k: u64) -> Option<Role> {
        self.assignment_at(k).slots().role(k)
    }

    fn new(settings: &Settings) -> State {
        State {
            segment: gst::FormattedSegment::new(),
            compressed: false,
            active: settings.desired.clone(),
            previous: None,
            applied_seq: settings.next_seq,
            current_gop: None,
            last_pushed_gop: None,
            discarded_since_push: false,
            held: VecDeque::new(),
            passing: false,
            frames_beyond: 0,
            last_kept_gop: None,
            seen_keyframe: false,
            stats: Stats::default(),
        }
    }
}

pub struct GopSelect {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

/// Frames to push after releasing the state lock.
type Output = Vec<gst::Buffer>;

impl GopSelect {
    /// Timeline time minus running time, in signed nanoseconds (the frame meta's unit).
    fn time_offset(&self, timeline: Timeline) -> i64 {
        match timeline {
            Timeline::RunningTime => 0,
            // A base time past i64::MAX saturates: its frames then have no place on the grid.
            Timeline::ClockTime => self
                .obj()
                .base_time()
                .map_or(0, |t| i64::try_from(t.nseconds()).unwrap_or(i64::MAX)),
        }
    }

    /// Apply the latest request due when GOP `k` starts. Returns the message to post.
    fn on_gop_start(&self, state: &mut State, settings: &Settings, k: u64) -> Option<gst::Message> {
        let previous = state.current_gop.replace(k);
        if previous == Some(k) {
            return None;
        }
        // Switch GOPs rise along the queue, so the due requests are a prefix of it.
        let due = settings
            .requests
            .iter()
            .filter(|r| r.seq > state.applied_seq)
            .take_while(|r| r.due_at(k))
            .last();
        if let Some(request) = due {
            state.applied_seq = request.seq;
            if state.active != request.assignment {
                let old = std::mem::replace(&mut state.active, request.assignment.clone());
                state.previous = Some((old, k));
                state.stats.assignments_applied += 1;
                gst::info!(
                    CAT,
                    imp = self,
                    "assignment epoch {} ({}) applied at GOP {k}",
                    state.active.epoch,
                    state.active.describe()
                );
                return Some(
                    gst::message::Element::builder(
                        gst::Structure::builder("gopswarm-assignment-applied")
                            .field("gop", k)
                            .field("epoch", state.active.epoch)
                            .field("slots", state.active.describe())
                            .build(),
                    )
                    .src(&*self.obj())
                    .build(),
                );
            }
        }
        if state.role_at(k).is_some() {
            state.stats.gops_kept += 1;
        } else {
            state.stats.gops_skipped += 1;
        }
        None
    }

    fn frame_info(
        &self,
        state: &State,
        grid: &Grid,
        offset: i64,
        k: u64,
        role: Option<Role>,
    ) -> FrameInfo {
        FrameInfo {
            gop: k,
            gop_start: grid.start_of(k).nseconds(),
            gop_duration: grid.gop_duration.nseconds(),
            time_offset: offset,
            epoch: state.assignment_at(k).epoch,
            redundant: role == Some(Role::Redundant),
            preroll: role.is_none(),
        }
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = crate::lock(&self.settings).clone();
        let grid = Grid {
            gop_duration: settings.gop_duration,
            origin: settings.grid_origin,
        };
        let offset = self.time_offset(settings.timeline);
        let mut messages = Vec::new();
        let mut applied_seq = None;
        let output = {
            let mut state_guard = crate::lock(&self.state);
            let Some(state) = state_guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let seq_before = state.applied_seq;
            state.stats.frames_in += 1;
            let k = buffer
                .pts()
                .or(buffer.dts())
                .and_then(|ts| signed_running_time(&state.segment, ts))
                .and_then(|rt| rt.checked_add(offset))
                .and_then(|t| grid.index_of(t));
            let output = if state.compressed {
                self.select_compressed(state, &settings, &grid, offset, k, buffer, &mut messages)
            } else {
                self.select_raw(state, &settings, &grid, offset, k, buffer, &mut messages)
            };
            if state.applied_seq != seq_before {
                applied_seq = Some(state.applied_seq);
            }
            output
        };
        if let Some(seq) = applied_seq {
            crate::lock(&self.settings).requests.retain(|r| r.seq > seq);
        }
        for msg in messages {
            let _ = self.obj().post_message(msg);
        }
        for buffer in output {
            self.srcpad.push(buffer)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    #[allow(clippy::too_many_arguments)]
    fn select_raw(
        &self,
        state: &mut State,
        settings: &Settings,
        grid: &Grid,
        offset: i64,
        k: Option<u64>,
        mut buffer: gst::Buffer,
        messages: &mut Vec<gst::Message>,
    ) -> Output {
        let Some(k) = k else {
            gst::log!(
                CAT,
                imp = self,
                "frame without a position on the grid, dropped"
            );
            state.stats.frames_dropped += 1;
            state.discarded_since_push = true;
            return vec![];
        };
        messages.extend(self.on_gop_start(state, settings, k));
        let role = state.role_at(k);
        if role.is_none() {
            state.stats.frames_dropped += 1;
            state.discarded_since_push = true;
            return vec![];
        }
        let info = self.frame_info(state, grid, offset, k, role);
        let skipped_gops = state.last_pushed_gop.is_none_or(|g| g + 1 < k);
        {
            let b = buffer.make_mut();
            info.attach(b);
            if state.discarded_since_push || skipped_gops {
                b.set_flags(gst::BufferFlags::DISCONT);
            } else {
                b.unset_flags(gst::BufferFlags::DISCONT);
            }
        }
        state.discarded_since_push = false;
        state.last_pushed_gop = Some(k);
        state.stats.frames_passed += 1;
        vec![buffer]
    }

    #[allow(clippy::too_many_arguments)]
    fn select_compressed(
        &self,
        state: &mut State,
        settings: &Settings,
        grid: &Grid,
        offset: i64,
        k: Option<u64>,
        mut buffer: gst::Buffer,
        messages: &mut Vec<gst::Message>,
    ) -> Output {
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if !keyframe && !state.seen_keyframe {
            // Nothing before the first keyframe can be decoded.
            state.stats.frames_dropped += 1;
            state.discarded_since_push = true;
            return vec![];
        }
        if keyframe {
            state.seen_keyframe = true;
            // A new source GOP: everything before it is decodable without it (closed GOPs).
            if !state.held.is_empty() {
                state.discarded_since_push = true;
            }
            state.held.clear();
            state.passing = false;
            state.frames_beyond = 0;
        }
        // Frames without a timestamp belong to the GOP in progress.
        let k = k.or(state.current_gop);
        if let Some(k) = k {
            // Boundaries in decode order can step back by the reorder depth; only forward steps
            // count as GOP starts.
            if state.current_gop.is_none_or(|c| k > c) {
                messages.extend(self.on_gop_start(state, settings, k));
            }
        }
        let role = k.and_then(|k| state.role_at(k));
        let info = self.frame_info(state, grid, offset, k.unwrap_or(0), role);
        {
            let b = buffer.make_mut();
            b.unset_flags(gst::BufferFlags::DISCONT);
            info.attach(b);
        }

        if role.is_some() {
            state.last_kept_gop = k;
            state.frames_beyond = 0;
        }

        if !state.passing {
            if role.is_none() {
                // Not needed yet; hold it in case a later frame of this source GOP is kept.
                state.held.push_back(buffer);
                state.stats.frames_dropped += 1;
                return vec![];
            }
            state.passing = true;
            let mut out: Output = state.held.drain(..).collect();
            state.stats.frames_dropped -= out.len() as u64;
            state.stats.preroll_frames += out.len() as u64;
            out.push(buffer);
            state.stats.frames_passed += out.len() as u64;
            if (state.discarded_since_push || state.last_pushed_gop.is_none())
                && let Some(first) = out.first_mut()
            {
                first.make_mut().set_flags(gst::BufferFlags::DISCONT);
            }
            state.discarded_since_push = false;
            state.last_pushed_gop = k.or(state.last_pushed_gop).or(Some(0));
            return out;
        }

        if role.is_none() {
            // Past the kept GOPs of this source GOP: keep passing while reordered frames of the
            // kept GOP may still follow, then hold the rest of the source GOP: released as
            // pre-roll if a later GOP in it is kept, discarded at the next keyframe otherwise.
            state.frames_beyond += 1;
            if state.frames_beyond > settings.max_reorder {
                state.passing = false;
                state.held.push_back(buffer);
                state.stats.frames_dropped += 1;
                return vec![];
            }
            state.stats.preroll_frames += 1;
        }
        state.stats.frames_passed += 1;
        vec![buffer]
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Caps(c) => {
                let compressed = c
                    .caps()
                    .structure(0)
                    .is_some_and(|s| s.name() != "video/x-raw");
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.compressed = compressed;
                }
                gst::debug!(CAT, imp = self, "compressed input: {compressed}");
            }
            EventView::Segment(s) => {
                let Ok(segment) = s.segment().clone().downcast::<gst::ClockTime>() else {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ["gopselect needs a TIME segment"]
                    );
                    return false;
                };
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.segment = segment;
                }
            }
            EventView::FlushStop(_) => {
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.current_gop = None;
                    state.seen_keyframe = false;
                    state.held.clear();
                    state.passing = false;
                    state.last_pushed_gop = None;
                    state.discarded_since_push = false;
                }
            }
            EventView::Eos(_) => {
                if let Some(state) = crate::lock(&self.state).as_mut() {
                    state.held.clear();
                }
            }
            _ => (),
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn stats(&self) -> gst::Structure {
        let (s, epoch, gop, applied_seq) = match crate::lock(&self.state).as_ref() {
            Some(st) => (
                st.stats.clone(),
                st.active.epoch,
                st.current_gop,
                st.applied_seq,
            ),
            None => (Stats::default(), 0, None, u64::MAX),
        };
        let pending = crate::lock(&self.settings)
            .requests
            .iter()
            .filter(|r| r.seq > applied_seq)
            .count() as u64;
        gst::Structure::builder("gopselect-stats")
            .field("frames-in", s.frames_in)
            .field("frames-passed", s.frames_passed)
            .field("frames-dropped", s.frames_dropped)
            .field("preroll-frames", s.preroll_frames)
            .field("gops-kept", s.gops_kept)
            .field("gops-skipped", s.gops_skipped)
            .field("assignments-applied", s.assignments_applied)
            .field("assignments-pending", pending)
            .field("epoch", epoch)
            .field("current-gop", gop.map(|g| g as i64).unwrap_or(-1))
            .build()
    }

    /// Parse the atomic `assignment` property: a GstStructure such as
    /// `assignment, index=1, count=3, redundancy=1, epoch=7, switch-gop=12` or `..., gops="0-9"`.
    /// No silent fallback: a refused `gops`/`assignment` fails the element. Before it starts
    /// there is no bus yet, so the error is posted when it starts; while running, at once.
    fn refuse(&self, message: String) {
        gst::error!(CAT, imp = self, "{message}");
        if crate::lock(&self.state).is_some() {
            gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", message));
        } else {
            crate::lock(&self.settings).refused = Some(message);
        }
    }

    fn parse_assignment(
        st: &gst::StructureRef,
        current: &Settings,
    ) -> Result<(Assignment, i64), String> {
        let mut a = current.desired.clone();
        let mut switch_gop = DEFAULT_SWITCH_GOP;
        let num = |field: &str| -> Result<Option<i64>, String> {
            match st.value(field) {
                Err(_) => Ok(None),
                Ok(v) => v
                    .get::<i32>()
                    .map(i64::from)
                    .or_else(|_| v.get::<u32>().map(i64::from))
                    .or_else(|_| v.get::<i64>())
                    .or_else(|_| v.get::<u64>().map(|x| x as i64))
                    .map(Some)
                    .map_err(|_| format!("field '{field}' must be an integer")),
            }
        };
        for (field, _) in st.iter() {
            match field.as_str() {
                "index" | "count" | "redundancy" | "copy-only" | "epoch" | "switch-gop"
                | "gops" => {}
                other => return Err(format!("unknown field '{other}'")),
            }
        }
        if let Some(v) = num("index")? {
            a.slot_index = u32::try_from(v).map_err(|_| "index out of range")?;
        }
        if let Some(v) = num("count")? {
            a.slot_count = u32::try_from(v)
                .ok()
                .filter(|&c| c >= 1)
                .ok_or("count must be at least 1")?;
        }
        if let Some(v) = num("redundancy")? {
            a.redundancy = u32::try_from(v).map_err(|_| "redundancy out of range")?;
        }
        if st.has_field("copy-only") {
            a.copy_only = st
                .get::<bool>("copy-only")
                .map_err(|_| "field 'copy-only' must be a boolean")?;
        }
        if let Some(v) = num("epoch")? {
            a.epoch = u64::try_from(v).map_err(|_| "epoch out of range")?;
        }
        if let Some(v) = num("switch-gop")? {
            switch_gop = v;
        }
        if let Ok(g) = st.get::<String>("gops") {
            a.gops = parse_gops(&g)?;
        } else if st.has_field("index") || st.has_field("count") {
            // Slots given without a set: the slots rule, not an earlier explicit set.
            a.gops = None;
        }
        if a.gops.is_none() && a.slot_index >= a.slot_count {
            return Err(format!(
                "index {} is not below count {}",
                a.slot_index, a.slot_count
            ));
        }
        Ok((a, switch_gop))
    }
}

#[glib::object_subclass]
impl ObjectSubclass for GopSelect {
    const NAME: &'static str = "GstGopSelect";
    type Type = super::GopSelect;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                GopSelect::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                GopSelect::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        GopSelect {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
        }
    }
}

impl ObjectImpl for GopSelect {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt64::builder("gop-duration")
                    .nick("GOP duration")
                    .blurb("Duration of one GOP on the grid, in nanoseconds")
                    .minimum(MIN_GOP_DURATION.nseconds())
                    .maximum(gst::ClockTime::MAX.nseconds())
                    .default_value(DEFAULT_GOP_DURATION.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("grid-origin")
                    .nick("Grid origin")
                    .blurb("Timeline time of the start of GOP 0, in nanoseconds")
                    .maximum(gst::ClockTime::MAX.nseconds())
                    .default_value(DEFAULT_GRID_ORIGIN.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("timeline", Timeline::default())
                    .nick("Timeline")
                    .blurb("Common timeline the grid is anchored on")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("slot-index")
                    .nick("Slot index")
                    .blurb("This instance's slot i: keeps GOP k when k mod slot-count == i")
                    .default_value(DEFAULT_SLOT_INDEX)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("slot-count")
                    .nick("Slot count")
                    .blurb("Number of slots n the GOPs are dealt over")
                    .minimum(1)
                    .default_value(DEFAULT_SLOT_COUNT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("redundancy")
                    .nick("Redundancy")
                    .blurb("Also keep the GOPs of the r slots before this one as redundant copies")
                    .default_value(DEFAULT_REDUNDANCY)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("copy-only")
                    .nick("Copy only")
                    .blurb("Keep the slot's GOPs (and, with redundancy, those of the slots before it) only as redundant copies: a backup encoder that owns no GOP")
                    .default_value(DEFAULT_COPY_ONLY)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("gops")
                    .nick("GOP set")
                    .blurb("Explicit GOP indices to keep, e.g. \"0-9,12,20-\", or \"none\" to drain (overrides the slot properties when not empty); an invalid set is an element error (starting fails, or posted at once while running)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("epoch")
                    .nick("Epoch")
                    .blurb("Assignment epoch stamped on every kept frame (fences stale assignments)")
                    .default_value(DEFAULT_EPOCH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecInt64::builder("switch-gop")
                    .nick("Switch GOP")
                    .blurb("GOP index from which assignment changes apply (-1: the next GOP boundary)")
                    .minimum(-1)
                    .default_value(DEFAULT_SWITCH_GOP)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("assignment")
                    .nick("Assignment")
                    .blurb("Atomic assignment change, a GstStructure (on a gst-launch line its string form): \"assignment, index=1, count=3, redundancy=0, copy-only=false, epoch=7, switch-gop=12\" or with gops=\"0-9,12\" (index, count: slot integers; redundancy: extra copies; epoch: fencing counter; switch-gop: GOP index, -1 the next boundary; copy-only: boolean; gops: GOP set string); fields left out keep their value. An invalid one is an element error (starting fails, or posted at once while running); a string that is no structure fails the launch line. Reads back as a structure with every field (gops only while an explicit set is in force)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-reorder")
                    .nick("Max reorder")
                    .blurb("Compressed input: frames still passed after the last kept GOP, for B-frames displayed before it")
                    .default_value(DEFAULT_MAX_REORDER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("frames-in, frames-passed, frames-dropped, preroll-frames, gops-kept, gops-skipped, assignments-applied, assignments-pending, epoch, current-gop")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = crate::lock(&self.settings);
        let mut changed = settings.desired.clone();
        match pspec.name() {
            // The ranges stop below GST_CLOCK_TIME_NONE, so these never panic.
            "gop-duration" => {
                settings.gop_duration = gst::ClockTime::from_nseconds(value.get().unwrap())
            }
            "grid-origin" => {
                settings.grid_origin = gst::ClockTime::from_nseconds(value.get().unwrap())
            }
            "timeline" => settings.timeline = value.get().unwrap(),
            "max-reorder" => settings.max_reorder = value.get().unwrap(),
            "slot-index" => changed.slot_index = value.get().unwrap(),
            "slot-count" => changed.slot_count = value.get().unwrap(),
            "redundancy" => changed.redundancy = value.get().unwrap(),
            "copy-only" => changed.copy_only = value.get().unwrap(),
            "epoch" => changed.epoch = value.get().unwrap(),
            "switch-gop" => {
                // Moves the latest change, when it has not applied yet.
                let switch_gop = value.get().unwrap();
                settings.switch_gop = switch_gop;
                let desired = settings.desired.clone();
                if let Some(last) = settings.requests.last()
                    && last.assignment == desired
                {
                    settings.requests.pop();
                    settings.request(desired, switch_gop);
                }
            }
            "gops" => {
                let text: Option<String> = value.get().unwrap();
                let text = text.unwrap_or_default();
                match parse_gops(&text) {
                    Ok(set) => {
                        changed.gops = set;
                        settings.refused = None;
                    }
                    Err(err) => {
                        drop(settings);
                        self.refuse(format!("gops \"{text}\" refused: {err}"));
                        return;
                    }
                }
            }
            "assignment" => {
                // Validated straight from the structure: no string round trip.
                let structure: Option<gst::Structure> = value.get().unwrap();
                let parsed = structure
                    .as_deref()
                    .ok_or_else(|| "no assignment (NULL)".to_string())
                    .and_then(|st| Self::parse_assignment(st, &settings));
                match parsed {
                    Ok((a, switch_gop)) => {
                        settings.request(a, switch_gop);
                        settings.refused = None;
                    }
                    Err(err) => {
                        drop(settings);
                        let text = structure.map_or_else(|| "NULL".to_string(), |s| s.to_string());
                        // GStreamer 1.22 ends a serialised structure with ';'.
                        let text = text.trim_end_matches(';');
                        self.refuse(format!("assignment \"{text}\" refused: {err}"));
                    }
                }
                return;
            }
            _ => unimplemented!(),
        }
        if changed != settings.desired {
            let switch_gop = settings.switch_gop;
            settings.request(changed, switch_gop);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let settings = crate::lock(&self.settings);
        match pspec.name() {
            "gop-duration" => settings.gop_duration.nseconds().to_value(),
            "grid-origin" => settings.grid_origin.nseconds().to_value(),
            "timeline" => settings.timeline.to_value(),
            "max-reorder" => settings.max_reorder.to_value(),
            "slot-index" => settings.desired.slot_index.to_value(),
            "slot-count" => settings.desired.slot_count.to_value(),
            "redundancy" => settings.desired.redundancy.to_value(),
            "copy-only" => settings.desired.copy_only.to_value(),
            "epoch" => settings.desired.epoch.to_value(),
            "switch-gop" => settings.switch_gop.to_value(),
            "gops" => gops_text(&settings.desired.gops).to_value(),
            "assignment" => {
                let a = &settings.desired;
                let mut s = gst::Structure::builder("assignment")
                    .field("index", a.slot_index)
                    .field("count", a.slot_count)
                    .field("redundancy", a.redundancy)
                    .field("copy-only", a.copy_only)
                    .field("epoch", a.epoch)
                    .field("switch-gop", settings.switch_gop)
                    .build();
                if a.gops.is_some() {
                    s.set("gops", gops_text(&a.gops));
                }
                s.to_value()
            }
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

impl GstObjectImpl for GopSelect {}

impl ElementImpl for GopSelect {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "GOP selector",
                "Filter/Video",
                &crate::inspect_description(
                    "Keeps the GOPs of a fixed GOP grid assigned to this swarm member (by slot or explicit set, with redundancy, or as a backup's copies) and marks each frame with its GOP and role; on parsed H.264/H.265 it selects before decoding and passes the needed pre-roll.",
                    "gopswarm-assignment-applied (gop: u64, epoch: u64, slots: string) when an assignment change lands on its GOP.",
                    "gop-duration and grid-origin in nanoseconds (ClockTime); slot-index, slot-count, redundancy, epoch, switch-gop and max-reorder are counts (GOPs, frames).",
                ),
                "gopswarm developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder_full()
                .structure(gst::Structure::new_empty("video/x-raw"))
                .structure(
                    gst::Structure::builder("video/x-h264")
                        .field("alignment", "au")
                        .build(),
                )
                .structure(
                    gst::Structure::builder("video/x-h265")
                        .field("alignment", "au")
                        .build(),
                )
                .build();
            let any_features = {
                let mut c = caps.clone();
                c.make_mut()
                    .set_features_simple(Some(gst::CapsFeatures::new_any()));
                c
            };
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &any_features,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &any_features,
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
            let settings = crate::lock(&self.settings).clone();
            if settings.desired.gops.is_none()
                && settings.desired.slot_index >= settings.desired.slot_count
            {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    [
                        "slot-index {} must be below slot-count {}",
                        settings.desired.slot_index,
                        settings.desired.slot_count
                    ]
                );
                return Err(gst::StateChangeError);
            }
            *crate::lock(&self.state) = Some(State::new(&settings));
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *crate::lock(&self.state) = None;
        }
        Ok(res)
    }
}
