// SPDX-License-Identifier: MPL-2.0
//! The payload check (`verify-payload`): a GOP goes out only if its frames are what its header
//! says, so one bad chunk (a buggy or hostile host; its CRC proves nothing, anyone can compute
//! it) costs that GOP alone instead of breaking the parser, muxer or player behind the merger.
//!
//! - `parse` (H.264; H.265 gets the Annex-B and NAL header part): every frame is Annex-B with
//!   sane NAL headers and at least one slice, the GOP opens with SPS, PPS and an IDR slice, and
//!   the SPS's picture size is the one the chunk's caps declare.
//! - `decode`: `parse`, then the GOP is decoded by a decoder that reports damage
//!   (`openh264dec`, which drops a frame it cannot decode; libav conceals slice errors and
//!   reports nothing): every frame must come out, at the declared size. Garbage slice data
//!   behind intact headers only shows here.

use gopswarm_chunk::FrameRecord;
use gst::glib;
use gst::prelude::*;
use h264_reader::nal::{Nal, RefNal, UnitType, sps::SeqParameterSet};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstGopMergeVerifyPayload")]
pub enum VerifyPayload {
    /// Trust the payload (the inputs are trusted producers).
    #[default]
    #[enum_value(name = "None: trust the payload", nick = "none")]
    None = 0,
    /// Check the bitstream structure and the picture size (cheap).
    #[enum_value(
        name = "Parse: Annex-B structure, parameter sets, IDR start, picture size",
        nick = "parse"
    )]
    Parse = 1,
    /// Parse, then decode the GOP (costs a decoder's CPU time).
    #[enum_value(name = "Decode: parse, then decode every frame", nick = "decode")]
    Decode = 2,
}

/// The decoder of the decode check for H.264: it drops the frames it cannot decode.
pub const H264_CHECK_DECODER: &str = "openh264dec";
/// The longest a one-GOP decode may take before the GOP counts as undecodable.
const DECODE_TIMEOUT: Duration = Duration::from_secs(10);
/// ... plus this per frame (a 4K GOP on a loaded machine is not garbage).
const DECODE_TIMEOUT_PER_FRAME: Duration = Duration::from_millis(100);
/// Added to the chunk's timestamp offsets in the decode check, so none is negative.
const TIMESTAMP_BASE_NS: i64 = 10_000_000_000;

/// Why a GOP's payload was refused: `reason` goes into the `gopswarm-gap` message
/// (`invalid-payload` or `undecodable`), `detail` says what was wrong.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

fn invalid(detail: impl Into<String>) -> Rejection {
    Rejection {
        reason: "invalid-payload",
        detail: detail.into(),
    }
}

fn undecodable(detail: impl Into<String>) -> Rejection {
    Rejection {
        reason: "undecodable",
        detail: detail.into(),
    }
}

/// Whether `decode` can run here for `codec` (the decoder element is installed).
pub fn decoder_available(codec: &str) -> bool {
    codec != "video/x-h264" || gst::ElementFactory::find(H264_CHECK_DECODER).is_some()
}

/// Check one GOP: its frames (decode order) under the chunk's caps `codec`.
pub fn verify(mode: VerifyPayload, codec: &str, frames: &[FrameRecord]) -> Result<(), Rejection> {
    if mode == VerifyPayload::None {
        return Ok(());
    }
    // Unparsable caps are the caller's own gap (`unparsable-caps`).
    let Ok(caps) = gst::Caps::from_str(codec) else {
        return Ok(());
    };
    let Some(s) = caps.structure(0) else {
        return Ok(());
    };
    let size = s.get::<i32>("width").ok().zip(s.get::<i32>("height").ok());
    if frames.is_empty() {
        return Err(invalid("no frames"));
    }
    match s.name().as_str() {
        "video/x-h264" => {
            parse_h264(frames, size)?;
            if mode == VerifyPayload::Decode {
                decode(&caps, frames, size)?;
            }
        }
        "video/x-h265" => {
            for (i, f) in frames.iter().enumerate() {
                let nals = annex_b(&f.data).map_err(|e| invalid(format!("frame {i}: {e}")))?;
                if nals.iter().any(|n| n.len() < 2 || n[0] & 0x80 != 0) {
                    return Err(invalid(format!("frame {i}: bad NAL header")));
                }
            }
        }
        // VP9 and AV1 frames have no structure checked here.
        _ => {}
    }
    Ok(())
}

/// The NAL units of an Annex-B access unit (without start codes), or why it is not one.
fn annex_b(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let starts: Vec<usize> = (0..data.len().saturating_sub(2))
        .filter(|&i| data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1)
        .collect();
    let Some(&first) = starts.first() else {
        return Err("no Annex-B start code".into());
    };
    if data[..first].iter().any(|&b| b != 0) {
        return Err("bytes before the first start code".into());
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(data.len());
        let mut nal = &data[s + 3..end];
        // The zero byte of a following 4-byte start code, and trailing zeros.
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if nal.is_empty() {
            return Err("empty NAL unit".into());
        }
        nals.push(nal);
    }
    Ok(nals)
}

