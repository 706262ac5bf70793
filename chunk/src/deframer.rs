// SPDX-License-Identifier: MPL-2.0
//! Turns an arbitrary byte stream back into chunks, resynchronising after garbage, corruption or
//! truncation.

use crate::{Chunk, ChunkError, FIXED_HEADER_LEN, MAGIC, parse, peek_len};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeframerStats {
    /// Chunks that parsed and passed both CRCs.
    pub chunks: u64,
    /// Bytes thrown away while looking for the next valid chunk.
    pub bytes_skipped: u64,
    /// Places where a chunk-looking header was found but the chunk was bad (CRC, length, version).
    pub corrupt: u64,
    /// Chunks skipped because their version is not one this build reads.
    pub unsupported_version: u64,
    /// Times the reader lost sync and searched for the next magic.
    pub resyncs: u64,
}

/// Incremental chunk reader. Feed bytes with [`Deframer::push`], take chunks with
/// [`Deframer::next_chunk`], and call [`Deframer::finish`] at end of stream.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    max_chunk_len: usize,
    in_sync: bool,
    stats: DeframerStats,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new(64 * 1024 * 1024)
    }
}

impl Deframer {
    pub fn new(max_chunk_len: usize) -> Self {
        Deframer {
            buf: Vec::new(),
            start: 0,
            max_chunk_len,
            in_sync: true,
            stats: DeframerStats::default(),
        }
    }

    pub fn stats(&self) -> &DeframerStats {
        &self.stats
    }

    /// Bytes buffered and not yet returned as chunks or skipped.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn skip(&mut self, n: usize) {
        self.start += n;
        self.stats.bytes_skipped += n as u64;
        if self.in_sync {
            self.in_sync = false;
            self.stats.resyncs += 1;
        }
    }

    /// Move to the next magic after the current position, or keep the tail that may be a magic's
    /// beginning.
    fn seek_magic(&mut self) {
        let window = &self.buf[self.start..];
        match window.windows(4).position(|w| w == MAGIC) {
            Some(0) => {}
            Some(pos) => self.skip(pos),
            None => {
                let keep = (1..=3)
                    .rev()
                    .find(|&n| window.len() >= n && MAGIC.starts_with(&window[window.len() - n..]))
                    .unwrap_or(0);
                let drop = window.len() - keep;
                if drop > 0 {
                    self.skip(drop);
                }
            }
        }
    }

    /// The next complete, verified chunk, or `None` when more bytes are needed.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            self.seek_magic();
            let window = &self.buf[self.start..];
            if window.len() < FIXED_HEADER_LEN {
                return None;
            }
            let total = match peek_len(window) {
                Ok(total) if total <= self.max_chunk_len => total,
                Ok(_) | Err(ChunkError::TooLarge(_)) | Err(ChunkError::BadHeaderLength(_)) => {
                    self.stats.corrupt += 1;
                    self.skip(1);
                    continue;
                }
                Err(ChunkError::UnsupportedVersion(_)) => {
                    self.stats.unsupported_version += 1;
                    self.skip(1);
                    continue;
                }
                Err(ChunkError::Incomplete(_)) => return None,
                Err(_) => {
                    self.skip(1);
                    continue;
                }
            };
            // Check the header CRC as soon as the header is in, so a corrupt length field does
            // not make us wait for bytes that belong to later chunks.
            let header_len = u16::from_le_bytes([window[6], window[7]]) as usize;
            if window.len() >= header_len {
                let stored = u32::from_le_bytes(
                    window[header_len - 4..header_len]
                        .try_into()
                        .expect("4 bytes"),
                );
                if crc32c::crc32c(&window[..header_len - 4]) != stored {
                    self.stats.corrupt += 1;
                    self.skip(1);
                    continue;
                }
            }
            if window.len() < total {
                return None;
            }
            match parse(window) {
                Ok((chunk, used)) => {
                    self.start += used;
                    self.in_sync = true;
                    self.stats.chunks += 1;
                    return Some(chunk);
                }
                Err(_) => {
                    self.stats.corrupt += 1;
                    self.skip(1);
                }
            }
        }
    }

    /// End of stream: the bytes left over cannot complete a chunk. Try to recover any valid chunk
    /// hidden behind a truncated one, and count the rest as skipped.
    pub fn finish(&mut self) -> Vec<Chunk> {
        let mut out = Vec::new();
        while self.pending() > 0 {
            if let Some(chunk) = self.next_chunk() {
                out.push(chunk);
                continue;
            }
            if self.pending() == 0 {
                break;
            }
            // The chunk at the front is incomplete and no more bytes will come.
            self.stats.corrupt += 1;
            self.skip(1);
        }
        self.buf.clear();
        self.start = 0;
        out
    }
}
