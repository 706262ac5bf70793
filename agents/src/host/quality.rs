// SPDX-License-Identifier: MPL-2.0
//! Sampled output quality of a host: every `every`-th GOP it encodes, the source frames of that
//! GOP (as `gopselect` passed them, decoder pre-roll included) and the host's own encoded GOP
//! are decoded off the streaming thread and compared at the profile's size: luma PSNR, the
//! mean over the GOP's frames. The orchestrator's fitness score reads it from the heartbeat.

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gst_video::prelude::*;
use gstgopswarm::meta::FrameInfo;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// PSNR of identical pictures (mean squared error 0).
const PSNR_CAP_DB: f64 = 100.0;
/// Source frames held for one sample at most (a GOP and its pre-roll).
const MAX_HELD_FRAMES: usize = 1000;

#[derive(Default)]
struct Collect {
    /// Kept GOPs seen, and the last one: every `every`-th is sampled.
    kept: u64,
    last_kept: Option<u64>,
    /// GOP being collected, once its first kept frame passed.
    target: Option<u64>,
    /// Frames since the last source keyframe (pre-roll candidates).
    since_keyframe: Vec<gst::Buffer>,
    frames: Vec<gst::Buffer>,
    /// PTS of the target GOP's own frames (not pre-roll).
    own_pts: BTreeSet<u64>,
    caps: Option<gst::Caps>,
    /// The collected GOP is complete (a later GOP started).
    complete: bool,
}

