//! Topic names and subscription patterns, with NATS rules.
//!
//! A topic is a dotted name such as `orders.created`: one or more non-empty
//! tokens of ASCII letters, digits, `-` and `_`. A pattern is the same with
//! wildcards: `*` stands for exactly one token, `>` (only as the last token)
//! for one or more remaining tokens. The rules themselves are
//! `anocast_wire::names`'s, shared by every entry point.

use std::fmt;

use anocast_wire::names;

/// Why a topic or pattern was refused (the project's one name error).
pub type TopicError = names::NameError;

/// A validated topic name (no wildcards).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    /// Validates `text` as a topic.
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        names::check_topic(text)?;
        Ok(Topic(text.to_owned()))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    /// Validates `text` as a pattern.
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        names::check_pattern(text)?;
        Ok(Pattern(text.to_owned()))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut pattern = self.0.split('.');
        let mut tokens = topic.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern).expect("valid pattern").matches(topic)
    }

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(matches("orders.created", "orders.created"));
        assert!(!matches("orders.created", "orders.created.eu"));
        assert!(matches("orders.*", "orders.created"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "orders.created.eu"));
        assert!(matches("orders.>", "orders.created.eu"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.created", "users.created"));
        assert!(!matches("*.created", "users.deleted"));
    }

    #[test]
    fn bad_topics_are_refused_with_a_reason() {
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", "ü", &"a".repeat(300)] {
            let err = Topic::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("invalid topic"), "{err}");
        }
        for bad in ["a.>.b", "", "a..b", "a.b c"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Topic::parse("orders.created-v2_eu").is_ok());
        assert!(Pattern::parse("a.*.>").is_ok());
    }
}
