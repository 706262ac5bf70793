// SPDX-License-Identifier: MPL-2.0
//! `gopmerge` rules, fed synthetic chunks from several appsrc inputs.

use gopswarm_chunk::{ChunkHeader, FrameRecord, ParityInfo, encode_frames, flags, frame_flags};
use gopswarm_test_support::init;
use gst::prelude::*;
use std::time::Duration;

const FRAME: u64 = 40_000_000;
const GOP: u64 = 200_000_000; // 5 frames
const OUTPUT_BASE: u64 = 1000 * 3600 * 1_000_000_000;
const CODEC: &str = "video/x-h264, stream-format=(string)byte-stream, alignment=(string)au, width=(int)16, height=(int)16";

#[derive(Clone)]
struct Spec {
    gop: u64,
    host: &'static str,
    flags: u8,
    epoch: u64,
    fec: (u8, u8),
    profile: &'static str,
    codec: &'static str,
}

fn spec(gop: u64, host: &'static str) -> Spec {
    Spec {
        gop,
        host,
        flags: 0,
        epoch: 1,
        fec: (0, 0),
        profile: "p",
        codec: CODEC,
    }
}

fn chunk(s: &Spec) -> Vec<u8> {
    chunk_with_durations(s, GOP, FRAME)
}

/// A chunk whose grid duration and frame durations are `gop_ns` and `frame_ns` on the wire.
fn chunk_with_durations(s: &Spec, gop_ns: u64, frame_ns: u64) -> Vec<u8> {
    let frames: Vec<FrameRecord> = (0..5)
        .map(|i| FrameRecord {
            pts_offset: Some((i * FRAME) as i64),
            dts_offset: Some((i * FRAME) as i64),
            duration: Some(frame_ns),
            flags: if i == 0 { 0 } else { frame_flags::DELTA },
            data: format!("{}:{}:{}", s.host, s.gop, i).into_bytes(),
        })
        .collect();
    let header = ChunkHeader {
        flags: s.flags,
        gop_index: s.gop,
        start_ns: s.gop * GOP,
        duration_ns: gop_ns,
        frame_count: 5,
        epoch: s.epoch,
        fec_k: s.fec.0,
        fec_m: s.fec.1,
        stream_id: "s".into(),
        profile_id: s.profile.into(),
        host_id: s.host.into(),
        codec: s.codec.into(),
        ..Default::default()
    };
    gopswarm_chunk::serialize(&header, &encode_frames(&frames)).unwrap()
}

fn parity(host: &'static str, members: &[Vec<u8>], gops: &[u64]) -> Vec<u8> {
    let refs: Vec<&[u8]> = members.iter().map(|m| m.as_slice()).collect();
    let shard = gopswarm_chunk::make_parity(&refs, 1).unwrap().remove(0);
    let info = ParityInfo {
        k: members.len() as u8,
        m: 1,
        index: 0,
        members: gops
            .iter()
            .zip(members)
            .map(|(g, m)| (*g, m.len() as u32))
            .collect(),
    };
    let header = ChunkHeader {
        flags: flags::PARITY,
        gop_index: *gops.last().unwrap(),
        start_ns: gops[0] * GOP,
        duration_ns: GOP,
        epoch: 1,
        fec_k: members.len() as u8,
        fec_m: 1,
        stream_id: "s".into(),
        profile_id: "p".into(),
        host_id: host.into(),
        ..Default::default()
    };
    gopswarm_chunk::serialize(&header, &info.encode(&shard)).unwrap()
}

struct Merged {
    /// (pts - base, data, discont) per output buffer.
    buffers: Vec<(u64, String, bool)>,
    caps: Vec<String>,
    messages: Vec<gst::Structure>,
    stats: gst::Structure,
}

impl Merged {
    fn data(&self) -> Vec<&str> {
        self.buffers.iter().map(|b| b.1.as_str()).collect()
    }
    /// `host:gop` of the first frame of every output GOP.
    fn gops(&self) -> Vec<String> {
        self.buffers
            .iter()
            .filter(|b| b.1.ends_with(":0"))
            .map(|b| b.1.strip_suffix(":0").unwrap().to_string())
            .collect()
    }
    fn stat(&self, f: &str) -> u64 {
        self.stats.get::<u64>(f).unwrap()
    }
}

