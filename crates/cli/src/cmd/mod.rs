//! One module per subcommand.

pub(crate) mod attempts;
pub(crate) mod completions;
pub(crate) mod control;
pub(crate) mod enhance_server;
pub(crate) mod failures;
pub(crate) mod process;
pub(crate) mod prune;
pub(crate) mod runs;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod submit;
pub(crate) mod tuning;
pub(crate) mod worker;
