//! Signed statements a node makes about itself (protocol 2): its registry
//! entry and its lifecycle events. Each is one line of text, readable in
//! `redis-cli` and `nats sub`:
//!
//! ```text
//! <tag> ed25519:<signer key: 64 hex> <signature: 128 hex> <text>
//! ```
//!
//! The tag says what the text is (`anocast-node-v2` for a registry entry,
//! `anocast-lifecycle-v2` for a lifecycle event); the signature (ed25519)
//! covers the tag, one zero byte and the text's bytes. The text is JSON
//! that names the node and the key again; the reader checks that they
//! match and whether it trusts that key for that node id.

use crate::key::PublicKey;
use crate::{NodeKey, WireError};

/// A registry entry.
pub const NODE: &str = "anocast-node-v2";
/// A lifecycle event.
pub const LIFECYCLE: &str = "anocast-lifecycle-v2";

/// Longest statement, in bytes.
pub const MAX_STATEMENT: usize = 64 << 10;

fn signed_bytes(tag: &str, text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(tag.len() + 1 + text.len());
    bytes.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Signs `text` as a statement of kind `tag`; returns the line.
pub fn seal(tag: &str, text: &str, key: &NodeKey) -> Result<String, WireError> {
    let signature = key.sign(&signed_bytes(tag, text))?;
    let line = format!("{tag} {} {} {text}", key.public(), hex::encode(signature));
    if line.len() > MAX_STATEMENT {
        return Err(WireError::new(format!("a statement is at most {MAX_STATEMENT} bytes")));
    }
    Ok(line)
}

/// Reads and verifies a statement of kind `tag`: its signer and text.
pub fn open<'a>(tag: &str, line: &'a str) -> Result<(PublicKey, &'a str), WireError> {
    if line.len() > MAX_STATEMENT {
        return Err(WireError::new(format!("a statement is at most {MAX_STATEMENT} bytes")));
    }
    let mut fields = line.splitn(4, ' ');
    let (Some(found), Some(key), Some(signature), Some(text)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(WireError::new("not a signed statement (tag, key, signature, text)"));
    };
    if found != tag {
        let why = match found.strip_prefix("anocast-").and_then(|rest| rest.rsplit_once("-v")) {
            Some((_, version)) => format!("a statement of protocol version {version} ({found}); this node reads {tag}"),
            None => format!("not a {tag} statement"),
        };
        return Err(WireError::new(why));
    }
    let key = PublicKey::parse(key)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature, &mut sig).map_err(|_| WireError::new("bad signature"))?;
    key.verify(&signed_bytes(tag, text), &sig)?;
    Ok((key, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_verify_and_altered_ones_do_not() {
        let key = NodeKey::from_seed(&[5; 32]).expect("key");
        let line = seal(NODE, r#"{"id":"a"}"#, &key).expect("signs");
        assert_eq!(open(NODE, &line).expect("opens"), (key.public(), r#"{"id":"a"}"#));
        assert!(open(LIFECYCLE, &line).is_err(), "another kind");
        let altered = line.replace(r#""a""#, r#""b""#);
        assert!(open(NODE, &altered).expect_err("altered").to_string().contains("bad signature"));
        assert!(open(NODE, r#"{"id":"a","key":"","plugins":[]}"#).is_err(), "an unsigned protocol 1 entry");
        let old = line.replacen("-v2", "-v1", 1);
        assert!(open(NODE, &old).expect_err("old").to_string().contains("protocol version 1"));
        assert!(open(NODE, &"x".repeat(MAX_STATEMENT + 1)).is_err());
    }
}
