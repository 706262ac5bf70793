// SPDX-License-Identifier: MPL-2.0
//! The gopswarm chunk format.
//!
//! A *chunk* is one encoded GOP (or one Reed-Solomon parity shard over a group of GOPs) with a
//! small versioned, checksummed header. Chunks are self-delimiting, so a partial stream can travel
//! over any byte transport (file, TCP, SRT, MQTT) and a receiver can resynchronise after garbage or
//! truncation.
//!
//! Wire layout (all integers little-endian):
//!
//! ```text
//! offset size  field
//!      0    4  magic "GSWC"
//!      4    1  version (3; versions 1 and 2 are still read)
//!      5    1  flags (REDUNDANT, PARITY, SHORT, DISCONT, SIGNED)
//!      6    2  header_len: bytes from the magic up to and including the header CRC
//!      8    8  gop_index on the GOP grid
//!     16    8  start_ns: grid start of the GOP on the common timeline
//!     24    8  duration_ns: grid duration of the GOP
//!     32    4  frame_count
//!     36    8  epoch of the assignment that produced the chunk
//!     44    4  payload_len
//!     48    1  fec_k (data chunks per parity group, 0 = no parity)
//!     49    1  fec_m (parity chunks per group)
//!     50    1+n stream id, 1+n profile id, 1+n host id (u8 length + UTF-8)
//!      .    2+n codec config (u16 length + UTF-8 GStreamer caps string)
//!      .    1  reorder_frames (version 2): the producing encoder's decode reorder depth in
//!              frames, 255 = not declared
//!      .    4  CRC32C of every header byte before it
//!      .    n  payload
//!      .    4  CRC32C of the payload
//!      .   64  signature (version 3, SIGNED flag only): ed25519 by the producing host over
//!              every byte before it, added and checked by the swarm daemons
//! ```
//!
//! The signature is a seal for the trip between a host and a merger: [`add_signature`] sets
//! SIGNED (and so changes the header CRC) and appends it, [`strip_signature`] gives back the
//! exact bytes the encoder made, which is what Reed-Solomon parity was computed over. This crate
//! only frames it; `gopswarm-proto` signs and checks it with the swarm's keys.
//!
//! A data chunk's payload is a frame table followed by the frames' bytes (see [`FrameRecord`]).
//! A parity chunk's payload is a [`ParityInfo`] followed by one Reed-Solomon shard.

mod deframer;
mod fec;

pub use deframer::{Deframer, DeframerStats};
pub use fec::{ParityInfo, make_parity, recover_group};

use thiserror::Error;

pub const MAGIC: [u8; 4] = *b"GSWC";
pub const VERSION: u8 = 3;
/// The oldest version this build still reads (no `reorder_frames`).
pub const MIN_VERSION: u8 = 1;
/// `reorder_frames` on the wire when the producer declared none.
const REORDER_UNDECLARED: u8 = u8::MAX;
/// Fixed part of the header, before the variable-length strings.
pub const FIXED_HEADER_LEN: usize = 50;
/// Upper bound on a whole chunk; anything larger is treated as corruption.
pub const MAX_CHUNK_LEN: usize = 256 * 1024 * 1024;
pub const MAX_ID_LEN: usize = 255;
/// Length of the signature trailer of a SIGNED chunk.
pub const SIGNATURE_LEN: usize = 64;
/// The first version that may carry a signature.
const SIGNED_SINCE: u8 = 3;

