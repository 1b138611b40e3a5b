//! The one place where anocast's names are checked: topics and patterns,
//! request ids, node ids, plugin names and versions. Every entry point (the
//! CLI, the HTTP API, the bus and ledger decoders, the WIT imports, the
//! registry) calls these, so that a name accepted in one place is accepted
//! everywhere and a name that could break a NATS header, a Redis key or a
//! worker id (`node/plugin@version`) is refused at the edge.

use std::fmt;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC: usize = 256;
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID: usize = 128;
/// Longest node id, plugin name or version, in bytes.
pub const MAX_NAME: usize = 64;
/// Most topic patterns one plugin may subscribe to (what `describe` may
/// return, and what a registry entry may list for one plugin).
pub const MAX_PATTERNS: usize = 64;

/// Which kind of name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A topic (no wildcards).
    Topic,
    /// A subscription pattern (`*` and a final `>` allowed).
    Pattern,
    /// A request id.
    RequestId,
    /// A node id.
    NodeId,
    /// A plugin name.
    PluginName,
    /// A plugin version.
    Version,
}

impl NameKind {
    /// The kind, as error messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Topic => "topic",
            NameKind::Pattern => "topic pattern",
            NameKind::RequestId => "request id",
            NameKind::NodeId => "node id",
            NameKind::PluginName => "plugin name",
            NameKind::Version => "plugin version",
        }
    }
}

/// A name that was refused: which kind, the text (cut to 80 characters,
/// control characters escaped when shown), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NameError {
    /// Which kind of name.
    pub kind: NameKind,
    /// The refused text, cut to 80 characters.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.kind.as_str(), self.text, self.reason)
    }
}

fn refuse<T>(kind: NameKind, text: &str, reason: &'static str) -> Result<T, NameError> {
    Err(NameError { kind, text: text.chars().take(80).collect(), reason })
}

fn check_dotted(kind: NameKind, text: &str, wildcards: bool) -> Result<(), NameError> {
    if text.is_empty() {
        return refuse(kind, text, "it is empty");
    }
    if text.len() > MAX_TOPIC {
        return refuse(kind, text, "it is longer than 256 bytes");
    }
    let tokens = text.split('.').count();
    for (i, token) in text.split('.').enumerate() {
        match token {
            "" => return refuse(kind, text, "it has an empty token (leading, trailing or double '.')"),
            "*" if wildcards => {}
            ">" if wildcards && i + 1 == tokens => {}
            ">" if wildcards => return refuse(kind, text, "'>' may only be the last token"),
            "*" | ">" => return refuse(kind, text, "wildcards are only allowed in subscription patterns"),
            t if t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {}
            _ => return refuse(kind, text, "tokens may hold only ASCII letters, digits, '-' and '_'"),
        }
    }
    Ok(())
}

/// A topic: 1-256 bytes, dot-separated non-empty tokens of ASCII letters,
/// digits, `-` and `_`.
pub fn check_topic(topic: &str) -> Result<(), NameError> {
    check_dotted(NameKind::Topic, topic, false)
}

/// A subscription pattern: a topic whose tokens may also be `*` (one
/// token) or, last, `>` (the rest).
pub fn check_pattern(pattern: &str) -> Result<(), NameError> {
    check_dotted(NameKind::Pattern, pattern, true)
}

/// A request id: 1-128 printable ASCII bytes other than space and `,` (it
/// travels in NATS headers and comma-separated ancestries).
pub fn check_request_id(id: &str) -> Result<(), NameError> {
    let kind = NameKind::RequestId;
    if id.is_empty() || id.len() > MAX_REQUEST_ID {
        return refuse(kind, id, "it must be 1-128 bytes");
    }
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return refuse(kind, id, "it may hold only printable ASCII other than space and ','");
    }
    Ok(())
}

/// A node id: 1-64 ASCII letters, digits, `.`, `-` or `_`.
pub fn check_node_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() || id.len() > MAX_NAME || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return refuse(NameKind::NodeId, id, "use 1-64 ASCII letters, digits, '.', '-' or '_'");
    }
    Ok(())
}

/// A plugin name: 1-64 lowercase ASCII letters, digits, `-` or `_`.
pub fn check_plugin_name(name: &str) -> Result<(), NameError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
    {
        return refuse(NameKind::PluginName, name, "use 1-64 lowercase ASCII letters, digits, '-' and '_'");
    }
    Ok(())
}

/// A plugin version: 1-64 bytes without whitespace or control characters.
pub fn check_version(version: &str) -> Result<(), NameError> {
    if version.is_empty() || version.len() > MAX_NAME || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse(NameKind::Version, version, "use 1-64 characters without spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_patterns() {
        assert!(check_topic("orders.created").is_ok());
        assert!(check_pattern("orders.*").is_ok());
        assert!(check_pattern("orders.>").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a.*", "a b", "a.>.b"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
        assert!(check_pattern("a.>.b").is_err());
        assert!(check_topic(&"a".repeat(257)).is_err());
        assert_eq!(check_topic("a..b").expect_err("a..b").kind, NameKind::Topic);
    }

    #[test]
    fn request_ids_refuse_what_breaks_a_header() {
        assert!(check_request_id("01a2057f-e227-77ed-8f33-a683b70b0af7").is_ok());
        for bad in ["", "a\nb", "a\rb", "a b", "a,b", "é", &"x".repeat(129)] {
            let err = check_request_id(bad).expect_err(bad);
            assert_eq!(err.kind, NameKind::RequestId, "{bad:?}");
        }
        assert_eq!(
            check_request_id("a\nb").expect_err("newline").to_string(),
            r#"invalid request id "a\nb": it may hold only printable ASCII other than space and ','"#
        );
    }

    #[test]
    fn node_ids_plugin_names_and_versions() {
        assert!(check_node_id("node-1.eu_west").is_ok());
        assert!(check_node_id("a/b").is_err());
        assert!(check_plugin_name("word-count_2").is_ok());
        for bad in ["", "Upper", "a.b", "a\nb", &"a".repeat(65)] {
            assert!(check_plugin_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_version("1.0.0-rc.1+build").is_ok());
        for bad in ["", "1 0", "1\n", &"1".repeat(65)] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }
}
