// SPDX-License-Identifier: MPL-2.0
//! Tests of `profileenc` with real encoders: keyframes exactly on the GOP grid (checked on the
//! buffers and, where ffmpeg is installed, with ffprobe on a muxed file), live profile changes
//! landing on the next GOP, bad profiles, pre-roll dropping, frame-rate reduction.

use gst::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::profile::Profile;
use crate::meta::FrameInfo;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        crate::plugin_register_static().expect("gopswarm plugin registers");
    });
}

const FRAME: u64 = 40_000_000; // 25 fps

/// One buffer leaving `profileenc`.
#[derive(Debug, Clone)]
struct Out {
    /// Frame index from the running time (25 fps).
    index: u64,
    key: bool,
    codec: String,
    width: i32,
    /// Presentation minus decode time (ns), when the buffer has both.
    decode_delay: Option<i64>,
}

#[derive(Default)]
struct Capture {
    buffers: Vec<Out>,
    caps: Option<gst::Caps>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// (index of the next buffer, event structure) for `gopswarm-profile` events.
    profile_events: Vec<(usize, gst::Structure)>,
}

fn capture_output(pad: &gst::Pad, frame_ns: u64) -> Arc<Mutex<Capture>> {
    let cap = Arc::new(Mutex::new(Capture::default()));
    let c = cap.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut c = c.lock().unwrap();
            match info.data {
                Some(gst::PadProbeData::Buffer(ref b)) => {
                    let seg = c.segment.as_ref().expect("segment before buffers");
                    let rt = seg.to_running_time(b.pts().unwrap()).unwrap();
                    let s = c
                        .caps
                        .as_ref()
                        .expect("caps before buffers")
                        .structure(0)
                        .unwrap();
                    let out = Out {
                        index: (rt.nseconds() + frame_ns / 2) / frame_ns,
                        key: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        codec: s.name().to_string(),
                        width: s.get::<i32>("width").unwrap_or(0),
                        decode_delay: b
                            .dts()
                            .map(|d| b.pts().unwrap().nseconds() as i64 - d.nseconds() as i64),
                    };
                    c.buffers.push(out);
                }
                Some(gst::PadProbeData::Event(ref ev)) => match ev.view() {
                    gst::EventView::Caps(caps) => c.caps = Some(caps.caps_owned()),
                    gst::EventView::Segment(s) => {
                        c.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned()
                    }
                    gst::EventView::CustomDownstreamSticky(e) => {
                        if let Some(s) = e.structure()
                            && s.name() == "gopswarm-profile"
                        {
                            let n = c.buffers.len();
                            c.profile_events.push((n, s.to_owned()));
                        }
                    }
                    _ => (),
                },
                _ => (),
            }
            gst::PadProbeReturn::Ok
        },
    );
    cap
}

/// Runs a pipeline to EOS, returns the element messages posted on the way.
fn run_to_eos(pipeline: &gst::Pipeline) -> Vec<gst::Structure> {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut elements = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("pipeline finishes within 60 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!(
                    "error from {:?}: {} ({:?})",
                    e.src().map(|s| s.path_string()),
                    e.error(),
                    e.debug()
                );
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    elements.push(s.to_owned());
                }
            }
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    elements
}

/// Runs `desc` (with a `profileenc name=enc`) to EOS and returns what left the encoder.
fn encode_and_capture(desc: &str) -> Capture {
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    run_to_eos(&pipeline);
    std::mem::take(&mut *cap.lock().unwrap())
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("profileenc-{}-{name}", std::process::id()))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-version").output().is_ok()
}

/// ffprobe's view of a file: per frame (key_frame, pict_type, width), in presentation order.
fn ffprobe_frames(path: &PathBuf) -> Option<Vec<(bool, String, i32)>> {
    if !have("ffprobe") {
        eprintln!("ffprobe not installed: skipping the ffprobe check");
        return None;
    }
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_frames",
            "-show_entries",
        ])
        .arg("frame=key_frame,pict_type,width")
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let frames = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            match f.as_slice() {
                [k, w, t, ..] if (*k == "0" || *k == "1") => {
                    Some((*k == "1", t.to_string(), w.parse().unwrap_or(0)))
                }
                _ => None,
            }
        })
        .collect();
    Some(frames)
}

