// SPDX-License-Identifier: MPL-2.0
//! The `profile` string of `profileenc`: parsing, validation, normalisation, and the mapping from
//! a profile to concrete encoder settings (complexity table, rate control).
//!
//! Everything here is plain data so it can be unit-tested without a pipeline.

use gst::prelude::*;
use std::fmt;
use std::str::FromStr;

/// Default codec when the string is empty.
pub const DEFAULT_CODEC: Codec = Codec::H264;
/// Default bitrate cap (kbit/s) when neither `bitrate` nor `device` is given.
pub const DEFAULT_BITRATE: u32 = 2000;
pub const DEFAULT_COMPLEXITY: u32 = 5;
/// Default GOP duration (s).
pub const DEFAULT_GOP: f64 = 2.0;
/// Default VBV/decoder buffer for capped modes (ms).
pub const DEFAULT_VBV_BUFFER_MS: u32 = 1500;
pub const DEFAULT_RATE_CONTROL: RateControl = RateControl::CappedCrf;

/// Every field the profile string accepts.
pub const FIELDS: &[&str] = &[
    "width",
    "height",
    "framerate",
    "bitrate",
    "complexity",
    "crf",
    "rate-control",
    "vbv-buffer",
    "gop",
    "redundancy",
    "fec-k",
    "fec-m",
    "device",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    H265,
    Vp9,
    Av1,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }
    /// Largest valid `crf` in the encoder's own scale.
    pub fn max_crf(self) -> u32 {
        match self {
            Codec::H264 | Codec::H265 => 51,
            Codec::Vp9 | Codec::Av1 => 63,
        }
    }
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h264" => Ok(Codec::H264),
            "h265" => Ok(Codec::H265),
            "vp9" => Ok(Codec::Vp9),
            "av1" => Ok(Codec::Av1),
            other => Err(format!(
                "unknown codec '{other}' (the structure name must be one of h264, h265, vp9, av1)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Mobile,
    Desktop,
    Tv,
    Vr,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Desktop => "desktop",
            Device::Tv => "tv",
            Device::Vr => "vr",
        }
    }
    /// Default (width, height, bitrate kbit/s) of the device class.
    pub fn defaults(self) -> (u32, u32, u32) {
        match self {
            Device::Mobile => (640, 360, 800),
            Device::Desktop => (1280, 720, 3000),
            Device::Tv => (1920, 1080, 6000),
            Device::Vr => (3840, 1920, 16000),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mobile" => Ok(Device::Mobile),
            "desktop" => Ok(Device::Desktop),
            "tv" => Ok(Device::Tv),
            "vr" => Ok(Device::Vr),
            other => Err(format!(
                "unknown device '{other}' (one of mobile, desktop, tv, vr)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateControl {
    /// Constant quality (CRF) with the bitrate as VBV max rate: the default.
    CappedCrf,
    /// Constant quality, no cap.
    Crf,
    /// Average bitrate.
    Abr,
    /// Constant bitrate.
    Cbr,
}

impl RateControl {
    pub fn name(self) -> &'static str {
        match self {
            RateControl::CappedCrf => "capped-crf",
            RateControl::Crf => "crf",
            RateControl::Abr => "abr",
            RateControl::Cbr => "cbr",
        }
    }
}

impl FromStr for RateControl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "capped-crf" | "capped" => Ok(RateControl::CappedCrf),
            "crf" => Ok(RateControl::Crf),
            "abr" => Ok(RateControl::Abr),
            "cbr" => Ok(RateControl::Cbr),
            other => Err(format!(
                "unknown rate-control '{other}' (one of capped-crf, crf, abr, cbr)"
            )),
        }
    }
}

