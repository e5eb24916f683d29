//! The functions the host gives every plugin: log, lookup, counters.
//!
//! On wasm32 these call the component's `host` imports of the contract the plugin was
//! exported with (`switchyard:plugin/host@0.1.0` for [`export!`](crate::export),
//! `@0.2.0` for [`export_stateful!`](crate::export_stateful)). Natively they use the
//! thread-local doubles in [`testing`](crate::testing), so a plugin's unit tests can fill
//! lookup tables and read back what it logged and counted.

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something the plugin could not handle.
    Error,
}

/// Writes a line to the host's log, tagged with the pipeline and stage.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Looks `key` up in the enrichment table named `table`: `None` when the table has no such
/// key, or when no table of that name is configured.
pub fn lookup(table: &str, key: &[u8]) -> Option<Vec<u8>> {
    imp::lookup(table, key)
}

/// Adds `delta` to the plugin-defined counter `name`, exported by the host as a metric.
pub fn counter_add(name: &str, delta: u64) {
    imp::counter_add(name, delta);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::__glue::imports;

    pub fn log(level: Level, message: &str) {
        (imports().log)(level, message);
    }

    pub fn lookup(table: &str, key: &[u8]) -> Option<Vec<u8>> {
        (imports().lookup)(table, key)
    }

    pub fn counter_add(name: &str, delta: u64) {
        (imports().counter_add)(name, delta);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub(super) use crate::testing::{counter_add, log, lookup};
}
