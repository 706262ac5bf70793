// SPDX-License-Identifier: MPL-2.0
//! Boundary cases of `gopselect`, driven through `gst_check::Harness`.

use gopswarm_test_support::init;
use gst::prelude::*;
use gstgopswarm::meta::FrameInfo;

const FRAME: u64 = 40_000_000; // 25 fps
const GOP: u64 = 1_000_000_000; // 25 frames

fn harness(props: &[(&str, &str)], caps: &str) -> gst_check::Harness {
    let mut h = gst_check::Harness::new("gopselect");
    let e = h.element().unwrap();
    e.set_property("gop-duration", GOP);
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    h.set_src_caps_str(caps);
    h
}

fn raw(h: &mut gst_check::Harness) {
    h.set_src_caps_str("video/x-raw, format=I420, width=16, height=16, framerate=25/1");
}

fn frame(pts: u64, dts: Option<u64>, keyframe: bool) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(8).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_dts(dts.map(gst::ClockTime::from_nseconds));
        b.set_duration(gst::ClockTime::from_nseconds(FRAME));
        if !keyframe {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
    }
    b
}

/// Every output buffer: (frame number by PTS, meta, discont).
fn drain(h: &mut gst_check::Harness) -> Vec<(u64, FrameInfo, bool)> {
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        let info = FrameInfo::from_buffer(&b).expect("every passed frame carries the meta");
        out.push((
            b.pts().unwrap().nseconds() / FRAME,
            info,
            b.flags().contains(gst::BufferFlags::DISCONT),
        ));
    }
    out
}

fn stat(h: &gst_check::Harness, field: &str) -> u64 {
    h.element()
        .unwrap()
        .property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap()
}

#[test]
fn raw_modulo_keeps_exactly_its_gops() {
    init();
    let mut h = harness(
        &[("slot-index", "1"), ("slot-count", "3"), ("epoch", "9")],
        "video/x-raw",
    );
    raw(&mut h);
    for i in 0..150 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    let frames: Vec<u64> = out.iter().map(|o| o.0).collect();
    let expected: Vec<u64> = (25..50).chain(100..125).collect();
    assert_eq!(frames, expected);
    for (n, info, discont) in &out {
        assert_eq!(info.gop, n / 25);
        assert_eq!(info.gop_start, info.gop * GOP);
        assert_eq!(info.epoch, 9);
        assert!(!info.redundant && !info.preroll);
        assert_eq!(
            *discont,
            n % 25 == 0,
            "DISCONT exactly on the first frame after a gap"
        );
    }
    assert_eq!(stat(&h, "frames-dropped"), 100);
    assert_eq!(stat(&h, "gops-kept"), 2);
}

/// Output buffers (as `drain` gives them) and each kept GOP with whether it is a copy.
type GopRoles = (
    Vec<(u64, FrameInfo, bool)>,
    std::collections::BTreeMap<u64, bool>,
);

/// Six 1 s GOPs of raw keyframes through a gopselect with `props`.
fn raw_gop_roles(props: &[(&str, &str)]) -> GopRoles {
    init();
    let mut h = harness(props, "video/x-raw");
    raw(&mut h);
    for i in 0..150 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    let gops = out.iter().map(|(_, i, _)| (i.gop, i.redundant)).collect();
    (out, gops)
}

#[test]
fn redundancy_marks_copies() {
    let (_, gops) = raw_gop_roles(&[
        ("slot-index", "0"),
        ("slot-count", "3"),
        ("redundancy", "1"),
    ]);
    // Primary for k % 3 == 0, redundant copy of slot 2 (k % 3 == 2).
    assert_eq!(
        gops.into_iter().collect::<Vec<_>>(),
        vec![(0, false), (2, true), (3, false), (5, true)]
    );
}

#[test]
fn copy_only_keeps_its_slot_as_copies() {
    let (out, gops) = raw_gop_roles(&[
        ("slot-index", "2"),
        ("slot-count", "3"),
        ("copy-only", "true"),
    ]);
    // Slot 2's GOPs (k % 3 == 2), every frame of them, each marked as a copy.
    assert_eq!(
        gops.into_iter().collect::<Vec<_>>(),
        vec![(2, true), (5, true)]
    );
    assert_eq!(out.len(), 50);
    assert!(out.iter().all(|(_, i, _)| i.redundant));
}