/// A validated, fully resolved profile (device defaults applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub codec: Codec,
    /// Output width; `None` keeps the source's (or follows the aspect ratio when only `height`
    /// is given).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Output frame rate as (num, den); `None` keeps the source's.
    pub framerate: Option<(i32, i32)>,
    /// Bitrate in kbit/s: the cap (capped-crf), the target (abr/cbr); unused by plain crf.
    pub bitrate: u32,
    pub complexity: u32,
    /// Explicit quality in the encoder's own scale; `None` derives it (see [`default_crf`]).
    pub crf: Option<u32>,
    pub rate_control: RateControl,
    pub vbv_buffer_ms: u32,
    /// GOP duration in seconds.
    pub gop: f64,
    pub redundancy: u32,
    pub fec_k: u32,
    pub fec_m: u32,
    pub device: Option<Device>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            codec: DEFAULT_CODEC,
            width: None,
            height: None,
            framerate: None,
            bitrate: DEFAULT_BITRATE,
            complexity: DEFAULT_COMPLEXITY,
            crf: None,
            rate_control: DEFAULT_RATE_CONTROL,
            vbv_buffer_ms: DEFAULT_VBV_BUFFER_MS,
            gop: DEFAULT_GOP,
            redundancy: 0,
            fec_k: 0,
            fec_m: 0,
            device: None,
        }
    }
}

fn field_u32(s: &gst::StructureRef, name: &str, min: u32, max: u32) -> Result<Option<u32>, String> {
    let Ok(v) = s.value(name) else {
        return Ok(None);
    };
    let n: i64 = if let Ok(i) = v.get::<i32>() {
        i as i64
    } else if let Ok(u) = v.get::<u32>() {
        u as i64
    } else if let Ok(i) = v.get::<i64>() {
        i
    } else if let Ok(u) = v.get::<u64>() {
        u.min(i64::MAX as u64) as i64
    } else {
        return Err(format!(
            "field '{name}' must be an integer, got {} ({})",
            v.serialize().map(|s| s.to_string()).unwrap_or_default(),
            v.type_().name()
        ));
    };
    if n < min as i64 || n > max as i64 {
        let unit = match name {
            "bitrate" => " kbit/s",
            "vbv-buffer" => " ms",
            "width" | "height" => " pixels",
            _ => "",
        };
        return Err(format!(
            "field '{name}' = {n} is out of range {min}..={max}{unit}"
        ));
    }
    Ok(Some(n as u32))
}

fn field_str<'a>(s: &'a gst::StructureRef, name: &str) -> Result<Option<&'a str>, String> {
    let Ok(v) = s.value(name) else {
        return Ok(None);
    };
    v.get::<&str>()
        .map(Some)
        .map_err(|_| format!("field '{name}' must be a string ({})", v.type_().name()))
}

