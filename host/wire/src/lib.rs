//! anocast's signed wire formats (protocol version 2), kept apart from the host so that they can
//! be fuzzed, tested and read on their own:
//!
//! - [`key`]: a node's ed25519 signing key and public keys as text;
//! - [`envelope`]: the signed reply a worker's node sends to a dispatcher
//!   (an acknowledgement, a partial, or both at once);
//! - [`declaration`]: the signed entry a node pushes onto an interest list;
//! - [`task`]: the dispatcher's signature on a task, and the task digest
//!   every answer binds;
//! - [`settle`]: the root dispatcher's signature on a settle decision;
//! - [`statement`]: signed registry entries and lifecycle events;
//! - [`names`]: the rules for topics, request ids, node ids, plugin names
//!   and versions, checked here for the whole project.
//!
//! `docs/protocol.md` describes every byte; its test vectors are checked
//! against this crate by the host's tests.

mod codec;
pub mod declaration;
pub mod envelope;
pub mod key;
pub mod names;
pub mod settle;
pub mod statement;
pub mod task;

pub use declaration::Declaration;
pub use envelope::{Ack, Envelope, Interest, Outcome};
pub use key::{NodeKey, PublicKey};
pub use names::{NameError, NameKind};
pub use task::{TaskFacts, TaskSeal};

/// The protocol version this crate speaks.
pub const PROTOCOL: u32 = 2;

/// Why bytes or text were refused. The message names the first problem
/// found; nothing is ever half-read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

impl From<NameError> for WireError {
    fn from(err: NameError) -> Self {
        WireError(err.to_string())
    }
}

impl WireError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        WireError(message.into())
    }
}

/// A worker as it signs: a plugin of a node, with the node's public key and
/// the SHA-256 digest of the plugin's component file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Worker {
    /// The node's id: 1-64 ASCII letters, digits, `.`, `-` or `_`.
    pub node: String,
    /// The plugin's name: 1-64 lowercase ASCII letters, digits, `-` or `_`.
    pub plugin: String,
    /// The plugin's version: 1-64 bytes of UTF-8 without whitespace.
    pub version: String,
    /// The node's public key.
    pub key: PublicKey,
    /// SHA-256 of the plugin's `.wasm` file.
    pub digest: [u8; 32],
}

impl Worker {
    /// `node/plugin@version`, the worker's name in outcomes.
    pub fn id(&self) -> String {
        format!("{}/{}@{}", self.node, self.plugin, self.version)
    }

    /// `node/plugin`: a signer, of which a dispatch keeps one reply.
    pub fn signer(&self) -> String {
        format!("{}/{}", self.node, self.plugin)
    }

    /// Checks the three names.
    pub fn check(&self) -> Result<(), WireError> {
        names::check_node_id(&self.node)?;
        names::check_plugin_name(&self.plugin)?;
        names::check_version(&self.version)?;
        Ok(())
    }
}