#[test]
fn a_backup_becomes_the_primary_at_the_switch_gop() {
    init();
    let mut h = harness(
        &[
            ("slot-index", "1"),
            ("slot-count", "2"),
            ("copy-only", "true"),
        ],
        "video/x-raw",
    );
    raw(&mut h);
    for i in 0..50 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    // The primary of slot 1 died: the backup takes the slot over from GOP 3.
    let e = h.element().unwrap();
    e.set_property_from_str(
        "assignment",
        "assignment, index=1, count=2, copy-only=false, epoch=4, switch-gop=3",
    );
    assert!(!e.property::<bool>("copy-only"));
    for i in 50..200 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let mut gops: Vec<(u64, bool, u64)> = drain(&mut h)
        .iter()
        .map(|(_, i, _)| (i.gop, i.redundant, i.epoch))
        .collect();
    gops.dedup();
    assert_eq!(
        gops,
        vec![(1, true, 0), (3, false, 4), (5, false, 4), (7, false, 4)]
    );
    e.set_property_from_str("assignment", "assignment, copy-only=maybe");
    assert!(
        !e.property::<bool>("copy-only"),
        "a bad value changes nothing"
    );
}

#[test]
fn reassignment_lands_on_the_switch_gop() {
    init();
    let mut h = harness(&[("slot-index", "0"), ("slot-count", "3")], "video/x-raw");
    raw(&mut h);
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    for i in 0..10 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    // 3-way to 2-way, effective at GOP 3; the old assignment would have kept GOP 3.
    h.element().unwrap().set_property(
        "assignment",
        gst::Structure::builder("assignment")
            .field("index", 0u32)
            .field("count", 2u32)
            .field("epoch", 5u64)
            .field("switch-gop", 3i64)
            .build(),
    );
    for i in 10..175 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    let mut gops: Vec<(u64, u64)> = out.iter().map(|(_, i, _)| (i.gop, i.epoch)).collect();
    gops.dedup();
    assert_eq!(gops, vec![(0, 0), (4, 5), (6, 5)]);
    assert_eq!(out.len(), 75, "whole GOPs only");
    // The harness plays from creation, so the initial properties post their own message first.
    let msg = bus
        .iter()
        .find(|m| {
            m.structure().is_some_and(|s| {
                s.name() == "gopswarm-assignment-applied" && s.get::<u64>("epoch") == Ok(5)
            })
        })
        .expect("assignment-applied message");
    let s = msg.structure().unwrap();
    assert_eq!(s.get::<u64>("gop").unwrap(), 3);
    assert_eq!(s.get::<u64>("epoch").unwrap(), 5);
}

#[test]
fn bad_assignment_changes_nothing() {
    init();
    let mut h = harness(&[("slot-index", "1"), ("slot-count", "2")], "video/x-raw");
    raw(&mut h);
    let e = h.element().unwrap();
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    e.set_property_from_str("assignment", "assignment, index=4, count=2");
    e.set_property("assignment", None::<gst::Structure>);
    e.set_property_from_str("assignment", "assignment, index=0, colour=blue");
    e.set_property("gops", "5-2");
    // Each one is an element error naming what is wrong, not a silent no-op.
    let errors: Vec<String> = bus
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Error(err) => Some(err.error().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].contains("index 4 is not below count 2"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("assignment \"NULL\" refused"),
        "{errors:?}"
    );
    assert!(errors[2].contains("unknown field 'colour'"), "{errors:?}");
    // The message quotes the structure the element received.
    assert!(
        errors[2]
            .starts_with("assignment \"assignment, index=(int)0, colour=(string)blue\" refused"),
        "{errors:?}"
    );
    assert!(errors[3].starts_with("gops \"5-2\" refused"), "{errors:?}");
    assert_eq!(e.property::<u32>("slot-index"), 1);
    assert_eq!(e.property::<String>("gops"), "");
    for i in 0..100 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let gops: Vec<u64> = drain(&mut h).iter().map(|o| o.1.gop).collect();
    assert!(gops.iter().all(|g| g % 2 == 1) && !gops.is_empty());
}

