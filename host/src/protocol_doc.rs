//! Checks `docs/protocol.md` against the implementation: every test vector
//! in it (keys, reply envelopes, declarations, task headers, the node
//! registration) is what this code produces and accepts, and every Lua
//! script in it is the one the code runs. A vector or script that no check
//! here knows of fails too, so the document cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anocast_wire::{Ack, Declaration, Envelope, Interest, NodeKey, Outcome, Worker, declaration};
use sha2::Digest;

use crate::bus::Decision;
use crate::bus::Task;
use crate::bus::wire::{decode_task, encode_task};
use crate::ledger::{NodeInfo, PluginEntry, SCRIPTS};
use crate::topic::Topic;

/// RFC 8032's first test key.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const TOPIC: &str = "orders.created";
const REQUEST_ID: &str = "r-1";
/// 2026-01-01T00:00:00Z.
const TIMESTAMP_MS: u64 = 1_767_225_600_000;

/// The fenced blocks of the document tagged `vector=` or `script=`, by
/// name: (info string, body).
fn blocks() -> BTreeMap<String, (String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut found = BTreeMap::new();
    let mut open: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => {
                let (info, body) = open.take().expect("a block is open");
                let name =
                    info.split_whitespace().find_map(|w| w.strip_prefix("vector=").or(w.strip_prefix("script=")));
                if let Some(name) = name {
                    let previous = found.insert(name.to_owned(), (info.clone(), body));
                    assert!(previous.is_none(), "two blocks named {name}");
                }
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unterminated code block");
    found
}

/// An annotated hex block's bytes (`#` starts a comment).
fn hex_bytes(body: &str) -> Vec<u8> {
    let digits: String = body
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(digits).expect("a hex vector is hex")
}

fn key() -> NodeKey {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(SEED, &mut seed).expect("seed");
    NodeKey::from_seed(&seed).expect("a seed makes a key")
}

fn worker() -> Worker {
    Worker {
        node: "node-a".into(),
        plugin: "echo".into(),
        version: "1.0.0".into(),
        key: key().public(),
        digest: sha2::Sha256::digest(b"").into(),
    }
}

fn envelope(ack: Option<Ack>, result: Option<Outcome>) -> Envelope {
    Envelope {
        timestamp_ms: TIMESTAMP_MS,
        topic: TOPIC.into(),
        request_id: REQUEST_ID.into(),
        worker: worker(),
        ack,
        result,
        staged: false,
    }
}

/// `Name: value` lines, as a set of pairs.
fn header_set(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line is `Name: value`");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// NATS headers, as a set of pairs.
fn encoded_set(headers: &async_nats::HeaderMap) -> BTreeSet<(String, String)> {
    headers
        .iter()
        .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.as_str().to_owned())))
        .collect()
}

fn entry() -> String {
    Declaration::entry(TOPIC, REQUEST_ID, &worker(), &key()).expect("signs")
}

#[test]
fn every_vector_and_script_of_the_protocol_document_matches_the_implementation() {
    let blocks = blocks();
    let mut checked = BTreeSet::new();
    let mut block = |name: &str, kind: &str| -> String {
        let (info, body) = blocks.get(name).unwrap_or_else(|| panic!("docs/protocol.md has no block {name}"));
        assert!(info.starts_with(kind), "block {name} should be {kind}, is {info}");
        checked.insert(name.to_owned());
        body.clone()
    };

    // Keys.
    assert_eq!(block("public-key", "text").trim(), key().public().to_string());

    // Reply envelopes: the document's bytes are what sealing produces, and
    // open back into the same envelope.
    let declared = || Some(Ack { interest: Interest::Declared, closed: None });
    let ok = || Some(Ok(b"{\"ok\":true}".to_vec()));
    let replies = [
        ("reply-ack", envelope(declared(), None)),
        (
            "reply-ack-closed",
            envelope(Some(Ack { interest: Interest::NotInterested, closed: Some(vec![entry()]) }), None),
        ),
        ("reply-result", envelope(None, ok())),
        ("reply-error", envelope(None, Some(Err("boom".into())))),
        ("reply-both", envelope(declared(), ok())),
        ("reply-staged", Envelope { staged: true, ..envelope(None, ok()) }),
    ];
    for (name, expected) in replies {
        let bytes = hex_bytes(&block(name, "hex"));
        assert_eq!(hex::encode(&bytes), hex::encode(expected.seal(&key()).expect("seals")), "vector {name}");
        assert_eq!(Envelope::open(&bytes).expect("opens"), expected, "vector {name}");
    }

    // Declarations.
    let signed = hex_bytes(&block("declaration-signed", "hex"));
    assert_eq!(signed, declaration::signed_bytes(TOPIC, REQUEST_ID, &worker()).expect("encodes"));
    let text = block("declaration-entry", "text");
    assert_eq!(text.trim(), entry());
    let parsed = Declaration::parse(text.trim()).expect("parses");
    parsed.verify(TOPIC, REQUEST_ID).expect("verifies");
    assert!(parsed.verify(TOPIC, "r-2").is_err(), "bound to its request");

    // Task headers, as a set (their order does not matter).
    let task = Task {
        topic: Topic::parse(TOPIC).expect("topic"),
        request_id: Arc::from(REQUEST_ID),
        payload: b"{}".to_vec(),
        content_type: "application/json".into(),
        deadline: UNIX_EPOCH + Duration::from_millis(TIMESTAMP_MS + 5000),
        depth: 1,
        ancestry: vec![crate::bus::Ancestor {
            topic: Topic::parse("orders.placed").expect("topic"),
            request_id: Arc::from("r-0"),
        }],
        expected: vec!["echo".into(), "fraud-check".into()],
    };
    let documented = header_set(&block("task-headers", "text"));
    let (headers, body) = encode_task(&task);
    let encoded = encoded_set(&headers);
    assert_eq!(documented, encoded);
    let mut from_doc = async_nats::HeaderMap::new();
    for (name, value) in &documented {
        from_doc.insert(name.as_str(), value.as_str());
    }
    let decoded = decode_task("anocast.task.orders.created", Some(&from_doc), &body).expect("decodes");
    assert_eq!(
        (decoded.request_id, decoded.deadline, decoded.depth, decoded.ancestry, decoded.content_type, decoded.expected),
        (task.request_id, task.deadline, task.depth, task.ancestry, task.content_type, task.expected)
    );

    // Settle decisions.
    let documented = header_set(&block("settle-headers", "text"));
    let encoded = encoded_set(&crate::bus::wire::encode_settle(REQUEST_ID, Decision::Commit));
    assert_eq!(documented, encoded);

    // The node registration.
    let info: NodeInfo = serde_json::from_str(&block("node-info", "json")).expect("a node registration");
    let expected = NodeInfo {
        id: "node-a".into(),
        key: key().public().to_string(),
        plugins: vec![PluginEntry {
            name: "echo".into(),
            version: "1.0.0".into(),
            topics: vec!["orders.*".into(), "echo".into()],
        }],
    };
    assert_eq!(info, expected);

    // Scripts, byte for byte.
    for (name, script) in SCRIPTS {
        assert_eq!(block(name, "lua").trim_end(), script.trim(), "script {name}");
    }

    let unchecked: Vec<_> = blocks.keys().filter(|name| !checked.contains(*name)).collect();
    assert!(unchecked.is_empty(), "blocks of docs/protocol.md that nothing checks: {unchecked:?}");
}
