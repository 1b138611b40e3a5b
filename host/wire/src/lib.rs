//! anocast's signed wire formats, kept apart from the host so that they can
//! be fuzzed, tested and read on their own:
//!
//! - [`key`]: a node's ed25519 signing key and public keys as text;
//! - [`envelope`]: the signed reply a worker's node sends to a dispatcher
//!   (an acknowledgement, a partial, or both at once);
//! - [`declaration`]: the signed entry a node pushes onto an interest list.
//!
//! `docs/protocol.md` describes every byte; its test vectors are checked
//! against this crate by the host's tests.

mod codec;
pub mod declaration;
pub mod envelope;
pub mod key;

pub use declaration::Declaration;
pub use envelope::{Ack, Envelope, Interest, Outcome};
pub use key::{NodeKey, PublicKey};

/// Why bytes or text were refused. The message names the first problem
/// found; nothing is ever half-read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

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
        check_node_id(&self.node)?;
        check_plugin_name(&self.plugin)?;
        check_version(&self.version)
    }
}

/// A node id: 1-64 ASCII letters, digits, `.`, `-` or `_`.
pub fn check_node_id(id: &str) -> Result<(), WireError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(WireError::new("bad node id"));
    }
    Ok(())
}

/// A plugin name: 1-64 lowercase ASCII letters, digits, `-` or `_`.
pub fn check_plugin_name(name: &str) -> Result<(), WireError> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    {
        return Err(WireError::new("bad plugin name"));
    }
    Ok(())
}

/// A plugin version: 1-64 bytes without whitespace.
pub fn check_version(version: &str) -> Result<(), WireError> {
    if version.is_empty() || version.len() > 64 || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WireError::new("bad plugin version"));
    }
    Ok(())
}

/// A topic: 1-256 bytes, dot-separated non-empty tokens of ASCII letters,
/// digits, `-` and `_`.
pub fn check_topic(topic: &str) -> Result<(), WireError> {
    let token_ok = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if topic.is_empty() || topic.len() > 256 || !topic.split('.').all(token_ok) {
        return Err(WireError::new("bad topic"));
    }
    Ok(())
}

/// A request id: 1-128 printable ASCII bytes other than space and `,`.
pub fn check_request_id(id: &str) -> Result<(), WireError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(WireError::new("bad request id"));
    }
    Ok(())
}
