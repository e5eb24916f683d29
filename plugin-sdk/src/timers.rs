//! Timers of the stage for the current task: [`set`], [`cancel`], and the [`Timer`] handed to
//! [`StatefulPlugin::on_timer`](crate::StatefulPlugin::on_timer) when one comes due.
//!
//! A timer is identified by its domain, instant and tag: setting the same timer twice is one
//! timer. Timers are part of the task's state (they survive instances, restarts and crashes,
//! and the writes of a failed call are discarded with it), and they never fire while a call
//! is running: a timer already due fires after the current call.
//!
//! This module owns the calls; the host owns the clocks and decides when a timer is due.
//! Natively the calls reach an in-memory set in [`testing`](crate::testing), where a test
//! reads the pending timers and fires them with [`testing::Task`](crate::testing::Task). A
//! 0.1.0 plugin ([`export!`](crate::export)) has no timers: on wasm32 a call traps.

/// The longest tag the host accepts, in bytes: a longer one ends the call as a plugin error.
pub const MAX_TAG_BYTES: usize = 256;

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// The task's watermark: the timer fires once the watermark is at or past its instant.
    EventTime,
    /// The host's clock: the timer fires once the wall clock is at or past its instant, even
    /// when no record arrives.
    WallClock,
}

/// A timer that came due.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timer {
    /// The clock it followed.
    pub domain: Domain,
    /// The instant it was set for, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The tag the plugin gave it.
    pub tag: String,
}

/// Sets a timer at `at_ms` (milliseconds since the Unix epoch) in `domain`, with `tag` (at
/// most [`MAX_TAG_BYTES`]). Setting a timer that is already set changes nothing.
pub fn set(domain: Domain, at_ms: i64, tag: &str) {
    imp::set(domain, at_ms, tag);
}

/// Cancels the timer, if it is set.
pub fn cancel(domain: Domain, at_ms: i64, tag: &str) {
    imp::cancel(domain, at_ms, tag);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Domain;
    use crate::__glue::imports;

    pub fn set(domain: Domain, at_ms: i64, tag: &str) {
        (imports().timer_set)(domain, at_ms, tag);
    }

    pub fn cancel(domain: Domain, at_ms: i64, tag: &str) {
        (imports().timer_cancel)(domain, at_ms, tag);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub(super) use crate::testing::{timer_cancel as cancel, timer_set as set};
}
