// SPDX-License-Identifier: MPL-2.0
//! Reed-Solomon parity over groups of serialised data chunks.
//!
//! A producer groups `k` consecutive data chunks of its own partial stream and emits `m` parity
//! chunks after them. Each data shard is a whole serialised chunk (header, payload, CRCs) padded
//! to the longest in the group, so a recovered chunk is byte-identical to the lost one and goes
//! through the same CRC checks as any other.

use crate::{ChunkError, Reader};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Describes the group a parity chunk belongs to. Serialised at the start of the parity payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityInfo {
    pub k: u8,
    pub m: u8,
    /// Which parity shard this is, `0..m`.
    pub index: u8,
    /// GOP index and serialised length of each data chunk in the group, in shard order.
    pub members: Vec<(u64, u32)>,
}

impl ParityInfo {
    pub fn encode(&self, shard: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + 2 + self.members.len() * 12 + shard.len());
        out.extend_from_slice(&[self.k, self.m, self.index]);
        out.extend_from_slice(&(self.members.len() as u16).to_le_bytes());
        for (gop, len) in &self.members {
            out.extend_from_slice(&gop.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(shard);
        out
    }

    /// Parse a parity payload into its description and shard.
    pub fn decode(payload: &[u8]) -> Result<(ParityInfo, &[u8]), ChunkError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let k = r.u8("parity k")?;
        let m = r.u8("parity m")?;
        let index = r.u8("parity index")?;
        let n = r.u16("parity members")? as usize;
        if k == 0 || m == 0 || index >= m || n != k as usize {
            return Err(ChunkError::Malformed("parity group shape"));
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push((r.u64("parity member")?, r.u32("parity member")?));
        }
        let shard = &payload[r.pos..];
        let longest = members.iter().map(|m| m.1 as usize).max().unwrap_or(0);
        if shard.len() != longest {
            return Err(ChunkError::Malformed("parity shard length"));
        }
        Ok((
            ParityInfo {
                k,
                m,
                index,
                members,
            },
            shard,
        ))
    }
}

/// Compute `m` parity shards over `data` (serialised chunks, each one data shard).
pub fn make_parity(data: &[&[u8]], m: usize) -> Result<Vec<Vec<u8>>, ChunkError> {
    let k = data.len();
    let rs = ReedSolomon::new(k, m).map_err(|e| ChunkError::Fec(format!("{e:?}")))?;
    let longest = data.iter().map(|d| d.len()).max().unwrap_or(0);
    let mut shards: Vec<Vec<u8>> = data
        .iter()
        .map(|d| {
            let mut s = d.to_vec();
            s.resize(longest, 0);
            s
        })
        .collect();
    shards.extend((0..m).map(|_| vec![0u8; longest]));
    rs.encode(&mut shards)
        .map_err(|e| ChunkError::Fec(format!("{e:?}")))?;
    Ok(shards.split_off(k))
}

/// Rebuild the missing data chunks of a group. `data[i]` is the serialised chunk of member `i`
/// when present; `parity[j]` the shard of parity `j` when present. Returns every data chunk,
/// trimmed to its real length.
pub fn recover_group(
    info: &ParityInfo,
    data: &[Option<Vec<u8>>],
    parity: &[Option<Vec<u8>>],
) -> Result<Vec<Vec<u8>>, ChunkError> {
    let k = info.k as usize;
    let m = info.m as usize;
    if data.len() != k || parity.len() != m || info.members.len() != k {
        return Err(ChunkError::Malformed("parity group shape"));
    }
    let present = data.iter().chain(parity).filter(|s| s.is_some()).count();
    if present < k {
        return Err(ChunkError::Fec(format!(
            "{present} of {} shards present, {k} needed",
            k + m
        )));
    }
    let longest = info.members.iter().map(|m| m.1 as usize).max().unwrap_or(0);
    let mut shards: Vec<Option<Vec<u8>>> = data
        .iter()
        .chain(parity)
        .map(|s| {
            s.as_ref().map(|s| {
                let mut s = s.clone();
                s.resize(longest, 0);
                s
            })
        })
        .collect();
    let rs = ReedSolomon::new(k, m).map_err(|e| ChunkError::Fec(format!("{e:?}")))?;
    rs.reconstruct_data(&mut shards)
        .map_err(|e| ChunkError::Fec(format!("{e:?}")))?;
    Ok(shards
        .into_iter()
        .take(k)
        .zip(&info.members)
        .map(|(s, (_, len))| {
            let mut s = s.expect("reconstructed");
            s.truncate(*len as usize);
            s
        })
        .collect())
}