/// `ffmpeg -v error -i FILE -f null -` prints nothing for a clean stream.
fn ffmpeg_decode_errors(path: &PathBuf) -> Option<String> {
    if !have("ffmpeg") {
        eprintln!("ffmpeg not installed: skipping the decode check");
        return None;
    }
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    Some(String::from_utf8_lossy(&out.stderr).to_string())
}

fn key_indices(buffers: &[Out]) -> Vec<u64> {
    let mut k: Vec<u64> = buffers.iter().filter(|b| b.key).map(|b| b.index).collect();
    k.sort();
    k
}

fn stats(enc: &gst::Element) -> gst::Structure {
    enc.property::<gst::Structure>("stats")
}

#[test]
fn h264_keyframes_exactly_on_grid() {
    init();
    let file = temp_file("grid.mp4");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=250 pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, gop=2.0, bitrate=500\" \
         ! h264parse ! mp4mux ! filesink location=\"{}\"",
        file.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    run_to_eos(&pipeline);

    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 250, "frame count preserved");
    assert_eq!(key_indices(&cap.buffers), vec![0, 50, 100, 150, 200]);
    let mut idx: Vec<u64> = cap.buffers.iter().map(|b| b.index).collect();
    idx.sort();
    assert_eq!(idx, (0..250).collect::<Vec<_>>(), "every frame once");
    assert!(cap.buffers.iter().all(|b| b.codec == "video/x-h264"));
    let caps = cap.caps.as_ref().unwrap().structure(0).unwrap().to_owned();
    assert_eq!(caps.get::<&str>("stream-format").unwrap(), "byte-stream");
    assert_eq!(caps.get::<&str>("alignment").unwrap(), "au");
    assert_eq!(cap.profile_events.len(), 1);
    assert_eq!(
        cap.profile_events[0].0, 0,
        "profile event before the first buffer"
    );
    assert_eq!(cap.profile_events[0].1.get::<i32>("bitrate").unwrap(), 500);

    let st = stats(&enc);
    assert_eq!(st.get::<u64>("frames-in").unwrap(), 250);
    assert_eq!(st.get::<u64>("frames-encoded").unwrap(), 250);
    assert_eq!(st.get::<u64>("keyframes-out").unwrap(), 5);
    // The first keyframe is the encoder's first frame, the other four are forced.
    assert_eq!(st.get::<u64>("keyframes-forced").unwrap(), 4);
    let encoder = st.get::<String>("encoder").unwrap();
    assert!(
        encoder.contains("pass=qual") && encoder.contains("bitrate=500"),
        "{encoder}"
    );

    if let Some(frames) = ffprobe_frames(&file) {
        assert_eq!(frames.len(), 250);
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].0).collect();
        assert_eq!(keys, vec![0, 50, 100, 150, 200]);
        let i_frames: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].1 == "I").collect();
        assert_eq!(i_frames, keys, "no I frame off the grid");
    }
    if let Some(err) = ffmpeg_decode_errors(&file) {
        assert!(err.is_empty(), "ffmpeg decode errors: {err}");
    }
    let _ = std::fs::remove_file(&file);
}

/// Sets `profile` from a probe on the element's sink pad when frame `at` comes in.
fn set_profile_at(enc: &gst::Element, at: u64, profile: &'static str) {
    let weak = enc.downgrade();
    enc.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref b)) = info.data
                && b.pts() == Some(gst::ClockTime::from_nseconds(at * FRAME))
                && let Some(enc) = weak.upgrade()
            {
                enc.set_property_from_str("profile", profile);
            }
            gst::PadProbeReturn::Ok
        });
}

