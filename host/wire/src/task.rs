//! The dispatcher's signature on a task (protocol 2). A node runs a task
//! only when a key it trusts to dispatch signed every field that decides
//! what the task is and how its dispatch is counted, so that a task cannot
//! be forged, nor a real one altered (a shorter expected list, a later
//! deadline) or replayed to another inbox.
//!
//! The signed bytes (integers big-endian, `short` = 1-byte length + UTF-8,
//! `medium` = 2-byte length + UTF-8):
//!
//! | field | bytes |
//! |---|---|
//! | tag | 15: `anocast-task-v2` |
//! | dispatcher key | 32 |
//! | dispatcher id | short: the dispatching node's id |
//! | root key | 32: the key of the dispatcher of the root task (its own for a task from outside) |
//! | topic | medium |
//! | request id | short |
//! | reply to | medium: the subject replies are addressed to |
//! | payload digest | 32: SHA-256 of the payload |
//! | content type | short |
//! | deadline | 8: Unix milliseconds |
//! | expected | 2-byte count, then that many `short` plugin names |
//! | depth | 4 |
//! | ancestry | `depth` pairs of topic (medium) and request id (short), oldest first |
//!
//! The signature (64 bytes, ed25519 over those bytes) travels in a header.
//! The task's *digest*, SHA-256 of the signed bytes, names the task: every
//! reply and declaration binds it, so that an answer made for one task
//! counts for no other.

use sha2::{Digest, Sha256};

use crate::codec::Writer;
use crate::key::PublicKey;
use crate::names::{check_node_id, check_plugin_name, check_request_id, check_topic};
use crate::{NodeKey, WireError};

/// The domain of a task's signature.
pub const TAG: &[u8; 15] = b"anocast-task-v2";

/// Most expected groups a task may name.
pub const MAX_EXPECTED: usize = 1024;
/// Longest content type, in bytes (printable ASCII and spaces).
pub const MAX_CONTENT_TYPE: usize = 128;
/// Longest ancestry a task may carry.
pub const MAX_ANCESTRY: usize = 64;
/// Longest reply subject, in bytes.
pub const MAX_REPLY_TO: usize = 1024;

/// Everything a dispatcher signs about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// The dispatcher's key.
    pub key: PublicKey,
    /// The dispatching node's id.
    pub dispatcher: String,
    /// The key of the root task's dispatcher (the one that settles).
    pub root: PublicKey,
    /// The topic.
    pub topic: String,
    /// The request id.
    pub request_id: String,
    /// Where replies go.
    pub reply_to: String,
    /// SHA-256 of the payload.
    pub payload_digest: [u8; 32],
    /// MIME type of the payload.
    pub content_type: String,
    /// Unix milliseconds.
    pub deadline_ms: u64,
    /// Expected receiving groups (plugin names), possibly none.
    pub expected: Vec<String>,
    /// The tasks this one descends from, oldest first: (topic, request id).
    pub ancestry: Vec<(String, String)>,
}

/// A task's signature and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSeal {
    /// ed25519 over the signed bytes.
    pub signature: [u8; 64],
    /// SHA-256 of the signed bytes.
    pub digest: [u8; 32],
}

/// SHA-256 of `payload`, as a task's signature covers it.
pub fn payload_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

impl TaskFacts {
    /// The bytes the signature covers; fails on what the receiver would
    /// refuse.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, WireError> {
        check_node_id(&self.dispatcher)?;
        check_topic(&self.topic)?;
        check_request_id(&self.request_id)?;
        if self.reply_to.is_empty() || self.reply_to.len() > MAX_REPLY_TO {
            return Err(WireError::new(format!("the reply subject must be 1-{MAX_REPLY_TO} bytes")));
        }
        check_content_type(&self.content_type)?;
        if self.expected.len() > MAX_EXPECTED {
            return Err(WireError::new(format!("more than {MAX_EXPECTED} expected groups")));
        }
        for group in &self.expected {
            check_plugin_name(group).map_err(|_| WireError::new("bad expected group"))?;
        }
        if self.ancestry.len() > MAX_ANCESTRY {
            return Err(WireError::new(format!("an ancestry longer than {MAX_ANCESTRY}")));
        }
        let mut w = Writer::default();
        w.bytes(TAG)
            .bytes(&self.key.to_bytes())
            .short(&self.dispatcher)
            .bytes(&self.root.to_bytes())
            .medium(&self.topic)
            .short(&self.request_id)
            .medium(&self.reply_to)
            .bytes(&self.payload_digest)
            .short(&self.content_type)
            .u64(self.deadline_ms)
            .u16(self.expected.len() as u16);
        for group in &self.expected {
            w.short(group);
        }
        w.bytes(&(self.ancestry.len() as u32).to_be_bytes());
        for (topic, request_id) in &self.ancestry {
            check_topic(topic)?;
            check_request_id(request_id)?;
            w.medium(topic).short(request_id);
        }
        Ok(w.0)
    }

    /// Signs with `key`, which must be [`TaskFacts::key`].
    pub fn seal(&self, key: &NodeKey) -> Result<TaskSeal, WireError> {
        if key.public() != self.key {
            return Err(WireError::new("the task names another key than the one signing"));
        }
        let bytes = self.signed_bytes()?;
        Ok(TaskSeal { signature: key.sign(&bytes)?, digest: Sha256::digest(&bytes).into() })
    }

    /// Verifies `signature`; returns the task's digest.
    pub fn verify(&self, signature: &[u8; 64]) -> Result<[u8; 32], WireError> {
        let bytes = self.signed_bytes()?;
        self.key.verify(&bytes, signature)?;
        Ok(Sha256::digest(&bytes).into())
    }
}