impl Profile {
    /// Parses a profile string such as
    /// `h264, width=1280, height=720, framerate=25/1, bitrate=3000, complexity=5, gop=2.0`.
    pub fn parse(text: &str) -> Result<Profile, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Profile::default());
        }
        let s = gst::Structure::from_str(text)
            .map_err(|_| format!("'{text}' is not a valid GstStructure string"))?;
        Self::from_structure(&s)
    }

    pub fn from_structure(s: &gst::StructureRef) -> Result<Profile, String> {
        let codec: Codec = s.name().as_str().parse()?;
        for (field, _) in s.iter() {
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "unknown field '{field}' (known: {})",
                    FIELDS.join(", ")
                ));
            }
        }
        let mut p = Profile {
            codec,
            ..Profile::default()
        };
        p.device = field_str(s, "device")?.map(str::parse).transpose()?;
        p.width = field_u32(s, "width", 16, 8192)?;
        p.height = field_u32(s, "height", 16, 8192)?;
        for (name, v) in [("width", p.width), ("height", p.height)] {
            if v.is_some_and(|v| v % 2 != 0) {
                return Err(format!("field '{name}' must be even (4:2:0 encoders)"));
            }
        }
        if let Some(dev) = p.device {
            let (w, h, _) = dev.defaults();
            if p.width.is_none() && p.height.is_none() {
                p.width = Some(w);
                p.height = Some(h);
            }
        }
        if let Ok(v) = s.value("framerate") {
            let (n, d) = if let Ok(f) = v.get::<gst::Fraction>() {
                (f.numer(), f.denom())
            } else if let Ok(i) = v.get::<i32>() {
                (i, 1)
            } else {
                return Err(format!(
                    "field 'framerate' must be a fraction such as 25/1 ({})",
                    v.type_().name()
                ));
            };
            if n <= 0 || d <= 0 || (n as f64 / d as f64) > 300.0 {
                return Err(format!(
                    "field 'framerate' = {n}/{d} is out of range (0, 300]"
                ));
            }
            let g = gcd(n as u64, d as u64) as i32;
            p.framerate = Some((n / g, d / g));
        }
        p.bitrate = field_u32(s, "bitrate", 16, 100_000)?
            .or(p.device.map(|d| d.defaults().2))
            .unwrap_or(DEFAULT_BITRATE);
        p.complexity = field_u32(s, "complexity", 1, 10)?.unwrap_or(DEFAULT_COMPLEXITY);
        p.crf = field_u32(s, "crf", 0, codec.max_crf())?;
        if let Some(rc) = field_str(s, "rate-control")? {
            p.rate_control = rc.parse()?;
        }
        p.vbv_buffer_ms = field_u32(s, "vbv-buffer", 100, 10_000)?.unwrap_or(DEFAULT_VBV_BUFFER_MS);
        if let Ok(v) = s.value("gop") {
            let gop = if let Ok(f) = v.get::<f64>() {
                f
            } else if let Ok(i) = v.get::<i32>() {
                i as f64
            } else {
                return Err(format!(
                    "field 'gop' must be a number of seconds ({})",
                    v.type_().name()
                ));
            };
            if !(0.1..=60.0).contains(&gop) {
                return Err(format!("field 'gop' = {gop} s is out of range 0.1..=60"));
            }
            p.gop = gop;
        }
        p.redundancy = field_u32(s, "redundancy", 0, 8)?.unwrap_or(0);
        p.fec_k = field_u32(s, "fec-k", 0, 128)?.unwrap_or(0);
        p.fec_m = field_u32(s, "fec-m", 0, 64)?.unwrap_or(0);
        if p.fec_m > 0 && p.fec_k == 0 {
            return Err("field 'fec-m' > 0 needs 'fec-k' >= 1".into());
        }
        Ok(p)
    }

    /// GOP duration in nanoseconds.
    pub fn gop_ns(&self) -> u64 {
        (self.gop * 1e9).round() as u64
    }

    /// The normalised profile as a structure: every field, resolved (device defaults applied);
    /// `width`/`height`/`framerate`/`crf` only when set.
    pub fn to_structure(&self) -> gst::Structure {
        let mut b = gst::Structure::builder(self.codec.name());
        if let Some(w) = self.width {
            b = b.field("width", w as i32);
        }
        if let Some(h) = self.height {
            b = b.field("height", h as i32);
        }
        if let Some((n, d)) = self.framerate {
            b = b.field("framerate", gst::Fraction::new(n, d));
        }
        b = b
            .field("bitrate", self.bitrate as i32)
            .field("complexity", self.complexity as i32);
        if let Some(crf) = self.crf {
            b = b.field("crf", crf as i32);
        }
        b = b
            .field("rate-control", self.rate_control.name())
            .field("vbv-buffer", self.vbv_buffer_ms as i32)
            .field("gop", self.gop)
            .field("redundancy", self.redundancy as i32)
            .field("fec-k", self.fec_k as i32)
            .field("fec-m", self.fec_m as i32);
        if let Some(d) = self.device {
            b = b.field("device", d.name());
        }
        b.build()
    }

    /// Decode reorder depth, in frames, of the encoder this profile configures: the decode delay
    /// one encoder gives its whole output (DTS = PTS of the frame this many frames earlier).
    /// x264 and x265 use a B-pyramid, whatever their B-frame count, so 2; x264's ultrafast preset
    /// (complexity 1) has no B-frames; VP9 and AV1 never show reordering in their timestamps.
    /// `partialpay` declares it in every chunk so `gopmerge` can give the rendition one constant
    /// decode delay; the profileenc tests check it against what the encoders emit.
    pub fn reorder_frames(&self) -> u8 {
        match self.codec {
            Codec::H264 if self.complexity.clamp(1, 10) == 1 => 0,
            Codec::H264 | Codec::H265 => 2,
            Codec::Vp9 | Codec::Av1 => 0,
        }
    }

    /// Whether going from `self` to `other` needs a new encoding chain (anything that changes
    /// pixels or bits); redundancy/FEC changes do not.
    pub fn encoding_differs(&self, other: &Profile) -> bool {
        let strip = |p: &Profile| Profile {
            redundancy: 0,
            fec_k: 0,
            fec_m: 0,
            device: None,
            ..p.clone()
        };
        strip(self) != strip(other)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // GStreamer 1.22 ends a serialised structure with ';': not part of the profile syntax.
        f.write_str(self.to_structure().to_string().trim_end_matches(';'))
    }
}

pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Whether the codec's GStreamer 1.22 encoder turns a force-key-unit request into a keyframe.
/// `av1enc` 1.22 does not (it never passes `AOM_EFLAG_FORCE_KF`): `profileenc` starts a new
/// encoder for every AV1 GOP instead.
pub fn honours_force_key_unit(codec: Codec) -> bool {
    codec != Codec::Av1
}

/// Output geometry the encoder will see, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// Default quality for `capped-crf`/`crf` when `crf` is absent, in x264's CRF scale, from the
/// bits per pixel the cap allows (bitrate / (width x height x fps)) and the complexity:
///
/// | bits/pixel | >= 0.20 | >= 0.12 | >= 0.07 | >= 0.04 | >= 0.02 | less |
/// |------------|---------|---------|---------|---------|---------|------|
/// | CRF        | 18      | 20      | 22      | 24      | 26      | 28   |
///
/// minus 1 for complexity >= 8 (slow presets can afford it under the same cap), plus 1 for
/// complexity <= 2 (the fastest presets spend more bits for the same quality). The cap decides
/// the size on hard content; the CRF keeps easy content from wasting bits.
pub fn default_crf_x264(bitrate_kbps: u32, complexity: u32, geo: Geometry) -> u32 {
    let pixels = geo.width.max(16) as f64 * geo.height.max(16) as f64 * geo.fps.max(1.0);
    let bpp = bitrate_kbps as f64 * 1000.0 / pixels;
    let mut crf: i32 = match bpp {
        b if b >= 0.20 => 18,
        b if b >= 0.12 => 20,
        b if b >= 0.07 => 22,
        b if b >= 0.04 => 24,
        b if b >= 0.02 => 26,
        _ => 28,
    };
    if complexity >= 8 {
        crf -= 1;
    } else if complexity <= 2 {
        crf += 1;
    }
    crf.clamp(0, 51) as u32
}

/// The quality value in the codec's own scale (explicit `crf`, or the default mapped from the
/// x264 scale: x265 +4, VP9/AV1 x1.4 on 0..63).
pub fn effective_crf(p: &Profile, geo: Geometry) -> u32 {
    if let Some(c) = p.crf {
        return c;
    }
    let c = default_crf_x264(p.bitrate, p.complexity, geo);
    match p.codec {
        Codec::H264 => c,
        Codec::H265 => (c + 4).min(51),
        Codec::Vp9 | Codec::Av1 => ((c as f64 * 1.4).round() as u32).min(63),
    }
}

/// A property value in an encoder configuration; integers are converted to the property's
/// actual type when applied.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    Int(i64),
    Bool(bool),
    /// A string, or an enum/flags nick.
    Str(String),
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::Int(i) => write!(f, "{i}"),
            PropValue::Bool(b) => write!(f, "{b}"),
            PropValue::Str(s) if s.contains([' ', ':', '=']) => write!(f, "\"{s}\""),
            PropValue::Str(s) => f.write_str(s),
        }
    }
}

/// How to build the encoder part of the chain for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub factory: &'static str,
    pub props: Vec<(&'static str, PropValue)>,
    /// Parser placed after the encoder (in-band parameter sets at every keyframe).
    pub parser: Option<&'static str>,
    /// Caps forced on the output.
    pub out_caps: Option<&'static str>,
}

