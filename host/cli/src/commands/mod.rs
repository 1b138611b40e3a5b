//! One module per command: each takes its parsed arguments and returns the
//! exit status.

pub(crate) mod author;
pub(crate) mod dispatch;
pub(crate) mod keygen;
pub(crate) mod plugins;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod settle;
