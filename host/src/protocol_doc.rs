//! Checks `docs/protocol.md` against the implementation: every test vector
//! in it (keys, reply envelopes, declarations, task headers, the node
//! registration) is what this code produces and accepts, and every Lua
//! script in it is the one the code runs. A vector or script that no check
//! here knows of fails too, so the document cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anocast_wire::{Ack, Declaration, Envelope, Interest, NodeKey, Outcome, TaskFacts, Worker, declaration};
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

/// The reply subject of the example task.
const REPLY_TO: &str = "_INBOX.client.1";

/// The example task: on `orders.created`, dispatched by a worker of `r-0`.
fn task() -> Task {
    Task {
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
        signed: None,
        root: None,
    }
}

fn task_facts() -> TaskFacts {
    crate::bus::wire::task_facts(&task(), REPLY_TO, "node-a", key().public())
}

/// The example task's digest.
fn task_digest() -> [u8; 32] {
    task_facts().seal(&key()).expect("signs").digest
}

fn envelope(ack: Option<Ack>, result: Option<Outcome>) -> Envelope {
    Envelope {
        timestamp_ms: TIMESTAMP_MS,
        topic: TOPIC.into(),
        request_id: REQUEST_ID.into(),
        task_digest: task_digest(),
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

/// Headers from `Name: value` pairs.
fn header_map(pairs: &BTreeSet<(String, String)>) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(name.as_str(), value.as_str());
    }
    map
}

fn entry() -> String {
    Declaration::entry(TOPIC, REQUEST_ID, &task_digest(), &worker(), &key()).expect("signs")
}

/// The example node registration.
fn node_info() -> NodeInfo {
    NodeInfo {
        id: "node-a".into(),
        key: key().public().to_string(),
        plugins: vec![PluginEntry {
            name: "echo".into(),
            version: "1.0.0".into(),
            topics: vec!["orders.*".into(), "echo".into()],
        }],
        signed_ms: TIMESTAMP_MS,
    }
}

