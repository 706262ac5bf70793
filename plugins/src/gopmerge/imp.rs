// SPDX-License-Identifier: MPL-2.0
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Condvar, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gopswarm_chunk::{Chunk, ParityInfo, frame_flags};

use super::decode_order::{DtsStamper, Stamped};
use super::verify::{self, VerifyPayload};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gopmerge",
        gst::DebugColorFlags::empty(),
        Some("gopswarm partial stream merger"),
    )
});

const DEFAULT_LATENCY: gst::ClockTime = gst::ClockTime::ZERO;
const DEFAULT_MIN_EPOCH: u64 = 0;
const DEFAULT_START_GOP: i64 = -1;
/// Output timestamps sit this far above the timeline so B-frame DTS never go negative (the same
/// trick x264enc uses).
const OUTPUT_BASE: gst::ClockTime = gst::ClockTime::from_seconds(1000 * 3600);
/// Inputs are pads unless chunks of many hosts share one pad (MQTT).
const DEFAULT_INPUTS_BY_HOST: bool = false;
/// GOPs behind the output position for which received chunks are kept as parity shards.
const RETAIN_GOPS: u64 = 64;
/// GOPs ahead of the output a chunk may be for (a minute and more of 0.5 s GOPs; a forged
/// far-future GOP would otherwise sit in memory until the end).
const DEFAULT_MAX_AHEAD_GOPS: u64 = 128;
/// Bytes of chunks held for later GOPs and as parity shards.
const DEFAULT_MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;
/// Largest chunk accepted, in bytes (0: only the wire format's limit).
const DEFAULT_MAX_CHUNK_BYTES: u64 = 0;
/// How long the task sleeps without news before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
struct Settings {
    latency: gst::ClockTime,
    min_epoch: u64,
    start_gop: i64,
    stream_id: String,
    profile_id: String,
    inputs_by_host: bool,
    max_ahead_gops: u64,
    max_pending_bytes: u64,
    max_chunk_bytes: u64,
    verify_payload: VerifyPayload,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            latency: DEFAULT_LATENCY,
            min_epoch: DEFAULT_MIN_EPOCH,
            start_gop: DEFAULT_START_GOP,
            stream_id: String::new(),
            profile_id: String::new(),
            inputs_by_host: DEFAULT_INPUTS_BY_HOST,
            max_ahead_gops: DEFAULT_MAX_AHEAD_GOPS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES,
            verify_payload: VerifyPayload::default(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    chunks_in: u64,
    gops_out: u64,
    frames_out: u64,
    bytes_out: u64,
    duplicates: u64,
    late: u64,
    stale: u64,
    foreign: u64,
    corrupt: u64,
    parity_in: u64,
    recovered: u64,
    redundant_used: u64,
    lost: u64,
    /// Chunks for GOPs more than `max-ahead-gops` past the output, dropped.
    too_far_ahead: u64,
    /// Chunks over `max-chunk-bytes`, dropped.
    oversized: u64,
    /// Chunks dropped to stay within `max-pending-bytes` (the farthest GOPs go first).
    overflow: u64,
    /// Copies of GOPs whose payload failed `verify-payload` (a GOP with no good copy is also
    /// lost).
    rejected: u64,
    /// Frames whose DTS was pushed later to stay increasing where the reorder depth went up.
    dts_pushed: u64,
    /// Decode reorder depth in force (frames).
    reorder_frames: u64,
}

#[derive(Debug, Default)]
struct InputState {
    eos: bool,
    /// Pad the input's chunks come through (inputs by host).
    pad: String,
    /// A host input: its chunks can come out of order (resends after a transport outage),
    /// so having passed a GOP proves nothing; only its end does.
    by_host: bool,
    last_data_gop: Option<u64>,
    /// GOPs between the input's last two data chunks: its chunk for GOP k is only complete once
    /// its next GOP starts (`partialpay` closes a chunk there), `step` GOPs later.
    gop_step: Option<u64>,
    /// Highest GOP covered by a parity group this input sent.
    last_parity_gop: Option<u64>,
    fec_k: u8,
}

impl InputState {
    /// Whether this input can still deliver GOP `k` or a parity shard that rebuilds it.
    fn may_still_send(&self, k: u64) -> bool {
        if self.eos {
            return false;
        }
        if self.by_host {
            return true;
        }
        let past_data = self.last_data_gop.is_some_and(|g| g >= k);
        if self.fec_k == 0 {
            !past_data
        } else {
            !(past_data && self.last_parity_gop.is_some_and(|g| g >= k))
        }
    }
}

#[derive(Default)]
struct Copies {
    primary: Option<Chunk>,
    redundant: Option<Chunk>,
}

struct ParityGroup {
    host: String,
    info: ParityInfo,
    shards: Vec<Option<Vec<u8>>>,
}

struct State {
    inputs: HashMap<String, InputState>,
    /// Pads that ended (inputs by host: the stream is over once all of them did).
    pad_eos: std::collections::HashSet<String>,
    pending: BTreeMap<u64, Copies>,
    /// GOPs whose copy failed the payload check: the gap reason if no good copy comes.
    rejected: HashMap<u64, &'static str>,
    /// Whether the decode check's missing decoder was reported.
    decoder_missing_reported: bool,
    /// Serialised chunks by (host, GOP), kept as data shards for parity recovery.
    received: HashMap<(String, u64), Vec<u8>>,
    groups: Vec<ParityGroup>,
    next: Option<u64>,
    /// Newest GOP accepted from a host (inputs by host): the far-future window follows it.
    frontier: Option<u64>,
    /// When the GOP at `next` became overdue (a later GOP is here, it is not).
    overdue_since: Option<Instant>,
    first_arrival: Option<Instant>,
    stream_id: Option<String>,
    profile_id: Option<String>,
    caps: Option<String>,
    started: bool,
    discont: bool,
    eos_sent: bool,
    flushing: bool,
    /// GOP duration on the grid, from the chunks.
    gop_duration: Option<gst::ClockTime>,
    /// A GOP and its start on the timeline, to place GOPs that never came.
    grid: Option<(u64, gst::ClockTime)>,
    /// The latency this element adds, as last reported (LATENCY query and message).
    reported_latency: Option<gst::ClockTime>,
    /// Decode timestamps of the output, continuous across joins.
    stamper: DtsStamper,
    stats: Stats,
}

impl State {
    fn new() -> Self {
        State {
            inputs: HashMap::new(),
            pad_eos: Default::default(),
            pending: BTreeMap::new(),
            rejected: HashMap::new(),
            decoder_missing_reported: false,
            received: HashMap::new(),
            groups: Vec::new(),
            next: None,
            frontier: None,
            overdue_since: None,
            first_arrival: None,
            stream_id: None,
            profile_id: None,
            caps: None,
            started: false,
            discont: false,
            eos_sent: false,
            flushing: false,
            stamper: DtsStamper::default(),
            gop_duration: None,
            grid: None,
            reported_latency: None,
            stats: Stats::default(),
        }
    }

