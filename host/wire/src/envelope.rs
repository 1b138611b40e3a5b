//! The signed reply envelope: what a worker's node sends to a dispatcher's
//! inbox. One envelope carries an acknowledgement (the worker's interest,
//! and the interest list when this answer closed the window), a result (the
//! worker's partial), or both at once when the result was ready by the time
//! the acknowledgement was sent.
//!
//! Layout (integers big-endian; `short` = 1-byte length + UTF-8, `medium`
//! = 2-byte length + UTF-8, `long` = 4-byte length + bytes):
//!
//! | field | bytes |
//! |---|---|
//! | tag | 16: `anocast-reply-v2` |
//! | timestamp | 8: Unix milliseconds when signed |
//! | topic | medium |
//! | request id | short |
//! | task digest | 32: the digest of the task answered (see [`crate::task`]) |
//! | node key | 32 |
//! | node id | short |
//! | plugin | short |
//! | version | short |
//! | digest | 32: SHA-256 of the plugin's file |
//! | flags | 1: bit 0 acknowledgement, bit 1 result, bit 2 staged (only with a result); other bits 0 |
//! | interest | 1 (if acknowledgement): 0 not interested, 1 declared, 2 refused, 3 busy, 4 untrusted dispatcher |
//! | closed | 1 (if acknowledgement): 0, or 1 followed by a 2-byte count and that many `medium` entries |
//! | status | 1 (if result): 0 ok, 1 error |
//! | payload | long (if result): the partial's bytes, or the error text in UTF-8 |
//! | signature | 64: ed25519 over every byte before it |
//!
//! A result comes only from a declared worker: with both flags set, the
//! interest must be "declared". The staged flag says that the worker (or a
//! sub-task it dispatched) staged writes that await a settle decision.

use crate::codec::{Reader, Writer};
use crate::key::PublicKey;
use crate::names::{check_request_id, check_topic};
use crate::{NodeKey, WireError, Worker};

/// The first 16 bytes of every reply envelope (the signature's domain).
pub const TAG: &[u8; 16] = b"anocast-reply-v2";

const HAS_ACK: u8 = 0b01;
const HAS_RESULT: u8 = 0b10;
const STAGED: u8 = 0b100;

/// What a receiving worker made of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Not interested: no result will follow.
    NotInterested,
    /// Declared in charge: a result follows.
    Declared,
    /// Interested, but the interest window had closed: it did not run.
    Refused,
    /// The node had no room for another task: nothing ran, and the plugin
    /// was not asked whether it is interested.
    Busy,
    /// The node does not trust the task's dispatcher to dispatch: nothing
    /// ran, and the plugin was not asked.
    Untrusted,
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The worker's answer.
    pub interest: Interest,
    /// When this answer closed the interest window: the list's entries then.
    pub closed: Option<Vec<String>>,
}

/// A worker's result: its partial's bytes, or an error text.
pub type Outcome = Result<Vec<u8>, String>;

/// A reply, before signing or after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unix milliseconds when it was signed.
    pub timestamp_ms: u64,
    /// The task's topic.
    pub topic: String,
    /// The task's request id.
    pub request_id: String,
    /// The digest of the task answered.
    pub task_digest: [u8; 32],
    /// Who replies (its key signs).
    pub worker: Worker,
    /// The acknowledgement, if it carries one.
    pub ack: Option<Ack>,
    /// The result, if it carries one.
    pub result: Option<Outcome>,
    /// With a result: the worker, or a sub-task it dispatched, staged writes
    /// that await a settle decision.
    pub staged: bool,
}

impl Envelope {
    /// Encodes and signs: the bytes to send.
    ///
    /// Fails on what could not be decoded again: a bad name, an empty
    /// envelope, a result without a declaration, a field too long.
    pub fn seal(&self, key: &NodeKey) -> Result<Vec<u8>, WireError> {
        if key.public() != self.worker.key {
            return Err(WireError::new("the envelope names another key than the one signing"));
        }
        let mut bytes = self.unsigned()?;
        let signature = key.sign(&bytes)?;
        bytes.extend_from_slice(&signature);
        Ok(bytes)
    }

    /// The encoding without the signature: the signed bytes.
    pub fn unsigned(&self) -> Result<Vec<u8>, WireError> {
        self.check()?;
        let mut w = Writer::default();
        w.bytes(TAG)
            .u64(self.timestamp_ms)
            .medium(&self.topic)
            .short(&self.request_id)
            .bytes(&self.task_digest)
            .bytes(&self.worker.key.to_bytes())
            .short(&self.worker.node)
            .short(&self.worker.plugin)
            .short(&self.worker.version)
            .bytes(&self.worker.digest);
        let flags = if self.ack.is_some() { HAS_ACK } else { 0 }
            | if self.result.is_some() { HAS_RESULT } else { 0 }
            | if self.staged { STAGED } else { 0 };
        w.u8(flags);
        if let Some(ack) = &self.ack {
            w.u8(match ack.interest {
                Interest::NotInterested => 0,
                Interest::Declared => 1,
                Interest::Refused => 2,
                Interest::Busy => 3,
                Interest::Untrusted => 4,
            });
            match &ack.closed {
                None => {
                    w.u8(0);
                }
                Some(entries) => {
                    w.u8(1).u16(entries.len() as u16);
                    for entry in entries {
                        w.medium(entry);
                    }
                }
            }
        }
        if let Some(result) = &self.result {
            match result {
                Ok(bytes) => w.u8(0).long(bytes),
                Err(text) => w.u8(1).long(text.as_bytes()),
            };
        }
        Ok(w.0)
    }

