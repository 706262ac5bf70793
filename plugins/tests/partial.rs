// SPDX-License-Identifier: MPL-2.0
//! `partialpay` and `partialdepay`: chunking, flags, parity, resynchronisation.

use gopswarm_chunk::{ParityInfo, decode_frames, flags, frame_flags};
use gopswarm_test_support::init;
use gst::glib;
use gst::prelude::*;
use gstgopswarm::meta::FrameInfo;

const FRAME: u64 = 40_000_000;
const GOP: u64 = 1_000_000_000;
const H264: &str =
    "video/x-h264, stream-format=byte-stream, alignment=au, width=16, height=16, framerate=25/1";

fn frame(n: u64, keyframe: bool, redundant: bool) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(format!("frame-{n}").into_bytes());
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(n * FRAME));
        b.set_dts(gst::ClockTime::from_nseconds(n * FRAME));
        b.set_duration(gst::ClockTime::from_nseconds(FRAME));
        if !keyframe {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        let gop = n * FRAME / GOP;
        FrameInfo {
            gop,
            gop_start: gop * GOP,
            gop_duration: GOP,
            time_offset: 0,
            epoch: 3,
            redundant,
            preroll: false,
        }
        .attach(b);
    }
    b
}

fn pay_harness(props: &[(&str, &str)]) -> gst_check::Harness {
    let mut h = gst_check::Harness::new("partialpay");
    for (k, v) in props {
        h.element().unwrap().set_property_from_str(k, v);
    }
    h.set_src_caps_str(H264);
    h
}

fn pulled_chunks(h: &mut gst_check::Harness) -> Vec<gopswarm_chunk::Chunk> {
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        let bytes = b.map_readable().unwrap().to_vec();
        out.push(gopswarm_chunk::parse_owned(bytes).expect("valid chunk"));
    }
    out
}