pub mod flags {
    /// A copy of a GOP that another slot encodes as primary (redundancy r > 0).
    pub const REDUNDANT: u8 = 0x01;
    /// Reed-Solomon parity over a group of data chunks.
    pub const PARITY: u8 = 0x02;
    /// The GOP ended early (EOS mid-GOP): fewer frames than the grid duration holds.
    pub const SHORT: u8 = 0x04;
    /// The producer skipped GOPs it was assigned before this one (restart, overload).
    pub const DISCONT: u8 = 0x08;
    /// A signature trailer follows the payload CRC (version 3).
    pub const SIGNED: u8 = 0x10;
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("need {0} more bytes")]
    Incomplete(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported chunk version {0} (this build reads versions {MIN_VERSION}-{VERSION})")]
    UnsupportedVersion(u8),
    #[error("header length {0} is invalid")]
    BadHeaderLength(usize),
    #[error("header CRC mismatch")]
    HeaderCrc,
    #[error("payload CRC mismatch")]
    PayloadCrc,
    #[error("chunk of {0} bytes exceeds the {MAX_CHUNK_LEN} byte limit")]
    TooLarge(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("identifier longer than {MAX_ID_LEN} bytes")]
    IdTooLong,
    #[error("reed-solomon: {0}")]
    Fec(String),
    #[error("chunk is not signed")]
    NotSigned,
    #[error("chunk is already signed")]
    AlreadySigned,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkHeader {
    pub version: u8,
    pub flags: u8,
    pub gop_index: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub frame_count: u32,
    pub epoch: u64,
    pub fec_k: u8,
    pub fec_m: u8,
    pub stream_id: String,
    pub profile_id: String,
    pub host_id: String,
    /// GStreamer caps string of the encoded stream ("video/x-h264, stream-format=byte-stream, ...").
    pub codec: String,
    /// Decode reorder depth of the producing encoder configuration, in frames: the most frames
    /// that can be decoded before a frame that is shown earlier (0 without B-frames, 2 for
    /// x264/x265 with a B-pyramid). Every producer of one profile declares the same value, so
    /// the merger can give the whole rendition one constant decode delay. None: not declared
    /// (version 1 chunks, or a producer that does not know its encoder).
    pub reorder_frames: Option<u8>,
}

impl ChunkHeader {
    pub fn is_parity(&self) -> bool {
        self.flags & flags::PARITY != 0
    }
    pub fn is_redundant(&self) -> bool {
        self.flags & flags::REDUNDANT != 0
    }
    pub fn is_signed(&self) -> bool {
        self.flags & flags::SIGNED != 0
    }
    pub fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.duration_ns)
    }

    fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN
            + 3
            + self.stream_id.len()
            + self.profile_id.len()
            + self.host_id.len()
            + 2
            + self.codec.len()
            + 1
            + 4
    }
}

/// A parsed, CRC-checked chunk. Keeps its serialised bytes, so it can be forwarded or used as a
/// Reed-Solomon shard without serialising it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub header: ChunkHeader,
    bytes: Vec<u8>,
    payload_start: usize,
}

impl Chunk {
    pub fn payload(&self) -> &[u8] {
        let trailer = if self.header.is_signed() {
            SIGNATURE_LEN
        } else {
            0
        };
        &self.bytes[self.payload_start..self.bytes.len() - 4 - trailer]
    }
    /// The whole serialised chunk.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Serialise a chunk. The `version` field of `header` is ignored: this always writes [`VERSION`].
/// SIGNED may not be set: [`add_signature`] sets it when it appends the signature.
pub fn serialize(header: &ChunkHeader, payload: &[u8]) -> Result<Vec<u8>, ChunkError> {
    if header.is_signed() {
        return Err(ChunkError::Malformed("SIGNED flag without a signature"));
    }
    for id in [&header.stream_id, &header.profile_id, &header.host_id] {
        if id.len() > MAX_ID_LEN {
            return Err(ChunkError::IdTooLong);
        }
    }
    if header.codec.len() > u16::MAX as usize {
        return Err(ChunkError::Malformed("codec string too long"));
    }
    if header.reorder_frames == Some(REORDER_UNDECLARED) {
        return Err(ChunkError::Malformed("reorder depth 255 is reserved"));
    }
    let header_len = header.encoded_len();
    // The length field is 16 bits: a header that does not fit must be refused, not wrapped.
    if header_len > u16::MAX as usize {
        return Err(ChunkError::Malformed("header longer than 65535 bytes"));
    }
    let total = header_len + payload.len() + 4;
    if total > MAX_CHUNK_LEN {
        return Err(ChunkError::TooLarge(total));
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.flags);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(&header.gop_index.to_le_bytes());
    out.extend_from_slice(&header.start_ns.to_le_bytes());
    out.extend_from_slice(&header.duration_ns.to_le_bytes());
    out.extend_from_slice(&header.frame_count.to_le_bytes());
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(header.fec_k);
    out.push(header.fec_m);
    for id in [&header.stream_id, &header.profile_id, &header.host_id] {
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(&(header.codec.len() as u16).to_le_bytes());
    out.extend_from_slice(header.codec.as_bytes());
    out.push(header.reorder_frames.unwrap_or(REORDER_UNDECLARED));
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), header_len);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ChunkError> {
        let end = self.pos.checked_add(n).ok_or(ChunkError::Malformed(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ChunkError::Malformed(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ChunkError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ChunkError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ChunkError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, ChunkError> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, n: usize, what: &'static str) -> Result<String, ChunkError> {
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ChunkError::NotUtf8)
    }
}

/// Length of the chunk starting at `buf[0]`, from its fixed header, without checking CRCs.
/// `Err(Incomplete)` when the fixed header is not all there yet.
pub fn peek_len(buf: &[u8]) -> Result<usize, ChunkError> {
    if buf.len() < FIXED_HEADER_LEN {
        if !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            return Err(ChunkError::BadMagic);
        }
        return Err(ChunkError::Incomplete(FIXED_HEADER_LEN - buf.len()));
    }
    if buf[..4] != MAGIC {
        return Err(ChunkError::BadMagic);
    }
    if !(MIN_VERSION..=VERSION).contains(&buf[4]) {
        return Err(ChunkError::UnsupportedVersion(buf[4]));
    }
    let header_len = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    if header_len < FIXED_HEADER_LEN + 3 + 2 + 4 {
        return Err(ChunkError::BadHeaderLength(header_len));
    }
    let payload_len = u32::from_le_bytes(buf[44..48].try_into().unwrap()) as usize;
    let trailer = match (buf[4] >= SIGNED_SINCE, buf[5] & flags::SIGNED != 0) {
        (true, true) => SIGNATURE_LEN,
        (false, true) => return Err(ChunkError::Malformed("SIGNED flag before version 3")),
        (_, false) => 0,
    };
    let total = header_len + payload_len + 4 + trailer;
    if total > MAX_CHUNK_LEN {
        return Err(ChunkError::TooLarge(total));
    }
    Ok(total)
}

/// Parse and verify a buffer holding exactly one chunk, taking ownership without copying.
pub fn parse_owned(bytes: Vec<u8>) -> Result<Chunk, ChunkError> {
    let (chunk, used) = parse_ref(&bytes)?;
    if used != bytes.len() {
        return Err(ChunkError::Malformed("trailing bytes after chunk"));
    }
    Ok(Chunk {
        header: chunk,
        payload_start: u16::from_le_bytes([bytes[6], bytes[7]]) as usize,
        bytes,
    })
}

/// Parse and verify the chunk at the start of `buf`. Returns the chunk and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<(Chunk, usize), ChunkError> {
    let (header, total) = parse_ref(buf)?;
    let header_len = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    Ok((
        Chunk {
            header,
            bytes: buf[..total].to_vec(),
            payload_start: header_len,
        },
        total,
    ))
}