/// A content type: 1-128 bytes of printable ASCII or spaces (it travels in
/// a header, and plugins see it).
pub fn check_content_type(content_type: &str) -> Result<(), WireError> {
    if content_type.is_empty()
        || content_type.len() > MAX_CONTENT_TYPE
        || !content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(WireError::new(format!(
            "the content type must be 1-{MAX_CONTENT_TYPE} printable ASCII characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(key: &NodeKey) -> TaskFacts {
        TaskFacts {
            key: key.public(),
            dispatcher: "node-a".into(),
            root: key.public(),
            topic: "orders.created".into(),
            request_id: "r-1".into(),
            reply_to: "_INBOX.abc.1".into(),
            payload_digest: payload_digest(b"{}"),
            content_type: "application/json".into(),
            deadline_ms: 1_700_000_000_000,
            expected: vec!["echo".into(), "audit".into()],
            ancestry: vec![("orders.placed".into(), "r-0".into())],
        }
    }

    type Change<'a> = Box<dyn Fn(&mut TaskFacts) + 'a>;

    #[test]
    fn every_field_is_signed() {
        let key = NodeKey::from_seed(&[7; 32]).expect("key");
        let other = NodeKey::from_seed(&[8; 32]).expect("key");
        let original = facts(&key);
        let seal = original.seal(&key).expect("signs");
        assert_eq!(original.verify(&seal.signature), Ok(seal.digest));
        let changes: Vec<Change> = vec![
            Box::new(|t| t.dispatcher = "node-b".into()),
            Box::new(|t| t.root = other.public()),
            Box::new(|t| t.topic = "orders.deleted".into()),
            Box::new(|t| t.request_id = "r-2".into()),
            Box::new(|t| t.reply_to = "_INBOX.evil.1".into()),
            Box::new(|t| t.payload_digest = payload_digest(b"[]")),
            Box::new(|t| t.content_type = "text/plain".into()),
            Box::new(|t| t.deadline_ms += 1),
            Box::new(|t| t.expected.truncate(1)),
            Box::new(|t| t.expected.reverse()),
            Box::new(|t| t.ancestry.clear()),
            Box::new(|t| t.ancestry[0].1 = "r-9".into()),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut altered = original.clone();
            change(&mut altered);
            assert!(altered.verify(&seal.signature).is_err(), "change {n} kept the signature valid");
        }
        let mut other_signer = original.clone();
        other_signer.key = other.public();
        assert!(other_signer.verify(&seal.signature).is_err());
        assert!(original.seal(&other).is_err(), "signing with a key the task does not name");
    }

    #[test]
    fn bad_fields_are_refused_before_signing() {
        let key = NodeKey::from_seed(&[7; 32]).expect("key");
        let bad: Vec<Change> = vec![
            Box::new(|t| t.dispatcher = "a b".into()),
            Box::new(|t| t.content_type = "text\nplain".into()),
            Box::new(|t| t.content_type = String::new()),
            Box::new(|t| t.reply_to = String::new()),
            Box::new(|t| t.expected = vec!["Bad".into()]),
            Box::new(|t| t.expected = vec!["e".into(); MAX_EXPECTED + 1]),
            Box::new(|t| t.ancestry = vec![("a".into(), "r".into()); MAX_ANCESTRY + 1]),
            Box::new(|t| t.ancestry = vec![("a..b".into(), "r".into())]),
        ];
        for (n, change) in bad.iter().enumerate() {
            let mut task = facts(&key);
            change(&mut task);
            assert!(task.seal(&key).is_err(), "bad field {n} was signed");
        }
    }
}