/// Run gopmerge over `inputs` (one list of serialised chunks each). Inputs with `ends[i] ==
/// false` never send EOS, like a host whose connection hangs.
/// appsrc inputs (one per partial stream) -> gopmerge -> appsink, PLAYING, chunks pushed.
fn start(
    inputs: Vec<Vec<Vec<u8>>>,
    ends: Vec<bool>,
    props: &[(&str, &str)],
    before_play: impl FnOnce(&gst_app::AppSink),
) -> (gst::Pipeline, gst::Element, gst_app::AppSink) {
    init();
    let pipeline = gst::Pipeline::new();
    let merger = gst::ElementFactory::make("gopmerge").build().unwrap();
    for (k, v) in props {
        merger.set_property_from_str(k, v);
    }
    // appsink would hold EOS until every sample is pulled; we pull after EOS.
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .wait_on_eos(false)
        .build();
    pipeline.add_many([&merger, sink.upcast_ref()]).unwrap();
    merger.link(&sink).unwrap();
    let mut srcs = Vec::new();
    for _ in &inputs {
        let src = gst_app::AppSrc::builder()
            .caps(&gst::Caps::builder(gstgopswarm::PARTIAL_CAPS_NAME).build())
            .format(gst::Format::Time)
            .build();
        pipeline.add(&src).unwrap();
        src.link(&merger).unwrap();
        srcs.push(src);
    }
    before_play(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    for ((src, chunks), end) in srcs.iter().zip(inputs).zip(ends) {
        for c in chunks {
            src.push_buffer(gst::Buffer::from_slice(c)).unwrap();
        }
        if end {
            src.end_of_stream().unwrap();
        }
    }
    (pipeline, merger, sink)
}

fn output_buffer(sample: &gst::Sample) -> (u64, String, bool) {
    let b = sample.buffer().unwrap();
    (
        b.pts().unwrap().nseconds() - OUTPUT_BASE,
        String::from_utf8(b.map_readable().unwrap().to_vec()).unwrap(),
        b.flags().contains(gst::BufferFlags::DISCONT),
    )
}

fn merge(inputs: Vec<Vec<Vec<u8>>>, ends: Vec<bool>, props: &[(&str, &str)]) -> Merged {
    let caps_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = caps_seen.clone();
    let (pipeline, merger, sink) = start(inputs, ends, props, move |sink| {
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ref e)) = info.data
                    && let gst::EventView::Caps(c) = e.view()
                {
                    seen.lock().unwrap().push(c.caps().to_string());
                }
                gst::PadProbeReturn::Ok
            },
        );
    });
    let bus = pipeline.bus().unwrap();
    let mut messages = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(20))
            .expect("merger finished within 20 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("error: {} {:?}", e.error(), e.debug()),
            gst::MessageView::Element(_) => messages.push(msg.structure().unwrap().to_owned()),
            _ => (),
        }
    }
    let mut buffers = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        buffers.push(output_buffer(&sample));
    }
    let stats = merger.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let caps = caps_seen.lock().unwrap().clone();
    Merged {
        buffers,
        caps,
        messages,
        stats,
    }
}

#[test]
fn orders_interleaved_partial_streams_with_exact_timestamps() {
    let a = [0, 2, 4].iter().map(|&g| chunk(&spec(g, "a"))).collect();
    let b = [1, 3, 5].iter().map(|&g| chunk(&spec(g, "b"))).collect();
    let m = merge(vec![a, b], vec![true, true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "b:3", "a:4", "b:5"]);
    let pts: Vec<u64> = m.buffers.iter().map(|b| b.0).collect();
    assert_eq!(pts, (0..30).map(|i| i * FRAME).collect::<Vec<_>>());
    assert!(m.buffers.iter().all(|b| !b.2), "no DISCONT without a gap");
    assert_eq!(m.caps.len(), 1);
    assert!(m.caps[0].starts_with("video/x-h264"));
    assert_eq!(m.stat("gops-out"), 6);
    assert_eq!(m.stat("frames-out"), 30);
    assert_eq!(m.stat("lost"), 0);
    let summary = m
        .messages
        .iter()
        .find(|s| s.name() == "gopswarm-merge-summary")
        .unwrap();
    assert_eq!(summary.get::<u64>("gops-out").unwrap(), 6);
}

