// SPDX-License-Identifier: MPL-2.0
//! `gopswarm chunks`: the chunk headers of a partial stream file.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ChunksOptions {
    file: PathBuf,
}

pub fn run(o: ChunksOptions) -> Result<()> {
    let file = o.file;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut deframer = gopswarm_chunk::Deframer::default();
    deframer.push(&bytes);
    let mut chunks = Vec::new();
    while let Some(c) = deframer.next_chunk() {
        chunks.push(c);
    }
    chunks.extend(deframer.finish());
    println!(
        "{:>6} {:>8} {:>12} {:>7} {:>6} {:>9} {:>7}  host/profile",
        "gop", "kind", "start s", "frames", "epoch", "bytes", "reorder"
    );
    for c in &chunks {
        let h = &c.header;
        let kind = if h.is_parity() {
            "parity"
        } else if h.is_redundant() {
            "copy"
        } else {
            "primary"
        };
        println!(
            "{:>6} {:>8} {:>12.3} {:>7} {:>6} {:>9} {:>7}  {}/{}",
            h.gop_index,
            kind,
            h.start_ns as f64 / 1e9,
            h.frame_count,
            h.epoch,
            c.bytes().len(),
            h.reorder_frames.map_or("-".into(), |r| r.to_string()),
            h.host_id,
            h.profile_id
        );
    }
    let s = deframer.stats();
    println!(
        "{} chunks; {} bytes skipped, {} corrupt",
        s.chunks, s.bytes_skipped, s.corrupt
    );
    Ok(())
}
