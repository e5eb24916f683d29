//! The wasm side of the boundary: the one plugin instance and the two exported calls.
//!
//! [`export!`](crate::export) declares a [`Slot`] in the plugin crate and routes the
//! generated `init` and `process` exports here. The slot's states:
//!
//! - empty: before `init`, or after an `init` that failed; `process` dead-letters every record;
//! - holding an instance: after a successful `init`; `process` hands it each batch.
//!
//! A trap (a plugin panic aborts) ends the component instance, and the host makes a fresh one,
//! so there is no poisoned state to recover from.

use std::cell::UnsafeCell;

use crate::{Batch, Config, Plugin, Verdict};

pub use crate::__bindings::exports::switchyard::plugin::transform::Guest;

/// The reason every record gets when `process` comes before a successful `init`.
pub const NOT_INITIALISED: &str = "plugin not initialised";

/// Holds the plugin instance of this component instance.
pub struct Slot<P>(UnsafeCell<Option<P>>);

// SAFETY: a wasm32 component instance runs on one thread, and the component model forbids
// re-entering an instance while one of its exports is running, so the cell is never reached
// from two places at once.
unsafe impl<P> Sync for Slot<P> {}

impl<P> Slot<P> {
    /// An empty slot.
    #[allow(
        clippy::new_without_default,
        reason = "used in a `static`, which needs a const fn"
    )]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }
}

/// The `init` export: builds the instance, or leaves the slot empty and reports why.
pub fn init<P: Plugin>(slot: &Slot<P>, config: Vec<(String, String)>) -> Result<(), String> {
    // SAFETY: see the `Sync` impl; the reference does not outlive this call.
    let instance = unsafe { &mut *slot.0.get() };
    *instance = None;
    *instance = Some(P::init(&Config::from_pairs(config))?);
    Ok(())
}

/// The `process` export: one verdict per record, or `plugin not initialised` for each.
pub fn process<P: Plugin>(slot: &Slot<P>, batch: Batch) -> Vec<Verdict> {
    // SAFETY: see the `Sync` impl; the reference does not outlive this call.
    match unsafe { &mut *slot.0.get() } {
        Some(plugin) => plugin.process_batch(&batch),
        None => batch
            .records()
            .iter()
            .map(|_| Verdict::DeadLetter(NOT_INITIALISED.to_owned()))
            .collect(),
    }
}
