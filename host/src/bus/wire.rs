//! How tasks, replies and settle decisions travel as NATS messages
//! (protocol version 2): metadata in headers, the payload (or a partial's
//! bytes, or its error text) as the body.
//!
//! | message | subject | headers |
//! |---|---|---|
//! | task | `anocast.task.<topic>`, reply subject = the dispatcher's inbox | `Anocast-Protocol` (`2`), `Anocast-Request-Id`, `Anocast-Deadline` (Unix ms), `Anocast-Depth`, `Anocast-Ancestry` (comma-separated request ids), `Anocast-Ancestry-Topics` (their topics), `Content-Type`, `Anocast-Expected` (comma-separated plugin groups, optional), `Anocast-Dispatcher` (node id), `Anocast-Key`, `Anocast-Root-Key`, `Anocast-Signature` (see `anocast_wire::task`) |
//! | reply | the inbox | none: the body is a signed envelope (`anocast_wire::envelope`) |
//! | settle | `anocast.settle` | `Anocast-Protocol`, `Anocast-Request-Id` (the transaction), `Anocast-Decision` (`commit` or `abort`), `Anocast-Key`, `Anocast-Signature` (see `anocast_wire::settle`); empty body |
//!
//! Decoding is strict: a message missing a header or carrying a malformed
//! one is refused with a reason, never half-read; a message of another
//! protocol version is refused with a reason that names both versions.
//! Signatures are checked here; whether the signer is trusted is the
//! caller's question. `docs/protocol.md` has the whole protocol.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anocast_wire::task::{TaskFacts, payload_digest};
use anocast_wire::{NodeKey, PublicKey, TaskSeal, names};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::{Ancestor, Decision, Signed, Task};
use crate::topic::Topic;

/// The subject of settle decisions.
pub const SETTLE_SUBJECT: &str = "anocast.settle";
const DECISION: &str = "Anocast-Decision";
const PROTOCOL: &str = "Anocast-Protocol";
const DISPATCHER: &str = "Anocast-Dispatcher";
const KEY: &str = "Anocast-Key";
const ROOT_KEY: &str = "Anocast-Root-Key";
const SIGNATURE: &str = "Anocast-Signature";

/// Headers of a settle decision, signed with `key`.
pub fn encode_settle(transaction: &str, decision: Decision, key: &NodeKey) -> Result<HeaderMap, WireError> {
    let signature = anocast_wire::settle::sign(key, transaction, decision == Decision::Commit)?;
    let mut headers = HeaderMap::new();
    headers.insert(PROTOCOL, PROTOCOL_VERSION);
    headers.insert(REQUEST_ID, transaction);
    headers.insert(DECISION, decision.as_str());
    headers.insert(KEY, key.public().to_string().as_str());
    headers.insert(SIGNATURE, hex::encode(signature).as_str());
    Ok(headers)
}

/// A settle decision whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDecision {
    /// The transaction (the root task's request id).
    pub transaction: Arc<str>,
    /// What was decided.
    pub decision: Decision,
    /// Who signed it.
    pub signer: PublicKey,
}

/// Reads a settle decision and verifies its signature.
pub fn decode_settle(headers: Option<&HeaderMap>) -> Result<SignedDecision, WireError> {
    check_protocol(headers, "settle decision")?;
    let transaction = header(headers, REQUEST_ID)?;
    names::check_request_id(transaction)?;
    let decision = header(headers, DECISION)?;
    let decision = Decision::parse(decision).ok_or_else(|| WireError::new(format!("bad decision {decision:?}")))?;
    let signer = key_header(headers, KEY)?;
    let signature = signature_header(headers)?;
    anocast_wire::settle::verify(&signer, transaction, decision == Decision::Commit, &signature)
        .map_err(|_| WireError::forged("a settle decision whose signature does not verify"))?;
    Ok(SignedDecision { transaction: Arc::from(transaction), decision, signer })
}

/// Prefix of every task subject.
pub const TASK_PREFIX: &str = "anocast.task.";

/// The protocol version, as its header says it.
const PROTOCOL_VERSION: &str = "2";

const REQUEST_ID: &str = "Anocast-Request-Id";
const DEADLINE: &str = "Anocast-Deadline";
const DEPTH: &str = "Anocast-Depth";
const ANCESTRY: &str = "Anocast-Ancestry";
const ANCESTRY_TOPICS: &str = "Anocast-Ancestry-Topics";
const CONTENT_TYPE: &str = "Content-Type";
const EXPECTED: &str = "Anocast-Expected";

