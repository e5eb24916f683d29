//! The stage's keyed state for the current task: an ordered map from bytes to bytes.
//!
//! For stateful plugins ([`StatefulPlugin`](crate::StatefulPlugin)). A task is partition N of
//! every source topic of the pipeline: the records of `orders` partition 3 and `payments`
//! partition 3 see the same state, partition 4 sees other state. A call reads its own writes;
//! the writes of a call that fails (trap, timeout, a limit) are discarded with it, and those of
//! a call that succeeds survive instances, restarts and crashes.
//!
//! This module owns the calls and the paging of [`entries`]; the host owns the store, its
//! limits (`limits.max_state_bytes`, `limits.max_keys`) and its durability. Natively the calls
//! reach an in-memory map in [`testing`](crate::testing), so a plugin's unit tests see its
//! state. A 0.1.0 plugin ([`export!`](crate::export)) has no state: on wasm32 a call traps.

/// One state entry.
///
/// The fields mirror the WIT record `entry`: on wasm32 the generated glue builds it directly.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value stored under it.
    pub value: Vec<u8>,
}

/// The host's cap on the `limit` of one [`scan`]; more is read as this many.
pub const MAX_SCAN: u32 = 10_000;

/// The page size of [`entries`].
const PAGE: u32 = 1_000;

/// The value stored under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Stores `value` under `key`, replacing any value there.
///
/// A write that would take the stage past its `limits.max_state_bytes` or `limits.max_keys`
/// ends the call: the host dead-letters the record (kind `state-full`) and keeps none of the
/// call's writes.
pub fn set(key: &[u8], value: &[u8]) {
    imp::set(key, value);
}

/// Removes `key`; nothing happens if it is absent.
pub fn delete(key: &[u8]) {
    imp::delete(key);
}