#[test]
fn one_chunk_per_gop_with_exact_frames() {
    init();
    let mut h = pay_harness(&[
        ("stream-id", "cam1"),
        ("profile-id", "p720"),
        ("host-id", "h1"),
    ]);
    // GOP 1 is a redundant copy; GOP 3 starts on a delta frame (broken encoder); EOS in GOP 4.
    for n in 0..75 {
        h.push(frame(n, n % 25 == 0, (25..50).contains(&n)))
            .unwrap();
    }
    for n in 75..100 {
        h.push(frame(n, false, false)).unwrap();
    }
    for n in 100..110 {
        h.push(frame(n, n == 100, false)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let chunks = pulled_chunks(&mut h);
    let gops: Vec<u64> = chunks.iter().map(|c| c.header.gop_index).collect();
    assert_eq!(gops, vec![0, 1, 2, 4]);
    for c in &chunks {
        let hd = &c.header;
        assert_eq!(
            (
                hd.stream_id.as_str(),
                hd.profile_id.as_str(),
                hd.host_id.as_str()
            ),
            ("cam1", "p720", "h1")
        );
        assert_eq!(hd.epoch, 3);
        assert_eq!(hd.start_ns, hd.gop_index * GOP);
        assert_eq!(hd.duration_ns, GOP);
        assert!(hd.codec.starts_with("video/x-h264"));
        let frames = decode_frames(c.payload()).unwrap();
        assert_eq!(frames.len() as u32, hd.frame_count);
        assert_eq!(
            frames[0].flags & frame_flags::DELTA,
            0,
            "starts on a keyframe"
        );
        for (i, f) in frames.iter().enumerate() {
            let n = hd.gop_index * 25 + i as u64;
            assert_eq!(f.data, format!("frame-{n}").into_bytes());
            assert_eq!(f.pts_offset, Some((i as u64 * FRAME) as i64));
        }
    }
    assert_eq!(chunks[0].header.frame_count, 25);
    assert!(chunks[1].header.is_redundant() && !chunks[0].header.is_redundant());
    assert_eq!(chunks[3].header.frame_count, 10);
    assert_ne!(
        chunks[3].header.flags & flags::SHORT,
        0,
        "EOS mid-GOP marks the chunk short"
    );
    assert_eq!(chunks[2].header.flags & flags::SHORT, 0);
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("dropped-gops").unwrap(), 1);
    assert_eq!(stats.get::<u64>("dropped-frames").unwrap(), 25);
    assert_eq!(stats.get::<u64>("chunks").unwrap(), 4);
}

#[test]
fn parity_after_every_group_and_at_eos() {
    init();
    let mut h = pay_harness(&[("fec-k", "2"), ("fec-m", "1")]);
    for n in 0..125 {
        h.push(frame(n, n % 25 == 0, false)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let chunks = pulled_chunks(&mut h);
    let kinds: Vec<(bool, u64)> = chunks
        .iter()
        .map(|c| (c.header.is_parity(), c.header.gop_index))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (false, 0),
            (false, 1),
            (true, 1),
            (false, 2),
            (false, 3),
            (true, 3),
            (false, 4),
            (true, 4)
        ]
    );
    // Each parity chunk rebuilds any one chunk of its group byte for byte.
    let (info, shard) = ParityInfo::decode(chunks[5].payload()).unwrap();
    assert_eq!(
        info.members.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let rebuilt = gopswarm_chunk::recover_group(
        &info,
        &[None, Some(chunks[4].bytes().to_vec())],
        &[Some(shard.to_vec())],
    )
    .unwrap();
    assert_eq!(rebuilt[0], chunks[3].bytes());
}

#[test]
fn caps_change_is_carried_per_chunk() {
    init();
    let mut h = pay_harness(&[]);
    for n in 0..25 {
        h.push(frame(n, n == 0, false)).unwrap();
    }
    h.set_src_caps_str(
        "video/x-h264, stream-format=byte-stream, alignment=au, width=8, height=8, framerate=25/1",
    );
    for n in 25..50 {
        h.push(frame(n, n == 25, false)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let chunks = pulled_chunks(&mut h);
    assert!(chunks[0].header.codec.contains("width=(int)16"));
    assert!(chunks[1].header.codec.contains("width=(int)8"));
}

#[test]
fn depay_resyncs_and_counts_what_it_dropped() {
    init();
    let mut pay = pay_harness(&[]);
    for n in 0..150 {
        pay.push(frame(n, n % 25 == 0, false)).unwrap();
    }
    pay.push_event(gst::event::Eos::new());
    let chunks: Vec<Vec<u8>> = pulled_chunks(&mut pay)
        .into_iter()
        .map(|c| c.into_bytes())
        .collect();
    assert_eq!(chunks.len(), 6);

    // Garbage first, chunk 1 truncated, chunk 3 with a flipped payload byte, garbage at the end.
    let mut stream = b"\x00\x01garbage GSWC not a chunk".to_vec();
    stream.extend(&chunks[0]);
    stream.extend(&chunks[1][..chunks[1].len() / 3]);
    stream.extend(&chunks[2]);
    let mut bad = chunks[3].clone();
    let at = bad.len() - 10;
    bad[at] ^= 0x55;
    stream.extend(bad);
    stream.extend(&chunks[4]);
    stream.extend(&chunks[5]);
    stream.extend(b"trailing junk");

    let mut h = gst_check::Harness::new("partialdepay");
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    h.set_src_caps_str("application/octet-stream");
    for piece in stream.chunks(1000) {
        h.push(gst::Buffer::from_slice(piece.to_vec())).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let mut got = Vec::new();
    while let Some(b) = h.try_pull() {
        got.push(b.map_readable().unwrap().to_vec());
    }
    assert_eq!(
        got,
        vec![
            chunks[0].clone(),
            chunks[2].clone(),
            chunks[4].clone(),
            chunks[5].clone()
        ]
    );
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("chunks").unwrap(), 4);
    assert!(stats.get::<u64>("corrupt").unwrap() >= 2, "{stats}");
    assert!(stats.get::<u64>("bytes-skipped").unwrap() > chunks[1].len() as u64 / 3);
    let resync_messages = bus
        .iter()
        .filter(|m| {
            m.structure()
                .is_some_and(|s| s.name() == "gopswarm-depay-resync")
        })
        .count();
    assert!(resync_messages >= 2);
    // Caps on the output say what it is.
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    assert_eq!(
        caps.structure(0).unwrap().name(),
        gstgopswarm::PARTIAL_CAPS_NAME
    );
}

#[test]
fn depay_survives_random_bytes() {
    init();
    let mut h = gst_check::Harness::new("partialdepay");
    h.set_src_caps_str("application/octet-stream");
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        let mut piece = vec![0u8; 997];
        for b in piece.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        // Sprinkle magics so the parser has to work.
        piece[100..104].copy_from_slice(b"GSWC");
        h.push(gst::Buffer::from_slice(piece)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    assert!(h.try_pull().is_none());
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("chunks").unwrap(), 0);
    assert_eq!(stats.get::<u64>("bytes-skipped").unwrap(), 200 * 997);
}

fn profile_event(reorder: impl Into<glib::Value> + Send) -> gst::Event {
    let s = gst::Structure::builder("gopswarm-profile")
        .field("reorder-frames", reorder)
        .build();
    gst::event::CustomDownstreamSticky::builder(s).build()
}

#[test]
fn chunks_declare_the_reorder_depth_of_the_profile_that_encoded_them() {
    init();
    let mut h = pay_harness(&[]);
    for n in 0..25 {
        h.push(frame(n, n == 0, false)).unwrap();
    }
    h.push_event(profile_event(2u32));
    for n in 25..50 {
        h.push(frame(n, n == 25, false)).unwrap();
    }
    // A profile change to one without B-frames (the field as an i32, as parsed from text):
    // GOP 1 keeps the depth it was encoded with.
    h.push_event(profile_event(0i32));
    for n in 50..75 {
        h.push(frame(n, n == 50, false)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let depths: Vec<Option<u8>> = pulled_chunks(&mut h)
        .iter()
        .map(|c| c.header.reorder_frames)
        .collect();
    assert_eq!(depths, vec![None, Some(2), Some(0)]);

    // The property wins over the profile.
    let mut h = pay_harness(&[("reorder-frames", "1")]);
    h.push_event(profile_event(2u32));
    for n in 0..25 {
        h.push(frame(n, n == 0, false)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    assert_eq!(pulled_chunks(&mut h)[0].header.reorder_frames, Some(1));
}

#[test]
fn profileenc_and_partialpay_declare_the_encoders_depth() {
    init();
    for (profile, depth) in [("h264, complexity=5", 2u8), ("h264, complexity=1", 0)] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=50 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! profileenc profile=\"{profile}, gop=1.0, bitrate=300\" ! partialpay gop-duration=1000000000 \
             ! appsink name=out sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut depths = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let bytes = sample.buffer().unwrap().map_readable().unwrap().to_vec();
            depths.push(
                gopswarm_chunk::parse_owned(bytes)
                    .unwrap()
                    .header
                    .reorder_frames,
            );
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(depths, vec![Some(depth); 2], "{profile}");
    }
}