    /// The latency the merger adds to its inputs', once the GOP duration is known. A GOP goes
    /// out when its whole chunk is here, and an input's chunk for GOP k is complete when that
    /// input's next GOP starts: `step` GOPs after k starts (the slot count without redundancy).
    /// Until every input has shown its step, the number of inputs stands in (an input per slot).
    /// The `latency` property (the longest wait for a missing GOP) comes on top, as
    /// `GstAggregator` adds its own.
    fn added_latency(&self, settings: &Settings) -> Option<gst::ClockTime> {
        let gop = self.gop_duration?;
        let inputs = self.inputs.len().max(1) as u64;
        let live: Vec<&InputState> = self.inputs.values().filter(|i| !i.eos).collect();
        let steps = live
            .iter()
            .map(|i| i.gop_step.map(|s| s.min(inputs)))
            .collect::<Option<Vec<u64>>>();
        let hold_gops = match steps {
            Some(steps) if !steps.is_empty() => steps.into_iter().max().unwrap_or(inputs),
            _ => inputs,
        };
        Some(
            gop.saturating_mul(hold_gops)
                .saturating_add(settings.latency),
        )
    }

    fn all_inputs_ended(&self) -> bool {
        if self.inputs.is_empty() {
            // Inputs by host: pads that ended before any host spoke.
            return !self.pad_eos.is_empty();
        }
        // A host ended by `end-input` may be born again and send on its pad (a restart, a
        // rolling update): only the end of the pad it came through is final.
        self.inputs
            .values()
            .all(|i| i.eos && (!i.by_host || self.pad_eos.contains(&i.pad)))
    }

