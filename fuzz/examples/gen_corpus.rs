// SPDX-License-Identifier: MPL-2.0
//! Writes a small seed corpus of valid chunks for the fuzz targets.
//!
//! Run from the `fuzz/` directory:
//!     cargo run --example gen_corpus
//! It writes `corpus/parse_chunk/`, `corpus/deframer/` and `corpus/fec_recover/` (gitignored).

use gopswarm_chunk::{
    ChunkHeader, FrameRecord, ParityInfo, VERSION, encode_frames, flags, frame_flags, make_parity,
    serialize,
};
use std::fs;
use std::path::Path;

fn header(gop: u64, fl: u8) -> ChunkHeader {
    ChunkHeader {
        version: VERSION,
        flags: fl,
        gop_index: gop,
        start_ns: gop * 2_000_000_000,
        duration_ns: 2_000_000_000,
        frame_count: 3,
        epoch: 7,
        fec_k: 0,
        fec_m: 0,
        stream_id: "cam1".into(),
        profile_id: "720p".into(),
        host_id: "host-a".into(),
        codec: "video/x-h264, stream-format=(string)byte-stream".into(),
        reorder_frames: Some(2),
    }
}

/// The same chunk as version 1 wrote it: no reorder depth, header CRC redone.
fn version_1(v2: &[u8]) -> Vec<u8> {
    let header_len = u16::from_le_bytes([v2[6], v2[7]]) as usize;
    let mut out = v2[..header_len - 5].to_vec();
    out[4] = 1;
    out[6..8].copy_from_slice(&((header_len - 1) as u16).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&v2[header_len..]);
    out
}

fn frames(seed: u8, n: usize) -> Vec<FrameRecord> {
    (0..n)
        .map(|i| FrameRecord {
            pts_offset: Some(i as i64 * 40_000_000),
            dts_offset: if i == 0 { Some(-40_000_000) } else { None },
            duration: if i == 2 { None } else { Some(40_000_000) },
            flags: if i == 0 {
                frame_flags::HEADER
            } else {
                frame_flags::DELTA
            },
            data: vec![seed.wrapping_add(i as u8); 8 + i * 5],
        })
        .collect()
}