#[test]
fn profile_change_lands_on_next_gop() {
    init();
    let file = temp_file("change.h264");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=200 pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, width=320, height=240, gop=2.0, bitrate=300\" \
         ! filesink location=\"{}\"",
        file.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    // Frame 60 is in the middle of GOP 1 (frames 50..99): the change must land on frame 100.
    set_profile_at(
        &enc,
        60,
        "h264, width=160, height=120, gop=2.0, bitrate=2000",
    );
    let messages = run_to_eos(&pipeline);

    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 200);
    for b in &cap.buffers {
        let want = if b.index < 100 { 320 } else { 160 };
        assert_eq!(b.width, want, "frame {} has width {}", b.index, b.width);
    }
    assert_eq!(key_indices(&cap.buffers), vec![0, 50, 100, 150]);
    // The first buffer with the new caps is the keyframe of GOP 2.
    let first_small = cap.buffers.iter().position(|b| b.width == 160).unwrap();
    assert_eq!(cap.buffers[first_small].index, 100);
    assert!(cap.buffers[first_small].key);
    // gopswarm-profile events: the initial one, then the new one right before GOP 2's first frame.
    assert_eq!(cap.profile_events.len(), 2);
    let (at, ev) = &cap.profile_events[1];
    assert_eq!(*at, first_small);
    assert_eq!(ev.get::<i32>("bitrate").unwrap(), 2000);
    assert_eq!(ev.get::<u64>("gop-index").unwrap(), 2);

    let applied: Vec<&gst::Structure> = messages
        .iter()
        .filter(|s| s.name() == "gopswarm-profile-applied")
        .collect();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].get::<u64>("gop").unwrap(), 2);
    assert!(
        applied[0]
            .get::<String>("profile")
            .unwrap()
            .contains("bitrate=(int)2000")
    );

    let st = stats(&enc);
    assert_eq!(st.get::<u64>("profile-changes").unwrap(), 1);
    assert!(
        st.get::<String>("encoder")
            .unwrap()
            .contains("bitrate=2000")
    );
    assert!(
        enc.property::<String>("applied-profile")
            .contains("width=(int)160")
    );

    if let Some(frames) = ffprobe_frames(&file) {
        assert_eq!(frames.len(), 200);
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].0).collect();
        assert_eq!(keys, vec![0, 50, 100, 150]);
        assert!(frames[..100].iter().all(|f| f.2 == 320));
        assert!(frames[100..].iter().all(|f| f.2 == 160));
    }
    if let Some(err) = ffmpeg_decode_errors(&file) {
        assert!(err.is_empty(), "ffmpeg decode errors: {err}");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn codec_change_relinks_at_boundary() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=100 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, gop=1.0, bitrate=300\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    set_profile_at(&enc, 30, "vp9, gop=1.0, bitrate=300, complexity=1");
    run_to_eos(&pipeline);
    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 100);
    for b in &cap.buffers {
        let want = if b.index < 50 {
            "video/x-h264"
        } else {
            "video/x-vp9"
        };
        assert_eq!(b.codec, want, "frame {}", b.index);
    }
    assert_eq!(key_indices(&cap.buffers), vec![0, 25, 50, 75]);
}

#[test]
fn bad_profiles_are_rejected_and_old_one_kept() {
    init();
    let enc = gst::ElementFactory::make("profileenc").build().unwrap();
    // Unset, it reads back the default profile, normalised.
    let default = enc.property::<gst::Structure>("profile");
    assert_eq!(default.name(), "h264");
    assert_eq!(default.get::<i32>("bitrate").unwrap(), 2000);
    enc.set_property(
        "profile",
        gst::Structure::builder("h265")
            .field("device", "mobile")
            .field("complexity", 3)
            .field("gop", 1.5)
            .field("fec-k", 4)
            .field("fec-m", 1)
            .build(),
    );
    let good = enc.property::<gst::Structure>("profile");
    assert_eq!(good.name(), "h265");
    assert_eq!(good.get::<i32>("width").unwrap(), 640, "{good}");
    assert_eq!(good.get::<i32>("bitrate").unwrap(), 800, "{good}");
    assert_eq!(good.get::<f64>("gop").unwrap(), 1.5, "{good}");
    for bad in [
        "h264, bitrate=abc",
        "h264, speed=3",
        "mpeg2, bitrate=100",
        "h264, complexity=12",
        "h264, width=641",
        "h264, device=fridge",
        "h264, gop=-1.0",
        "h264, rate-control=vbr",
        "h264, fec-m=1",
        "h264, bitrate=(double)500.0",
    ] {
        enc.set_property_from_str("profile", bad);
        assert_eq!(
            enc.property::<gst::Structure>("profile"),
            good,
            "after {bad}"
        );
    }
    // Text that is no structure never reaches the element: the string form fails to
    // deserialise (a launch line fails, see below).
    assert!(",,,".parse::<gst::Structure>().is_err());
    // The normalised structure is accepted as it is.
    enc.set_property("profile", &good);
    assert_eq!(enc.property::<gst::Structure>("profile"), good);
    // NULL is the default profile again.
    enc.set_property("profile", None::<gst::Structure>);
    assert_eq!(enc.property::<gst::Structure>("profile"), default);
}