    fn any_input_may_send(&self, k: u64) -> bool {
        self.inputs.values().any(|i| i.may_still_send(k))
    }
}

/// What one step of the output task decided.
enum Step {
    Emit(Chunk),
    Gap { gop: u64, reason: &'static str },
    Eos,
    Wait(Duration),
}

pub struct GopMerge {
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    cond: Condvar,
}

impl GopMerge {
    fn sink_chain(
        &self,
        pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let bytes = match buffer.map_readable() {
            Ok(map) => map.to_vec(),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Read,
                    ["chunk buffer on {} not readable: {err}", pad.name()]
                );
                return Err(gst::FlowError::Error);
            }
        };
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let parsed = gopswarm_chunk::parse_owned(bytes);
        let mut messages = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.flushing {
                return Err(gst::FlowError::Flushing);
            }
            state.stats.chunks_in += 1;
            state.first_arrival.get_or_insert_with(Instant::now);
            match parsed {
                Ok(chunk) => self.accept(
                    &mut state,
                    &settings,
                    pad.name().as_str(),
                    chunk,
                    &mut messages,
                ),
                Err(err) => {
                    state.stats.corrupt += 1;
                    gst::warning!(CAT, obj = pad, "corrupt chunk dropped: {err}");
                }
            }
            let latency = state.added_latency(&settings);
            if latency != state.reported_latency {
                gst::info!(CAT, obj = pad, "added latency now {}", latency.display());
                state.reported_latency = latency;
                messages.push(gst::message::Latency::builder().src(&*self.obj()).build());
            }
        }
        self.cond.notify_all();
        for m in messages {
            let _ = self.obj().post_message(m);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn accept(
        &self,
        state: &mut State,
        settings: &Settings,
        input: &str,
        chunk: Chunk,
        _messages: &mut Vec<gst::Message>,
    ) {
        let h = &chunk.header;
        // One merger, one stream and profile: the first chunk decides unless the properties do.
        let want_stream = if settings.stream_id.is_empty() {
            state
                .stream_id
                .get_or_insert_with(|| h.stream_id.clone())
                .clone()
        } else {
            settings.stream_id.clone()
        };
        let want_profile = if settings.profile_id.is_empty() {
            state
                .profile_id
                .get_or_insert_with(|| h.profile_id.clone())
                .clone()
        } else {
            settings.profile_id.clone()
        };
        if h.stream_id != want_stream || h.profile_id != want_profile {
            state.stats.foreign += 1;
            gst::debug!(
                CAT,
                imp = self,
                "chunk of {}/{} ignored",
                h.stream_id,
                h.profile_id
            );
            return;
        }
        if h.epoch < settings.min_epoch {
            state.stats.stale += 1;
            gst::debug!(
                CAT,
                imp = self,
                "GOP {} from {} has stale epoch {} < {}",
                h.gop_index,
                h.host_id,
                h.epoch,
                settings.min_epoch
            );
            return;
        }
        if settings.max_chunk_bytes > 0 && chunk.bytes().len() as u64 > settings.max_chunk_bytes {
            state.stats.oversized += 1;
            gst::warning!(
                CAT,
                imp = self,
                "chunk of {} bytes for GOP {} from {} over max-chunk-bytes {}: dropped",
                chunk.bytes().len(),
                h.gop_index,
                h.host_id,
                settings.max_chunk_bytes
            );
            return;
        }
        // Hosts on the network: chunks for far-future GOPs and more bytes than the budget are
        // dropped. The window follows the newest GOP accepted (the first chunk sets it), so a
        // merger started late takes the GOPs of now; pad inputs (files) are never dropped.
        if settings.inputs_by_host {
            if let Some(frontier) = state.frontier
                && h.gop_index > frontier.saturating_add(settings.max_ahead_gops)
            {
                state.stats.too_far_ahead += 1;
                gst::debug!(
                    CAT,
                    imp = self,
                    "GOP {} from {} is more than {} GOPs past {frontier}: dropped",
                    h.gop_index,
                    h.host_id,
                    settings.max_ahead_gops
                );
                return;
            }
            if state.next.is_some_and(|next| h.gop_index < next) && !h.is_parity() && h.fec_k == 0 {
                state.stats.late += 1;
                return;
            }
            if !Self::make_room(state, settings, h.gop_index, chunk.bytes().len() as u64) {
                state.stats.overflow += 1;
                gst::warning!(
                    CAT,
                    imp = self,
                    "GOP {} from {}: {} bytes held already (max-pending-bytes): dropped",
                    h.gop_index,
                    h.host_id,
                    Self::bytes_held(state)
                );
                return;
            }
            state.frontier = state.frontier.max(Some(h.gop_index));
        }
        let key = if settings.inputs_by_host {
            h.host_id.clone()
        } else {
            input.to_string()
        };
        let input_state = state.inputs.entry(key.clone()).or_default();
        if settings.inputs_by_host {
            // A host that sends is alive again (ended by `end-input` after a false alarm).
            input_state.eos = false;
            input_state.pad = input.to_string();
            input_state.by_host = true;
        }
        if h.is_parity() {
            state.stats.parity_in += 1;
            let Ok((info, shard)) = ParityInfo::decode(chunk.payload()) else {
                state.stats.corrupt += 1;
                return;
            };
            let last = info.members.iter().map(|m| m.0).max().unwrap_or(0);
            input_state.last_parity_gop = input_state.last_parity_gop.max(Some(last));
            let host = h.host_id.clone();
            let first = info.members.first().map(|m| m.0);
            let index = info.index as usize;
            let shard = shard.to_vec();
            let existing = state
                .groups
                .iter_mut()
                .find(|g| g.host == host && g.info.members.first().map(|m| m.0) == first);
            match existing {
                Some(group) if group.info.members == info.members && group.info.m == info.m => {
                    match group.shards.get_mut(index) {
                        Some(slot) => *slot = Some(shard),
                        None => state.stats.corrupt += 1,
                    }
                }
                Some(_) => state.stats.corrupt += 1,
                None => {
                    let mut shards = vec![None; info.m as usize];
                    match shards.get_mut(index) {
                        Some(slot) => {
                            *slot = Some(shard);
                            state.groups.push(ParityGroup { host, info, shards });
                        }
                        None => state.stats.corrupt += 1,
                    }
                }
            }
            return;
        }

        let gop = h.gop_index;
        // Times from the wire: GST_CLOCK_TIME_NONE is no time, not a panic.
        if let Some(duration) = crate::clock_time(h.duration_ns).filter(|d| !d.is_zero()) {
            state.gop_duration = Some(duration);
        }
        if let Some(start) = crate::clock_time(h.start_ns) {
            state.grid = Some((gop, start));
        }
        let input_state = state.inputs.entry(key.clone()).or_default();
        if let Some(last) = input_state.last_data_gop.filter(|&l| gop > l) {
            input_state.gop_step = Some(gop - last);
        }
        input_state.last_data_gop = input_state.last_data_gop.max(Some(gop));
        input_state.fec_k = h.fec_k;
        if h.fec_k > 0 {
            // Parity was computed over the chunk as its encoder made it: without the
            // signature a swarm daemon may have added.
            let bytes = gopswarm_chunk::strip_signature(chunk.bytes().to_vec())
                .unwrap_or_else(|_| chunk.bytes().to_vec());
            state.received.insert((h.host_id.clone(), gop), bytes);
        }
        if state.next.is_some_and(|next| gop < next) {
            state.stats.late += 1;
            return;
        }
        let copies = state.pending.entry(gop).or_default();
        let slot = if h.is_redundant() {
            &mut copies.redundant
        } else {
            &mut copies.primary
        };
        if slot.is_some() {
            state.stats.duplicates += 1;
        } else {
            *slot = Some(chunk);
        }
    }

    /// Rebuild GOP `k` from a parity group, if some group holds enough shards.
    fn try_recover(&self, state: &mut State, k: u64) -> Option<Chunk> {
        for group in &state.groups {
            if !group.info.members.iter().any(|m| m.0 == k) {
                continue;
            }
            let data: Vec<Option<Vec<u8>>> = group
                .info
                .members
                .iter()
                .map(|(g, _)| state.received.get(&(group.host.clone(), *g)).cloned())
                .collect();
            let present = data.iter().flatten().count() + group.shards.iter().flatten().count();
            if present < group.info.k as usize {
                continue;
            }
            match gopswarm_chunk::recover_group(&group.info, &data, &group.shards) {
                Ok(rebuilt) => {
                    let pos = group.info.members.iter().position(|m| m.0 == k)?;
                    match gopswarm_chunk::parse_owned(rebuilt[pos].clone()) {
                        // A group rebuilds only its own host's chunks: parity from one host
                        // never stands in for another's GOP.
                        Ok(chunk)
                            if chunk.header.gop_index == k
                                && chunk.header.host_id == group.host =>
                        {
                            return Some(chunk);
                        }
                        Ok(_) | Err(_) => {
                            gst::warning!(
                                CAT,
                                imp = self,
                                "parity rebuilt a bad chunk for GOP {k}"
                            );
                        }
                    }
                }
                Err(err) => {
                    gst::warning!(CAT, imp = self, "parity recovery of GOP {k} failed: {err}")
                }
            }
        }
        None
    }

    /// GOP `gop`'s redundant copy, counted as used.
    fn take_redundant(state: &mut State, gop: u64) -> Option<Chunk> {
        let chunk = state.pending.get_mut(&gop)?.redundant.take()?;
        state.stats.redundant_used += 1;
        Some(chunk)
    }

    fn decide(&self, state: &mut State, settings: &Settings) -> Step {
        if state.flushing {
            return Step::Wait(IDLE_WAIT);
        }
        let latency = (settings.latency > gst::ClockTime::ZERO).then(|| settings.latency.into());
        let next = match state.next {
            Some(n) => n,
            None => {
                if settings.start_gop >= 0 {
                    state.next = Some(settings.start_gop as u64);
                    return self.decide(state, settings);
                }
                // The earliest GOP known to exist: received, or named by a parity group (which
                // reveals a lost first chunk).
                let first_named = state
                    .groups
                    .iter()
                    .flat_map(|g| g.info.members.iter().map(|m| m.0))
                    .min();
                let first_received = state.pending.keys().next().copied();
                let Some(first) = first_received.into_iter().chain(first_named).min() else {
                    if state.all_inputs_ended() {
                        return Step::Eos;
                    }
                    return Step::Wait(IDLE_WAIT);
                };
                // Start once every input has spoken (or ended) — inputs with parity once their
                // first group is complete — or the latency has passed.
                let all_heard = state.inputs.values().all(|i| {
                    i.eos
                        || (i.last_data_gop.is_some()
                            && (i.fec_k == 0 || i.last_parity_gop.is_some()))
                });
                let waited = match (latency, state.first_arrival) {
                    (Some(l), Some(t)) => t.elapsed() >= l,
                    _ => false,
                };
                if !(all_heard || waited) {
                    return Step::Wait(IDLE_WAIT);
                }
                state.next = Some(first);
                first
            }
        };

        // The redundant copy stays until the primary passed the payload check (`emitted`).
        if let Some(copies) = state.pending.get_mut(&next)
            && let Some(chunk) = copies.primary.take()
        {
            return Step::Emit(chunk);
        }
        let rejected = state.rejected.get(&next).copied();
        if rejected.is_some() {
            // The copy that came failed the check: a redundant one takes its place at once.
            if let Some(chunk) = Self::take_redundant(state, next) {
                return Step::Emit(chunk);
            }
        }
        // Parity rebuilds the chunk that failed the check as it was: no use trying.
        if rejected.is_none()
            && let Some(chunk) = self.try_recover(state, next)
        {
            state.stats.recovered += 1;
            return Step::Emit(chunk);
        }
        let later_exists = state.pending.range(next + 1..).next().is_some()
            || state
                .inputs
                .values()
                .any(|i| i.last_data_gop.is_some_and(|g| g > next));
        // Parity groups name their members, so they prove GOPs exist even after the last
        // data chunk that arrived.
        let known_to_exist = state
            .groups
            .iter()
            .any(|g| g.info.members.iter().any(|m| m.0 >= next));
        if !later_exists && !known_to_exist && state.all_inputs_ended() {
            // Nothing at or after `next` will ever come: the stream is complete.
            if rejected.is_none()
                && state
                    .pending
                    .get(&next)
                    .is_none_or(|c| c.redundant.is_none())
            {
                return Step::Eos;
            }
        }
        // No input known yet (inputs by host, nothing arrived): nothing is certain. Nor is a
        // GOP missing when neither it (a copy) nor anything after it is known to exist: every
        // host ended, but a host born again on an open pad may still send it.
        let certain = !state.inputs.is_empty()
            && !state.any_input_may_send(next)
            && (later_exists || known_to_exist || state.pending.contains_key(&next));
        let deadline_passed = match latency {
            Some(l) if later_exists || known_to_exist => {
                let since = *state.overdue_since.get_or_insert_with(Instant::now);
                since.elapsed() >= l
            }
            _ => false,
        };
        if certain || deadline_passed {
            if let Some(chunk) = Self::take_redundant(state, next) {
                return Step::Emit(chunk);
            }
            return Step::Gap {
                gop: next,
                reason: match rejected {
                    Some(reason) => reason,
                    None if certain => "missing",
                    None => "deadline",
                },
            };
        }
        match (latency, state.overdue_since) {
            (Some(l), Some(since)) => Step::Wait(l.saturating_sub(since.elapsed()).min(IDLE_WAIT)),
            _ => Step::Wait(IDLE_WAIT),
        }
    }

    /// Bytes of chunks held: pending GOPs, data shards and parity shards.
    fn bytes_held(state: &State) -> u64 {
        let pending: usize = state
            .pending
            .values()
            .flat_map(|c| [&c.primary, &c.redundant])
            .flatten()
            .map(|c| c.bytes().len())
            .sum();
        let received: usize = state.received.values().map(Vec::len).sum();
        let parity: usize = state
            .groups
            .iter()
            .flat_map(|g| g.shards.iter().flatten())
            .map(Vec::len)
            .sum();
        (pending + received + parity) as u64
    }

    /// Make room for `len` more bytes for GOP `gop` by dropping held GOPs after it, farthest
    /// first; false when it cannot fit (what is held is all for earlier GOPs).
    fn make_room(state: &mut State, settings: &Settings, gop: u64, len: u64) -> bool {
        // Never what goes out next: only GOPs after both this one and the output position.
        let gop = gop.max(state.next.unwrap_or(0));
        let mut held = Self::bytes_held(state);
        while held.saturating_add(len) > settings.max_pending_bytes {
            let farthest_pending = state
                .pending
                .keys()
                .next_back()
                .copied()
                .filter(|&g| g > gop);
            let farthest_received = state
                .received
                .keys()
                .filter(|(_, g)| *g > gop)
                .max_by_key(|(_, g)| *g)
                .cloned();
            match (farthest_pending, farthest_received) {
                (Some(p), Some((_, r))) if r > p => {
                    state.received.retain(|(_, g), _| *g != r);
                }
                (Some(p), _) => {
                    state.pending.remove(&p);
                }
                (None, Some((_, r))) => {
                    state.received.retain(|(_, g), _| *g != r);
                }
                (None, None) => {
                    // Parity groups last: they only rebuild, never carry a GOP themselves.
                    match state
                        .groups
                        .iter()
                        .position(|g| g.info.members.iter().all(|m| m.0 > gop))
                    {
                        Some(i) => {
                            state.groups.remove(i);
                        }
                        None => return false,
                    }
                }
            }
            state.stats.overflow += 1;
            held = Self::bytes_held(state);
        }
        true
    }

    /// Drop what no longer matters once GOP `done` is out.
    fn prune(state: &mut State, done: u64) {
        state.pending.retain(|&g, _| g > done);
        state.rejected.retain(|&g, _| g > done);
        let keep_from = done.saturating_sub(RETAIN_GOPS);
        state.received.retain(|(_, g), _| *g >= keep_from);
        state
            .groups
            .retain(|g| g.info.members.iter().any(|m| m.0 >= keep_from));
        state.overdue_since = None;
        state.next = Some(done + 1);
    }

    /// The chunk's frames as output buffers, with decode timestamps stamped across the join
    /// (see `decode_order`). Returns the buffers and what the stamper did.
    fn chunk_to_buffers(
        stamper: &mut DtsStamper,
        chunk: &Chunk,
        discont: bool,
    ) -> Result<(Vec<gst::Buffer>, Stamped), gopswarm_chunk::ChunkError> {
        let frames = gopswarm_chunk::decode_frames(chunk.payload())?;
        if frames.len() != chunk.header.frame_count as usize {
            return Err(gopswarm_chunk::ChunkError::Malformed("frame count"));
        }
        let out_of_range = || gopswarm_chunk::ChunkError::Malformed("frame time out of range");
        let start = i64::try_from(chunk.header.start_ns).map_err(|_| out_of_range())?;
        // Presentation times order the frames for decode timestamps. A frame without one (a
        // producer that stamps only DTS, as for streams without reordering) is shown when it
        // is decoded; a frame with neither cannot be placed, so the chunk is unreadable.
        let mut pts = Vec::with_capacity(frames.len());
        for f in &frames {
            let offset =
                f.pts_offset
                    .or(f.dts_offset)
                    .ok_or(gopswarm_chunk::ChunkError::Malformed(
                        "frame without timestamps",
                    ))?;
            let t = start
                .checked_add(offset)
                .filter(|t| {
                    t.checked_add(OUTPUT_BASE.nseconds() as i64)
                        .is_some_and(|o| o >= 0)
                })
                .ok_or_else(out_of_range)?;
            pts.push(t);
        }
        let frame_hint = frames
            .iter()
            .find_map(|f| f.duration)
            .and_then(|d| i64::try_from(d).ok());
        let stamped = stamper.stamp(
            chunk.header.gop_index,
            &pts,
            chunk.header.reorder_frames,
            frame_hint,
        );
        let to_ts = |t: i64| {
            (OUTPUT_BASE.nseconds() as i64)
                .checked_add(t)
                .and_then(|t| u64::try_from(t).ok())
                .map(gst::ClockTime::from_nseconds)
        };
        let mut out = Vec::with_capacity(frames.len());
        for (i, f) in frames.into_iter().enumerate() {
            let mut buffer = gst::Buffer::from_mut_slice(f.data);
            let b = buffer.get_mut().unwrap();
            b.set_pts(to_ts(pts[i]));
            b.set_dts(to_ts(stamped.dts[i]));
            b.set_duration(f.duration.and_then(crate::clock_time));
            let mut flags = gst::BufferFlags::empty();
            if f.flags & frame_flags::DELTA != 0 {
                flags |= gst::BufferFlags::DELTA_UNIT;
            }
            if f.flags & frame_flags::HEADER != 0 {
                flags |= gst::BufferFlags::HEADER;
            }
            if i == 0 && discont {
                flags |= gst::BufferFlags::DISCONT;
            }
            b.set_flags(flags);
            out.push(buffer);
        }
        Ok((out, stamped))
    }

    /// One iteration of the source pad task.
    fn output_loop(&self) {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut events = Vec::new();
        let mut messages = Vec::new();
        let mut buffers = Vec::new();
        let mut eos = false;
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.eos_sent || state.flushing {
                drop(state);
                let _ = self.srcpad.pause_task();
                return;
            }
            match self.decide(&mut state, &settings) {
                Step::Wait(d) => {
                    let _ = self.cond.wait_timeout(state, d);
                    return;
                }
                Step::Eos => {
                    state.eos_sent = true;
                    eos = true;
                    messages.push(self.summary(&state.stats));
                }
                Step::Gap { gop, reason } => {
                    messages.push(self.gap(&mut state, gop, reason));
                    Self::prune(&mut state, gop);
                }
                Step::Emit(chunk) => {
                    let gop = chunk.header.gop_index;
                    // The check (a decode, maybe) runs without the lock: chunks keep coming in.
                    drop(state);
                    let checked = self.check_payload(&settings, &chunk);
                    state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    if state.flushing {
                        return;
                    }
                    if let Err(rejection) = checked {
                        let message = self.reject(&mut state, &chunk, rejection);
                        drop(state);
                        let _ = self.obj().post_message(message);
                        return;
                    }
                    // This copy is good: a redundant one of the same GOP is a duplicate.
                    if state
                        .pending
                        .get_mut(&gop)
                        .and_then(|c| c.redundant.take())
                        .is_some()
                    {
                        state.stats.duplicates += 1;
                    }
                    if !state.started {
                        state.started = true;
                        // create_stream_id() refuses elements with several sink pads.
                        let id = format!(
                            "gopswarm/{}/{}",
                            chunk.header.stream_id, chunk.header.profile_id
                        );
                        events.push(gst::event::StreamStart::new(&id));
                    }
                    if state.caps.as_deref() != Some(chunk.header.codec.as_str()) {
                        match gst::Caps::from_str(&chunk.header.codec) {
                            Ok(caps) => {
                                let need_segment = state.caps.is_none();
                                state.caps = Some(chunk.header.codec.clone());
                                events.push(gst::event::Caps::new(&caps));
                                if need_segment {
                                    let mut segment =
                                        gst::FormattedSegment::<gst::ClockTime>::new();
                                    segment.set_start(OUTPUT_BASE);
                                    segment.set_position(OUTPUT_BASE);
                                    segment.set_time(gst::ClockTime::ZERO);
                                    events.push(gst::event::Segment::new(&segment));
                                }
                            }
                            Err(_) => {
                                gst::warning!(
                                    CAT,
                                    imp = self,
                                    "GOP {gop} dropped: its caps '{}' do not parse",
                                    chunk.header.codec
                                );
                                state.stats.corrupt += 1;
                                let gap = self.gap(&mut state, gop, "unparsable-caps");
                                Self::prune(&mut state, gop);
                                drop(state);
                                let _ = self.obj().post_message(gap);
                                return;
                            }
                        }
                    }
                    let discont = state.discont;
                    match Self::chunk_to_buffers(&mut state.stamper, &chunk, discont) {
                        Ok((b, stamped)) => {
                            if let Some((from, to)) = stamped.raised {
                                gst::warning!(
                                    CAT,
                                    imp = self,
                                    "GOP {gop} needs a decode reorder depth of {to} frames \
                                     (was {from}): decode delay grows here"
                                );
                                messages.push(
                                    gst::message::Element::builder(
                                        gst::Structure::builder("gopswarm-decode-delay")
                                            .field("gop", gop)
                                            .field("from-frames", from as u64)
                                            .field("to-frames", to as u64)
                                            .build(),
                                    )
                                    .src(&*self.obj())
                                    .build(),
                                );
                            }
                            state.stats.dts_pushed += stamped.pushed as u64;
                            state.stats.reorder_frames = state.stamper.depth().unwrap_or(0) as u64;
                            state.discont = false;
                            state.stats.gops_out += 1;
                            state.stats.frames_out += b.len() as u64;
                            state.stats.bytes_out += chunk.payload().len() as u64;
                            buffers = b;
                        }
                        Err(err) => {
                            gst::warning!(CAT, imp = self, "GOP {gop} unreadable: {err}");
                            state.stats.corrupt += 1;
                            messages.push(self.gap(&mut state, gop, "unreadable"));
                        }
                    }
                    Self::prune(&mut state, gop);
                }
            }
        }
        for e in events {
            self.srcpad.push_event(e);
        }
        for m in messages {
            let _ = self.obj().post_message(m);
        }
        for b in buffers {
            if let Err(err) = self.srcpad.push(b) {
                gst::debug!(CAT, imp = self, "pausing: {err:?}");
                match err {
                    gst::FlowError::Flushing => (),
                    // Downstream wants no more: end the stream properly so sinks finish.
                    gst::FlowError::Eos => {
                        self.srcpad.push_event(gst::event::Eos::new());
                    }
                    _ => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Failed,
                            ["Internal data flow error: {err:?}"]
                        );
                        self.srcpad.push_event(gst::event::Eos::new());
                    }
                }
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .eos_sent = true;
                let _ = self.srcpad.pause_task();
                return;
            }
        }
        if eos {
            self.srcpad.push_event(gst::event::Eos::new());
            let _ = self.srcpad.pause_task();
        }
    }

    /// Run the `verify-payload` check on a chunk about to go out.
    fn check_payload(&self, settings: &Settings, chunk: &Chunk) -> Result<(), verify::Rejection> {
        let mut mode = settings.verify_payload;
        if mode == VerifyPayload::None {
            return Ok(());
        }
        let codec = chunk.header.codec.split(',').next().unwrap_or("").trim();
        if mode == VerifyPayload::Decode && !verify::decoder_available(codec) {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !std::mem::replace(&mut state.decoder_missing_reported, true) {
                drop(state);
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::MissingPlugin,
                    [
                        "verify-payload=decode needs the {} element (gst-plugins-bad openh264); \
                         checking the structure only",
                        verify::H264_CHECK_DECODER
                    ]
                );
            }
            mode = VerifyPayload::Parse;
        }
        // Unreadable frame records are the caller's own gap (`unreadable`).
        let Ok(frames) = gopswarm_chunk::decode_frames(chunk.payload()) else {
            return Ok(());
        };
        verify::verify(mode, &chunk.header.codec, &frames)
    }

    /// A copy of a GOP failed the payload check: count it, remember the reason for the gap
    /// (unless a good copy comes) and build the `gopswarm-rejected` message.
    fn reject(
        &self,
        state: &mut State,
        chunk: &Chunk,
        rejection: verify::Rejection,
    ) -> gst::Message {
        let h = &chunk.header;
        gst::warning!(
            CAT,
            imp = self,
            "GOP {} from {} refused ({}): {}",
            h.gop_index,
            h.host_id,
            rejection.reason,
            rejection.detail
        );
        state.stats.rejected += 1;
        state.rejected.insert(h.gop_index, rejection.reason);
        gst::message::Element::builder(
            gst::Structure::builder("gopswarm-rejected")
                .field("gop", h.gop_index)
                .field("host", h.host_id.as_str())
                .field("redundant", h.is_redundant())
                .field("reason", rejection.reason)
                .field("detail", rejection.detail.as_str())
                .build(),
        )
        .src(&*self.obj())
        .build()
    }

    /// Count GOP `gop` as lost, flag the next buffer DISCONT and build its `gopswarm-gap`
    /// message: gop, reason, and where known its start on the timeline and its duration.
    fn gap(&self, state: &mut State, gop: u64, reason: &str) -> gst::Message {
        state.stats.lost += 1;
        state.discont = true;
        gst::warning!(CAT, imp = self, "GOP {gop} lost ({reason})");
        let mut s = gst::Structure::builder("gopswarm-gap")
            .field("gop", gop)
            .field("reason", reason)
            .build();
        if let (Some(duration), Some((known, known_start))) = (state.gop_duration, state.grid) {
            // GOP indices come from the wire: 128 bits and checked, so no index overflows.
            let start = (i128::from(gop) - i128::from(known))
                .checked_mul(i128::from(duration.nseconds()))
                .and_then(|offset| offset.checked_add(i128::from(known_start.nseconds())));
            if let Some(start) = start
                .and_then(|t| u64::try_from(t).ok())
                .and_then(crate::clock_time)
            {
                s.set("start", start);
                s.set("duration", duration);
            }
        }
        gst::message::Element::builder(s).src(&*self.obj()).build()
    }

    fn summary(&self, s: &Stats) -> gst::Message {
        gst::message::Element::builder(Self::stats_structure("gopswarm-merge-summary", s))
            .src(&*self.obj())
            .build()
    }

    fn stats_structure(name: &str, s: &Stats) -> gst::Structure {
        gst::Structure::builder(name)
            .field("chunks-in", s.chunks_in)
            .field("gops-out", s.gops_out)
            .field("frames-out", s.frames_out)
            .field("bytes-out", s.bytes_out)
            .field("duplicates", s.duplicates)
            .field("late", s.late)
            .field("stale", s.stale)
            .field("foreign", s.foreign)
            .field("corrupt", s.corrupt)
            .field("parity-in", s.parity_in)
            .field("recovered", s.recovered)
            .field("redundant-used", s.redundant_used)
            .field("lost", s.lost)
            .field("too-far-ahead", s.too_far_ahead)
            .field("oversized", s.oversized)
            .field("overflow", s.overflow)
            .field("rejected", s.rejected)
            .field("dts-pushed", s.dts_pushed)
            .field("reorder-frames", s.reorder_frames)
            .build()
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Eos(_) => {
                let by_host = self
                    .settings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .inputs_by_host;
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if by_host {
                    // Every host that came through this pad is done.
                    for i in state.inputs.values_mut().filter(|i| i.pad == pad.name()) {
                        i.eos = true;
                    }
                    state.pad_eos.insert(pad.name().to_string());
                } else {
                    state.inputs.entry(pad.name().to_string()).or_default().eos = true;
                }
                drop(state);
                self.cond.notify_all();
                true
            }
            EventView::FlushStart(_) => {
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .flushing = true;
                self.cond.notify_all();
                let res = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                res
            }
            EventView::FlushStop(_) => {
                {
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    let stats = state.stats.clone();
                    let inputs: Vec<String> = state.inputs.keys().cloned().collect();
                    *state = State::new();
                    state.stats = stats;
                    for name in inputs {
                        state.inputs.insert(name, InputState::default());
                    }
                }
                let res = self.srcpad.push_event(event);
                self.start_task();
                res
            }
            // Chunks carry their own codec caps and timing.
            EventView::Caps(_) | EventView::Segment(_) | EventView::StreamStart(_) => true,
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            // The inputs' latency (the largest minimum over every sink pad), plus what
            // waiting for whole GOPs adds.
            let mut upstream = gst::query::Latency::new();
            if !gst::Pad::query_default(pad, Some(&*self.obj()), &mut upstream) {
                return false;
            }
            let (live, min, max) = upstream.result();
            let settings = self
                .settings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let added = state.added_latency(&settings);
            state.reported_latency = added;
            drop(state);
            let added = added.unwrap_or(gst::ClockTime::ZERO);
            gst::debug!(
                CAT,
                obj = pad,
                "latency: upstream {min}..{}, adding {added}",
                max.display()
            );
            q.set(live, min + added, max.map(|m| m + added));
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn start_task(&self) {
        let this = self.downgrade();
        let _ = self.srcpad.start_task(move || {
            if let Some(this) = this.upgrade() {
                this.output_loop();
            }
        });
    }
}