/// Verify the chunk at the start of `buf` and decode its header; returns the header and the
/// chunk's length.
pub fn parse_ref(buf: &[u8]) -> Result<(ChunkHeader, usize), ChunkError> {
    let total = peek_len(buf)?;
    if buf.len() < total {
        return Err(ChunkError::Incomplete(total - buf.len()));
    }
    let header_len = u16::from_le_bytes([buf[6], buf[7]]) as usize;
    let stored_crc = u32::from_le_bytes(buf[header_len - 4..header_len].try_into().unwrap());
    if crc32c::crc32c(&buf[..header_len - 4]) != stored_crc {
        return Err(ChunkError::HeaderCrc);
    }
    let mut r = Reader {
        buf: &buf[..header_len - 4],
        pos: 4,
    };
    let version = r.u8("version")?;
    let flags = r.u8("flags")?;
    let _ = r.u16("header_len")?;
    let gop_index = r.u64("gop_index")?;
    let start_ns = r.u64("start")?;
    let duration_ns = r.u64("duration")?;
    let frame_count = r.u32("frame_count")?;
    let epoch = r.u64("epoch")?;
    let payload_len = r.u32("payload_len")? as usize;
    let fec_k = r.u8("fec_k")?;
    let fec_m = r.u8("fec_m")?;
    let n = r.u8("stream id")? as usize;
    let stream_id = r.string(n, "stream id")?;
    let n = r.u8("profile id")? as usize;
    let profile_id = r.string(n, "profile id")?;
    let n = r.u8("host id")? as usize;
    let host_id = r.string(n, "host id")?;
    let n = r.u16("codec")? as usize;
    let codec = r.string(n, "codec")?;
    let reorder_frames = if version >= 2 {
        Some(r.u8("reorder frames")?).filter(|&v| v != REORDER_UNDECLARED)
    } else {
        None
    };
    if r.pos != r.buf.len() {
        return Err(ChunkError::BadHeaderLength(header_len));
    }
    let payload = &buf[header_len..header_len + payload_len];
    let stored_crc = u32::from_le_bytes(
        buf[header_len + payload_len..header_len + payload_len + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if crc32c::crc32c(payload) != stored_crc {
        return Err(ChunkError::PayloadCrc);
    }
    let header = ChunkHeader {
        version,
        flags,
        gop_index,
        start_ns,
        duration_ns,
        frame_count,
        epoch,
        fec_k,
        fec_m,
        stream_id,
        profile_id,
        host_id,
        codec,
        reorder_frames,
    };
    Ok((header, total))
}

/// The bytes a chunk's signature covers and the signature, for a SIGNED chunk at the start of
/// `buf` (CRCs checked).
pub fn signature(buf: &[u8]) -> Result<(ChunkHeader, &[u8], &[u8; SIGNATURE_LEN]), ChunkError> {
    let (header, total) = parse_ref(buf)?;
    if !header.is_signed() {
        return Err(ChunkError::NotSigned);
    }
    let (covered, sig) = buf[..total].split_at(total - SIGNATURE_LEN);
    Ok((header, covered, sig.try_into().expect("64 bytes")))
}

/// Rewrite the header's flags byte and its CRC in place.
fn set_flags(bytes: &mut [u8], flags: u8) {
    let header_len = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    bytes[5] = flags;
    let crc = crc32c::crc32c(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
}

/// Seal one whole, unsigned version-3 chunk: set SIGNED, then append what `sign` returns for
/// every byte before the signature.
pub fn add_signature(
    mut bytes: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> [u8; SIGNATURE_LEN],
) -> Result<Vec<u8>, ChunkError> {
    let (header, total) = parse_ref(&bytes)?;
    if total != bytes.len() {
        return Err(ChunkError::Malformed("trailing bytes after chunk"));
    }
    if header.is_signed() {
        return Err(ChunkError::AlreadySigned);
    }
    if header.version < SIGNED_SINCE {
        return Err(ChunkError::UnsupportedVersion(header.version));
    }
    set_flags(&mut bytes, header.flags | flags::SIGNED);
    let sig = sign(&bytes);
    bytes.extend_from_slice(&sig);
    Ok(bytes)
}

/// The chunk as its encoder made it: the signature trailer dropped and SIGNED cleared. An
/// unsigned chunk comes back as it is. Checks nothing but the framing: verify first.
pub fn strip_signature(mut bytes: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    let (header, total) = parse_ref(&bytes)?;
    if total != bytes.len() {
        return Err(ChunkError::Malformed("trailing bytes after chunk"));
    }
    if !header.is_signed() {
        return Ok(bytes);
    }
    bytes.truncate(total - SIGNATURE_LEN);
    set_flags(&mut bytes, header.flags & !flags::SIGNED);
    Ok(bytes)
}

pub mod frame_flags {
    /// Not a keyframe (GST_BUFFER_FLAG_DELTA_UNIT).
    pub const DELTA: u16 = 0x01;
    /// Carries codec headers only (GST_BUFFER_FLAG_HEADER).
    pub const HEADER: u16 = 0x02;
    /// Frames before the GOP start that a decoder needs; dropped after decoding.
    pub const PREROLL: u16 = 0x04;
}

/// One encoded frame inside a data chunk. Times are relative to the chunk's grid start on the
/// common timeline, so they survive any transport and any receiver's own clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    pub pts_offset: Option<i64>,
    pub dts_offset: Option<i64>,
    pub duration: Option<u64>,
    pub flags: u16,
    pub data: Vec<u8>,
}

const FRAME_RECORD_LEN: usize = 8 + 8 + 8 + 2 + 4;
const NONE_I64: i64 = i64::MIN;
const NONE_U64: u64 = u64::MAX;

/// Build a data chunk payload: frame count, a fixed-size record per frame, then the frames' bytes.
pub fn encode_frames(frames: &[FrameRecord]) -> Vec<u8> {
    let data_len: usize = frames.iter().map(|f| f.data.len()).sum();
    let mut out = Vec::with_capacity(4 + frames.len() * FRAME_RECORD_LEN + data_len);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&f.pts_offset.unwrap_or(NONE_I64).to_le_bytes());
        out.extend_from_slice(&f.dts_offset.unwrap_or(NONE_I64).to_le_bytes());
        out.extend_from_slice(&f.duration.unwrap_or(NONE_U64).to_le_bytes());
        out.extend_from_slice(&f.flags.to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
    }
    for f in frames {
        out.extend_from_slice(&f.data);
    }
    out
}

/// Parse a data chunk payload built by [`encode_frames`].
pub fn decode_frames(payload: &[u8]) -> Result<Vec<FrameRecord>, ChunkError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let count = r.u32("frame table")? as usize;
    let table_len = count
        .checked_mul(FRAME_RECORD_LEN)
        .ok_or(ChunkError::Malformed("frame table"))?;
    if table_len > payload.len() {
        return Err(ChunkError::Malformed("frame table"));
    }
    let mut frames = Vec::with_capacity(count);
    let mut sizes = Vec::with_capacity(count);
    for _ in 0..count {
        let pts = r.i64("frame pts")?;
        let dts = r.i64("frame dts")?;
        let dur = r.u64("frame duration")?;
        let flags = r.u16("frame flags")?;
        let size = r.u32("frame size")? as usize;
        frames.push(FrameRecord {
            pts_offset: (pts != NONE_I64).then_some(pts),
            dts_offset: (dts != NONE_I64).then_some(dts),
            duration: (dur != NONE_U64).then_some(dur),
            flags,
            data: Vec::new(),
        });
        sizes.push(size);
    }
    for (f, size) in frames.iter_mut().zip(sizes) {
        f.data = r.take(size, "frame data")?.to_vec();
    }
    if r.pos != payload.len() {
        return Err(ChunkError::Malformed("trailing bytes after frames"));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests;