#[test]
fn prefers_primary_and_drops_duplicate_copies() {
    let red = |g, h| Spec {
        flags: flags::REDUNDANT,
        ..spec(g, h)
    };
    // r = 1 over two slots: each host sends its primaries and a copy of the other's.
    let a = vec![
        chunk(&spec(0, "a")),
        chunk(&red(1, "a")),
        chunk(&spec(2, "a")),
        chunk(&red(3, "a")),
    ];
    let b = vec![
        chunk(&red(0, "b")),
        chunk(&spec(1, "b")),
        chunk(&red(2, "b")),
        chunk(&spec(3, "b")),
    ];
    let m = merge(vec![a, b], vec![true, true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "b:3"]);
    // A copy that arrives after its GOP went out counts as late rather than duplicate.
    assert_eq!(m.stat("duplicates") + m.stat("late"), 4);
    assert_eq!(m.stat("redundant-used"), 0);
}

#[test]
fn redundant_copy_fills_in_for_a_host_that_died() {
    let red = |g, h| Spec {
        flags: flags::REDUNDANT,
        ..spec(g, h)
    };
    // Host b dies after GOP 1: a's copies of 3 and 5 are used.
    let a = vec![
        chunk(&spec(0, "a")),
        chunk(&red(1, "a")),
        chunk(&spec(2, "a")),
        chunk(&red(3, "a")),
        chunk(&spec(4, "a")),
        chunk(&red(5, "a")),
    ];
    let b = vec![chunk(&red(0, "b")), chunk(&spec(1, "b"))];
    let m = merge(vec![a, b], vec![true, true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "a:3", "a:4", "a:5"]);
    assert_eq!(m.stat("redundant-used"), 2);
    assert_eq!(m.stat("lost"), 0);
}

#[test]
fn gap_is_reported_and_flagged() {
    let a = [0, 2, 4].iter().map(|&g| chunk(&spec(g, "a"))).collect();
    let b = [1, 5].iter().map(|&g| chunk(&spec(g, "b"))).collect();
    let m = merge(vec![a, b], vec![true, true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "a:4", "b:5"]);
    let gaps: Vec<u64> = m
        .messages
        .iter()
        .filter(|s| s.name() == "gopswarm-gap")
        .map(|s| s.get::<u64>("gop").unwrap())
        .collect();
    assert_eq!(gaps, vec![3]);
    let gap = m
        .messages
        .iter()
        .find(|s| s.name() == "gopswarm-gap")
        .unwrap();
    assert_eq!(gap.get::<&str>("reason").unwrap(), "missing");
    assert_eq!(
        gap.get::<gst::ClockTime>("start").unwrap().nseconds(),
        3 * GOP
    );
    assert_eq!(
        gap.get::<gst::ClockTime>("duration").unwrap().nseconds(),
        GOP
    );
    assert_eq!(m.stat("lost"), 1);
    let disconts: Vec<&str> = m
        .buffers
        .iter()
        .filter(|b| b.2)
        .map(|b| b.1.as_str())
        .collect();
    assert_eq!(disconts, vec!["a:4:0"]);
}

#[test]
fn clock_time_none_durations_on_the_wire_are_no_durations_not_a_panic() {
    // u64::MAX is GST_CLOCK_TIME_NONE: a chunk carrying it as the GOP or frame duration must
    // neither panic the merger nor become a bogus time.
    const NONE: u64 = u64::MAX;
    let hostile = |g, host| chunk_with_durations(&spec(g, host), NONE, NONE);
    let a = [0, 2, 4].iter().map(|&g| hostile(g, "a")).collect();
    let b = [1, 5].iter().map(|&g| hostile(g, "b")).collect();
    let m = merge(vec![a, b], vec![true, true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "a:4", "b:5"]);
    assert_eq!(m.stat("frames-out"), 25);
    let gap = m
        .messages
        .iter()
        .find(|s| s.name() == "gopswarm-gap")
        .expect("GOP 3 reported");
    assert_eq!(gap.get::<u64>("gop").unwrap(), 3);
    assert!(
        !gap.has_field("start") && !gap.has_field("duration"),
        "no grid time without a GOP duration: {gap}"
    );
}

