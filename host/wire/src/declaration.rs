//! The signed entry a node pushes onto an interest list when one of its
//! workers declares itself. It is text, so that the list stays readable in
//! `redis-cli`:
//!
//! ```text
//! <node>/<plugin>@<version> <node key: 64 hex> <digest: 64 hex> <signature: 128 hex>
//! ```
//!
//! The signature covers (integers big-endian, `short` = 1-byte length +
//! UTF-8, `medium` = 2-byte length + UTF-8): the 18 bytes
//! `anocast-declare-v1`, the topic (medium), the request id (short), the
//! node key (32), the node id, plugin and version (short each) and the
//! digest (32). A dispatcher that reads the list when it closes the
//! interest window waits only for entries whose signature verifies with a
//! key it trusts; an entry copied from another request, or made for a
//! forged task of the same request id, does not verify.

use crate::codec::Writer;
use crate::key::PublicKey;
use crate::names::{check_request_id, check_topic};
use crate::{NodeKey, WireError, Worker};

/// The domain of a declaration's signature.
pub const TAG: &[u8; 18] = b"anocast-declare-v2";

/// A parsed list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// Who declared.
    pub worker: Worker,
    /// Its signature.
    pub signature: [u8; 64],
}

impl Declaration {
    /// Signs `worker`'s declaration for one task; returns the list entry.
    pub fn entry(
        topic: &str,
        request_id: &str,
        task_digest: &[u8; 32],
        worker: &Worker,
        key: &NodeKey,
    ) -> Result<String, WireError> {
        let signature = key.sign(&signed_bytes(topic, request_id, task_digest, worker)?)?;
        Ok(format!(
            "{} {} {} {}",
            worker.id(),
            hex::encode(worker.key.to_bytes()),
            hex::encode(worker.digest),
            hex::encode(signature)
        ))
    }

    /// Reads a list entry (without verifying it).
    pub fn parse(entry: &str) -> Result<Self, WireError> {
        let mut fields = entry.split(' ');
        let (Some(id), Some(key), Some(digest), Some(signature), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(WireError::new("a declaration is four space-separated fields"));
        };
        let (node, rest) = id.split_once('/').ok_or_else(|| WireError::new("bad worker id"))?;
        let (plugin, version) = rest.split_once('@').ok_or_else(|| WireError::new("bad worker id"))?;
        let hex32 = |text: &str, what: &str| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).map_err(|_| WireError::new(format!("bad {what}")))?;
            Ok::<_, WireError>(out)
        };
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig).map_err(|_| WireError::new("bad signature"))?;
        let worker = Worker {
            node: node.to_owned(),
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            key: PublicKey::from_bytes(&hex32(key, "node key")?)?,
            digest: hex32(digest, "digest")?,
        };
        worker.check()?;
        Ok(Declaration { worker, signature: sig })
    }

    /// Verifies that this entry declares its worker for this task.
    pub fn verify(&self, topic: &str, request_id: &str, task_digest: &[u8; 32]) -> Result<(), WireError> {
        self.worker.key.verify(&signed_bytes(topic, request_id, task_digest, &self.worker)?, &self.signature)
    }
}

/// The bytes a declaration's signature covers.
pub fn signed_bytes(
    topic: &str,
    request_id: &str,
    task_digest: &[u8; 32],
    worker: &Worker,
) -> Result<Vec<u8>, WireError> {
    check_topic(topic)?;
    check_request_id(request_id)?;
    worker.check()?;
    let mut w = Writer::default();
    w.bytes(TAG)
        .medium(topic)
        .short(request_id)
        .bytes(task_digest)
        .bytes(&worker.key.to_bytes())
        .short(&worker.node)
        .short(&worker.plugin)
        .short(&worker.version)
        .bytes(&worker.digest);
    Ok(w.0)
}

/// The worker id (`node/plugin@version`) an entry starts with: what
/// embedded mode's unsigned entries consist of alone.
pub fn worker_id(entry: &str) -> &str {
    entry.split(' ').next().unwrap_or(entry)
}
