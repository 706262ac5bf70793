// SPDX-License-Identifier: MPL-2.0
//! Property tests of signed-envelope checking: whatever bytes arrive, `Verifier::open` answers
//! without panicking, and a changed envelope either fails or means exactly what was signed.

mod common;

use common::mutate;
use gopswarm_proto::signed::{Principal, Signer, Trust, Verifier, encode_public, generate};
use gopswarm_proto::*;
use proptest::prelude::*;

struct Swarm {
    orchestrator: Signer,
    operator: Signer,
    host: Signer,
}

fn swarm() -> (Swarm, Verifier) {
    let s = Swarm {
        orchestrator: Signer::new(Principal::Orchestrator, generate()),
        operator: Signer::new(Principal::Operator("operator".into()), generate()),
        host: Signer::new(Principal::Host("host-0".into()), generate()),
    };
    let trust = Trust {
        orchestrator: encode_public(&s.orchestrator.public()),
        operators: [("operator".into(), encode_public(&s.operator.public()))].into(),
        mergers: Default::default(),
    };
    let mut v = Verifier::new(&trust).unwrap();
    v.set_host_key("host-0", s.host.public());
    (s, v)
}

/// Signed samples: (topic, envelope).
fn samples(s: &Swarm) -> Vec<(String, Vec<u8>)> {
    let h = || "host-0".to_string();
    let seal = |who: &Signer, t: Topic, body: Vec<u8>| {
        let path = t.path();
        (path.clone(), who.seal(&path, &body))
    };
    vec![
        seal(
            &s.host,
            Topic::Death(h()),
            encode(&Death { host: h(), seq: 5 }),
        ),
        seal(
            &s.orchestrator,
            Topic::Assignment(h()),
            encode(&Assignment {
                host: h(),
                revision: 9,
                tasks: Vec::new(),
                orchestrator_epoch: 0,
            }),
        ),
        seal(
            &s.orchestrator,
            Topic::Command(h()),
            encode(&Command {
                id: "c1".into(),
                epoch: 3,
                kind: CommandKind::Drain {
                    stream: "cam1".into(),
                    profile: "p".into(),
                    last_gop: 7,
                },
            }),
        ),
        seal(
            &s.operator,
            Topic::StreamControl,
            encode(&StreamCommand::Remove { id: "cam1".into() }),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A mutated envelope never panics, and if it still opens it decodes to what was signed.
    #[test]
    fn mutated_envelopes_fail_or_mean_what_was_signed(which in 0usize..4, ops in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)) {
        let (s, mut v) = swarm();
        let samples = samples(&s);
        let (topic, sealed) = &samples[which];
        let original = v.open(topic, sealed).expect("the sample opens");
        let mutated = mutate(sealed, &ops);
        if let Ok(m) = v.open(topic, &mutated) {
            prop_assert_eq!(m, original);
        }
    }

    /// A valid envelope moved to any other topic does not open there.
    #[test]
    fn an_envelope_opens_only_on_its_topic(which in 0usize..4, other in 0usize..4) {
        prop_assume!(which != other);
        let (s, mut v) = swarm();
        let samples = samples(&s);
        let (_, sealed) = &samples[which];
        let (topic, _) = &samples[other];
        prop_assert!(v.open(topic, sealed).is_err());
    }

    /// Arbitrary bytes, and arbitrary JSON objects with the envelope's keys, never panic.
    #[test]
    fn arbitrary_envelopes_never_panic(by in ".{0,30}", n in any::<u64>(), sig in "[A-Za-z0-9+/=]{0,100}", body in ".{0,60}", raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let (s, mut v) = swarm();
        for (topic, _) in samples(&s) {
            let _ = v.open(&topic, &raw);
            let json = serde_json::json!({"by": by, "n": n, "sig": sig, "body": body});
            let _ = v.open(&topic, &serde_json::to_vec(&json).unwrap());
            let json = serde_json::json!({"by": "orchestrator", "n": n, "sig": sig, "body": {"v": 1}});
            let _ = v.open(&topic, &serde_json::to_vec(&json).unwrap());
        }
    }
}

#[test]
fn a_replay_of_an_older_message_is_refused_but_a_redelivery_is_not() {
    let (s, mut v) = swarm();
    let t = Topic::Assignment("host-0".into()).path();
    let older = s.orchestrator.seal(
        &t,
        &encode(&Assignment {
            host: "host-0".into(),
            revision: 1,
            tasks: Vec::new(),
            orchestrator_epoch: 0,
        }),
    );
    let newer = s.orchestrator.seal(
        &t,
        &encode(&Assignment {
            host: "host-0".into(),
            revision: 2,
            tasks: Vec::new(),
            orchestrator_epoch: 0,
        }),
    );
    assert!(v.open(&t, &older).is_ok());
    assert!(v.open(&t, &newer).is_ok());
    assert!(v.open(&t, &newer).is_ok(), "the broker redelivering");
    assert!(matches!(v.open(&t, &older), Err(Reject::Replayed(_))));
}