#[glib::object_subclass]
impl ObjectSubclass for GopMerge {
    const NAME: &'static str = "GstGopMerge";
    type Type = super::GopMerge;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .event_function(|pad, parent, event| {
                GopMerge::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| match event.view() {
                        // Chunks arrive in GOP order from live producers: no seeking.
                        gst::EventView::Seek(_) => false,
                        // Chunks are whole GOPs: an upstream encoder (or its decoder, scaler)
                        // that skips late frames breaks them. Lateness downstream is answered
                        // with the latency, not by dropping frames upstream.
                        gst::EventView::Qos(_) => {
                            gst::log!(CAT, obj = pad, "QoS event not forwarded upstream");
                            true
                        }
                        _ => gst::Pad::event_default(pad, Some(&*this.obj()), event),
                    },
                )
            })
            .query_function(|pad, parent, query| {
                GopMerge::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.src_query(pad, query),
                )
            })
            .build();
        GopMerge {
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::new()),
            cond: Condvar::new(),
        }
    }
}

impl ObjectImpl for GopMerge {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt64::builder("latency")
                    .nick("Latency")
                    .blurb("How long to wait for a missing GOP once a later one has arrived before reporting a gap, in nanoseconds (0: wait until every input has moved past it or ended); added to the reported latency")
                    .maximum(gst::ClockTime::MAX.nseconds())
                    .default_value(DEFAULT_LATENCY.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("min-epoch")
                    .nick("Minimum epoch")
                    .blurb("Chunks from assignments older than this epoch (a count) are stale and ignored")
                    .default_value(DEFAULT_MIN_EPOCH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecInt64::builder("start-gop")
                    .nick("Start GOP")
                    .blurb("First GOP of the output, a GOP index (-1: the earliest GOP received once every input has delivered or ended)")
                    .minimum(-1)
                    .default_value(DEFAULT_START_GOP)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream ID")
                    .blurb("Only merge chunks of this stream (empty: the first chunk's stream)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("profile-id")
                    .nick("Profile ID")
                    .blurb("Only merge chunks of this profile (empty: the first chunk's profile)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("inputs-by-host")
                    .nick("Inputs by host")
                    .blurb("Track inputs by the chunks' host id instead of by pad (many hosts on one pad, e.g. chunks from MQTT); end a dead host's input with the end-input action signal")
                    .default_value(DEFAULT_INPUTS_BY_HOST)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-ahead-gops")
                    .nick("Maximum GOPs ahead")
                    .blurb("With inputs-by-host: chunks for GOPs more than this many GOPs (a count) past the newest GOP taken are dropped and counted as too-far-ahead, so forged far-future GOPs cannot fill memory")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_AHEAD_GOPS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-pending-bytes")
                    .nick("Maximum pending bytes")
                    .blurb("With inputs-by-host: bytes of chunks held for later GOPs and as parity shards; over it the farthest GOPs are dropped first (never the next one out) and counted as overflow")
                    .minimum(1024 * 1024)
                    .default_value(DEFAULT_MAX_PENDING_BYTES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-chunk-bytes")
                    .nick("Maximum chunk bytes")
                    .blurb("Largest chunk accepted, in bytes (a profile's bitrate x GOP duration with a margin); larger ones are dropped and counted as oversized (0: only the chunk format's limit)")
                    .default_value(DEFAULT_MAX_CHUNK_BYTES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecInt64::builder("next-gop")
                    .nick("Next GOP")
                    .blurb("Index of the next GOP to output (-1 until known)")
                    .minimum(-1)
                    .default_value(-1)
                    .read_only()
                    .build(),
                glib::ParamSpecEnum::builder::<VerifyPayload>("verify-payload")
                    .nick("Verify payload")
                    .blurb("Check each GOP's frames before it goes out: none (trust the inputs), parse (Annex-B structure, SPS/PPS/IDR at the start, SPS picture size = the caps'), decode (parse, then decode the GOP with openh264dec: every frame must come out). A GOP that fails is dropped and posts gopswarm-rejected; a good redundant copy takes its place, else it is a gap")
                    .default_value(VerifyPayload::default())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("chunks-in, gops-out, frames-out, bytes-out, duplicates, late, stale, foreign, corrupt, parity-in, recovered, redundant-used, lost, rejected (copies that failed verify-payload), too-far-ahead, oversized, overflow (chunks dropped by max-ahead-gops, max-chunk-bytes, max-pending-bytes), dts-pushed (frames whose DTS moved later where the reorder depth grew), reorder-frames (decode delay of the output in frames)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        match pspec.name() {
            // The range stops below GST_CLOCK_TIME_NONE, so this never panics.
            "latency" => settings.latency = gst::ClockTime::from_nseconds(value.get().unwrap()),
            "min-epoch" => settings.min_epoch = value.get().unwrap(),
            "start-gop" => settings.start_gop = value.get().unwrap(),
            "inputs-by-host" => settings.inputs_by_host = value.get().unwrap(),
            "max-ahead-gops" => settings.max_ahead_gops = value.get().unwrap(),
            "max-pending-bytes" => settings.max_pending_bytes = value.get().unwrap(),
            "max-chunk-bytes" => settings.max_chunk_bytes = value.get().unwrap(),
            "verify-payload" => settings.verify_payload = value.get().unwrap(),
            "stream-id" => {
                settings.stream_id = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            "profile-id" => {
                settings.profile_id = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            _ => unimplemented!(),
        }
        drop(settings);
        self.cond.notify_all();
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            let stats = self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stats
                .clone();
            return Self::stats_structure("gopmerge-stats", &stats).to_value();
        }
        if pspec.name() == "next-gop" {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            return state
                .next
                .and_then(|n| i64::try_from(n).ok())
                .unwrap_or(-1)
                .to_value();
        }
        let settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        match pspec.name() {
            "latency" => settings.latency.nseconds().to_value(),
            "min-epoch" => settings.min_epoch.to_value(),
            "start-gop" => settings.start_gop.to_value(),
            "inputs-by-host" => settings.inputs_by_host.to_value(),
            "max-ahead-gops" => settings.max_ahead_gops.to_value(),
            "max-pending-bytes" => settings.max_pending_bytes.to_value(),
            "max-chunk-bytes" => settings.max_chunk_bytes.to_value(),
            "verify-payload" => settings.verify_payload.to_value(),
            "stream-id" => settings.stream_id.to_value(),
            "profile-id" => settings.profile_id.to_value(),
            _ => unimplemented!(),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // end-input(name): the input (a pad name, or a host id with inputs-by-host)
                // will send nothing more, e.g. its host died: stop waiting for it.
                glib::subclass::Signal::builder("end-input")
                    .param_types([String::static_type()])
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::GopMerge>().expect("gopmerge");
                        let imp = element.imp();
                        // The name comes from the network (a host id): a NULL one is refused,
                        // not a panic.
                        let Ok(Some(name)) = args[1].get::<Option<String>>() else {
                            gst::warning!(
                                CAT,
                                imp = imp,
                                "end-input without an input name ignored"
                            );
                            return None;
                        };
                        imp.state
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .inputs
                            .entry(name)
                            .or_default()
                            .eos = true;
                        imp.cond.notify_all();
                        None
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for GopMerge {}

impl ElementImpl for GopMerge {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "gopswarm GOP merger",
                "Codec/Muxer/Video",
                &crate::inspect_description(
                    "Merges gopswarm partial streams into one frame-exact encoded stream: orders \
                     chunks by GOP, drops duplicate, stale and corrupt copies, rebuilds lost \
                     chunks from Reed-Solomon parity and reports gaps. Its latency is the \
                     inputs' plus GOP duration x the GOPs between an input's chunks plus \
                     `latency`.",
                    "gopswarm-gap (gop: u64, reason: missing|deadline|unparsable-caps|unreadable|\
                     invalid-payload|undecodable, start: ClockTime ns, duration: ClockTime ns); \
                     gopswarm-rejected (gop: u64, host: string, redundant: bool, reason: \
                     invalid-payload|undecodable, detail: string); gopswarm-decode-delay (gop, \
                     from-frames, to-frames: u64); gopswarm-merge-summary at EOS (the stats \
                     fields, u64).",
                    "latency in nanoseconds (ClockTime); min-epoch and start-gop are counts.",
                ),
                "gopswarm developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
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
                    "sink_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &gst::Caps::builder(crate::PARTIAL_CAPS_NAME).build(),
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

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                let existing: Vec<String> = self
                    .obj()
                    .sink_pads()
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect();
                (0..)
                    .map(|i| format!("sink_{i}"))
                    .find(|n| !existing.contains(n))
                    .unwrap()
            }
        };
        let pad = gst::Pad::builder_from_template(templ)
            .name(name.as_str())
            .chain_function(|pad, parent, buffer| {
                GopMerge::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                GopMerge::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .build();
        if !self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inputs_by_host
        {
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .inputs
                .insert(name, InputState::default());
        }
        pad.set_active(true).ok()?;
        self.obj().add_pad(&pad).ok()?;
        Some(pad)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        // A released input will send nothing more: treat it as ended.
        if let Some(input) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inputs
            .get_mut(pad.name().as_str())
        {
            input.eos = true;
        }
        self.cond.notify_all();
        let _ = pad.set_active(false);
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::NullToReady => {
                // Asked to decode-check and unable to: fail now, not quietly check less.
                let mode = self
                    .settings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .verify_payload;
                if mode == VerifyPayload::Decode
                    && gst::ElementFactory::find(verify::H264_CHECK_DECODER).is_none()
                {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::MissingPlugin,
                        [
                            "verify-payload=decode needs the {} element (gst-plugins-bad, openh264)",
                            verify::H264_CHECK_DECODER
                        ]
                    );
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::ReadyToPaused => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let inputs: Vec<String> = state.inputs.keys().cloned().collect();
                *state = State::new();
                for name in inputs {
                    state.inputs.insert(name, InputState::default());
                }
            }
            gst::StateChange::PausedToReady => {
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .flushing = true;
                self.cond.notify_all();
                let _ = self.srcpad.stop_task();
            }
            _ => (),
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToPaused {
            self.start_task();
        }
        Ok(res)
    }
}