impl EncoderConfig {
    /// `x264enc pass=qual quantizer=22 ...`, for logs and the `stats` property.
    pub fn describe(&self) -> String {
        let mut s = self.factory.to_string();
        for (k, v) in &self.props {
            s.push_str(&format!(" {k}={v}"));
        }
        if let Some(p) = self.parser {
            s.push_str(&format!(" ! {p} config-interval=-1"));
        }
        s
    }
}

const X26X_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "veryslow",
];

/// Complexity -> (vpx deadline, cpu-used) for vp9enc: 1-4 realtime, 5-10 good quality.
fn vp9_speed(complexity: u32) -> (i64, i64) {
    match complexity {
        1 => (1, 8),
        2 => (1, 7),
        3 => (1, 6),
        4 => (1, 5),
        5 => (1_000_000, 4),
        6 => (1_000_000, 3),
        7 => (1_000_000, 2),
        8 => (1_000_000, 1),
        9 => (1_000_000, 0),
        _ => (0, 0),
    }
}

/// Complexity -> (usage-profile, cpu-used) for av1enc (libaom).
fn av1_speed(complexity: u32) -> (&'static str, i64) {
    match complexity {
        1 => ("realtime", 10),
        2 => ("realtime", 9),
        3 => ("realtime", 8),
        4 => ("realtime", 7),
        5 => ("good-quality", 6),
        6 => ("good-quality", 5),
        7 => ("good-quality", 4),
        8 => ("good-quality", 3),
        9 => ("good-quality", 2),
        _ => ("good-quality", 1),
    }
}

