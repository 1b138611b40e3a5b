//! Property tests: whatever a node encodes, a dispatcher decodes to the same
//! value; any change to the bytes is refused.

use anocast_wire::envelope::Sealed;
use anocast_wire::{Ack, Declaration, Envelope, Interest, NodeKey, Worker};
use proptest::prelude::*;

fn key() -> NodeKey {
    NodeKey::from_seed(&[42; 32]).expect("a seed makes a key")
}

fn worker_strategy() -> impl Strategy<Value = Worker> {
    ("[A-Za-z0-9._-]{1,64}", "[a-z0-9_-]{1,64}", "[!-~]{1,64}", any::<[u8; 32]>())
        .prop_map(|(node, plugin, version, digest)| Worker { node, plugin, version, key: key().public(), digest })
}

fn interest_strategy() -> impl Strategy<Value = Interest> {
    prop_oneof![
        Just(Interest::NotInterested),
        Just(Interest::Declared),
        Just(Interest::Refused),
        Just(Interest::Busy),
        Just(Interest::Untrusted)
    ]
}

fn envelope_strategy() -> impl Strategy<Value = Envelope> {
    let topic = "[a-z0-9_-]{1,20}(\\.[A-Za-z0-9_-]{1,20}){0,4}";
    let ack = proptest::option::of((
        interest_strategy(),
        proptest::option::of(proptest::collection::vec("[!-~]{1,80}", 0..5)),
    ))
    .prop_map(|a| a.map(|(interest, closed)| Ack { interest, closed }));
    let result = proptest::option::of(prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Ok),
        "\\PC{0,60}".prop_map(Err),
    ]);
    (any::<u64>(), topic, "[!-+\\--~]{1,128}", any::<[u8; 32]>(), worker_strategy(), ack, result, any::<bool>())
        .prop_filter(
            "an envelope carries something, and a result only after a declaration",
            |(_, _, _, _, _, ack, result, _)| match (ack, result) {
                (None, None) => false,
                (Some(ack), Some(_)) => ack.interest == Interest::Declared,
                _ => true,
            },
        )
        .prop_map(|(timestamp_ms, topic, request_id, task_digest, worker, ack, result, staged)| Envelope {
            timestamp_ms,
            topic,
            request_id,
            task_digest,
            worker,
            staged: staged && result.is_some(),
            ack,
            result,
        })
}

proptest! {
    #[test]
    fn envelopes_round_trip(envelope in envelope_strategy()) {
        let bytes = envelope.seal(&key()).expect("seals");
        prop_assert_eq!(Envelope::open(&bytes).expect("opens"), envelope);
    }

    #[test]
    fn any_flipped_bit_is_refused(envelope in envelope_strategy(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = envelope.seal(&key()).expect("seals");
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(Envelope::open(&bytes).is_err());
    }

    #[test]
    fn truncated_or_extended_envelopes_are_refused(envelope in envelope_strategy(), cut in 1usize..100) {
        let bytes = envelope.seal(&key()).expect("seals");
        prop_assert!(Envelope::open(&bytes[..bytes.len().saturating_sub(cut)]).is_err());
        let mut longer = bytes.clone();
        longer.insert(bytes.len() - 64, 0);
        prop_assert!(Envelope::open(&longer).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Sealed::decode(&bytes);
        let _ = Declaration::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn declarations_round_trip_and_bind_the_task(
        worker in worker_strategy(),
        id in "[a-z0-9-]{1,40}",
        task in any::<[u8; 32]>(),
    ) {
        let entry = Declaration::entry("orders.created", &id, &task, &worker, &key()).expect("signs");
        let parsed = Declaration::parse(&entry).expect("parses");
        prop_assert_eq!(&parsed.worker, &worker);
        prop_assert!(parsed.verify("orders.created", &id, &task).is_ok());
        let other = format!("{}x", id);
        prop_assert!(parsed.verify("orders.created", &other, &task).is_err());
        prop_assert!(parsed.verify("orders.updated", &id, &task).is_err());
        let mut forged = task;
        forged[0] ^= 1;
        prop_assert!(parsed.verify("orders.created", &id, &forged).is_err(), "a forged task of the same request");
    }
}