/// What was wrong with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It does not decode.
    Malformed,
    /// It speaks another protocol version.
    OldProtocol,
    /// Its signature does not verify.
    Forged,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if *.fault == Fault::Malformed { "malformed message: " } else { "" })]
pub struct WireError {
    message: String,
    /// What kind of fault, for the rejection counters.
    pub fault: Fault,
}

impl WireError {
    fn new(message: impl Into<String>) -> Self {
        WireError { message: message.into(), fault: Fault::Malformed }
    }

    fn forged(message: impl Into<String>) -> Self {
        WireError { message: message.into(), fault: Fault::Forged }
    }
}

impl From<names::NameError> for WireError {
    fn from(err: names::NameError) -> Self {
        WireError::new(err.to_string())
    }
}

impl From<anocast_wire::WireError> for WireError {
    fn from(err: anocast_wire::WireError) -> Self {
        WireError::new(err.0)
    }
}

/// Refuses a message of another protocol version than this one, saying
/// which.
fn check_protocol(headers: Option<&HeaderMap>, what: &str) -> Result<(), WireError> {
    match optional(headers, PROTOCOL)? {
        Some(PROTOCOL_VERSION) => Ok(()),
        found => Err(WireError {
            message: format!(
                "a {what} of protocol version {} (no {PROTOCOL} header means 1); this node speaks version {}",
                found.map_or("1".into(), |v| v.chars().take(16).collect::<String>()),
                PROTOCOL_VERSION
            ),
            fault: Fault::OldProtocol,
        }),
    }
}

/// The one value of header `name` (names are case-sensitive); a header
/// given twice is refused, so that no two readers can see different values.
fn optional<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Result<Option<&'a str>, WireError> {
    let Some(headers) = headers else { return Ok(None) };
    let mut values = headers.get_all(name);
    let first = values.next().map(|v| v.as_str());
    if values.next().is_some() {
        return Err(WireError::new(format!("the {name} header is repeated")));
    }
    Ok(first)
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Result<&'a str, WireError> {
    optional(headers, name)?.ok_or_else(|| WireError::new(format!("no {name} header")))
}

fn key_header(headers: Option<&HeaderMap>, name: &str) -> Result<PublicKey, WireError> {
    PublicKey::parse(header(headers, name)?).map_err(|e| WireError::new(format!("{name}: {e}")))
}

fn signature_header(headers: Option<&HeaderMap>) -> Result<[u8; 64], WireError> {
    let mut signature = [0u8; 64];
    hex::decode_to_slice(header(headers, SIGNATURE)?, &mut signature)
        .map_err(|_| WireError::new(format!("{SIGNATURE} is not 128 hex digits")))?;
    Ok(signature)
}

/// The subject a task on `topic` is published on.
pub fn task_subject(topic: &str) -> String {
    format!("{TASK_PREFIX}{topic}")
}

/// What the dispatcher `dispatcher` (key `key`) signs of `task`, sent
/// with replies to `reply_to`.
pub fn task_facts(task: &Task, reply_to: &str, dispatcher: &str, key: PublicKey) -> TaskFacts {
    TaskFacts {
        key,
        dispatcher: dispatcher.to_owned(),
        root: task.root.unwrap_or(key),
        topic: task.topic.to_string(),
        request_id: task.request_id.to_string(),
        reply_to: reply_to.to_owned(),
        payload_digest: payload_digest(&task.payload),
        content_type: task.content_type.clone(),
        deadline_ms: unix_ms(task.deadline),
        expected: task.expected.clone(),
        ancestry: task.ancestry.iter().map(|a| (a.topic.to_string(), a.request_id.to_string())).collect(),
    }
}

/// Headers and body of `task`, with its signature.
pub fn encode_task(task: &Task, facts: &TaskFacts, seal: &TaskSeal) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(PROTOCOL, PROTOCOL_VERSION);
    headers.insert(REQUEST_ID, &*task.request_id);
    headers.insert(DEADLINE, facts.deadline_ms.to_string().as_str());
    headers.insert(DEPTH, task.depth.to_string().as_str());
    let ids: Vec<&str> = task.ancestry.iter().map(|a| &*a.request_id).collect();
    headers.insert(ANCESTRY, ids.join(",").as_str());
    let topics: Vec<&str> = task.ancestry.iter().map(|a| a.topic.as_str()).collect();
    headers.insert(ANCESTRY_TOPICS, topics.join(",").as_str());
    headers.insert(CONTENT_TYPE, task.content_type.as_str());
    if !task.expected.is_empty() {
        headers.insert(EXPECTED, task.expected.join(",").as_str());
    }
    headers.insert(DISPATCHER, facts.dispatcher.as_str());
    headers.insert(KEY, facts.key.to_string().as_str());
    headers.insert(ROOT_KEY, facts.root.to_string().as_str());
    headers.insert(SIGNATURE, hex::encode(seal.signature).as_str());
    (headers, Bytes::copy_from_slice(&task.payload))
}