#[test]
fn assignment_string_on_a_launch_line_reads_back_as_a_structure() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=10 \
         ! gopselect name=sel assignment=\"assignment, index=1, count=3, epoch=7\" ! fakesink",
    )
    .unwrap();
    let sel = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("sel")
        .unwrap();
    let a = sel.property::<gst::Structure>("assignment");
    assert_eq!(a.name(), "assignment");
    assert_eq!(a.get::<u32>("index").unwrap(), 1);
    assert_eq!(a.get::<u32>("count").unwrap(), 3);
    assert_eq!(a.get::<u64>("epoch").unwrap(), 7);
    assert_eq!(a.get::<i64>("switch-gop").unwrap(), -1);
    assert!(!a.get::<bool>("copy-only").unwrap());
    assert!(!a.has_field("gops"));
    // Text that is no structure fails the launch line itself.
    let err =
        gst::parse::launch("videotestsrc ! gopselect assignment=\"not a structure {\" ! fakesink")
            .expect_err("a launch line with an assignment that is no structure is refused");
    assert!(err.to_string().contains("could not set property"), "{err}");
}

#[test]
fn bad_assignment_before_start_fails_the_pipeline() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=10 ! gopselect assignment=\"assignment, index=3, count=2\" \
         ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error");
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    let text = err.error().to_string();
    assert!(
        text.contains("refused") && text.contains("index 3 is not below count 2"),
        "{text}"
    );
}

