// SPDX-License-Identifier: MPL-2.0
//! A live 2-branch swarm (split, encode, chunk, merge) into a clocked `sync=true qos=true` sink:
//! `gopmerge` reports the latency it adds, so no frame arrives after its render time and none is
//! lost, and the latency the pipeline reports matches the measured one.

use gopswarm_test_support::init;
use gst::prelude::*;
use std::sync::{Arc, Mutex};

const FPS: u64 = 25;
const FRAMES: u64 = 250; // 10 s, 10 GOPs of 1 s

fn branch(slot: u32) -> String {
    format!(
        "t. ! queue max-size-time=0 max-size-buffers=0 max-size-bytes=0 \
         ! gopselect slot-index={slot} slot-count=2 gop-duration=1000000000 \
         ! profileenc profile=\"h264, gop=1.0, complexity=1, bitrate=300\" \
         ! partialpay stream-id=live host-id=host-{slot} \
         ! queue max-size-time=0 max-size-buffers=0 max-size-bytes=0 ! m.sink_{slot} "
    )
}

#[test]
fn live_swarm_into_a_clocked_qos_sink_loses_nothing_and_reports_its_latency() {
    init();
    let description = format!(
        "videotestsrc is-live=true num-buffers={FRAMES} \
         ! video/x-raw,width=160,height=120,framerate={FPS}/1 ! tee name=t \
         {} {} gopmerge name=m \
         ! queue name=arrival max-size-time=0 max-size-buffers=0 max-size-bytes=0 \
         ! fakesink name=sink sync=true qos=true",
        branch(0),
        branch(1)
    );
    let pipeline = gst::parse::launch(&description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();

    // Lateness of each buffer as it leaves the merger: clock running time minus PTS running
    // time, taken at a queue so that the sink's waiting does not hold the measurement back.
    let lateness: Arc<Mutex<Vec<i64>>> = Arc::default();
    let pad = pipeline
        .by_name("arrival")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    {
        let lateness = lateness.clone();
        let pipeline = pipeline.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(pipeline), Some(buffer)) = (pipeline.upgrade(), info.buffer()) else {
                return gst::PadProbeReturn::Ok;
            };
            let segment = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|e| e.segment().clone().downcast::<gst::ClockTime>().ok());
            let (Some(clock), Some(base), Some(segment), Some(pts)) = (
                pipeline.clock(),
                pipeline.base_time(),
                segment,
                buffer.pts(),
            ) else {
                return gst::PadProbeReturn::Ok;
            };
            if let Some(rt) = segment.to_running_time(pts) {
                let now = clock.time() - base;
                lateness
                    .lock()
                    .unwrap()
                    .push(now.nseconds() as i64 - rt.nseconds() as i64);
            }
            gst::PadProbeReturn::Ok
        });
    }

    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut reported = None;
    let mut gaps = 0;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == "gopswarm-gap") =>
            {
                gaps += 1
            }
            _ => (),
        }
        // The latency in force once data flows (gopmerge learns the GOP grid from the chunks).
        if lateness.lock().unwrap().len() > (3 * FPS) as usize && reported.is_none() {
            let mut q = gst::query::Latency::new();
            assert!(pipeline.query(&mut q));
            reported = Some(q.result());
        }
    }
    let mut q = gst::query::Latency::new();
    assert!(pipeline.query(&mut q));
    let (live, min, _max) = q.result();
    let rendered = sink.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();

    let stats = pipeline
        .by_name("m")
        .unwrap()
        .property::<gst::Structure>("stats");
    let frames_out = stats.get::<u64>("frames-out").unwrap();
    let lateness = lateness.lock().unwrap().clone();
    assert!(live, "a live swarm reports live latency");
    assert_eq!(gaps, 0, "no GOP lost");
    assert_eq!(frames_out, FRAMES, "every frame merged: {stats}");
    assert_eq!(lateness.len() as u64, FRAMES, "every frame left the merger");
    assert_eq!(
        rendered.get::<u64>("rendered").unwrap(),
        FRAMES,
        "every frame rendered: {rendered}"
    );
    assert_eq!(rendered.get::<u64>("dropped").unwrap(), 0, "{rendered}");

    // Steady state: from the third GOP on (the first ones wait for every input to start).
    let mut steady: Vec<i64> = lateness[(2 * FPS) as usize..].to_vec();
    steady.sort();
    let measured = steady[steady.len() * 95 / 100] as f64;
    let reported = min.nseconds() as f64;
    eprintln!(
        "reported latency {min} (early {reported:?}), measured p95 {:.3} s, max {:.3} s",
        measured / 1e9,
        *steady.last().unwrap() as f64 / 1e9
    );
    assert!(
        (reported - measured).abs() <= 0.1 * measured,
        "reported {reported} ns vs measured {measured} ns"
    );
}