/// Task signatures a node has verified: one task reaches each of the
/// node's plugins that subscribe to its topic, as one message per
/// subscription, and is verified once. Bounded (forgotten whole when
/// full); a hit needs the same digest *and* the same signature bytes.
#[derive(Default)]
pub struct Verified(parking_lot::Mutex<rustc_hash::FxHashMap<[u8; 32], [u8; 64]>>);

impl Verified {
    const MOST: usize = 4096;

    fn contains(&self, digest: &[u8; 32], signature: &[u8; 64]) -> bool {
        self.0.lock().get(digest) == Some(signature)
    }

    fn insert(&self, digest: [u8; 32], signature: [u8; 64]) {
        let mut known = self.0.lock();
        if known.len() >= Self::MOST {
            known.clear();
        }
        known.insert(digest, signature);
    }
}

/// Reads a task from a message received on `subject` with replies to
/// `reply_to`, and verifies its signature: the task (with [`Task::signed`]
/// set) whose signer the caller must still trust.
#[cfg(test)]
pub fn decode_task(subject: &str, reply_to: &str, headers: Option<&HeaderMap>, body: &[u8]) -> Result<Task, WireError> {
    decode_task_with(subject, reply_to, headers, body, None)
}

/// [`decode_task`], skipping the verification of a signature `verified`
/// already holds (and remembering the ones it verifies).
pub fn decode_task_with(
    subject: &str,
    reply_to: &str,
    headers: Option<&HeaderMap>,
    body: &[u8],
    verified: Option<&Verified>,
) -> Result<Task, WireError> {
    check_protocol(headers, "task")?;
    let topic =
        subject.strip_prefix(TASK_PREFIX).ok_or_else(|| WireError::new(format!("{subject} is not a task subject")))?;
    let topic = Topic::parse(topic).map_err(|e| WireError::new(e.to_string()))?;
    let request_id = header(headers, REQUEST_ID)?;
    names::check_request_id(request_id)?;
    let deadline: u64 = header(headers, DEADLINE)?.parse().map_err(|_| WireError::new("bad deadline"))?;
    let depth: u32 = header(headers, DEPTH)?.parse().map_err(|_| WireError::new("bad depth"))?;
    let ancestry = decode_ancestry(header(headers, ANCESTRY)?, header(headers, ANCESTRY_TOPICS)?)?;
    if ancestry.len() != depth as usize {
        return Err(WireError::new(format!("depth {depth} but {} ancestors", ancestry.len())));
    }
    let dispatcher = header(headers, DISPATCHER)?;
    names::check_node_id(dispatcher)?;
    let mut task = Task {
        topic,
        request_id: Arc::from(request_id),
        payload: body.to_vec(),
        content_type: header(headers, CONTENT_TYPE).unwrap_or("application/octet-stream").to_owned(),
        deadline: UNIX_EPOCH + Duration::from_millis(deadline),
        depth,
        ancestry,
        expected: match optional(headers, EXPECTED)? {
            Some(names) if !names.is_empty() => names
                .split(',')
                .map(|name| {
                    names::check_plugin_name(name).map_err(|_| WireError::new("bad expected group"))?;
                    Ok(name.to_owned())
                })
                .collect::<Result<_, WireError>>()?,
            _ => Vec::new(),
        },
        signed: None,
        root: Some(key_header(headers, ROOT_KEY)?),
    };
    let key = key_header(headers, KEY)?;
    let signature = signature_header(headers)?;
    let facts = task_facts(&task, reply_to, dispatcher, key);
    // Fields the signature could not cover because they do not encode
    // (a content type with a newline) are malformed, not forged.
    let bytes = facts.signed_bytes()?;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    if !verified.is_some_and(|v| v.contains(&digest, &signature)) {
        key.verify(&bytes, &signature).map_err(|_| WireError::forged("a task whose signature does not verify"))?;
        if let Some(v) = verified {
            v.insert(digest, signature);
        }
    }
    task.signed = Some(Arc::new(Signed { dispatcher: dispatcher.to_owned(), key, root: facts.root, digest }));
    task.root = Some(facts.root);
    Ok(task)
}