/// The first error or EOS on the bus, as the error's text (`None` for EOS).
fn first_error(pipeline: &gst::Pipeline, timeout_s: u64) -> Option<String> {
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(timeout_s),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .expect("an error or EOS in time");
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
}

#[test]
fn bad_profile_on_a_launch_line_fails_the_pipeline() {
    init();
    for (profile, expected) in [
        (
            "nvh264, bitrate=500",
            "unknown codec 'nvh264' (the structure name must be one of h264, h265, vp9, av1)",
        ),
        (
            "h264, bitrate=999999",
            "field 'bitrate' = 999999 is out of range 16..=100000 kbit/s",
        ),
        ("h264, device=watch", "one of mobile, desktop, tv, vr"),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=30 ! profileenc profile=\"{profile}\" ! fakesink"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        // No silent fallback to the default profile: the pipeline does not start.
        assert!(
            pipeline.set_state(gst::State::Playing).is_err(),
            "{profile}: pipeline started"
        );
        let error = first_error(&pipeline, 5);
        pipeline.set_state(gst::State::Null).unwrap();
        let error = error.unwrap_or_else(|| panic!("{profile}: EOS instead of an error"));
        // The message quotes the structure the element received, in its serialised form.
        let received = profile.parse::<gst::Structure>().unwrap().to_string();
        let received = received.trim_end_matches(';');
        assert!(
            error.contains(&format!("profile \"{received}\" refused")) && error.contains(expected),
            "{profile}: {error}"
        );
    }
}

#[test]
fn profile_that_is_no_structure_fails_the_launch_line() {
    init();
    let err =
        gst::parse::launch("videotestsrc num-buffers=30 ! profileenc profile=\",,,\" ! fakesink")
            .expect_err("a launch line with a profile that is no structure is refused");
    assert!(err.to_string().contains("could not set property"), "{err}");
}

#[test]
fn profile_string_on_a_launch_line_reads_back_as_a_structure() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h265, width=128, height=96, bitrate=(int)300, \
         gop=1.0, complexity=1\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let profile = pipeline
        .by_name("enc")
        .unwrap()
        .property::<gst::Structure>("profile");
    assert_eq!(profile.name(), "h265");
    assert_eq!(profile.get::<i32>("width").unwrap(), 128);
    assert_eq!(profile.get::<i32>("bitrate").unwrap(), 300);
    assert_eq!(profile.get::<f64>("gop").unwrap(), 1.0);
    run_to_eos(&pipeline);
}

#[test]
fn bad_profile_while_playing_is_an_element_error() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=2000 ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, complexity=1\" ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    enc.set_property(
        "profile",
        gst::Structure::builder("h264")
            .field("complexity", 11)
            .build(),
    );
    let error = first_error(&pipeline, 20);
    pipeline.set_state(gst::State::Null).unwrap();
    let error = error.expect("an error before EOS");
    assert!(
        error.contains("field 'complexity' = 11 is out of range 1..=10"),
        "{error}"
    );
    // The profile in effect is still the accepted one.
    assert_eq!(
        enc.property::<gst::Structure>("profile")
            .get::<i32>("complexity")
            .unwrap(),
        1
    );
}

#[test]
fn a_good_profile_after_a_bad_one_starts() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, gop=0\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.by_name("enc").unwrap().set_property(
        "profile",
        gst::Structure::builder("h264")
            .field("gop", 1.0)
            .field("complexity", 1)
            .build(),
    );
    run_to_eos(&pipeline);
}

fn i420(index: u64, w: usize, h: usize) -> gst::Buffer {
    let mut data = vec![128u8; w * h * 3 / 2];
    for (i, px) in data[..w * h].iter_mut().enumerate() {
        *px = ((i % w) as u64 * 3 + index * 5 + (i / w) as u64) as u8;
    }
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(index * FRAME));
        b.set_duration(gst::ClockTime::from_nseconds(FRAME));
    }
    b
}

fn frame_info(gop: u64, gop_frames: u64, preroll: bool) -> FrameInfo {
    FrameInfo {
        gop,
        gop_start: gop * gop_frames * FRAME,
        gop_duration: gop_frames * FRAME,
        time_offset: 0,
        epoch: 1,
        redundant: false,
        preroll,
    }
}

