// SPDX-License-Identifier: MPL-2.0
//! Fuzz the single-chunk parsers and the payload decoders.
//!
//! Properties checked:
//! * nothing panics on arbitrary input;
//! * `parse` and `parse_owned` agree;
//! * anything that parses re-serialises byte-identically;
//! * payloads that decode (frame table, parity info) re-encode byte-identically.
#![no_main]

use gopswarm_chunk::{
    ParityInfo, SIGNATURE_LEN, VERSION, decode_frames, encode_frames, flags, parse, parse_owned,
    peek_len, serialize, signature, strip_signature,
};
use libfuzzer_sys::fuzz_target;

fn check_payload(payload: &[u8]) {
    if let Ok(frames) = decode_frames(payload) {
        assert_eq!(encode_frames(&frames), payload, "frame table round trip");
    }
    if let Ok((info, shard)) = ParityInfo::decode(payload) {
        assert_eq!(info.encode(shard), payload, "parity info round trip");
        assert_eq!(info.members.len(), info.k as usize);
        assert!(info.index < info.m);
    }
}

fuzz_target!(|data: &[u8]| {
    // The payload decoders see arbitrary bytes directly: random payloads almost never get past
    // the chunk CRCs, so this is where most of their coverage comes from.
    check_payload(data);

    let peeked = peek_len(data);
    match parse(data) {
        Ok((chunk, used)) => {
            assert_eq!(peeked, Ok(used));
            assert!(used <= data.len());
            assert_eq!(chunk.bytes(), &data[..used]);
            let mut unsigned = chunk.header.clone();
            unsigned.flags &= !flags::SIGNED;
            let again = serialize(&unsigned, chunk.payload()).expect("re-serialise");
            if chunk.header.version == VERSION {
                // What serialize writes is the chunk without its signature.
                let stripped = strip_signature(chunk.bytes().to_vec()).expect("strip");
                assert_eq!(
                    again, stripped,
                    "serialize(parse(x)) != x without its signature"
                );
                if chunk.header.is_signed() {
                    let (_, covered, _) = signature(chunk.bytes()).expect("signature");
                    assert_eq!(covered.len(), chunk.bytes().len() - SIGNATURE_LEN);
                }
            } else {
                // An older version is written as the current one: same header but the version.
                let (newer, _) = parse(&again).expect("parse of a re-serialised old chunk");
                let mut expected = chunk.header.clone();
                expected.version = VERSION;
                assert_eq!(newer.header, expected);
                assert_eq!(newer.payload(), chunk.payload());
            }

            let owned = parse_owned(data[..used].to_vec()).expect("parse_owned of a parsed chunk");
            assert_eq!(owned, chunk);
            let whole = parse_owned(data.to_vec());
            if used == data.len() {
                assert_eq!(whole.as_ref(), Ok(&chunk));
            } else {
                assert!(whole.is_err(), "parse_owned accepted trailing bytes");
            }
            check_payload(chunk.payload());
        }
        Err(e) => {
            let owned = parse_owned(data.to_vec());
            assert_eq!(owned, Err(e), "parse and parse_owned disagree");
        }
    }
});