    fn check(&self) -> Result<(), WireError> {
        check_topic(&self.topic)?;
        check_request_id(&self.request_id)?;
        self.worker.check()?;
        match (&self.ack, &self.result) {
            (None, None) => return Err(WireError::new("empty envelope")),
            (Some(ack), Some(_)) if ack.interest != Interest::Declared => {
                return Err(WireError::new("a result from a worker that did not declare"));
            }
            _ => {}
        }
        if self.staged && self.result.is_none() {
            return Err(WireError::new("the staged flag without a result"));
        }
        if let Some(Ack { closed: Some(entries), .. }) = &self.ack {
            if entries.len() > u16::MAX as usize {
                return Err(WireError::new("too many entries in the closed list"));
            }
            if entries.iter().any(|e| e.is_empty() || e.len() > u16::MAX as usize) {
                return Err(WireError::new("bad entry in the closed list"));
            }
        }
        if let Some(Ok(bytes)) = &self.result
            && bytes.len() > u32::MAX as usize
        {
            return Err(WireError::new("payload too long"));
        }
        Ok(())
    }

    /// Decodes and verifies a received envelope strictly.
    pub fn open(bytes: &[u8]) -> Result<Envelope, WireError> {
        let sealed = Sealed::decode(bytes)?;
        sealed.envelope.worker.key.verify(sealed.signed, &sealed.signature)?;
        Ok(sealed.envelope)
    }
}

/// A decoded envelope whose signature is not verified yet (for verifying
/// several at once with [`crate::key::verify_batch`]).
#[derive(Debug)]
pub struct Sealed<'a> {
    /// What it says.
    pub envelope: Envelope,
    /// The signed bytes.
    pub signed: &'a [u8],
    /// The signature.
    pub signature: [u8; 64],
}

impl<'a> Sealed<'a> {
    /// Decodes strictly, without verifying the signature.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() < TAG.len() + 64 {
            return Err(WireError::new("too short for a signed envelope"));
        }
        let (signed, signature) = bytes.split_at(bytes.len() - 64);
        let mut r = Reader::new(signed);
        let tag = r.take(TAG.len(), "tag")?;
        if tag != TAG {
            return Err(match tag.strip_prefix(b"anocast-reply-v") {
                Some(version) => WireError::new(format!(
                    "a reply envelope of protocol version {}; this node speaks version 2",
                    String::from_utf8_lossy(version)
                )),
                None => WireError::new("not an anocast reply envelope (unknown tag)"),
            });
        }
        let timestamp_ms = r.u64("timestamp")?;
        let topic = r.medium("topic")?.to_owned();
        let request_id = r.short("request id")?.to_owned();
        let task_digest = r.array("task digest")?;
        let key = PublicKey::from_bytes(&r.array("node key")?)?;
        let node = r.short("node id")?.to_owned();
        let plugin = r.short("plugin")?.to_owned();
        let version = r.short("version")?.to_owned();
        let digest = r.array("digest")?;
        let flags = r.u8("flags")?;
        if flags & !(HAS_ACK | HAS_RESULT | STAGED) != 0 {
            return Err(WireError::new("unknown flags"));
        }
        let ack = if flags & HAS_ACK != 0 {
            let interest = match r.u8("interest")? {
                0 => Interest::NotInterested,
                1 => Interest::Declared,
                2 => Interest::Refused,
                3 => Interest::Busy,
                4 => Interest::Untrusted,
                _ => return Err(WireError::new("unknown interest")),
            };
            let closed = match r.u8("closed flag")? {
                0 => None,
                1 => {
                    let n = r.u16("closed count")?;
                    let mut entries = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        entries.push(r.medium("closed entry")?.to_owned());
                    }
                    Some(entries)
                }
                _ => return Err(WireError::new("bad closed flag")),
            };
            Some(Ack { interest, closed })
        } else {
            None
        };
        let result = if flags & HAS_RESULT != 0 {
            let status = r.u8("status")?;
            let payload = r.long("payload")?;
            match status {
                0 => Some(Ok(payload.to_vec())),
                1 => Some(Err(
                    String::from_utf8(payload.to_vec()).map_err(|_| WireError::new("error text is not UTF-8"))?
                )),
                _ => return Err(WireError::new("unknown status")),
            }
        } else {
            None
        };
        r.finish()?;
        let envelope = Envelope {
            timestamp_ms,
            topic,
            request_id,
            task_digest,
            worker: Worker { node, plugin, version, key, digest },
            ack,
            result,
            staged: flags & STAGED != 0,
        };
        // The same checks as on sending: what one side encodes the other
        // accepts, and nothing more.
        envelope.check()?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(signature);
        Ok(Sealed { envelope, signed, signature: sig })
    }
}