#[test]
fn preroll_frames_are_dropped() {
    init();
    let mut h = gst_check::Harness::new("profileenc");
    h.element()
        .unwrap()
        .set_property_from_str("profile", "h264, gop=1.0, bitrate=300, complexity=1");
    h.set_src_caps_str("video/x-raw,format=I420,width=64,height=48,framerate=25/1");
    // What gopselect sends for GOPs 1 and 3 of a 1 s grid: 5 pre-roll frames before each.
    let mut sent = 0;
    for (gop, range) in [(1u64, 20u64..50), (3, 70..100)] {
        for i in range {
            let mut b = i420(i, 64, 48);
            frame_info(gop, 25, i < gop * 25).attach(b.get_mut().unwrap());
            assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
            sent += 1;
        }
    }
    assert_eq!(sent, 60);
    // A frame rate above the input's is refused while the input rate is known.
    let before = h.element().unwrap().property::<gst::Structure>("profile");
    h.element()
        .unwrap()
        .set_property_from_str("profile", "h264, gop=1.0, framerate=50/1");
    assert_eq!(
        h.element().unwrap().property::<gst::Structure>("profile"),
        before
    );

    assert!(h.push_event(gst::event::Eos::new()));
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        let meta = FrameInfo::from_buffer(&b).expect("frame meta survives the encoder");
        assert!(!meta.preroll);
        out.push((
            b.pts().unwrap(),
            !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
            meta.gop,
        ));
    }
    assert_eq!(out.len(), 50, "25 frames of each GOP, no pre-roll");
    let seg = h
        .sinkpad()
        .unwrap()
        .sticky_event::<gst::event::Segment>(0)
        .unwrap()
        .segment()
        .downcast_ref::<gst::ClockTime>()
        .unwrap()
        .clone();
    let mut idx: Vec<(u64, bool)> = out
        .iter()
        .map(|(pts, key, _)| (seg.to_running_time(*pts).unwrap().nseconds() / FRAME, *key))
        .collect();
    idx.sort();
    let want: Vec<u64> = (25..50).chain(75..100).collect();
    assert_eq!(idx.iter().map(|x| x.0).collect::<Vec<_>>(), want);
    let keys: Vec<u64> = idx.iter().filter(|x| x.1).map(|x| x.0).collect();
    assert_eq!(keys, vec![25, 75]);
    let st = stats(&h.element().unwrap());
    assert_eq!(st.get::<u64>("preroll-dropped").unwrap(), 10);
    assert_eq!(st.get::<u64>("frames-in").unwrap(), 60);
}

#[test]
fn framerate_reduction_keeps_the_same_frames_across_gaps() {
    init();
    // 50 fps input, 25 fps profile, GOPs of 1 s (50 input frames); GOP 1 arrives alone, GOP 3
    // after a gap, GOP 4 right after it: each keeps its even frames from the GOP start.
    let mut h = gst_check::Harness::new("profileenc");
    h.element()
        .unwrap()
        .set_property_from_str("profile", "h264, gop=1.0, framerate=25/1, complexity=1");
    h.set_src_caps_str("video/x-raw,format=I420,width=64,height=48,framerate=50/1");
    const F50: u64 = 20_000_000;
    for gop in [1u64, 3, 4] {
        for j in 0..50u64 {
            let i = gop * 50 + j;
            let mut b = i420(i, 64, 48);
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(i * F50));
                b.set_duration(gst::ClockTime::from_nseconds(F50));
                FrameInfo {
                    gop,
                    gop_start: gop * 50 * F50,
                    gop_duration: 50 * F50,
                    time_offset: 0,
                    epoch: 1,
                    redundant: false,
                    preroll: false,
                }
                .attach(b);
            }
            h.push(b).unwrap();
        }
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    assert_eq!(
        caps.structure(0)
            .unwrap()
            .get::<gst::Fraction>("framerate")
            .unwrap(),
        gst::Fraction::new(25, 1)
    );
    let seg = h
        .sinkpad()
        .unwrap()
        .sticky_event::<gst::event::Segment>(0)
        .unwrap()
        .segment()
        .downcast_ref::<gst::ClockTime>()
        .unwrap()
        .clone();
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        let rt = seg.to_running_time(b.pts().unwrap()).unwrap().nseconds();
        out.push((rt / F50, !b.flags().contains(gst::BufferFlags::DELTA_UNIT)));
    }
    out.sort();
    let want: Vec<u64> = [50u64, 150, 200]
        .iter()
        .flat_map(|&s| (s..s + 50).step_by(2))
        .collect();
    assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), want);
    let keys: Vec<u64> = out.iter().filter(|x| x.1).map(|x| x.0).collect();
    assert_eq!(keys, vec![50, 150, 200]);
    assert_eq!(
        stats(&h.element().unwrap())
            .get::<u64>("rate-dropped")
            .unwrap(),
        75
    );
}