fn parse_h264(frames: &[FrameRecord], size: Option<(i32, i32)>) -> Result<(), Rejection> {
    for (i, f) in frames.iter().enumerate() {
        let nals = annex_b(&f.data).map_err(|e| invalid(format!("frame {i}: {e}")))?;
        let mut slices = 0;
        let (mut sps, mut pps, mut idr) = (false, false, false);
        for nal in nals {
            let header = RefNal::new(nal, &[], true)
                .header()
                .map_err(|_| invalid(format!("frame {i}: NAL header with forbidden bit")))?;
            match header.nal_unit_type() {
                UnitType::SliceLayerWithoutPartitioningNonIdr => slices += 1,
                UnitType::SliceLayerWithoutPartitioningIdr => {
                    slices += 1;
                    idr = true;
                }
                UnitType::SeqParameterSet => {
                    sps = true;
                    let parsed =
                        SeqParameterSet::from_bits(RefNal::new(nal, &[], true).rbsp_bits())
                            .map_err(|e| {
                                invalid(format!("frame {i}: SPS does not parse: {e:?}"))
                            })?;
                    let dims = parsed
                        .pixel_dimensions()
                        .map_err(|e| invalid(format!("frame {i}: SPS picture size: {e:?}")))?;
                    if let Some((w, h)) = size
                        && (i64::from(dims.0), i64::from(dims.1)) != (i64::from(w), i64::from(h))
                    {
                        return Err(invalid(format!(
                            "frame {i}: SPS says {}x{}, the caps {w}x{h}",
                            dims.0, dims.1
                        )));
                    }
                }
                UnitType::PicParameterSet => pps = true,
                UnitType::Unspecified(t) | UnitType::Reserved(t) => {
                    return Err(invalid(format!("frame {i}: NAL unit type {t}")));
                }
                _ => {}
            }
        }
        if slices == 0 {
            return Err(invalid(format!("frame {i}: no slice")));
        }
        if i == 0 && !(sps && pps && idr) {
            return Err(invalid(
                "the GOP does not open with SPS, PPS and an IDR slice",
            ));
        }
    }
    Ok(())
}

/// Decode the GOP alone; every frame must come out at the declared size.
fn decode(
    caps: &gst::Caps,
    frames: &[FrameRecord],
    size: Option<(i32, i32)>,
) -> Result<(), Rejection> {
    let pipeline = gst::Pipeline::new();
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|_| undecodable(format!("no {name} element for the decode check")))
    };
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .format(gst::Format::Time)
        .max_bytes(0)
        .build();
    let parse = make("h264parse")?;
    let dec = make(H264_CHECK_DECODER)?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    let elements = [src.upcast_ref(), &parse, &dec, sink.upcast_ref()];
    let fail = |e: &dyn std::fmt::Display| undecodable(format!("decode check pipeline: {e}"));
    pipeline.add_many(elements).map_err(|e| fail(&e))?;
    gst::Element::link_many(elements).map_err(|e| fail(&e))?;
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| fail(&e))?;
        // The chunk's own timestamps (offsets from the GOP start, DTS possibly negative with
        // B-frames), shifted so they stay positive: PTS >= DTS holds as the encoder made it.
        let at = |offset: Option<i64>| {
            offset
                .and_then(|o| u64::try_from(o.saturating_add(TIMESTAMP_BASE_NS)).ok())
                .map(gst::ClockTime::from_nseconds)
        };
        for f in frames {
            let mut b = gst::Buffer::from_slice(f.data.clone());
            let b_mut = b.get_mut().unwrap();
            b_mut.set_dts(at(f.dts_offset));
            b_mut.set_pts(at(f.pts_offset));
            src.push_buffer(b).map_err(|e| fail(&e))?;
        }
        src.end_of_stream().map_err(|e| fail(&e))?;
        let mut decoded = 0;
        let deadline = std::time::Instant::now()
            + DECODE_TIMEOUT
            + DECODE_TIMEOUT_PER_FRAME * frames.len() as u32;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        loop {
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                decoded += 1;
                if let (Some(want), Some(s)) = (size, sample.caps().and_then(|c| c.structure(0))) {
                    let got = (s.get::<i32>("width").ok(), s.get::<i32>("height").ok());
                    if got != (Some(want.0), Some(want.1)) {
                        return Err(undecodable(format!(
                            "decodes to {:?}x{:?}, the caps say {}x{}",
                            got.0, got.1, want.0, want.1
                        )));
                    }
                }
            } else if sink.is_eos() {
                break;
            }
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                return Err(undecodable(format!("decoder error: {}", e.error())));
            }
            if std::time::Instant::now() > deadline {
                return Err(undecodable("decode check timed out"));
            }
        }
        if decoded != frames.len() {
            return Err(undecodable(format!(
                "{decoded} of {} frames decoded",
                frames.len()
            )));
        }
        Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_b_splits_and_refuses_what_is_not() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 0,
        ];
        let nals = annex_b(&au).unwrap();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
        assert!(annex_b(b"not annex b at all").is_err());
        assert!(annex_b(&[]).is_err());
        assert!(annex_b(&[7, 0, 0, 1, 0x65]).is_err());
        assert!(annex_b(&[0, 0, 1, 0, 0, 1, 0x65]).is_err());
    }
}