/// The encoder settings for a profile: codec element, complexity table, rate control, and
/// keyframe placement (never automatic: `keyint` = 10 GOPs, scene cuts off; the element forces
/// every IDR on the grid).
pub fn encoder_config(p: &Profile, geo: Geometry) -> EncoderConfig {
    let crf = effective_crf(p, geo) as i64;
    let gop_frames = (p.gop * geo.fps.max(1.0)).ceil().max(1.0) as i64;
    let keyint = (gop_frames * 10).max(10);
    let bitrate = p.bitrate as i64;
    let vbv_ms = p.vbv_buffer_ms as i64;
    let c = p.complexity.clamp(1, 10);
    let s = |v: &str| PropValue::Str(v.to_string());
    let i = PropValue::Int;
    match p.codec {
        Codec::H264 => {
            let mut opts = String::from("scenecut=0");
            if c == 10 {
                opts.push_str(":subme=11:merange=32");
            }
            let mut props = vec![
                ("speed-preset", s(X26X_PRESETS[c as usize - 1])),
                ("key-int-max", i(keyint)),
                ("byte-stream", PropValue::Bool(true)),
            ];
            match p.rate_control {
                RateControl::CappedCrf => props.extend([
                    ("pass", s("qual")),
                    ("quantizer", i(crf)),
                    ("bitrate", i(bitrate)),
                    ("vbv-buf-capacity", i(vbv_ms)),
                ]),
                RateControl::Crf => props.extend([
                    ("pass", s("qual")),
                    ("quantizer", i(crf)),
                    // A VBV buffer of 0 disables the VBV (x264: "maxrate without bufsize,
                    // ignored"), so the bitrate is no cap.
                    ("vbv-buf-capacity", i(0)),
                ]),
                RateControl::Abr => props.extend([
                    ("pass", s("cbr")),
                    ("bitrate", i(bitrate)),
                    ("vbv-buf-capacity", i(0)),
                ]),
                RateControl::Cbr => props.extend([
                    ("pass", s("cbr")),
                    ("bitrate", i(bitrate)),
                    ("vbv-buf-capacity", i(vbv_ms)),
                ]),
            }
            props.push(("option-string", PropValue::Str(opts)));
            EncoderConfig {
                factory: "x264enc",
                props,
                parser: Some("h264parse"),
                out_caps: Some("video/x-h264, stream-format=byte-stream, alignment=au"),
            }
        }
        Codec::H265 => {
            let vbv_size = bitrate * vbv_ms / 1000;
            let mut opts =
                format!("keyint={keyint}:min-keyint=1:scenecut=0:open-gop=0:repeat-headers=1");
            match p.rate_control {
                RateControl::CappedCrf => opts.push_str(&format!(
                    ":crf={crf}:vbv-maxrate={bitrate}:vbv-bufsize={vbv_size}"
                )),
                RateControl::Crf => opts.push_str(&format!(":crf={crf}")),
                RateControl::Abr => {}
                RateControl::Cbr => opts.push_str(&format!(
                    ":vbv-maxrate={bitrate}:vbv-bufsize={vbv_size}:strict-cbr=1"
                )),
            }
            EncoderConfig {
                factory: "x265enc",
                props: vec![
                    ("speed-preset", s(X26X_PRESETS[c as usize - 1])),
                    ("key-int-max", i(keyint)),
                    ("bitrate", i(bitrate)),
                    ("option-string", PropValue::Str(opts)),
                ],
                parser: Some("h265parse"),
                out_caps: Some("video/x-h265, stream-format=byte-stream, alignment=au"),
            }
        }
        Codec::Vp9 => {
            let (deadline, cpu) = vp9_speed(c);
            let mut props = vec![
                ("deadline", i(deadline)),
                ("cpu-used", i(cpu)),
                ("keyframe-mode", s("disabled")),
                ("keyframe-max-dist", i(keyint)),
                ("row-mt", PropValue::Bool(true)),
                ("buffer-size", i(vbv_ms)),
            ];
            match p.rate_control {
                RateControl::CappedCrf => props.extend([
                    ("end-usage", s("cq")),
                    ("cq-level", i(crf)),
                    ("target-bitrate", i(bitrate * 1000)),
                ]),
                RateControl::Crf => props.extend([
                    ("end-usage", s("cq")),
                    ("cq-level", i(crf)),
                    ("target-bitrate", i(1_000_000_000)),
                ]),
                RateControl::Abr => props.extend([
                    ("end-usage", s("vbr")),
                    ("target-bitrate", i(bitrate * 1000)),
                ]),
                RateControl::Cbr => props.extend([
                    ("end-usage", s("cbr")),
                    ("target-bitrate", i(bitrate * 1000)),
                ]),
            }
            EncoderConfig {
                factory: "vp9enc",
                props,
                parser: None,
                out_caps: None,
            }
        }
        Codec::Av1 => {
            let (usage, cpu) = av1_speed(c);
            let mut props = vec![
                ("usage-profile", s(usage)),
                ("cpu-used", i(cpu)),
                ("keyframe-mode", s("disabled")),
                ("keyframe-max-dist", i(keyint)),
                ("buf-sz", i(vbv_ms)),
            ];
            match p.rate_control {
                // av1enc 1.22 has no cq-level property: in CQ mode libaom clamps its level into
                // [min-quantizer, max-quantizer], so min-quantizer is the quality floor.
                RateControl::CappedCrf => props.extend([
                    ("end-usage", s("cq")),
                    ("min-quantizer", i(crf)),
                    ("max-quantizer", i(63)),
                    ("target-bitrate", i(bitrate)),
                ]),
                RateControl::Crf => props.extend([
                    ("end-usage", s("q")),
                    ("min-quantizer", i(crf)),
                    ("max-quantizer", i(crf)),
                ]),
                RateControl::Abr => {
                    props.extend([("end-usage", s("vbr")), ("target-bitrate", i(bitrate))])
                }
                RateControl::Cbr => {
                    props.extend([("end-usage", s("cbr")), ("target-bitrate", i(bitrate))])
                }
            }
            EncoderConfig {
                factory: "av1enc",
                props,
                parser: None,
                out_caps: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        let _ = gst::init();
    }

    #[test]
    fn parse_full_and_normalise() {
        init();
        let p = Profile::parse(
            "h264, width=1280, height=720, framerate=25/1, bitrate=3000, complexity=5, gop=2.0, \
             redundancy=1, fec-k=4, fec-m=1, device=desktop",
        )
        .unwrap();
        assert_eq!(p.codec, Codec::H264);
        assert_eq!((p.width, p.height), (Some(1280), Some(720)));
        assert_eq!(p.framerate, Some((25, 1)));
        assert_eq!(p.bitrate, 3000);
        assert_eq!(p.gop_ns(), 2_000_000_000);
        assert_eq!((p.redundancy, p.fec_k, p.fec_m), (1, 4, 1));
        // Round trip through the normalised string.
        let again = Profile::parse(&p.to_string()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn device_defaults_and_int_values() {
        init();
        let p = Profile::parse("h265, device=tv, gop=1, framerate=50").unwrap();
        assert_eq!(
            (p.width, p.height, p.bitrate),
            (Some(1920), Some(1080), 6000)
        );
        assert_eq!(p.gop, 1.0);
        assert_eq!(p.framerate, Some((50, 1)));
        // Explicit values win over the device table.
        let p = Profile::parse("vp9, device=mobile, height=240, bitrate=300").unwrap();
        assert_eq!((p.width, p.height, p.bitrate), (None, Some(240), 300));
        let p = Profile::parse("").unwrap();
        assert_eq!(p, Profile::default());
    }

    #[test]
    fn rejects_bad_input() {
        init();
        for bad in [
            "h263, bitrate=100",
            "h264, bitrat=100",
            "h264, bitrate=-5",
            "h264, bitrate=abc",
            "h264, complexity=11",
            "h264, complexity=0",
            "h264, width=1281",
            "h264, gop=0",
            "h264, gop=100.0",
            "h264, device=watch",
            "h264, rate-control=vbr2",
            "h264, crf=52",
            "h264, framerate=0/1",
            "h264, fec-m=2",
            "h264, framerate=fast",
            "not a structure ,,, ==",
        ] {
            assert!(Profile::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Profile::parse("vp9, crf=60").is_ok());
    }

    #[test]
    fn encoding_differs_ignores_transport_fields() {
        init();
        let a = Profile::parse("h264, bitrate=500").unwrap();
        let b = Profile::parse("h264, bitrate=500, redundancy=2, fec-k=4, fec-m=2").unwrap();
        let c = Profile::parse("h264, bitrate=600").unwrap();
        assert!(!a.encoding_differs(&b));
        assert!(a.encoding_differs(&c));
    }

    #[test]
    fn encoder_configs() {
        init();
        let geo = Geometry {
            width: 1280,
            height: 720,
            fps: 25.0,
        };
        let p = Profile::parse("h264, bitrate=3000, complexity=6, gop=2.0").unwrap();
        let cfg = encoder_config(&p, geo);
        assert_eq!(cfg.factory, "x264enc");
        assert!(cfg.props.contains(&("pass", PropValue::Str("qual".into()))));
        assert!(cfg.props.contains(&("bitrate", PropValue::Int(3000))));
        assert!(cfg.props.contains(&("key-int-max", PropValue::Int(500))));
        assert!(
            cfg.props
                .contains(&("speed-preset", PropValue::Str("medium".into())))
        );
        // 3000 kbit/s at 720p25 = 0.13 bit/pixel -> CRF 20.
        assert!(cfg.props.contains(&("quantizer", PropValue::Int(20))));
        let p = Profile::parse("h265, bitrate=3000, crf=26").unwrap();
        let cfg = encoder_config(&p, geo);
        let opts = cfg.describe();
        assert!(
            opts.contains("crf=26:vbv-maxrate=3000:vbv-bufsize=4500"),
            "{opts}"
        );
        let p = Profile::parse("vp9, bitrate=1000").unwrap();
        let cfg = encoder_config(&p, geo);
        assert!(
            cfg.props
                .contains(&("target-bitrate", PropValue::Int(1_000_000)))
        );
        assert!(
            cfg.props
                .contains(&("end-usage", PropValue::Str("cq".into())))
        );
    }
}