/// The reply envelopes the document shows, by block name.
fn reply_vectors() -> [(&'static str, Envelope); 6] {
    let declared = || Some(Ack { interest: Interest::Declared, closed: None });
    let ok = || Some(Ok(b"{\"ok\":true}".to_vec()));
    [
        ("reply-ack", envelope(declared(), None)),
        (
            "reply-ack-closed",
            envelope(Some(Ack { interest: Interest::NotInterested, closed: Some(vec![entry()]) }), None),
        ),
        ("reply-result", envelope(None, ok())),
        ("reply-error", envelope(None, Some(Err("boom".into())))),
        ("reply-both", envelope(declared(), ok())),
        ("reply-staged", Envelope { staged: true, ..envelope(None, ok()) }),
    ]
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

    // The task: its signed bytes, its headers (as a set: their order does
    // not matter), and the digest everything else binds.
    let facts = task_facts();
    let seal = facts.seal(&key()).expect("signs");
    assert_eq!(
        hex::encode(hex_bytes(&block("task-signed", "hex"))),
        hex::encode(facts.signed_bytes().expect("encodes"))
    );
    assert_eq!(block("task-digest", "text").trim(), hex::encode(seal.digest));
    let documented = header_set(&block("task-headers", "text"));
    let (headers, body) = encode_task(&task(), &facts, &seal);
    assert_eq!(documented, encoded_set(&headers));
    let decoded = decode_task("anocast.task.orders.created", REPLY_TO, Some(&header_map(&documented)), &body)
        .expect("decodes and verifies");
    let expected = task();
    assert_eq!(
        (decoded.request_id, decoded.deadline, decoded.depth, decoded.ancestry, decoded.content_type, decoded.expected),
        (
            expected.request_id,
            expected.deadline,
            expected.depth,
            expected.ancestry,
            expected.content_type,
            expected.expected
        )
    );
    assert_eq!(decoded.signed.expect("signed").digest, seal.digest);

    // Reply envelopes: the document's bytes are what sealing produces, and
    // open back into the same envelope.
    for (name, expected) in reply_vectors() {
        let bytes = hex_bytes(&block(name, "hex"));
        assert_eq!(hex::encode(&bytes), hex::encode(expected.seal(&key()).expect("seals")), "vector {name}");
        assert_eq!(Envelope::open(&bytes).expect("opens"), expected, "vector {name}");
    }

    // Declarations.
    let signed = hex_bytes(&block("declaration-signed", "hex"));
    assert_eq!(signed, declaration::signed_bytes(TOPIC, REQUEST_ID, &task_digest(), &worker()).expect("encodes"));
    let text = block("declaration-entry", "text");
    assert_eq!(text.trim(), entry());
    let parsed = Declaration::parse(text.trim()).expect("parses");
    parsed.verify(TOPIC, REQUEST_ID, &task_digest()).expect("verifies");
    assert!(parsed.verify(TOPIC, "r-2", &task_digest()).is_err(), "bound to its request");
    assert!(parsed.verify(TOPIC, REQUEST_ID, &[0; 32]).is_err(), "bound to its task");

    // Settle decisions.
    let signed = hex_bytes(&block("settle-signed", "hex"));
    assert_eq!(signed, anocast_wire::settle::signed_bytes(&key().public(), REQUEST_ID, true).expect("encodes"));
    let documented = header_set(&block("settle-headers", "text"));
    let encoded = encoded_set(&crate::bus::wire::encode_settle(REQUEST_ID, Decision::Commit, &key()).expect("signs"));
    assert_eq!(documented, encoded);
    let decision = crate::bus::wire::decode_settle(Some(&header_map(&documented))).expect("verifies");
    assert_eq!((decision.decision, decision.signer), (Decision::Commit, key().public()));

    // The node registration: its JSON, and the signed value in Redis.
    let info: NodeInfo = serde_json::from_str(&block("node-info", "json")).expect("a node registration");
    assert_eq!(info, node_info());
    let value = block("node-entry", "text");
    let json = serde_json::to_string(&node_info()).expect("serializes");
    let sealed = anocast_wire::statement::seal(anocast_wire::statement::NODE, &json, &key()).expect("signs");
    assert_eq!(value.trim(), sealed);
    let (opened, signer) = NodeInfo::open(value.trim(), Duration::from_secs(60), TIMESTAMP_MS).expect("opens");
    assert_eq!((opened, signer), (node_info(), key().public()));

    // Scripts, byte for byte.
    for (name, script) in SCRIPTS {
        assert_eq!(block(name, "lua").trim_end(), script.trim(), "script {name}");
    }

    let unchecked: Vec<_> = blocks.keys().filter(|name| !checked.contains(*name)).collect();
    assert!(unchecked.is_empty(), "blocks of docs/protocol.md that nothing checks: {unchecked:?}");
}

/// Prints the document's vectors, annotated, for writing them into it:
/// `cargo test -p anocast-host protocol_doc::print -- --ignored --nocapture`.
#[test]
#[ignore = "writes the vectors for docs/protocol.md; run by hand"]
fn print_vectors() {
    fn line(out: &mut String, bytes: &[u8], note: &str) {
        for (i, chunk) in bytes.chunks(32).enumerate() {
            let hex = hex::encode(chunk);
            if i == 0 && !note.is_empty() {
                out.push_str(&format!("{hex:<64}  # {note}\n"));
            } else {
                out.push_str(&format!("{hex}\n"));
            }
        }
    }
    fn short(out: &mut String, what: &str, text: &str) {
        line(out, &[text.len() as u8], &format!("{what}: length"));
        line(out, text.as_bytes(), &format!("{what}: {text:?}"));
    }
    fn medium(out: &mut String, what: &str, text: &str) {
        line(out, &(text.len() as u16).to_be_bytes(), &format!("{what}: length"));
        let shown: String = text.chars().take(40).collect();
        let more = if text.len() > 40 { "..." } else { "" };
        line(out, text.as_bytes(), &format!("{what}: \"{shown}{more}\""));
    }
    let f = task_facts();
    let seal = f.seal(&key()).expect("signs");
    let mut t = String::new();
    line(&mut t, anocast_wire::task::TAG, "tag: \"anocast-task-v2\"");
    line(&mut t, &f.key.to_bytes(), "dispatcher key");
    short(&mut t, "dispatcher id", &f.dispatcher);
    line(&mut t, &f.root.to_bytes(), "root key (the same: node-a is the root's dispatcher)");
    medium(&mut t, "topic", &f.topic);
    short(&mut t, "request id", &f.request_id);
    medium(&mut t, "reply to", &f.reply_to);
    line(&mut t, &f.payload_digest, "payload digest: SHA-256 of \"{}\"");
    short(&mut t, "content type", &f.content_type);
    line(&mut t, &f.deadline_ms.to_be_bytes(), &format!("deadline: {} (Unix ms)", f.deadline_ms));
    line(&mut t, &(f.expected.len() as u16).to_be_bytes(), "expected: count");
    for g in &f.expected {
        short(&mut t, "expected", g);
    }
    line(&mut t, &(f.ancestry.len() as u32).to_be_bytes(), "depth");
    for (topic, id) in &f.ancestry {
        medium(&mut t, "ancestor topic", topic);
        short(&mut t, "ancestor request id", id);
    }
    println!("--- task-signed\n{t}--- task-digest\n{}", hex::encode(seal.digest));
    let (headers, _) = encode_task(&task(), &f, &seal);
    println!("--- task-headers");
    for (name, values) in headers.iter() {
        for v in values {
            println!("{name}: {}", v.as_str());
        }
    }
    let envelope_vector = |e: &Envelope| {
        let mut out = String::new();
        line(&mut out, anocast_wire::envelope::TAG, "tag: \"anocast-reply-v2\"");
        line(&mut out, &e.timestamp_ms.to_be_bytes(), &format!("timestamp: {} (Unix ms)", e.timestamp_ms));
        medium(&mut out, "topic", &e.topic);
        short(&mut out, "request id", &e.request_id);
        line(&mut out, &e.task_digest, "task digest");
        line(&mut out, &e.worker.key.to_bytes(), "node key");
        short(&mut out, "node id", &e.worker.node);
        short(&mut out, "plugin", &e.worker.plugin);
        short(&mut out, "version", &e.worker.version);
        line(&mut out, &e.worker.digest, "digest: SHA-256 of the plugin file");
        let sealed = e.seal(&key()).expect("seals");
        let unsigned = e.unsigned().expect("encodes");
        let header_len = out.lines().map(|l| l.split('#').next().unwrap_or("").trim().len() / 2).sum::<usize>();
        let rest = &unsigned[header_len..];
        let flags = rest[0];
        let what = match flags & 3 {
            1 => "acknowledgement",
            2 => "result",
            _ => "acknowledgement and result",
        };
        let staged = if flags & 4 != 0 { ", staged" } else { "" };
        line(&mut out, &rest[..1], &format!("flags: {what}{staged}"));
        let mut at = 1;
        if let Some(ack) = &e.ack {
            let interest = match ack.interest {
                Interest::NotInterested => "not interested",
                Interest::Declared => "declared",
                Interest::Refused => "refused",
                Interest::Busy => "busy",
                Interest::Untrusted => "untrusted",
            };
            line(&mut out, &rest[at..at + 1], &format!("interest: {interest}"));
            at += 1;
            match &ack.closed {
                None => {
                    line(&mut out, &rest[at..at + 1], "closed: no");
                    at += 1;
                }
                Some(entries) => {
                    line(&mut out, &rest[at..at + 1], "closed: yes, the list follows");
                    line(&mut out, &rest[at + 1..at + 3], &format!("entries: {}", entries.len()));
                    at += 3;
                    for entry in entries {
                        medium(&mut out, "entry", entry);
                        at += 2 + entry.len();
                    }
                }
            }
        }
        if let Some(result) = &e.result {
            let (status, bytes) = match result {
                Ok(b) => ("status: ok", b.clone()),
                Err(text) => ("status: error", text.as_bytes().to_vec()),
            };
            line(&mut out, &rest[at..at + 1], status);
            line(&mut out, &(bytes.len() as u32).to_be_bytes(), "payload: length");
            line(&mut out, &bytes, &format!("payload: {:?}", String::from_utf8_lossy(&bytes)));
        }
        line(&mut out, &sealed[sealed.len() - 64..], "signature: ed25519 over all bytes above");
        out
    };
    for (name, e) in reply_vectors() {
        println!("--- {name}\n{}", envelope_vector(&e));
    }
    let mut d = String::new();
    line(&mut d, declaration::TAG, "tag: \"anocast-declare-v2\"");
    medium(&mut d, "topic", TOPIC);
    short(&mut d, "request id", REQUEST_ID);
    line(&mut d, &task_digest(), "task digest");
    line(&mut d, &key().public().to_bytes(), "node key");
    short(&mut d, "node id", "node-a");
    short(&mut d, "plugin", "echo");
    short(&mut d, "version", "1.0.0");
    line(&mut d, &worker().digest, "digest");
    println!("--- declaration-signed\n{d}--- declaration-entry\n{}", entry());
    let mut st = String::new();
    line(&mut st, anocast_wire::settle::TAG, "tag: \"anocast-settle-v2\"");
    line(&mut st, &key().public().to_bytes(), "signer key");
    short(&mut st, "transaction", REQUEST_ID);
    line(&mut st, &[0], "decision: commit");
    println!("--- settle-signed\n{st}--- settle-headers");
    let headers = crate::bus::wire::encode_settle(REQUEST_ID, Decision::Commit, &key()).expect("signs");
    for (name, values) in headers.iter() {
        for v in values {
            println!("{name}: {}", v.as_str());
        }
    }
    let json = serde_json::to_string(&node_info()).expect("serializes");
    println!("--- node-info\n{json}");
    println!(
        "--- node-entry\n{}",
        anocast_wire::statement::seal(anocast_wire::statement::NODE, &json, &key()).expect("signs")
    );
}
