// SPDX-License-Identifier: MPL-2.0
//! `gopswarm source`: a live mezzanine for the swarm. Plays an H.264 MP4 clip in real time,
//! looped with continuous timestamps, and serves it over TCP as GDP (GStreamer data protocol:
//! buffers keep their timestamps and every client first gets the caps and the segment). Every
//! host that connects, whenever it connects, sees the same running time for the same frame, so
//! they all agree on the GOP grid. Clients start at the latest keyframe.
//!
//! Timestamps are shifted so the clip's first keyframe is at [`TIMELINE_START`] (whole
//! seconds: clip keyframes every 1 or 2 s land on the swarm's GOP grid, and decode timestamps
//! before the first keyframe stay positive), and the stream ends just before the first
//! keyframe at or after `duration`, so the last GOP is complete.

use crate::options::parse_seconds;
use anyhow::{Context, Result, bail};
use gst::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Running time of the first frame served.
pub const TIMELINE_START: gst::ClockTime = gst::ClockTime::from_seconds(10);

/// A source's options: its `gopswarm source` command line (one definition for parsing and use).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceOptions {
    /// H.264 MP4 clip
    #[arg(long)]
    pub clip: PathBuf,
    // The address the TCP server listens on.
    #[arg(long = "host", value_name = "HOST", default_value = "127.0.0.1")]
    pub listen_host: String,
    #[arg(long)]
    pub port: u16,
    /// Seconds of stream to serve (the clip loops), then EOS
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub duration: Duration,
}

/// Serve until `duration` of stream time went out, then send EOS to every client.
pub fn serve(opts: &SourceOptions, progress: bool) -> Result<()> {
    crate::pipeline::init();
    if !opts.clip.exists() {
        bail!("clip {} not found", opts.clip.display());
    }
    // Built from typed elements: a clip path or listen address with quotes or `!` in it is a
    // path or an address, never pipeline syntax.
    use crate::pipeline::{caps_filter, chain, make};
    let frames = make(
        "appsink",
        &[
            ("sync", false.to_value()),
            ("max-buffers", 64u32.to_value()),
        ],
    )?;
    let demux = make("qtdemux", &[])?;
    let parse = make("h264parse", &[("config-interval", (-1i32).to_value())])?;
    let reader = chain(&[
        make("filesrc", &[("location", opts.clip.to_value())])?,
        demux.clone(),
    ])
    .context("clip reader")?;
    let tail = [
        parse.clone(),
        caps_filter(
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        )?,
        frames.clone(),
    ];
    reader.add_many(&tail).context("clip reader")?;
    gst::Element::link_many(&tail).context("clip reader")?;
    // qtdemux's pads appear once it has read the file: link its video pad then.
    let parse_sink = parse.static_pad("sink").context("h264parse sink pad")?;
    demux.connect_pad_added(move |_, pad| {
        if pad.name().starts_with("video") && !parse_sink.is_linked() {
            let _ = pad.link(&parse_sink);
        }
    });
    let frames = crate::pipeline::downcast::<gst_app::AppSink>(&frames);
    frames.set_property("wait-on-eos", false);
    let src = make(
        "appsrc",
        &[
            ("is-live", true.to_value()),
            ("block", true.to_value()),
            ("max-bytes", 8_000_000u64.to_value()),
        ],
    )?;
    src.set_property_from_str("format", "time");
    let sink = make(
        "tcpserversink",
        &[
            ("host", opts.listen_host.to_value()),
            ("port", i32::from(opts.port).to_value()),
            ("sync", true.to_value()),
        ],
    )?;
    sink.set_property_from_str("sync-method", "latest-keyframe");
    let server = chain(&[src.clone(), make("gdppay", &[])?, sink]).context("server pipeline")?;
    let src = crate::pipeline::downcast::<gst_app::AppSrc>(&src);
    reader.set_state(gst::State::Playing)?;
    // The first frame's running time is TIMELINE_START: make that "now" for the clock sync,
    // so the stream starts at once instead of TIMELINE_START later.
    let clock = gst::SystemClock::obtain();
    server.use_clock(Some(&clock));
    server.set_start_time(gst::ClockTime::NONE);
    server.set_base_time(clock.time().saturating_sub(TIMELINE_START));
    server.set_state(gst::State::Playing)?;

    let end = TIMELINE_START + gst::ClockTime::from_nseconds(opts.duration.as_nanos() as u64);
    // Shift of the clip's own timestamps: its first keyframe goes to TIMELINE_START.
    let mut shift: Option<gst::ClockTime> = None;
    let mut loop_offset = gst::ClockTime::ZERO;
    let mut loop_len = gst::ClockTime::ZERO;
    let mut first_pts: Option<gst::ClockTime> = None;
    let mut caps_set = false;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent = 0u64;
    'outer: loop {
        match frames.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            Some(sample) => {
                if !caps_set {
                    src.set_caps(sample.caps().map(|c| c.to_owned()).as_ref());
                    caps_set = true;
                }
                let Some(buf) = sample.buffer() else { continue };
                let keyframe = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let shift = *shift.get_or_insert_with(|| buf.pts().unwrap_or_default());
                let map =
                    |t: gst::ClockTime| (t + TIMELINE_START + loop_offset).saturating_sub(shift);
                let mut out = buf.copy();
                {
                    let b = out.get_mut().unwrap();
                    let pts = buf.pts().map(map);
                    let dts = buf.dts().map(map);
                    if let (Some(p), Some(d)) = (buf.pts(), buf.duration()) {
                        loop_len = loop_len.max(p + d);
                        first_pts = Some(first_pts.map_or(p, |f: gst::ClockTime| f.min(p)));
                    }
                    if keyframe && pts.is_some_and(|p| p >= end) {
                        break 'outer;
                    }
                    b.set_pts(pts);
                    b.set_dts(dts);
                    if loop_offset > gst::ClockTime::ZERO {
                        b.unset_flags(gst::BufferFlags::DISCONT);
                    }
                }
                if src.push_buffer(out).is_err() {
                    bail!("source server stopped");
                }
                sent += 1;
                if progress && last_report.elapsed() > Duration::from_secs(5) {
                    eprintln!(
                        "source: {sent} frames out, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                    last_report = Instant::now();
                }
            }
            None if frames.is_eos() => {
                // Loop: rewind the clip, continue the timeline where it ended.
                // Next loop's first frame follows this loop's last one.
                loop_offset += loop_len.saturating_sub(first_pts.unwrap_or_default());
                loop_len = gst::ClockTime::ZERO;
                first_pts = None;
                reader
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                        gst::ClockTime::ZERO,
                    )
                    .context("rewinding the clip")?;
            }
            None => bail!("clip reader stalled"),
        }
        if let Some(msg) = server
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            bail!("source server: {} ({:?})", e.error(), e.debug());
        }
    }
    let _ = src.end_of_stream();
    // Give clients the EOS, then stop.
    let bus = server.bus().unwrap();
    // The appsrc queue holds seconds of stream ahead of the clock: wait for all of it to go out.
    let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos]);
    std::thread::sleep(Duration::from_millis(500));
    reader.set_state(gst::State::Null)?;
    server.set_state(gst::State::Null)?;
    Ok(())
}
