//! The control side of a pipeline: which chain version runs, and changing it while records
//! flow.
//!
//! - [`switch`]: the live chain version ([`ChainControl`]) and switching every worker to a
//!   new one at a batch boundary.
//! - [`versions`]: each stage's plugin versions, rollback stack, history, persistence.

pub mod switch;
pub mod versions;

pub use switch::{ActiveChain, ChainControl, IDLE_TICK, SwitchError};
pub use versions::{StageHistory, VersionStore, config_pairs};