fn grid_test(codec: &str, mux: &str, ext: &str) {
    init();
    let file = temp_file(&format!("grid-{codec}.{ext}"));
    let cap = encode_and_capture(&format!(
        "videotestsrc num-buffers=100 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"{codec}, gop=1.0, bitrate=300, complexity=2\" \
         ! {mux} ! filesink location=\"{}\"",
        file.display()
    ));
    assert_eq!(cap.buffers.len(), 100, "{codec}: frame count");
    assert_eq!(
        key_indices(&cap.buffers),
        vec![0, 25, 50, 75],
        "{codec}: keyframes"
    );
    if let Some(frames) = ffprobe_frames(&file) {
        assert_eq!(frames.len(), 100, "{codec}: ffprobe frame count");
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].0).collect();
        assert_eq!(keys, vec![0, 25, 50, 75], "{codec}: ffprobe keyframes");
    }
    if let Some(err) = ffmpeg_decode_errors(&file) {
        assert!(err.is_empty(), "{codec}: ffmpeg decode errors: {err}");
    }
    let _ = std::fs::remove_file(&file);
}

/// The reorder depth a profile declares (and `partialpay` writes into every chunk) is the decode
/// delay its encoder really gives: a wrong table would make `gopmerge` stamp DTS that are too
/// early (PTS < DTS) or give the rendition a longer decode delay than one encoder has.
#[test]
fn declared_reorder_depth_is_the_encoders_decode_delay() {
    init();
    for profile in [
        "h264, complexity=1",
        "h264, complexity=5",
        "h264, complexity=10",
        "h265, complexity=2",
        "vp9, complexity=2",
    ] {
        let cap = encode_and_capture(&format!(
            "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! profileenc name=enc profile=\"{profile}, gop=1.0, bitrate=300\" ! fakesink"
        ));
        let declared = Profile::parse(profile).unwrap().reorder_frames() as i64;
        let event = cap
            .profile_events
            .first()
            .expect("a profile event")
            .1
            .clone();
        assert_eq!(
            event.get::<u32>("reorder-frames").unwrap() as i64,
            declared,
            "{profile}: profile event"
        );
        let first = &cap.buffers[0];
        assert!(first.key, "{profile}: starts with a keyframe");
        assert_eq!(
            first.decode_delay.unwrap_or(0),
            declared * FRAME as i64,
            "{profile}: the encoder's decode delay is the declared {declared} frames"
        );
        // Nothing the encoder emits needs more reordering than declared.
        let deepest = cap
            .buffers
            .iter()
            .enumerate()
            .map(|(i, b)| i as i64 - b.index as i64)
            .max()
            .unwrap();
        assert!(deepest <= declared, "{profile}: reordered {deepest} frames");
    }
}

#[test]
fn h265_keyframes_on_grid() {
    grid_test("h265", "h265parse ! mp4mux", "mp4");
}

#[test]
fn vp9_keyframes_on_grid() {
    grid_test("vp9", "matroskamux", "mkv");
}

#[test]
fn av1_keyframes_on_grid() {
    grid_test("av1", "av1parse ! matroskamux", "mkv");
}

#[test]
fn compressed_input_is_decoded() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=75 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc key-int-max=7 bframes=2 ! h264parse \
         ! profileenc name=enc profile=\"h264, gop=1.0, bitrate=300, complexity=1\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    run_to_eos(&pipeline);
    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 75);
    assert_eq!(key_indices(&cap.buffers), vec![0, 25, 50]);
}

