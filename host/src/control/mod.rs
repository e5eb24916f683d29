//! The control side of a pipeline: which chain version runs, and changing it while records
//! flow.
//!
//! - [`switch`]: the live chain version ([`ChainControl`]) and switching every worker to a
//!   new one at a batch boundary.
//! - [`versions`]: each stage's plugin versions, rollback stack, history, persistence.
//! - [`reload`]: upload and rollback, the sequence from new bytes to every worker running
//!   them, with its typed error, audit line and metric.
//!
//! Nothing here speaks HTTP: the admin API is one driver of these.

pub mod reload;
pub mod switch;
pub mod versions;

pub use reload::{ReloadError, Reloader, Switched};
pub use switch::{ActiveChain, ChainControl, IDLE_TICK, SwitchError};
pub use versions::{StageHistory, VersionStore};