/// Pairs the ancestors' request ids with their topics.
fn decode_ancestry(ids: &str, topics: &str) -> Result<Vec<Ancestor>, WireError> {
    if ids.is_empty() && topics.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, topics): (Vec<&str>, Vec<&str>) = (ids.split(',').collect(), topics.split(',').collect());
    if ids.len() != topics.len() {
        return Err(WireError::new(format!("{} ancestor ids but {} ancestor topics", ids.len(), topics.len())));
    }
    ids.into_iter()
        .zip(topics)
        .map(|(id, topic)| {
            names::check_request_id(id)?;
            let topic = Topic::parse(topic).map_err(|e| WireError::new(format!("ancestry: {e}")))?;
            Ok(Ancestor { topic, request_id: Arc::from(id) })
        })
        .collect()
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOX: &str = "_INBOX.test.1";

    fn key() -> NodeKey {
        NodeKey::from_seed(&[9; 32]).expect("key")
    }

    fn task() -> Task {
        Task {
            topic: Topic::parse("orders.created").expect("topic"),
            request_id: Arc::from("r-1"),
            payload: b"{\"amount\": 3}".to_vec(),
            content_type: "application/json".into(),
            deadline: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            depth: 2,
            ancestry: vec![
                Ancestor { topic: Topic::parse("orders.placed").expect("topic"), request_id: Arc::from("a") },
                Ancestor { topic: Topic::parse("stock.reserve").expect("topic"), request_id: Arc::from("b") },
            ],
            expected: vec!["echo".into(), "misbehave".into()],
            signed: None,
            root: None,
        }
    }

    /// A signed task's headers and body.
    fn encoded(task: &Task) -> (HeaderMap, Bytes) {
        let facts = task_facts(task, INBOX, "node-a", key().public());
        encode_task(task, &facts, &facts.seal(&key()).expect("signs"))
    }

    /// `headers` without `name`.
    fn without(headers: &HeaderMap, name: &str) -> HeaderMap {
        let mut out = HeaderMap::new();
        for (n, values) in headers.iter().filter(|(n, _)| n.to_string() != name) {
            for value in values {
                out.append(n.clone(), value.clone());
            }
        }
        out
    }

    fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Task, WireError> {
        decode_task("anocast.task.orders.created", INBOX, Some(headers), body)
    }

    #[test]
    fn tasks_round_trip_signed() {
        let original = task();
        let (headers, body) = encoded(&original);
        let decoded = decode(&headers, &body).expect("decodes");
        assert_eq!(decoded.topic, original.topic);
        assert_eq!(decoded.request_id, original.request_id);
        assert_eq!(decoded.payload, original.payload);
        assert_eq!(decoded.content_type, original.content_type);
        assert_eq!(decoded.deadline, original.deadline);
        assert_eq!(decoded.depth, 2);
        assert_eq!(decoded.ancestry, original.ancestry);
        assert_eq!(decoded.expected, ["echo", "misbehave"]);
        let signed = decoded.signed.expect("signed");
        assert_eq!((signed.dispatcher.as_str(), signed.key, signed.root), ("node-a", key().public(), key().public()));
        let facts = task_facts(&original, INBOX, "node-a", key().public());
        assert_eq!(signed.digest, facts.seal(&key()).expect("signs").digest);
    }

    #[test]
    fn altered_tasks_are_forged_and_old_ones_are_named() {
        let (headers, body) = encoded(&task());
        for (name, value) in [
            (EXPECTED, "echo"),
            (DEADLINE, "1700000009999"),
            (CONTENT_TYPE, "text/plain"),
            (DISPATCHER, "node-b"),
            (ANCESTRY, "a,c"),
        ] {
            let mut altered = headers.clone();
            altered.insert(name, value);
            let err = decode(&altered, &body).expect_err("altered");
            assert_eq!(err.fault, Fault::Forged, "{name}: {err}");
        }
        assert_eq!(decode(&headers, b"{\"amount\": 4}").expect_err("another payload").fault, Fault::Forged);
        let err = decode_task("anocast.task.orders.created", "_INBOX.evil.1", Some(&headers), &body)
            .expect_err("replayed to another inbox");
        assert_eq!(err.fault, Fault::Forged);
        let old = without(&headers, PROTOCOL);
        let err = decode(&old, &body).expect_err("protocol 1");
        assert_eq!(err.fault, Fault::OldProtocol);
        assert!(
            err.to_string().contains("protocol version 1") && err.to_string().contains("speaks version 2"),
            "{err}"
        );
        let unsigned = without(&headers, SIGNATURE);
        assert_eq!(decode(&unsigned, &body).expect_err("unsigned").fault, Fault::Malformed);
    }

    #[test]
    fn a_verified_signature_is_not_verified_again_and_only_the_same_one_hits() {
        let verified = Verified::default();
        let (headers, body) = encoded(&task());
        let subject = "anocast.task.orders.created";
        let first = decode_task_with(subject, INBOX, Some(&headers), &body, Some(&verified)).expect("verifies");
        assert!(verified.contains(&first.digest(), &signature_header(Some(&headers)).expect("signature")));
        let again = decode_task_with(subject, INBOX, Some(&headers), &body, Some(&verified)).expect("a hit");
        assert_eq!(again.digest(), first.digest());
        // The same facts under another signature: not a hit, and forged.
        let mut other = signature_header(Some(&headers)).expect("signature");
        other[0] ^= 1;
        let forged = with_header(&headers, SIGNATURE, &hex::encode(other));
        let err = decode_task_with(subject, INBOX, Some(&forged), &body, Some(&verified)).expect_err("forged");
        assert_eq!(err.fault, Fault::Forged);
    }

    fn with_header(headers: &HeaderMap, name: &str, value: &str) -> HeaderMap {
        let mut out = without(headers, name);
        out.insert(name, value);
        out
    }

    #[test]
    fn settle_decisions_are_signed_and_bad_ones_are_refused() {
        for decision in [Decision::Commit, Decision::Abort] {
            let headers = encode_settle("r-1", decision, &key()).expect("signs");
            let decoded = decode_settle(Some(&headers)).expect("decodes");
            assert_eq!(decoded, SignedDecision { transaction: Arc::from("r-1"), decision, signer: key().public() });
        }
        for (name, bad) in [(DECISION, "maybe"), (REQUEST_ID, ""), (REQUEST_ID, "a,b")] {
            let mut headers = encode_settle("r-1", Decision::Commit, &key()).expect("signs");
            headers.insert(name, bad);
            assert!(decode_settle(Some(&headers)).is_err(), "{name}: {bad:?} was accepted");
        }
        for (name, other) in [(DECISION, "abort"), (REQUEST_ID, "r-2")] {
            let mut headers = encode_settle("r-1", Decision::Commit, &key()).expect("signs");
            headers.insert(name, other);
            assert_eq!(decode_settle(Some(&headers)).expect_err("altered").fault, Fault::Forged, "{name}");
        }
        let old = without(&encode_settle("r-1", Decision::Commit, &key()).expect("signs"), PROTOCOL);
        assert_eq!(decode_settle(Some(&old)).expect_err("protocol 1").fault, Fault::OldProtocol);
        assert!(decode_settle(None).is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let (headers, body) = encoded(&task());
        assert!(decode_task("anocast.task.a..b", INBOX, Some(&headers), &body).is_err());
        assert!(decode_task("other.subject", INBOX, Some(&headers), &body).is_err());
        assert!(decode_task("anocast.task.a", INBOX, None, &body).is_err());
        for (name, bad) in [
            (DEADLINE, "soon"),
            (DEPTH, "1"),
            (ANCESTRY, "a"),
            (ANCESTRY, "a,,b"),
            (ANCESTRY_TOPICS, "orders.placed"),
            (ANCESTRY_TOPICS, "orders.placed,stock..reserve"),
            (KEY, "ed25519:00"),
            (SIGNATURE, "zz"),
            (DISPATCHER, "a b"),
            (CONTENT_TYPE, "text\tplain"),
        ] {
            let (mut headers, body) = encoded(&task());
            headers.insert(name, bad);
            let refused = decode(&headers, &body).expect_err(&format!("{name}: {bad} was accepted"));
            assert_eq!(refused.fault, Fault::Malformed, "{name}: {bad}: {refused}");
        }
        assert!(decode(&without(&headers, ANCESTRY_TOPICS), &body).is_err(), "the ancestors' topics are required");
    }

    #[test]
    fn repeated_and_miscased_headers_are_refused_and_an_empty_expected_is_absent() {
        for name in [REQUEST_ID, DEADLINE, EXPECTED, SIGNATURE] {
            let (mut headers, body) = encoded(&task());
            let value = headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_else(|| "echo".into());
            headers.append(name, value.as_str());
            let err = decode(&headers, &body).expect_err("repeated");
            assert!(err.to_string().contains("is repeated"), "{name}: {err}");
        }
        let (headers, body) = encoded(&task());
        let mut lower = HeaderMap::new();
        for (name, values) in headers.iter() {
            for value in values {
                lower.insert(name.to_string().to_lowercase().as_str(), value.clone());
            }
        }
        assert!(decode(&lower, &body).is_err(), "header names are case-sensitive");
        let mut none = task();
        none.expected.clear();
        let (mut headers, body) = encoded(&none);
        headers.insert(EXPECTED, "");
        let task = decode(&headers, &body).expect("an empty list is no list");
        assert!(task.expected.is_empty());
    }
}