#[test]
fn transport_only_change_keeps_the_encoder() {
    init();
    // GOPs of 2 s (50 frames): x264's first output comes well within GOP 0, so every later
    // keyframe is a force-key-unit request on the same encoder.
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=150 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, gop=2.0, bitrate=300\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    set_profile_at(
        &enc,
        60,
        "h264, gop=2.0, bitrate=300, redundancy=1, fec-k=4, fec-m=1",
    );
    let messages = run_to_eos(&pipeline);
    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 150);
    assert_eq!(key_indices(&cap.buffers), vec![0, 50, 100]);
    // The event travels in-band through the encoder and comes out right before GOP 2's IDR,
    // after every frame of GOP 1 (B-frames included).
    assert_eq!(cap.profile_events.len(), 2);
    let (at, ev) = &cap.profile_events[1];
    assert_eq!(cap.buffers[*at].index, 100);
    assert!(cap.buffers[..*at].iter().all(|b| b.index < 100));
    assert_eq!(ev.get::<i32>("fec-k").unwrap(), 4);
    assert_eq!(ev.get::<i32>("fec-m").unwrap(), 1);
    assert_eq!(ev.get::<i32>("redundancy").unwrap(), 1);
    let st = stats(&enc);
    assert_eq!(st.get::<u64>("chains-built").unwrap(), 1, "no new encoder");
    assert_eq!(st.get::<u64>("keyframes-forced").unwrap(), 2);
    assert_eq!(st.get::<u64>("profile-changes").unwrap(), 1);
    assert_eq!(
        messages
            .iter()
            .filter(|s| s.name() == "gopswarm-profile-applied")
            .count(),
        1
    );
}

#[test]
fn gops_shorter_than_encoder_delay_stay_on_grid() {
    init();
    // 10-frame GOPs with x264 "medium" (40+ frames of look-ahead): several GOPs start before
    // the encoder's first output, where GStreamer 1.22 would mis-time the requests without the
    // element's inner timeline; one encoder, keyframes exact.
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc name=enc profile=\"h264, gop=0.4, bitrate=300, complexity=6\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    run_to_eos(&pipeline);
    let cap = cap.lock().unwrap();
    assert_eq!(cap.buffers.len(), 60);
    assert_eq!(key_indices(&cap.buffers), vec![0, 10, 20, 30, 40, 50]);
    let mut idx: Vec<u64> = cap.buffers.iter().map(|b| b.index).collect();
    idx.sort();
    assert_eq!(idx, (0..60).collect::<Vec<_>>());
    let st = stats(&enc);
    assert_eq!(st.get::<u64>("chains-built").unwrap(), 1);
    assert_eq!(st.get::<u64>("keyframes-forced").unwrap(), 5);
}

#[test]
fn upward_framerate_is_an_error() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=10 ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! profileenc profile=\"h264, framerate=50/1\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Error(e) => {
            let text = format!("{} {:?}", e.error(), e.debug());
            assert!(text.contains("upward frame-rate conversion"), "{text}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn compressed_input_preroll_dropped_after_decoding() {
    init();
    // What gopselect sends from a compressed source for GOP 1 of a 0.4 s grid (frames 10..19):
    // pre-roll from the keyframe at frame 5, then the GOP; B-frames in the input.
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc key-int-max=5 bframes=2 ! h264parse ! identity name=cut \
         ! profileenc name=enc profile=\"h264, gop=0.4, bitrate=300, complexity=1\" ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let enc = pipeline.by_name("enc").unwrap();
    let cut = pipeline.by_name("cut").unwrap();
    cut.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |_, info| {
            if let Some(gst::PadProbeData::Buffer(ref mut b)) = info.data {
                // x264enc shifts timestamps by 1000 h (its minimum PTS; the first frame is at 0).
                let i = (b.pts().unwrap().nseconds() - 1000 * 3600 * 1_000_000_000) / FRAME;
                if i < 5 {
                    return gst::PadProbeReturn::Handled;
                }
                frame_info(1, 10, i < 10).attach(b.make_mut());
            }
            gst::PadProbeReturn::Ok
        });
    let cap = capture_output(&enc.static_pad("src").unwrap(), FRAME);
    run_to_eos(&pipeline);
    let cap = cap.lock().unwrap();
    let mut idx: Vec<u64> = cap.buffers.iter().map(|b| b.index).collect();
    idx.sort();
    assert_eq!(idx, (10..20).collect::<Vec<_>>());
    assert_eq!(key_indices(&cap.buffers), vec![10]);
    assert_eq!(stats(&enc).get::<u64>("preroll-dropped").unwrap(), 5);
}
