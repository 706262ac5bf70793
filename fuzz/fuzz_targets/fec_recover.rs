// SPDX-License-Identifier: MPL-2.0
//! Fuzz Reed-Solomon parity: build k data shards from the input, make m parity shards, erase
//! shards chosen by the input, recover, and check the data comes back byte-identical (or that
//! recovery refuses when more than m shards are gone).
//!
//! Input layout:
//! * byte 0: k = 1 + b % 16; byte 1: m = 1 + b % 8;
//! * bytes 2..6: erasure mask (little-endian u32, bit i erases shard i of the k + m; data first);
//! * bytes 6..6+k: length of each data shard (the shard takes that many bytes, fewer at the end);
//! * the rest: shard contents.
#![no_main]

use gopswarm_chunk::{ParityInfo, make_parity, recover_group};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let k = 1 + (data[0] % 16) as usize;
    let m = 1 + (data[1] % 8) as usize;
    let mask = u32::from_le_bytes(data[2..6].try_into().unwrap());
    let rest = &data[6..];
    if rest.len() < k {
        return;
    }
    let (lens, mut body) = rest.split_at(k);
    let shards: Vec<Vec<u8>> = lens
        .iter()
        .map(|&n| {
            let (s, tail) = body.split_at((n as usize).min(body.len()));
            body = tail;
            s.to_vec()
        })
        .collect();
    let longest = shards.iter().map(Vec::len).max().unwrap_or(0);

    let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
    let parity = match make_parity(&refs, m) {
        Ok(p) => p,
        Err(e) => {
            // Reed-Solomon cannot work on empty shards; anything else must succeed.
            assert_eq!(longest, 0, "make_parity failed: {e}");
            return;
        }
    };
    assert_eq!(parity.len(), m);
    assert!(parity.iter().all(|p| p.len() == longest));

    let info = ParityInfo {
        k: k as u8,
        m: m as u8,
        index: 0,
        members: shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, s.len() as u32))
            .collect(),
    };
    // Every parity payload round-trips through encode/decode.
    for (j, p) in parity.iter().enumerate() {
        let info_j = ParityInfo {
            index: j as u8,
            ..info.clone()
        };
        let payload = info_j.encode(p);
        let (decoded, shard) = ParityInfo::decode(&payload).expect("decode own parity payload");
        assert_eq!(decoded, info_j);
        assert_eq!(shard, p.as_slice());
    }

    let erased = |i: usize| mask & (1 << i) != 0;
    let data_in: Vec<Option<Vec<u8>>> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (!erased(i)).then(|| s.clone()))
        .collect();
    let parity_in: Vec<Option<Vec<u8>>> = parity
        .iter()
        .enumerate()
        .map(|(j, p)| (!erased(k + j)).then(|| p.clone()))
        .collect();
    let lost = (0..k + m).filter(|&i| erased(i)).count();

    let result = recover_group(&info, &data_in, &parity_in);
    if lost <= m {
        let rebuilt = result.unwrap_or_else(|e| panic!("{lost} of {m} lost, not recovered: {e}"));
        assert_eq!(rebuilt, shards, "recovered data differs");
    } else {
        assert!(
            result.is_err(),
            "{lost} shards lost with m = {m}, yet recover_group succeeded"
        );
    }
});