fn data_chunk(gop: u64, n: usize) -> Vec<u8> {
    serialize(&header(gop, 0), &encode_frames(&frames(gop as u8, n))).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

/// Signed envelopes for `open_signed`: the topic index its input starts with (the order of
/// `topics()` there), then the payload; keys from the same fixed seeds.
fn signed_corpus(dir: &Path) {
    use gopswarm_proto::signed::{Principal, Signer, Token};
    use gopswarm_proto::*;
    let key = |seed: u8| ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let orchestrator = Signer::new(Principal::Orchestrator, key(1));
    let operator = Signer::new(Principal::Operator("operator".into()), key(2));
    let host = Signer::new(Principal::Host("host-0".into()), key(4));
    let h = || "host-0".to_string();
    let death = encode(&Death { host: h(), seq: 1 });
    let assignment = encode(&Assignment {
        host: h(),
        revision: 3,
        tasks: Vec::new(),
        orchestrator_epoch: 0,
    });
    let cert = encode(&HostCert {
        host: h(),
        key: gopswarm_proto::signed::encode_public(&key(4).verifying_key()),
        enrolled_ms: 1,
        token: String::new(),
    });
    let remove = encode(&StreamCommand::Remove { id: "cam1".into() });
    let enrol = encode(&Token::generate().enrol("host-0", &key(4).verifying_key()));
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (1, host.seal(&Topic::Death(h()).path(), &death)),
        (1, death.clone()),
        (
            3,
            orchestrator.seal(&Topic::Assignment(h()).path(), &assignment),
        ),
        (8, orchestrator.seal(&Topic::Cert(h()).path(), &cert)),
        (9, enrol),
        (14, operator.seal(&Topic::StreamControl.path(), &remove)),
        (14, host.seal(&Topic::StreamControl.path(), &remove)),
    ];
    for (i, (topic, payload)) in cases.into_iter().enumerate() {
        let mut input = vec![topic];
        input.extend(payload);
        fs::write(dir.join(format!("signed-{i}")), input).unwrap();
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let signed = root.join("open_signed");
    fs::create_dir_all(&signed).unwrap();
    signed_corpus(&signed);
    let dirs = ["parse_chunk", "deframer", "fec_recover"].map(|t| {
        let d = root.join(t);
        fs::create_dir_all(&d).unwrap();
        d
    });

    // Data chunks of a few shapes, a parity chunk and a chunk with empty strings and payload.
    let data: Vec<Vec<u8>> = (0..3).map(|g| data_chunk(g, 1 + g as usize)).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let parity = make_parity(&refs, 2).unwrap();
    let info = ParityInfo {
        k: 3,
        m: 2,
        index: 1,
        members: data
            .iter()
            .enumerate()
            .map(|(g, d)| (g as u64, d.len() as u32))
            .collect(),
    };
    let mut ph = header(0, flags::PARITY);
    ph.fec_k = 3;
    ph.fec_m = 2;
    ph.frame_count = 0;
    let parity_chunk = serialize(&ph, &info.encode(&parity[1])).unwrap();
    let empty = serialize(
        &ChunkHeader {
            version: VERSION,
            ..Default::default()
        },
        &encode_frames(&[]),
    )
    .unwrap();
    let v1 = version_1(&data[1]);
    // A signed chunk (the signature's value does not matter to the parser).
    let signed_chunk = gopswarm_chunk::add_signature(data[2].clone(), |_| [0x5a; 64]).unwrap();
    let singles = [&data[0], &data[1], &data[2], &parity_chunk, &empty, &v1, &signed_chunk];

    // parse_chunk: one chunk per file, plus a bare frame table and a bare parity payload.
    for (i, c) in singles.iter().enumerate() {
        write(&dirs[0], &format!("chunk-{i}"), c);
    }
    write(&dirs[0], "frames", &encode_frames(&frames(9, 3)));
    write(&dirs[0], "parity-info", &info.encode(&parity[1]));

    // deframer: control byte, split sizes, then a stream.
    let stream: Vec<u8> = singles.iter().flat_map(|c| c.iter().copied()).collect();
    let mut noisy = b"noise GSW".to_vec();
    noisy.extend(&data[0]);
    noisy.extend(&data[1][..data[1].len() / 2]);
    noisy.extend(&data[2]);
    let mut corrupt = parity_chunk.clone();
    let n = corrupt.len();
    corrupt[n - 10] ^= 0xff;
    noisy.extend(&corrupt);
    noisy.extend(&empty);
    noisy.extend(&data[0][..30]);
    let cases: [(&str, u8, &[u8], &[u8]); 5] = [
        ("whole", 0x00, &[], &stream),
        ("bytewise", 0x01, &[1], &stream),
        ("splits", 0x03, &[7, 97, 200], &stream),
        ("noisy", 0x02, &[13, 61], &noisy),
        ("noisy-small-max-lazy", 0x31, &[50], &noisy),
    ];
    for (name, ctl, sizes, s) in cases {
        let mut input = vec![ctl];
        input.extend_from_slice(sizes);
        input.extend_from_slice(s);
        write(&dirs[1], name, &input);
    }

    // fec_recover: k, m, erasure mask, shard lengths, contents.
    let fec_cases: [(&str, u8, u8, u32); 3] = [
        ("k3m2-lose-data", 2, 1, 0b00011),
        ("k4m1-lose-parity", 3, 0, 0b10000),
        ("k5m3-too-many", 4, 2, 0b1111),
    ];
    for (name, kb, mb, mask) in fec_cases {
        let k = 1 + kb as usize;
        let mut input = vec![kb, mb];
        input.extend_from_slice(&mask.to_le_bytes());
        input.extend((0..k).map(|i| 20 + 11 * i as u8));
        input.extend(stream.iter().take(400));
        write(&dirs[2], name, &input);
    }
    println!("seed corpus written under {}", root.display());
}
