// SPDX-License-Identifier: MPL-2.0
//! Fuzz the incremental `Deframer` with fuzzer-chosen split points.
//!
//! Input layout:
//! * byte 0, control: bits 0-3 = number `s` of split-size bytes that follow; bit 4 = use a small
//!   `max_chunk_len` (1024) instead of the default; bit 5 = call `next_chunk` only at the end.
//! * the next `s` bytes: piece sizes, used round-robin (0 pushes an empty slice);
//!   `s == 0` or all sizes 0 pushes the whole stream at once.
//! * the rest: the byte stream.
//!
//! Invariants:
//! * every chunk re-serialises byte-identically and re-parses to itself;
//! * a chunk returned by `next_chunk` sits in the stream at
//!   (bytes of earlier chunks + bytes skipped so far);
//! * after `finish()`: bytes_skipped + bytes of all chunks == stream length, pending() == 0,
//!   stats.chunks == number of chunks returned;
//! * the returned chunks, concatenated and fed again with the same splits, deframe cleanly.
#![no_main]

use gopswarm_chunk::{Chunk, Deframer, VERSION, flags, parse_owned, serialize, strip_signature};
use libfuzzer_sys::fuzz_target;

const SMALL_MAX: usize = 1024;

struct Run {
    chunks: Vec<Chunk>,
    /// Chunks that came out of `finish()` rather than `next_chunk()`.
    from_finish: usize,
    deframer: Deframer,
}

fn pieces<'a>(stream: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    // All-zero sizes would never make progress: push everything at once instead.
    let sizes = if sizes.iter().all(|&n| n == 0) {
        &[][..]
    } else {
        sizes
    };
    let mut pos = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if pos >= stream.len() {
            return None;
        }
        let n = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[i % sizes.len()] as usize
        };
        i += 1;
        let end = (pos + n).min(stream.len());
        let piece = &stream[pos..end];
        pos = end;
        Some(piece)
    })
}

fn run(stream: &[u8], sizes: &[u8], max: Option<usize>, lazy: bool) -> Run {
    let mut d = match max {
        Some(max) => Deframer::new(max),
        None => Deframer::default(),
    };
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut consumed = 0u64;
    let mut take = |d: &mut Deframer, chunks: &mut Vec<Chunk>| {
        while let Some(c) = d.next_chunk() {
            // Everything before this chunk was either an earlier chunk or skipped.
            let at = (consumed + d.stats().bytes_skipped) as usize;
            assert_eq!(
                stream.get(at..at + c.bytes().len()),
                Some(c.bytes()),
                "chunk not where the stats say it is"
            );
            consumed += c.bytes().len() as u64;
            chunks.push(c);
        }
    };
    for piece in pieces(stream, sizes) {
        d.push(piece);
        if !lazy {
            take(&mut d, &mut chunks);
        }
    }
    take(&mut d, &mut chunks);
    let tail = d.finish();
    let from_finish = tail.len();
    chunks.extend(tail);
    Run {
        chunks,
        from_finish,
        deframer: d,
    }
}

fn check_chunk(c: &Chunk, max: usize) {
    assert!(c.bytes().len() <= max, "chunk longer than max_chunk_len");
    // A signature is not part of what serialize writes: compare with the chunk without it.
    let mut unsigned = c.header.clone();
    unsigned.flags &= !flags::SIGNED;
    let again = serialize(&unsigned, c.payload()).expect("re-serialise");
    if c.header.version == VERSION {
        let stripped = strip_signature(c.bytes().to_vec()).expect("strip");
        assert_eq!(
            again, stripped,
            "serialize(chunk) != chunk.bytes() without its signature"
        );
    }
    let reparsed = parse_owned(c.bytes().to_vec()).expect("re-parse");
    assert_eq!(&reparsed, c);
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let s = (ctl & 0x0f) as usize;
    if rest.len() < s {
        return;
    }
    let (sizes, stream) = rest.split_at(s);
    let max = (ctl & 0x10 != 0).then_some(SMALL_MAX);
    let lazy = ctl & 0x20 != 0;

    let r = run(stream, sizes, max, lazy);
    let stats = r.deframer.stats().clone();
    let chunk_bytes: u64 = r.chunks.iter().map(|c| c.bytes().len() as u64).sum();
    assert_eq!(
        stats.bytes_skipped + chunk_bytes,
        stream.len() as u64,
        "bytes lost or double counted: {stats:?}, {} chunks",
        r.chunks.len()
    );
    assert_eq!(r.deframer.pending(), 0);
    assert_eq!(stats.chunks, r.chunks.len() as u64);
    let max_len = max.unwrap_or(64 * 1024 * 1024);
    for c in &r.chunks {
        check_chunk(c, max_len);
    }

    // Chunks from finish() must still be in stream order, after the next_chunk() ones.
    let mut cursor = 0usize;
    for c in &r.chunks {
        let len = c.bytes().len();
        let found = stream[cursor..]
            .windows(len)
            .position(|w| w == c.bytes())
            .expect("returned chunk not found in stream order");
        cursor += found + len;
    }

    // A stream made only of valid chunks must deframe cleanly, whatever the splits.
    let clean: Vec<u8> = r
        .chunks
        .iter()
        .flat_map(|c| c.bytes().iter().copied())
        .collect();
    let r2 = run(&clean, sizes, max, lazy);
    assert_eq!(r2.chunks, r.chunks, "clean re-stream gave different chunks");
    let s2 = r2.deframer.stats();
    assert_eq!(s2.bytes_skipped, 0, "clean re-stream skipped bytes: {s2:?}");
    assert_eq!(s2.corrupt, 0, "clean re-stream saw corruption: {s2:?}");
    assert_eq!(s2.resyncs, 0, "clean re-stream resynced: {s2:?}");
    assert_eq!(r2.from_finish, 0, "clean re-stream needed finish(): {s2:?}");
});
