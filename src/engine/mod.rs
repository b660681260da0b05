//! The work behind the commands: pipelines that move streams between sources, providers and
//! receivers. Commands in `cmd/` decide *what* to do; these modules do it.

pub mod backup;
pub mod chain;
pub mod confirm;
pub mod discard;
pub mod hosts;
pub mod lane;
pub mod list;
pub mod preflight;
pub mod probe;
pub mod providers;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod scan;
pub mod stale;
pub mod status;
pub mod sync;
pub mod verify;