/// Up to `limit` entries whose key starts with `prefix`, in ascending key order, starting
/// after the key `after` when given (exclusive). The host caps `limit` at [`MAX_SCAN`].
///
/// To read everything, call again with `after` set to the last key returned until fewer than
/// `limit` come back; [`entries`] does that for you.
pub fn scan(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> Vec<Entry> {
    imp::scan(prefix, after, limit)
}

/// Every entry whose key starts with `prefix`, in ascending key order, read a page at a time
/// with [`scan`]. [`Entries::after`] starts it further on.
///
/// Each page is read when the previous one is used up, starting after the last key returned,
/// so deleting or rewriting entries already returned is safe. Entries written during the
/// iteration may or may not show up.
pub fn entries(prefix: impl Into<Vec<u8>>) -> Entries {
    Entries {
        prefix: prefix.into(),
        page: Vec::new().into_iter(),
        last: None,
        done: false,
    }
}

/// The iterator of [`entries`].
#[derive(Debug)]
pub struct Entries {
    prefix: Vec<u8>,
    /// The rest of the current page.
    page: std::vec::IntoIter<Entry>,
    /// The key of the last entry returned: the next page starts after it.
    last: Option<Vec<u8>>,
    /// Set once a page came back short: there is nothing after it.
    done: bool,
}

impl Entries {
    /// Continues after the key `after` (exclusive): the entries of the prefix whose keys are
    /// greater. With keys that embed a fixed-width position (a zero-padded time, say), this
    /// starts a range read: `after` = prefix + the lowest position wanted, since every key of
    /// that position is longer and so greater.
    pub fn after(mut self, after: impl Into<Vec<u8>>) -> Self {
        self.page = Vec::new().into_iter();
        self.last = Some(after.into());
        self.done = false;
        self
    }
}

impl Iterator for Entries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.page.as_slice().is_empty() {
            if self.done {
                return None;
            }
            let page = scan(&self.prefix, self.last.as_deref(), PAGE);
            self.done = page.len() < PAGE as usize;
            self.page = page.into_iter();
        }
        let entry = self.page.next()?;
        self.last = Some(entry.key.clone());
        Some(entry)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Entry;
    use crate::__glue::imports;

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        (imports().state_get)(key)
    }

    pub fn set(key: &[u8], value: &[u8]) {
        (imports().state_set)(key, value);
    }

    pub fn delete(key: &[u8]) {
        (imports().state_delete)(key);
    }

    pub fn scan(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> Vec<Entry> {
        (imports().state_scan)(prefix, after, limit)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub(super) use crate::testing::{state_delete as delete, state_get as get};
    pub(super) use crate::testing::{state_scan as scan, state_set as set};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn get_set_delete() {
        testing::clear();
        assert_eq!(get(b"a"), None);
        set(b"a", b"1");
        set(b"a", b"2");
        assert_eq!(get(b"a"), Some(b"2".to_vec()));
        delete(b"a");
        delete(b"never");
        assert_eq!(get(b"a"), None);
        assert!(testing::state().is_empty());
    }

    #[test]
    fn scan_pages_by_prefix_after_and_limit() {
        testing::clear();
        for key in ["a/1", "a/2", "a/3", "a0", "b/1", "a"] {
            set(key.as_bytes(), key.as_bytes());
        }
        assert_eq!(
            scan(b"a/", None, 10),
            [
                entry("a/1", "a/1"),
                entry("a/2", "a/2"),
                entry("a/3", "a/3")
            ]
        );
        assert_eq!(
            scan(b"a/", None, 2),
            [entry("a/1", "a/1"), entry("a/2", "a/2")]
        );
        assert_eq!(scan(b"a/", Some(b"a/2"), 2), [entry("a/3", "a/3")]);
        assert_eq!(scan(b"a/", Some(b"a/3"), 2), []);
        // `after` need not be a stored key, nor share the prefix.
        assert_eq!(scan(b"a/", Some(b"a/1x"), 1), [entry("a/2", "a/2")]);
        assert_eq!(scan(b"a/", Some(b"0"), 1), [entry("a/1", "a/1")]);
        assert_eq!(scan(b"", None, 0), []);
        assert_eq!(scan(b"", None, 100).len(), 6);
    }

    #[test]
    fn entries_pages_through_a_whole_prefix() {
        testing::clear();
        let n = PAGE as usize * 2 + 7;
        for i in 0..n {
            set(format!("k/{i:05}").as_bytes(), b"v");
        }
        set(b"l/0", b"other prefix");
        let keys: Vec<Vec<u8>> = entries("k/").map(|e| e.key).collect();
        assert_eq!(keys.len(), n);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "in key order");
        assert_eq!(entries("nothing").count(), 0);

        // Deleting what was returned, while iterating, loses nothing.
        let mut seen = 0;
        for entry in entries("k/") {
            delete(&entry.key);
            seen += 1;
        }
        assert_eq!(seen, n);
        assert_eq!(testing::state().len(), 1);
    }

    #[test]
    fn entries_after_a_key_read_a_range() {
        testing::clear();
        for key in ["t/0001/a", "t/0002/a", "t/0002/b", "t/0003/a", "u/0002/a"] {
            set(key.as_bytes(), b"");
        }
        let keys = |entries: Entries| {
            entries
                .map(|e| String::from_utf8(e.key).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(entries("t/").after("t/0002")),
            ["t/0002/a", "t/0002/b", "t/0003/a"]
        );
        assert_eq!(
            keys(entries("t/").after("t/0002/a")),
            ["t/0002/b", "t/0003/a"]
        );
        assert_eq!(keys(entries("t/").after("t/9")), Vec::<String>::new());
        // Before the prefix: the whole prefix.
        assert_eq!(keys(entries("t/").after("a")).len(), 4);
        // Mid-iteration: continues after the new key.
        let mut iter = entries("t/");
        assert_eq!(iter.next().unwrap().key, b"t/0001/a");
        assert_eq!(keys(iter.after("t/0002/b")), ["t/0003/a"]);
    }

    #[test]
    fn entries_of_exactly_one_page() {
        testing::clear();
        for i in 0..PAGE {
            set(format!("{i:05}").as_bytes(), b"v");
        }
        assert_eq!(entries("").count(), PAGE as usize);
    }
}
