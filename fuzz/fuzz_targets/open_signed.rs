// SPDX-License-Identifier: MPL-2.0
//! Fuzz the signed-envelope check every part runs on what arrives from the broker
//! (`gopswarm_proto::signed::Verifier::open`).
//!
//! Input: the first byte picks a topic, the rest is the payload. The verifier trusts fixed
//! orchestrator, operator and host keys (seeds in this file), so a seed corpus of real
//! envelopes (`gen_corpus`) reaches the signature and counter checks.
//!
//! Properties checked:
//! * nothing panics on arbitrary input;
//! * what opens decodes as its plain body does; on a retained topic the same payload opens
//!   again (the broker redelivering), on the others it is then a replay;
//! * a payload that opens is refused after any single byte of its signature changes.
#![no_main]

use gopswarm_proto::signed::{Trust, Verifier, body_unchecked, encode_public};
use gopswarm_proto::{Reject, Topic, decode_publish};
use libfuzzer_sys::fuzz_target;

pub fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

pub fn topics() -> Vec<String> {
    let h = || "host-0".to_string();
    [
        Topic::Birth(h()),
        Topic::Death(h()),
        Topic::Heartbeat(h()),
        Topic::Assignment(h()),
        Topic::Applied(h()),
        Topic::Command(h()),
        Topic::Ack(h()),
        Topic::Score(h()),
        Topic::Cert(h()),
        Topic::Enrol(h()),
        Topic::StreamDef("cam1".into()),
        Topic::Layout("cam1".into(), "p".into()),
        Topic::StreamEnd("cam1".into(), "p".into()),
        Topic::Resend("cam1".into(), "p".into()),
        Topic::StreamControl,
        Topic::OrchestratorStatus,
    ]
    .iter()
    .map(Topic::path)
    .collect()
}

fn verifier() -> Verifier {
    let trust = Trust {
        orchestrator: encode_public(&key(1).verifying_key()),
        operators: [("operator".into(), encode_public(&key(2).verifying_key()))].into(),
        mergers: [("merger".into(), encode_public(&key(3).verifying_key()))].into(),
    };
    let mut v = Verifier::new(&trust).expect("fixed trust");
    v.set_host_key("host-0", key(4).verifying_key());
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let topics = topics();
    let topic = &topics[pick as usize % topics.len()];
    let mut v = verifier();
    let Ok(inbound) = v.open(topic, payload) else {
        return;
    };
    // Heartbeat, command, ack, stream end, resend, stream command: carried out once.
    let ephemeral = matches!(pick as usize % topics.len(), 2 | 5 | 6 | 12 | 13 | 14);
    let again = v.open(topic, payload);
    if ephemeral {
        assert!(
            matches!(again, Err(Reject::Replayed(_))),
            "a replay opened: {again:?}"
        );
    } else {
        assert_eq!(again.as_ref(), Ok(&inbound), "a redelivery opens the same");
    }
    assert_eq!(
        decode_publish(topic, body_unchecked(payload)).as_ref(),
        Ok(&inbound),
        "the body decodes as the plain message does"
    );
    // Anything signed: one changed byte of its signature and it no longer opens.
    let text = String::from_utf8_lossy(payload);
    if let Some(at) = text.find("\"sig\":\"") {
        let i = at + 7;
        let mut bad = payload.to_vec();
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(
            verifier().open(topic, &bad).is_err(),
            "a changed signature opened"
        );
    }
});