#[test]
fn parity_rebuilds_a_lost_chunk_byte_identically() {
    let fec = |g| Spec {
        fec: (2, 1),
        ..spec(g, "a")
    };
    let data: Vec<Vec<u8>> = (0..4).map(|g| chunk(&fec(g))).collect();
    let p01 = parity("a", &data[0..2], &[0, 1]);
    let p23 = parity("a", &data[2..4], &[2, 3]);
    let full = merge(
        vec![vec![
            data[0].clone(),
            data[1].clone(),
            p01.clone(),
            data[2].clone(),
            data[3].clone(),
            p23.clone(),
        ]],
        vec![true],
        &[],
    );
    // One chunk of each group lost in transport.
    let lossy = merge(
        vec![vec![data[0].clone(), p01, data[3].clone(), p23]],
        vec![true],
        &[],
    );
    assert_eq!(full.data(), lossy.data());
    assert_eq!(lossy.stat("recovered"), 2);
    assert_eq!(lossy.stat("lost"), 0);
    assert_eq!(full.stat("recovered"), 0);
}

#[test]
fn two_losses_in_a_group_of_one_parity_are_a_reported_gap() {
    let fec = |g| Spec {
        fec: (3, 1),
        ..spec(g, "a")
    };
    let data: Vec<Vec<u8>> = (0..3).map(|g| chunk(&fec(g))).collect();
    let p = parity("a", &data, &[0, 1, 2]);
    let m = merge(
        vec![vec![data[0].clone(), p]],
        vec![true],
        &[("start-gop", "0")],
    );
    assert_eq!(m.gops(), vec!["a:0"]);
    assert_eq!(m.stat("lost"), 2);
}

#[test]
fn stale_foreign_and_corrupt_chunks_change_nothing() {
    let stale = Spec {
        epoch: 1,
        ..spec(1, "old")
    };
    let foreign = Spec {
        profile: "other",
        ..spec(1, "x")
    };
    let mut corrupt = chunk(&spec(2, "c"));
    let at = corrupt.len() - 7;
    corrupt[at] ^= 1;
    let current = |g| Spec {
        epoch: 2,
        ..spec(g, "a")
    };
    let a = (0..3).map(|g| chunk(&current(g))).collect();
    let b = vec![
        chunk(&stale),
        chunk(&foreign),
        corrupt,
        b"not a chunk at all".to_vec(),
    ];
    let m = merge(
        vec![a, b],
        vec![true, true],
        &[("min-epoch", "2"), ("profile-id", "p")],
    );
    assert_eq!(m.gops(), vec!["a:0", "a:1", "a:2"]);
    assert_eq!(m.stat("stale"), 1);
    assert_eq!(m.stat("foreign"), 1);
    assert_eq!(m.stat("corrupt"), 2);
    assert_eq!(m.stat("lost"), 0);
}

#[test]
fn latency_bounds_the_wait_for_a_hung_input() {
    // Input b delivered GOP 1 and then hangs without EOS: GOP 3 never comes.
    let a = [0, 2, 4].iter().map(|&g| chunk(&spec(g, "a"))).collect();
    let b = vec![chunk(&spec(1, "b"))];
    let start = std::time::Instant::now();
    let m = merge_until_gops(
        vec![a, b],
        vec![true, false],
        &[("latency", "300000000")],
        4,
    );
    assert_eq!(m.gops(), vec!["a:0", "b:1", "a:2", "a:4"]);
    let gap = m
        .messages
        .iter()
        .find(|s| s.name() == "gopswarm-gap")
        .unwrap();
    assert_eq!(gap.get::<u64>("gop").unwrap(), 3);
    assert_eq!(gap.get::<String>("reason").unwrap(), "deadline");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// Like `merge`, for inputs that never end: stop once `gops` GOPs came out.
fn merge_until_gops(
    inputs: Vec<Vec<Vec<u8>>>,
    ends: Vec<bool>,
    props: &[(&str, &str)],
    gops: usize,
) -> Merged {
    let (pipeline, merger, sink) = start(inputs, ends, props, |_| ());
    let mut buffers = Vec::new();
    while buffers.len() < gops * 5 {
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("output within 10 s");
        buffers.push(output_buffer(&sample));
    }
    let bus = pipeline.bus().unwrap();
    let messages = bus
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(_) => Some(m.structure().unwrap().to_owned()),
            _ => None,
        })
        .collect();
    let stats = merger.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    Merged {
        buffers,
        caps: vec![],
        messages,
        stats,
    }
}