/// Collects one GOP of source at a time and measures the encode of it.
#[derive(Clone)]
pub struct QualitySampler {
    every: u64,
    collect: Arc<Mutex<Collect>>,
    /// Latest measured PSNR (dB) and the GOP it was measured on.
    pub latest: Arc<Mutex<Option<(u64, f64)>>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl QualitySampler {
    pub fn new(every: u64) -> Self {
        QualitySampler {
            every: every.max(1),
            collect: Arc::default(),
            latest: Arc::default(),
            busy: Arc::default(),
        }
    }

    /// Watch the compressed frames `gopselect` passes (its src pad).
    pub fn attach(&self, select_src: &gst::Pad) {
        let this = self.clone();
        select_src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                this.observe(pad, buffer);
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn observe(&self, pad: &gst::Pad, buffer: &gst::Buffer) {
        let Some(info) = FrameInfo::from_buffer(buffer) else {
            return;
        };
        let busy = self.busy.load(std::sync::atomic::Ordering::Relaxed);
        let mut c = self.collect.lock().unwrap();
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let new_kept_gop = !info.preroll && c.last_kept.is_none_or(|g| info.gop > g);
        if new_kept_gop {
            c.last_kept = Some(info.gop);
            c.kept += 1;
        }
        match c.target {
            None => {
                if keyframe {
                    c.since_keyframe.clear();
                }
                if new_kept_gop && !busy && c.kept % self.every == 1 % self.every {
                    c.target = Some(info.gop);
                    c.caps = pad.current_caps();
                    c.frames = std::mem::take(&mut c.since_keyframe);
                    c.frames.push(buffer.clone());
                    c.own_pts = buffer.pts().map(|p| p.nseconds()).into_iter().collect();
                    c.complete = false;
                } else if c.since_keyframe.len() < MAX_HELD_FRAMES {
                    c.since_keyframe.push(buffer.clone());
                }
            }
            Some(target) if !c.complete => {
                if info.gop > target && !info.preroll && keyframe || info.gop > target + 1 {
                    c.complete = true;
                } else if c.frames.len() < MAX_HELD_FRAMES {
                    // Frames of the next GOP in decode order before its keyframe only help
                    // decoding; only the target's own are compared.
                    if info.gop == target
                        && !info.preroll
                        && let Some(p) = buffer.pts()
                    {
                        c.own_pts.insert(p.nseconds());
                    }
                    c.frames.push(buffer.clone());
                }
            }
            Some(_) => {}
        }
    }

    /// The host encoded `gop` into `chunk` (serialised): if it is the collected one, measure it
    /// on a thread of its own.
    pub fn on_chunk(&self, gop: u64, chunk: &[u8]) {
        let taken = {
            let mut c = self.collect.lock().unwrap();
            if c.target != Some(gop) {
                if c.target.is_some_and(|t| gop > t + 2) {
                    // The collected GOP was not encoded here (drained meanwhile): start over.
                    c.target = None;
                    c.frames.clear();
                    c.own_pts.clear();
                }
                return;
            }
            let (kept, last_kept) = (c.kept, c.last_kept);
            std::mem::replace(
                &mut *c,
                Collect {
                    kept,
                    last_kept,
                    ..Default::default()
                },
            )
        };
        let Some(caps) = taken.caps else { return };
        let chunk = chunk.to_vec();
        let latest = self.latest.clone();
        let busy = self.busy.clone();
        busy.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            match measure(&caps, &taken.frames, &taken.own_pts, &chunk) {
                Ok(db) => {
                    tracing::debug!("GOP {gop}: PSNR {db:.2} dB against the decoded source");
                    *latest.lock().unwrap() = Some((gop, db));
                }
                Err(e) => tracing::warn!("quality sample of GOP {gop} failed: {e:#}"),
            }
            busy.store(false, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// Decode `frames` (caps `caps`) through `decodebin`, scaled to `scale` if given, to I420; the
/// frames by PTS.
fn decode(
    caps: &gst::Caps,
    frames: impl Iterator<Item = gst::Buffer>,
    scale: Option<(i32, i32)>,
) -> Result<Vec<(u64, gst::Sample)>> {
    let size = scale
        .map(|(w, h)| format!(",width={w},height={h},pixel-aspect-ratio=1/1"))
        .unwrap_or_default();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! decodebin ! videoconvert ! videoscale \
         ! video/x-raw,format=I420{size} ! appsink name=out sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_caps(Some(caps));
    pipeline.set_state(gst::State::Playing)?;
    for f in frames {
        src.push_buffer(f).context("feeding the decoder")?;
    }
    src.end_of_stream()?;
    let mut out = Vec::new();
    let bus = pipeline.bus().unwrap();
    loop {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let pts = s.buffer().and_then(|b| b.pts()).map_or(0, |p| p.nseconds());
            out.push((pts, s));
            continue;
        }
        if sink.is_eos() {
            break;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let _ = pipeline.set_state(gst::State::Null);
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("decoding: {}", e.error());
            }
        }
        if out.len() > MAX_HELD_FRAMES {
            break;
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    out.sort_by_key(|(pts, _)| *pts);
    Ok(out)
}

fn luma(sample: &gst::Sample) -> Result<(i32, i32, Vec<u8>)> {
    let info = gst_video::VideoInfo::from_caps(sample.caps().context("no caps")?)?;
    let buffer = sample.buffer().context("no buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| anyhow::anyhow!("unmappable frame"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0)?;
    let mut y = Vec::with_capacity(w * h);
    for row in 0..h {
        y.extend_from_slice(&data[row * stride..row * stride + w]);
    }
    Ok((w as i32, h as i32, y))
}

/// Luma PSNR of two equally sized planes.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = *x as i64 - *y as i64;
            (d * d) as u64
        })
        .sum();
    if sse == 0 {
        return PSNR_CAP_DB;
    }
    let mse = sse as f64 / n as f64;
    (10.0 * (255.0 * 255.0 / mse).log10()).min(PSNR_CAP_DB)
}

/// Mean luma PSNR of the encoded GOP against the source's frames of it.
fn measure(
    source_caps: &gst::Caps,
    source: &[gst::Buffer],
    own_pts: &BTreeSet<u64>,
    chunk: &[u8],
) -> Result<f64> {
    let (chunk, _) = gopswarm_chunk::parse(chunk)?;
    let records = gopswarm_chunk::decode_frames(chunk.payload())?;
    let encoded_caps = gst::Caps::from_str(&chunk.header.codec)
        .map_err(|_| anyhow::anyhow!("chunk caps {:?}", chunk.header.codec))?;
    let base = chunk.header.start_ns as i64;
    let encoded = decode(
        &encoded_caps,
        records.into_iter().map(|r| {
            let mut b = gst::Buffer::from_mut_slice(r.data);
            {
                let b = b.get_mut().unwrap();
                let ts = |o: Option<i64>| {
                    o.and_then(|o| u64::try_from(base + o).ok())
                        .map(gst::ClockTime::from_nseconds)
                };
                b.set_pts(ts(r.pts_offset));
                b.set_dts(ts(r.dts_offset));
                if r.flags & gopswarm_chunk::frame_flags::DELTA != 0 {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            b
        }),
        None,
    )?;
    let Some((_, first)) = encoded.first() else {
        bail!("the encoded GOP decoded to nothing");
    };
    let (w, h, _) = luma(first)?;
    let decoded_source = decode(source_caps, source.iter().cloned(), Some((w, h)))?;
    let own: Vec<&gst::Sample> = decoded_source
        .iter()
        .filter(|(pts, _)| own_pts.contains(pts))
        .map(|(_, s)| s)
        .collect();
    if own.len() != encoded.len() {
        bail!(
            "{} source frames against {} encoded (frame rate changed?)",
            own.len(),
            encoded.len()
        );
    }
    let mut total = 0.0;
    for (s, (_, e)) in own.iter().zip(&encoded) {
        let (_, _, ys) = luma(s)?;
        let (_, _, ye) = luma(e)?;
        total += psnr(&ys, &ye);
    }
    Ok(total / encoded.len() as f64)
}

use std::str::FromStr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_known_errors() {
        let a = vec![100u8; 1000];
        assert_eq!(psnr(&a, &a), PSNR_CAP_DB);
        // Every sample off by 5: MSE 25 -> 10 log10(65025 / 25) = 34.15 dB.
        let b = vec![105u8; 1000];
        assert!((psnr(&a, &b) - 34.151).abs() < 0.01, "{}", psnr(&a, &b));
    }
}
