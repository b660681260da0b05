//! The work behind the commands: pipelines that move streams between sources, providers and
//! receivers. Commands in `cmd/` decide *what* to do; these modules do it.

pub mod backup;
pub mod chain;
pub mod discard;
pub mod probe;
pub mod prune;
pub mod restore;
pub mod sync;
pub mod verify;
