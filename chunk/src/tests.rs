// SPDX-License-Identifier: MPL-2.0
use super::*;
use proptest::prelude::*;

fn header(gop: u64) -> ChunkHeader {
    ChunkHeader {
        version: VERSION,
        flags: 0,
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

fn frames(seed: u8) -> Vec<FrameRecord> {
    (0..3)
        .map(|i| FrameRecord {
            pts_offset: Some(i * 40_000_000),
            dts_offset: if i == 0 { Some(-40_000_000) } else { None },
            duration: Some(40_000_000),
            flags: if i == 0 { 0 } else { frame_flags::DELTA },
            data: vec![seed.wrapping_add(i as u8); 100 + i as usize * 37],
        })
        .collect()
}

fn chunk_bytes(gop: u64) -> Vec<u8> {
    serialize(&header(gop), &encode_frames(&frames(gop as u8))).unwrap()
}

#[test]
fn round_trip() {
    let bytes = chunk_bytes(5);
    let (chunk, used) = parse(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(chunk.header, header(5));
    assert_eq!(decode_frames(chunk.payload()).unwrap(), frames(5));
}

#[test]
fn an_undeclared_reorder_depth_round_trips_as_none() {
    let mut h = header(3);
    h.reorder_frames = None;
    let bytes = serialize(&h, &encode_frames(&frames(3))).unwrap();
    assert_eq!(parse(&bytes).unwrap().0.header.reorder_frames, None);
    h.reorder_frames = Some(REORDER_UNDECLARED);
    assert!(
        serialize(&h, &[]).is_err(),
        "255 is reserved for 'not declared'"
    );
}

/// A version 1 chunk: the same bytes without the reorder depth, with the header CRC redone.
fn v1_bytes(gop: u64) -> Vec<u8> {
    let v2 = chunk_bytes(gop);
    let header_len = u16::from_le_bytes([v2[6], v2[7]]) as usize;
    let mut out = v2[..header_len - 5].to_vec();
    out[4] = 1;
    out[6..8].copy_from_slice(&((header_len - 1) as u16).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&v2[header_len..]);
    out
}

#[test]
fn version_1_chunks_are_still_read_without_a_reorder_depth() {
    let (chunk, used) = parse(&v1_bytes(4)).unwrap();
    assert_eq!(used, v1_bytes(4).len());
    assert_eq!(chunk.header.version, 1);
    assert_eq!(chunk.header.reorder_frames, None);
    assert_eq!(chunk.header.gop_index, 4);
    assert_eq!(chunk.header.codec, header(4).codec);
    assert_eq!(decode_frames(chunk.payload()).unwrap(), frames(4));
    let mut v4 = chunk_bytes(4);
    v4[4] = 4;
    assert_eq!(parse(&v4).unwrap_err(), ChunkError::UnsupportedVersion(4));
}

/// A stand-in signature: a digest of what it covers, so a test sees exactly which bytes it got.
fn fake_sign(covered: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut sig = [0u8; SIGNATURE_LEN];
    for (i, b) in sig.iter_mut().enumerate() {
        *b = crc32c::crc32c_append(i as u32, covered) as u8;
    }
    sig
}

#[test]
fn a_signature_covers_the_signed_header_and_strips_back_to_the_encoders_bytes() {
    let plain = chunk_bytes(7);
    let signed = add_signature(plain.clone(), fake_sign).unwrap();
    assert_eq!(signed.len(), plain.len() + SIGNATURE_LEN);
    assert_eq!(peek_len(&signed).unwrap(), signed.len());
    let (signed_header, covered, sig) = signature(&signed).unwrap();
    assert!(signed_header.is_signed());
    assert_eq!(covered, &signed[..plain.len()]);
    assert_eq!(
        covered[5] & flags::SIGNED,
        flags::SIGNED,
        "the flag is covered"
    );
    assert_eq!(sig, &fake_sign(covered));
    let (chunk, used) = parse(&signed).unwrap();
    assert_eq!(used, signed.len());
    assert_eq!(decode_frames(chunk.payload()).unwrap(), frames(7));
    assert_eq!(strip_signature(signed.clone()).unwrap(), plain);
    assert_eq!(strip_signature(plain.clone()).unwrap(), plain);
    assert_eq!(
        add_signature(signed.clone(), fake_sign).unwrap_err(),
        ChunkError::AlreadySigned
    );
    assert_eq!(signature(&plain).unwrap_err(), ChunkError::NotSigned);
    // Cleared by hand without fixing the CRC: the header no longer checks.
    let mut cleared = signed.clone();
    cleared[5] &= !flags::SIGNED;
    assert!(parse(&cleared).is_err());
    // Older versions carry no signature, so SIGNED cannot be set on them.
    assert_eq!(
        add_signature(v1_bytes(3), fake_sign).unwrap_err(),
        ChunkError::UnsupportedVersion(1)
    );
    let mut h = header(1);
    h.flags |= flags::SIGNED;
    assert!(serialize(&h, b"x").is_err());
}

#[test]
fn deframer_reads_signed_and_plain_chunks_side_by_side() {
    let mut stream = Vec::new();
    for g in 0..6 {
        let c = chunk_bytes(g);
        stream.extend(if g % 2 == 0 {
            add_signature(c, fake_sign).unwrap()
        } else {
            c
        });
    }
    let mut d = Deframer::default();
    for b in stream.chunks(7) {
        d.push(b);
    }
    let got: Vec<_> = std::iter::from_fn(|| d.next_chunk()).collect();
    assert_eq!(got.len(), 6);
    for (g, c) in got.iter().enumerate() {
        assert_eq!(c.header.gop_index, g as u64);
        assert_eq!(c.header.is_signed(), g % 2 == 0);
        assert_eq!(decode_frames(c.payload()).unwrap(), frames(g as u8));
    }
    assert_eq!(d.stats().corrupt, 0);
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let bytes = chunk_bytes(1);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(parse(&bad).is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn truncation_is_incomplete_not_a_panic() {
    let bytes = chunk_bytes(1);
    for n in 0..bytes.len() {
        assert!(parse(&bytes[..n]).is_err());
    }
}

#[test]
fn a_header_too_long_for_its_length_field_is_refused() {
    // Codec string under the u16 limit, header as a whole over it: used to wrap to 0.
    let mut h = header(1);
    h.codec = "x".repeat(65_477);
    assert_eq!(
        serialize(&h, b"payload").unwrap_err(),
        ChunkError::Malformed("header longer than 65535 bytes")
    );
    h.codec = "x".repeat(60_000);
    let bytes = serialize(&h, b"payload").unwrap();
    assert_eq!(parse(&bytes).unwrap().0.header, h);
}

#[test]
fn wrong_version_is_reported() {
    let mut bytes = chunk_bytes(1);
    bytes[4] = 9;
    assert_eq!(
        parse(&bytes).unwrap_err(),
        ChunkError::UnsupportedVersion(9)
    );
}

#[test]
fn deframer_splits_a_stream_fed_byte_by_byte() {
    let stream: Vec<u8> = (0..5).flat_map(chunk_bytes).collect();
    let mut d = Deframer::default();
    let mut got = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some(c) = d.next_chunk() {
            got.push(c.header.gop_index);
        }
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(d.stats().bytes_skipped, 0);
    assert_eq!(d.stats().resyncs, 0);
}

#[test]
fn deframer_resyncs_after_garbage_truncation_and_corruption() {
    let mut stream = b"garbage before the first chunk GSW".to_vec();
    stream.extend(chunk_bytes(0));
    let truncated = chunk_bytes(1);
    stream.extend(&truncated[..truncated.len() / 2]);
    stream.extend(chunk_bytes(2));
    let mut corrupt = chunk_bytes(3);
    let mid = corrupt.len() - 20;
    corrupt[mid] ^= 0xff;
    stream.extend(corrupt);
    stream.extend(chunk_bytes(4));
    let mut tail = chunk_bytes(5);
    tail.truncate(30);
    stream.extend(tail);

    let mut d = Deframer::default();
    let mut got = Vec::new();
    for piece in stream.chunks(97) {
        d.push(piece);
        while let Some(c) = d.next_chunk() {
            got.push(c.header.gop_index);
        }
    }
    got.extend(d.finish().into_iter().map(|c| c.header.gop_index));
    assert_eq!(got, vec![0, 2, 4]);
    let s = d.stats();
    assert_eq!(s.chunks, 3);
    assert!(s.corrupt >= 2, "{s:?}");
    assert!(s.resyncs >= 3, "{s:?}");
    assert!(s.bytes_skipped > 0);
}

#[test]
fn fec_recovers_any_single_loss_byte_identical() {
    let data: Vec<Vec<u8>> = (10..14).map(chunk_bytes).collect();
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    let parity = make_parity(&refs, 1).unwrap();
    let info = ParityInfo {
        k: 4,
        m: 1,
        index: 0,
        members: (10..14)
            .zip(&data)
            .map(|(g, d)| (g, d.len() as u32))
            .collect(),
    };
    let payload = info.encode(&parity[0]);
    let (decoded, shard) = ParityInfo::decode(&payload).unwrap();
    assert_eq!(decoded, info);
    for lost in 0..4 {
        let shards: Vec<Option<Vec<u8>>> = data
            .iter()
            .enumerate()
            .map(|(i, d)| (i != lost).then(|| d.clone()))
            .collect();
        let rebuilt = recover_group(&info, &shards, &[Some(shard.to_vec())]).unwrap();
        assert_eq!(rebuilt, data, "lost shard {lost}");
    }
    // Two losses with one parity shard cannot be recovered, and say so.
    let shards = vec![None, None, Some(data[2].clone()), Some(data[3].clone())];
    assert!(recover_group(&info, &shards, &[Some(shard.to_vec())]).is_err());
}

proptest! {
    #[test]
    fn deframer_never_panics_and_finds_embedded_chunks(
        noise in proptest::collection::vec(any::<u8>(), 0..400),
        split in 1usize..200,
    ) {
        let mut stream = noise.clone();
        stream.extend(chunk_bytes(42));
        stream.extend(noise);
        let mut d = Deframer::default();
        let mut got = Vec::new();
        for piece in stream.chunks(split) {
            d.push(piece);
            while let Some(c) = d.next_chunk() { got.push(c.header.gop_index); }
        }
        got.extend(d.finish().into_iter().map(|c| c.header.gop_index));
        prop_assert!(got.contains(&42));
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let _ = decode_frames(&bytes);
        let _ = ParityInfo::decode(&bytes);
    }
}
