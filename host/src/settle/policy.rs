//! How a dispatcher decides what becomes of a transaction's staged writes
//! once its dispatch from outside has an outcome.

use crate::bus::Decision;

/// How a dispatcher decides, once a dispatch from outside has its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettlePolicy {
    /// Commit when the outcome is complete and every partial (at least one)
    /// is ok; abort otherwise. The default.
    #[default]
    AllOk,
    /// Always commit.
    Commit,
    /// Always abort (a dry run).
    Abort,
    /// Decide nothing: the caller settles later
    /// (`Dispatcher::settle`), or the writes expire.
    Manual,
}

impl SettlePolicy {
    /// Reads `all-ok`, `commit`, `abort` or `manual`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "all-ok" => Ok(SettlePolicy::AllOk),
            "commit" => Ok(SettlePolicy::Commit),
            "abort" => Ok(SettlePolicy::Abort),
            "manual" => Ok(SettlePolicy::Manual),
            other => Err(format!("unknown settle policy {other:?}: use all-ok, commit, abort or manual")),
        }
    }

    /// The policy's name, as [`SettlePolicy::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlePolicy::AllOk => "all-ok",
            SettlePolicy::Commit => "commit",
            SettlePolicy::Abort => "abort",
            SettlePolicy::Manual => "manual",
        }
    }

    /// The decision for an outcome that is complete (`complete`) with these
    /// partials' success (`oks`).
    pub fn decide(self, complete: bool, oks: impl IntoIterator<Item = bool>) -> Option<Decision> {
        match self {
            SettlePolicy::AllOk => {
                let mut oks = oks.into_iter().peekable();
                let all_ok = oks.peek().is_some() && oks.all(|ok| ok);
                Some(if complete && all_ok { Decision::Commit } else { Decision::Abort })
            }
            SettlePolicy::Commit => Some(Decision::Commit),
            SettlePolicy::Abort => Some(Decision::Abort),
            SettlePolicy::Manual => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_commits_only_complete_all_ok_outcomes() {
        let p = SettlePolicy::AllOk;
        assert_eq!(p.decide(true, [true, true]), Some(Decision::Commit));
        assert_eq!(p.decide(true, [true, false]), Some(Decision::Abort));
        assert_eq!(p.decide(false, [true]), Some(Decision::Abort));
        assert_eq!(p.decide(true, []), Some(Decision::Abort), "no_interest commits nothing");
        assert_eq!(SettlePolicy::Commit.decide(false, [false]), Some(Decision::Commit));
        assert_eq!(SettlePolicy::Abort.decide(true, [true]), Some(Decision::Abort));
        assert_eq!(SettlePolicy::Manual.decide(true, [true]), None);
        assert_eq!(SettlePolicy::parse("all-ok"), Ok(SettlePolicy::AllOk));
        assert!(SettlePolicy::parse("sometimes").is_err());
    }
}