#[test]
fn timestamp_gap_skipping_gops() {
    init();
    let mut h = harness(&[("slot-index", "0"), ("slot-count", "2")], "video/x-raw");
    raw(&mut h);
    // Frames 0..10, then nothing until frame 60 (GOP 2), then a gap inside GOP 2.
    let numbers: Vec<u64> = (0..10)
        .chain(60..66)
        .chain(70..75)
        .chain(100..110)
        .collect();
    for &i in &numbers {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    let frames: Vec<u64> = out.iter().map(|o| o.0).collect();
    assert_eq!(
        frames,
        (0..10)
            .chain(60..66)
            .chain(70..75)
            .chain(100..110)
            .collect::<Vec<_>>()
    );
    let disconts: Vec<u64> = out.iter().filter(|o| o.2).map(|o| o.0).collect();
    // Skipping whole GOPs is a discontinuity; a hole inside a GOP (66..70) is not.
    assert_eq!(disconts, vec![0, 60, 100]);
}

#[test]
fn a_grid_origin_later_than_any_frame_keeps_nothing_and_does_not_panic() {
    init();
    // The largest origin the property takes (GST_CLOCK_TIME_NONE - 1), with the longest GOP.
    let far = (u64::MAX - 1).to_string();
    let mut h = harness(
        &[
            ("grid-origin", far.as_str()),
            ("gop-duration", far.as_str()),
        ],
        "video/x-raw",
    );
    raw(&mut h);
    for i in 0..30 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    assert!(drain(&mut h).is_empty());
    assert_eq!(stat(&h, "frames-dropped"), 30);
    let e = h.element().unwrap();
    assert_eq!(e.property::<u64>("grid-origin"), u64::MAX - 1);
}

#[test]
fn a_shifted_grid_origin_moves_the_gop_starts() {
    init();
    // GOP 0 starts at 0.5 s: frames 0..=12 (up to 0.48 s) come before the grid.
    let mut h = harness(&[("grid-origin", "500000000")], "video/x-raw");
    raw(&mut h);
    for i in 0..50 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    assert_eq!(out.first().map(|o| o.0), Some(13));
    for (n, info, _) in &out {
        assert_eq!(info.gop, (n * FRAME - 500_000_000) / GOP);
        assert_eq!(info.gop_start, 500_000_000 + info.gop * GOP);
        assert_eq!(info.gop_duration, GOP);
    }
    assert_eq!(stat(&h, "frames-dropped"), 13);
}

#[test]
fn explicit_gop_set() {
    init();
    let mut h = harness(&[("gops", "1,3-4")], "video/x-raw");
    raw(&mut h);
    for i in 0..150 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let mut gops: Vec<u64> = drain(&mut h).iter().map(|o| o.1.gop).collect();
    gops.dedup();
    assert_eq!(gops, vec![1, 3, 4]);
}

#[test]
fn flush_resets_position() {
    init();
    let mut h = harness(&[("slot-index", "0"), ("slot-count", "2")], "video/x-raw");
    raw(&mut h);
    for i in 0..30 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    assert_eq!(drain(&mut h).len(), 25);
    // Seek back to 0: flush, new segment, frames start again from GOP 0.
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    for i in 0..30 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let out = drain(&mut h);
    assert_eq!(out.len(), 25);
    assert!(out[0].2, "first frame after the flush is DISCONT");
}

const H264: &str = "video/x-h264, stream-format=byte-stream, alignment=au";

#[test]
fn compressed_on_grid_needs_no_preroll_and_drops_leading_deltas() {
    init();
    let mut h = harness(&[("slot-index", "1"), ("slot-count", "2")], H264);
    // The stream starts on delta frames (joined mid-GOP): nothing decodable until the keyframe.
    for i in 0..5u64 {
        h.push(frame((20 + i) * FRAME, None, false)).unwrap();
    }
    for i in 25..150u64 {
        h.push(frame(i * FRAME, None, i % 25 == 0)).unwrap();
    }
    let out = drain(&mut h);
    let frames: Vec<u64> = out.iter().map(|o| o.0).collect();
    assert_eq!(
        frames,
        (25..50).chain(75..100).chain(125..150).collect::<Vec<_>>()
    );
    assert!(out.iter().all(|o| !o.1.preroll));
    assert_eq!(stat(&h, "preroll-frames"), 0);
}

#[test]
fn compressed_off_grid_passes_marked_preroll() {
    init();
    // Source keyframes every 40 frames (1.6 s) on a 1 s grid.
    let mut h = harness(
        &[
            ("slot-index", "1"),
            ("slot-count", "2"),
            ("max-reorder", "4"),
        ],
        H264,
    );
    for i in 0..200u64 {
        h.push(frame(i * FRAME, None, i % 40 == 0)).unwrap();
    }
    let out = drain(&mut h);
    let kept = |n: u64| (n / 25) % 2 == 1;
    // Every frame of a kept GOP is there, unmarked.
    let unmarked: Vec<u64> = out.iter().filter(|o| !o.1.preroll).map(|o| o.0).collect();
    assert_eq!(unmarked, (0..200).filter(|&n| kept(n)).collect::<Vec<_>>());
    // Everything else that passed is pre-roll, and each run starts on a source keyframe.
    assert!(out.iter().all(|o| o.1.preroll != kept(o.0)));
    for o in out.iter().filter(|o| o.2) {
        assert_eq!(
            o.0 % 40,
            0,
            "run starting at frame {} is not a keyframe",
            o.0
        );
    }
    // Frames 0..24 precede GOP 1 from the keyframe at 0: pre-roll. GOP 3 (frames 75..99) starts
    // inside the source GOP 40..79, so 50..74 are needed again as its pre-roll: the decoder gets
    // 40..99 without a hole.
    assert!(out.iter().any(|o| o.0 == 0 && o.1.preroll));
    let passed: Vec<u64> = out.iter().map(|o| o.0).collect();
    assert_eq!(&passed[..100], &(0..100).collect::<Vec<_>>()[..]);
    // The rest of source GOP 80..119 after the reorder window (104..119) holds no kept frame and
    // is never passed; nor is 154..159 (after GOP 5, before the keyframe at 160 that GOP 7 needs).
    assert!(
        passed
            .iter()
            .all(|&n| !(104..120).contains(&n) && !(154..160).contains(&n)),
        "{passed:?}"
    );
    assert!((160..200).all(|n| passed.contains(&n)));
}

#[test]
fn compressed_b_frames_in_decode_order() {
    init();
    // I P B B pattern, keyframe every 25 frames on the grid; frames arrive in decode order.
    let mut h = harness(&[("slot-index", "0"), ("slot-count", "2")], H264);
    let mut decode_order = Vec::new();
    for gop in 0..4u64 {
        let base = gop * 25;
        decode_order.push((base, true));
        let mut n = base;
        while n + 3 < base + 25 {
            decode_order.push((n + 3, false));
            decode_order.push((n + 1, false));
            decode_order.push((n + 2, false));
            n += 3;
        }
        for m in n + 1..base + 25 {
            decode_order.push((m, false));
        }
    }
    for (i, (n, key)) in decode_order.iter().enumerate() {
        h.push(frame(n * FRAME, Some(i as u64 * FRAME), *key))
            .unwrap();
    }
    let mut frames: Vec<u64> = drain(&mut h)
        .iter()
        .filter(|o| !o.1.preroll)
        .map(|o| o.0)
        .collect();
    frames.sort();
    assert_eq!(frames, (0..25).chain(50..75).collect::<Vec<_>>());
}

#[test]
fn drain_with_gops_none_keeps_nothing_from_the_switch_gop() {
    init();
    let mut h = harness(&[("slot-index", "0"), ("slot-count", "2")], "video/x-raw");
    raw(&mut h);
    for i in 0..10 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    h.element()
        .unwrap()
        .set_property_from_str("assignment", "assignment, gops=none, epoch=2, switch-gop=3");
    assert_eq!(h.element().unwrap().property::<String>("gops"), "none");
    for i in 10..200 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let mut gops: Vec<u64> = drain(&mut h).iter().map(|o| o.1.gop).collect();
    gops.dedup();
    assert_eq!(gops, vec![0, 2]);
}

/// Pushes GOPs `from..to` (25 raw frames each) and returns the (GOP, epoch) runs that came out.
fn push_gops(h: &mut gst_check::Harness, from: u64, to: u64) -> Vec<(u64, u64)> {
    for i in from * 25..to * 25 {
        h.push(frame(i * FRAME, None, true)).unwrap();
    }
    let mut gops: Vec<(u64, u64)> = drain(h).iter().map(|o| (o.1.gop, o.1.epoch)).collect();
    gops.dedup();
    gops
}

#[test]
fn changes_for_later_gops_queue_behind_earlier_ones() {
    init();
    let mut h = harness(&[], "video/x-raw");
    raw(&mut h);
    assert_eq!(push_gops(&mut h, 0, 1), vec![(0, 0)]);
    let e = h.element().unwrap();
    // A layout for GOP 2, then a drain for GOP 4 sent before GOP 2 arrives: both apply.
    e.set_property_from_str(
        "assignment",
        "assignment, index=1, count=2, epoch=3, switch-gop=2",
    );
    e.set_property_from_str("assignment", "assignment, gops=none, epoch=4, switch-gop=4");
    assert_eq!(stat(&h, "assignments-pending"), 2);
    assert_eq!(
        push_gops(&mut h, 1, 8),
        vec![(1, 0), (3, 3)],
        "GOP 1 under the old slots, GOP 3 under the layout, nothing from the drain on"
    );
    assert_eq!(stat(&h, "assignments-pending"), 0);
    assert_eq!(stat(&h, "assignments-applied"), 2);
}

#[test]
fn a_change_scheduled_earlier_replaces_the_waiting_one() {
    init();
    let mut h = harness(&[], "video/x-raw");
    raw(&mut h);
    let e = h.element().unwrap();
    e.set_property_from_str("assignment", "assignment, gops=none, epoch=3, switch-gop=4");
    // Decided later, due earlier: the drain for GOP 4 no longer stands.
    e.set_property_from_str(
        "assignment",
        "assignment, index=0, count=2, epoch=4, switch-gop=2",
    );
    assert_eq!(stat(&h, "assignments-pending"), 1);
    assert_eq!(
        push_gops(&mut h, 0, 8),
        vec![(0, 0), (1, 0), (2, 4), (4, 4), (6, 4)]
    );
    // "Next boundary" replaces everything waiting.
    e.set_property_from_str(
        "assignment",
        "assignment, index=1, count=2, epoch=5, switch-gop=10",
    );
    e.set_property_from_str("assignment", "assignment, index=1, count=4, epoch=6");
    assert_eq!(stat(&h, "assignments-pending"), 1);
    assert_eq!(push_gops(&mut h, 8, 14), vec![(9, 6), (13, 6)]);
}