#[test]
fn caps_follow_the_chunks() {
    let small = "video/x-h264, stream-format=(string)byte-stream, alignment=(string)au, width=(int)8, height=(int)8";
    let a = vec![
        chunk(&spec(0, "a")),
        chunk(&Spec {
            codec: small,
            ..spec(1, "a")
        }),
    ];
    let m = merge(vec![a], vec![true], &[]);
    assert_eq!(m.caps.len(), 2);
    assert!(m.caps[1].contains("width=(int)8"));
    assert_eq!(m.stat("frames-out"), 10);
}

#[test]
fn a_gop_with_unparsable_caps_is_a_reported_gap() {
    let a = vec![
        chunk(&spec(0, "a")),
        chunk(&Spec {
            codec: "video/x-h264, width=(int)",
            ..spec(1, "a")
        }),
        chunk(&spec(2, "a")),
    ];
    let m = merge(vec![a], vec![true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "a:2"]);
    let gaps: Vec<(u64, String)> = m
        .messages
        .iter()
        .filter(|s| s.name() == "gopswarm-gap")
        .map(|s| {
            (
                s.get::<u64>("gop").unwrap(),
                s.get::<String>("reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(gaps, vec![(1, "unparsable-caps".to_string())]);
    assert_eq!(m.stat("lost"), 1);
    assert_eq!(m.stat("corrupt"), 1);
}

#[test]
fn a_lost_first_chunk_is_rebuilt_not_skipped() {
    let fec = |g| Spec {
        fec: (2, 1),
        ..spec(g, "a")
    };
    let data: Vec<Vec<u8>> = (0..2).map(|g| chunk(&fec(g))).collect();
    let p = parity("a", &data, &[0, 1]);
    // GOP 0 never arrives; only parity names it.
    let m = merge(vec![vec![data[1].clone(), p]], vec![true], &[]);
    assert_eq!(m.gops(), vec!["a:0", "a:1"]);
    assert_eq!(m.stat("recovered"), 1);
}

#[test]
fn hosts_ended_by_end_input_can_come_back_while_their_pad_is_open() {
    // Chunks from MQTT: every host on one pad. Both hosts are restarted (a rolling update):
    // for a moment every host the merger knows has ended, yet the stream goes on.
    init();
    let pipeline = gst::Pipeline::new();
    let merger = gst::ElementFactory::make("gopmerge")
        .property("inputs-by-host", true)
        .build()
        .unwrap();
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .wait_on_eos(false)
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::builder(gstgopswarm::PARTIAL_CAPS_NAME).build())
        .format(gst::Format::Time)
        .build();
    pipeline
        .add_many([src.upcast_ref(), &merger, sink.upcast_ref()])
        .unwrap();
    gst::Element::link_many([src.upcast_ref(), &merger, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let push = |g: u64, h: &'static str| {
        src.push_buffer(gst::Buffer::from_slice(chunk(&spec(g, h))))
            .unwrap()
    };
    for (g, h) in [(0, "a"), (1, "b"), (2, "a"), (3, "b")] {
        push(g, h);
    }
    let mut out = Vec::new();
    while out.len() < 20 {
        let s = sink
            .try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("the first GOPs within 10 s");
        out.push(output_buffer(&s));
    }
    merger.emit_by_name::<()>("end-input", &[&"a"]);
    merger.emit_by_name::<()>("end-input", &[&"b"]);
    std::thread::sleep(Duration::from_millis(300));
    // Born again, on the same pad.
    for (g, h) in [(4, "b"), (5, "a")] {
        push(g, h);
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(
        matches!(
            eos.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{eos:?}"
    );
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        out.push(output_buffer(&s));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let gops: Vec<&str> = out
        .iter()
        .filter(|b| b.1.ends_with(":0"))
        .map(|b| b.1.strip_suffix(":0").unwrap())
        .collect();
    assert_eq!(gops, ["a:0", "b:1", "a:2", "b:3", "b:4", "a:5"]);
}

/// One 5-frame GOP in x264's B-pyramid decode order (I0 P3 B2 b1 P4), with the decode times
/// a host's encoder gives it: right for the host's first GOP, taken from the host's previous
/// GOP (colliding with the GOP before, which another host encoded) for the later ones.
fn b_frame_chunk(gop: u64, host: &'static str, first_of_host: bool) -> Vec<u8> {
    let order = [0u64, 3, 2, 1, 4];
    let host_dts: [i64; 5] = if first_of_host {
        [-2, -1, 0, 1, 2]
    } else {
        [-3, -3, 0, 1, 2]
    };
    let frames: Vec<FrameRecord> = order
        .iter()
        .zip(host_dts)
        .map(|(&p, d)| FrameRecord {
            pts_offset: Some((p * FRAME) as i64),
            dts_offset: Some(d * FRAME as i64),
            duration: Some(FRAME),
            flags: if p == 0 { 0 } else { frame_flags::DELTA },
            data: format!("{host}:{gop}:{p}").into_bytes(),
        })
        .collect();
    let header = ChunkHeader {
        gop_index: gop,
        start_ns: gop * GOP,
        duration_ns: GOP,
        frame_count: 5,
        epoch: 1,
        stream_id: "s".into(),
        profile_id: "p".into(),
        host_id: host.into(),
        codec: CODEC.into(),
        reorder_frames: Some(2),
        ..Default::default()
    };
    gopswarm_chunk::serialize(&header, &encode_frames(&frames)).unwrap()
}

#[test]
fn decode_timestamps_increase_across_every_join_with_one_decode_delay() {
    let a = vec![
        b_frame_chunk(0, "a", true),
        b_frame_chunk(2, "a", false),
        b_frame_chunk(4, "a", false),
    ];
    let b = vec![b_frame_chunk(1, "b", true), b_frame_chunk(3, "b", false)];
    let (pipeline, merger, sink) = start(vec![a, b], vec![true, true], &[], |_| ());
    let bus = pipeline.bus().unwrap();
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(matches!(
        eos.as_ref().map(|m| m.view()),
        Some(gst::MessageView::Eos(_))
    ));
    let mut ts = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        let b = s.buffer().unwrap();
        let pts = b.pts().unwrap().nseconds() as i64 - OUTPUT_BASE as i64;
        let dts =
            b.dts().expect("every output frame has a DTS").nseconds() as i64 - OUTPUT_BASE as i64;
        ts.push((pts, dts, !b.flags().contains(gst::BufferFlags::DELTA_UNIT)));
    }
    let stats = merger.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(ts.len(), 25);
    for (i, w) in ts.windows(2).enumerate() {
        assert!(
            w[1].1 > w[0].1,
            "DTS not increasing at frame {}: {ts:?}",
            i + 1
        );
    }
    assert!(ts.iter().all(|(p, d, _)| p >= d), "PTS before DTS: {ts:?}");
    // One encoder with a 2-frame reorder depth: frame n decoded at (n - 2) frames.
    let dts: Vec<i64> = ts.iter().map(|t| t.1).collect();
    let expected: Vec<i64> = (0..25).map(|n| (n - 2) * FRAME as i64).collect();
    assert_eq!(dts, expected);
    let delays: Vec<i64> = ts.iter().filter(|t| t.2).map(|t| t.0 - t.1).collect();
    assert_eq!(
        delays,
        vec![2 * FRAME as i64; 5],
        "decode delay at every keyframe"
    );
    assert_eq!(stats.get::<u64>("reorder-frames").unwrap(), 2);
    assert_eq!(stats.get::<u64>("dts-pushed").unwrap(), 0);
}

#[test]
fn end_input_without_a_name_is_ignored_not_a_panic() {
    init();
    let merger = gst::ElementFactory::make("gopmerge").build().unwrap();
    merger.emit_by_name::<()>("end-input", &[&None::<String>]);
    merger.emit_by_name::<()>("end-input", &[&"host-a"]);
}

/// `s`'s chunk with `bytes` of frame data.
fn chunk_of_size(s: &Spec, bytes: usize) -> Vec<u8> {
    let frames = vec![FrameRecord {
        pts_offset: Some(0),
        dts_offset: Some(0),
        duration: Some(GOP),
        flags: 0,
        data: vec![0x5a; bytes],
    }];
    let header = ChunkHeader {
        gop_index: s.gop,
        start_ns: s.gop * GOP,
        duration_ns: GOP,
        frame_count: 1,
        epoch: s.epoch,
        stream_id: "s".into(),
        profile_id: s.profile.into(),
        host_id: s.host.into(),
        codec: s.codec.into(),
        ..Default::default()
    };
    gopswarm_chunk::serialize(&header, &encode_frames(&frames)).unwrap()
}

#[test]
fn far_future_oversized_and_overflowing_chunks_are_dropped_and_counted() {
    // Hosts on one pad (as over MQTT), which stays open: the real GOPs 0..=4 set the window,
    // then far-future GOPs, an oversized chunk, and 400 kB chunks for GOPs 6..=9 that wait
    // behind the missing GOP 5 and overflow the 1 MiB budget.
    let mut chunks: Vec<Vec<u8>> = (0..5).map(|g| chunk(&spec(g, "a"))).collect();
    chunks.extend((0..100).map(|i| chunk(&spec(1_000 + i, "x"))));
    chunks.push(chunk_of_size(&spec(3, "x"), 600_000));
    chunks.extend((6..=9).map(|g| chunk_of_size(&spec(g, "y"), 400_000)));
    let (pipeline, merger, sink) = start(
        vec![chunks],
        vec![false],
        &[
            ("inputs-by-host", "true"),
            ("start-gop", "0"),
            ("max-ahead-gops", "10"),
            ("max-chunk-bytes", "500000"),
            ("max-pending-bytes", "1048576"),
        ],
        |_| {},
    );
    let stat = |f: &str| {
        merger
            .property::<gst::Structure>("stats")
            .get::<u64>(f)
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stat("gops-out") < 5 || stat("chunks-in") < 110 {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck: {:?}",
            merger.property::<gst::Structure>("stats")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut gops = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        gops.push(output_buffer(&sample).1);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    // Every frame of GOPs 0..=4 (five each), nothing else.
    let firsts: Vec<&str> = gops
        .iter()
        .filter(|g| g.ends_with(":0"))
        .map(String::as_str)
        .collect();
    assert_eq!(firsts, ["a:0:0", "a:1:0", "a:2:0", "a:3:0", "a:4:0"]);
    assert_eq!(gops.len(), 25);
    assert_eq!(stat("too-far-ahead"), 100);
    assert_eq!(stat("oversized"), 1);
    // 6 and 7 fit (800 kB); 8 and 9 would pass 1 MiB and nothing later is held to make room.
    assert_eq!(stat("overflow"), 2);
    assert_eq!(merger.property::<i64>("next-gop"), 5);
}

#[test]
fn pad_inputs_such_as_files_are_never_dropped_for_the_network_limits() {
    // Files run ahead of the output: with pad inputs the window and the budget do not apply.
    let a = (0..40).map(|g| chunk(&spec(g, "a"))).collect();
    let m = merge(
        vec![a],
        vec![true],
        &[("max-ahead-gops", "2"), ("max-pending-bytes", "1048576")],
    );
    assert_eq!(m.gops().len(), 40);
    assert_eq!(
        m.stat("too-far-ahead") + m.stat("overflow") + m.stat("lost"),
        0
    );
}
