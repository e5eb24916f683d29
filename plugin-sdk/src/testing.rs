//! Native doubles for [`host`](crate::host), for plugin unit tests.
//!
//! Each test thread has its own state (cargo runs every test on its own thread), so tests do
//! not see each other's tables, logs or counters. Not compiled for wasm32.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::host::Level;

#[derive(Default)]
struct State {
    /// table name -> key -> value; filled by [`set_table`], read by `host::lookup`.
    tables: HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
    /// Every `host::log` call, in order.
    logs: Vec<(Level, String)>,
    /// Every counter `host::counter_add` touched, with its total.
    counters: BTreeMap<String, u64>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// Sets `key` to `value` in the lookup table `table` (creating the table).
pub fn set_table(table: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    STATE.with_borrow_mut(|s| {
        s.tables
            .entry(table.to_owned())
            .or_default()
            .insert(key.as_ref().to_vec(), value.as_ref().to_vec());
    });
}

/// Forgets every table, log line and counter of this thread.
pub fn clear() {
    STATE.with_borrow_mut(|s| *s = State::default());
}

/// The lines logged so far on this thread, in order.
pub fn logs() -> Vec<(Level, String)> {
    STATE.with_borrow(|s| s.logs.clone())
}

/// The counters touched so far on this thread, with their totals.
pub fn counters() -> BTreeMap<String, u64> {
    STATE.with_borrow(|s| s.counters.clone())
}

pub(crate) fn log(level: Level, message: &str) {
    STATE.with_borrow_mut(|s| s.logs.push((level, message.to_owned())));
}

pub(crate) fn lookup(table: &str, key: &[u8]) -> Option<Vec<u8>> {
    STATE.with_borrow(|s| s.tables.get(table)?.get(key).cloned())
}

pub(crate) fn counter_add(name: &str, delta: u64) {
    STATE.with_borrow_mut(|s| {
        let total = s.counters.entry(name.to_owned()).or_default();
        *total = total.saturating_add(delta);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;

    #[test]
    fn host_calls_reach_the_doubles() {
        set_table("users", "u1", "alice");
        assert_eq!(host::lookup("users", b"u1"), Some(b"alice".to_vec()));
        assert_eq!(host::lookup("users", b"u2"), None);
        assert_eq!(host::lookup("other", b"u1"), None);

        host::info("hello");
        host::log(Level::Error, "bad");
        assert_eq!(
            logs(),
            [
                (Level::Info, "hello".to_owned()),
                (Level::Error, "bad".to_owned())
            ]
        );

        host::counter_add("seen", 2);
        host::counter_add("seen", 3);
        assert_eq!(counters().get("seen"), Some(&5));

        clear();
        assert!(logs().is_empty() && counters().is_empty());
        assert_eq!(host::lookup("users", b"u1"), None);
    }
}
