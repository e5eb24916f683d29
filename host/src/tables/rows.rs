//! The rows of one table: an open-addressing hash table of byte keys to byte values, each
//! row a single allocation. No locking (the owning `Table` holds it behind a lock) and no
//! knowledge of where rows come from.

use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Rows keyed by bytes. Each row is one allocation: the key's length (4 bytes), the key,
/// the value.
#[derive(Default)]
pub struct Rows {
    table: HashTable<Box<[u8]>>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of keys and values held.
    pub(super) bytes: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("rows", &self.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn split(row: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = row.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    rest.split_at(len)
}

impl Rows {
    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |row| split(row).0 == key)
            .map(|row| split(row).1)
    }

    /// Sets `key` to `value`. A key longer than 4 GiB is not stored.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let Ok(len) = u32::try_from(key.len()) else {
            return;
        };
        let mut row = Vec::with_capacity(4 + key.len() + value.len());
        row.extend_from_slice(&len.to_le_bytes());
        row.extend_from_slice(key);
        row.extend_from_slice(value);
        let row = row.into_boxed_slice();
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        self.bytes += key.len() + value.len();
        match self.table.entry(
            hash,
            |old| split(old).0 == key,
            |old| hasher.hash_one(split(old).0),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                let old = std::mem::replace(entry.get_mut(), row);
                self.bytes -= old.len() - 4;
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(row);
            }
        }
    }

    /// Deletes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.table.find_entry(hash, |row| split(row).0 == key) {
            let (row, _) = entry.remove();
            self.bytes -= row.len() - 4;
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_insert_replace_remove() {
        let mut rows = Rows::default();
        rows.insert(b"a", b"1");
        rows.insert(b"b", b"22");
        rows.insert(b"", b"empty key");
        assert_eq!(rows.get(b"a"), Some(&b"1"[..]));
        assert_eq!(rows.get(b""), Some(&b"empty key"[..]));
        assert_eq!(rows.get(b"c"), None);
        rows.insert(b"a", b"333");
        assert_eq!(rows.get(b"a"), Some(&b"333"[..]));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.bytes, 1 + 3 + 1 + 2 + 9);
        rows.remove(b"a");
        rows.remove(b"nope");
        assert_eq!(rows.get(b"a"), None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.bytes, 1 + 2 + 9);
        // A key that is a prefix of another is a different key.
        rows.insert(b"bb", b"x");
        assert_eq!(rows.get(b"b"), Some(&b"22"[..]));
    }
}
