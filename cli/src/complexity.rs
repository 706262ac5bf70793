// SPDX-License-Identifier: MPL-2.0
//! Content complexity of a source, ITU-T P.910 style: spatial information (SI, the standard
//! deviation of the Sobel-filtered luma) and temporal information (TI, the standard deviation of
//! the luma difference to the previous frame), the maximum over sampled frames. Frames are
//! decoded and scaled to 320x180 luma first: the thresholds (`Sizing` in the orchestrator) are on
//! that scale.

use anyhow::{Context, Result, bail};
use gopswarm_proto::ContentComplexity;
use gst::prelude::*;
use std::time::Duration;

const WIDTH: usize = 320;
const HEIGHT: usize = 180;

/// SI of one luma frame.
pub fn spatial_information(y: &[u8], w: usize, h: usize) -> f64 {
    let px = |x: usize, y_: usize| y[y_ * w + x] as f64;
    let mut values = Vec::with_capacity(w * h);
    for j in 1..h.saturating_sub(1) {
        for i in 1..w.saturating_sub(1) {
            let gx = px(i + 1, j - 1) + 2.0 * px(i + 1, j) + px(i + 1, j + 1)
                - px(i - 1, j - 1)
                - 2.0 * px(i - 1, j)
                - px(i - 1, j + 1);
            let gy = px(i - 1, j + 1) + 2.0 * px(i, j + 1) + px(i + 1, j + 1)
                - px(i - 1, j - 1)
                - 2.0 * px(i, j - 1)
                - px(i + 1, j - 1);
            values.push((gx * gx + gy * gy).sqrt());
        }
    }
    std_dev(&values)
}

/// TI between two luma frames.
pub fn temporal_information(prev: &[u8], cur: &[u8]) -> f64 {
    let d: Vec<f64> = prev
        .iter()
        .zip(cur)
        .map(|(a, b)| *b as f64 - *a as f64)
        .collect();
    std_dev(&d)
}

fn std_dev(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// Sample up to `frames` frames (every `stride`-th) of `source` (a file path or
/// `gdp+tcp://host:port`) and measure SI/TI.
pub fn measure(
    source: &str,
    frames: u32,
    stride: u32,
    timeout: Duration,
) -> Result<ContentComplexity> {
    gopswarm_agents::pipeline::init();
    use gopswarm_agents::pipeline::make;
    // The source is an address or a path, never pipeline syntax: its elements get it as typed
    // properties; only our own constant text below is parsed.
    let input = if source.contains("://") {
        let endpoint = gopswarm_proto::check_source(source).map_err(anyhow::Error::msg)?;
        vec![
            make(
                "tcpclientsrc",
                &[
                    ("host", endpoint.host_name().to_value()),
                    ("port", i32::from(endpoint.port).to_value()),
                ],
            )?,
            make("gdpdepay", &[])?,
        ]
    } else {
        if !std::path::Path::new(source).exists() {
            bail!("source {source} not found");
        }
        vec![make("filesrc", &[("location", source.to_value())])?]
    };
    let analysis = gst::parse::bin_from_description(
        &format!(
            "videoconvert ! videoscale \
             ! video/x-raw,format=GRAY8,width={WIDTH},height={HEIGHT},pixel-aspect-ratio=1/1 \
             ! appsink name=out sync=false max-buffers=8"
        ),
        true,
    )
    .context("complexity pipeline")?;
    let decode = make("decodebin", &[])?;
    let mut elements = input;
    elements.push(decode.clone());
    let pipeline = gopswarm_agents::pipeline::chain(&elements)?;
    pipeline.add(&analysis)?;
    // decodebin's pad appears once it knows the stream: link its video there.
    let analysis_sink = analysis.static_pad("sink").context("analysis sink pad")?;
    decode.connect_pad_added(move |_, pad| {
        let video = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        if video && !analysis_sink.is_linked() {
            let _ = pad.link(&analysis_sink);
        }
    });
    let sink = analysis
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("complexity pipeline has no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let deadline = std::time::Instant::now() + timeout;
    let (mut si, mut ti, mut n, mut index) = (0f64, 0f64, 0u32, 0u64);
    let mut prev: Option<Vec<u8>> = None;
    let result = loop {
        if n >= frames {
            break Ok(());
        }
        if std::time::Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {n} frames from {source} within {timeout:?}"
            ));
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) else {
            if sink.is_eos() {
                break if n >= 2 {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("{source} ended after {n} frames"))
                };
            }
            if let Some(msg) = pipeline
                .bus()
                .unwrap()
                .pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                break Err(anyhow::anyhow!("{source}: {}", e.error()));
            }
            continue;
        };
        index += 1;
        // Consecutive pairs for TI: take frame k*stride and the one right after it.
        let take = stride <= 1 || index % stride as u64 <= 1;
        if !take {
            prev = None;
            continue;
        }
        let Some(buf) = sample.buffer() else { continue };
        let map = buf.map_readable()?;
        // GRAY8 rows are 4-byte aligned: 320 needs no padding.
        let y = map.as_slice()[..WIDTH * HEIGHT].to_vec();
        si = si.max(spatial_information(&y, WIDTH, HEIGHT));
        if let Some(p) = &prev {
            ti = ti.max(temporal_information(p, &y));
        }
        prev = Some(y);
        n += 1;
    };
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    Ok(ContentComplexity { si, ti, frames: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_frames_have_no_information() {
        let flat = vec![128u8; 64 * 36];
        assert_eq!(spatial_information(&flat, 64, 36), 0.0);
        assert_eq!(temporal_information(&flat, &flat), 0.0);
    }

    #[test]
    fn edges_and_motion_raise_si_and_ti() {
        let (w, h) = (64, 36);
        let stripes: Vec<u8> = (0..w * h)
            .map(|i| if (i % w) / 4 % 2 == 0 { 0 } else { 255 })
            .collect();
        let shifted: Vec<u8> = (0..w * h)
            .map(|i| if (i % w + 2) / 4 % 2 == 0 { 0 } else { 255 })
            .collect();
        let soft: Vec<u8> = (0..w * h).map(|i| ((i % w) * 2) as u8).collect();
        assert!(spatial_information(&stripes, w, h) > 5.0 * spatial_information(&soft, w, h));
        assert!(temporal_information(&stripes, &shifted) > 100.0);
    }
}
