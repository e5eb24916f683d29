//! Keyed state and timers of stateful stages (`switchyard:plugin@0.2.0`): the store of one
//! stage and one task ([`TaskState`]), the writes of one call ([`CallWrites`], kept apart
//! until the call succeeds), the stage's limits and usage shared by every worker
//! ([`StageState`]), and the `state`, `timers` and `host` imports of the stateful world.
//!
//! A call reads its own writes; a failed call's writes are thrown away with it; a successful
//! call's writes are folded into the task's store ([`TaskState::apply`]) and remembered as
//! changed until the owner takes them ([`TaskState::take_changes`]).

use super::bindings::Header;
use super::bindings::stateful::{self, Entry, TimeDomain};
use super::error::{ErrorKind, RecordError};
use super::host_api::HostState;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use wasmtime::component::{ComponentType, Lower};

/// The most entries one `scan` returns.
pub const MAX_SCAN: u32 = 10_000;
/// The longest timer tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// A record of a stateful stage's batch as it crosses the boundary: the 0.1.0 record plus
/// its `late` flag (same shape as the 0.2.0 `input-record`).
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
pub struct StatefulRecord {
    pub offset: i64,
    #[component(name = "timestamp-ms")]
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub late: bool,
}

/// The 0.2.0 `record-batch`.
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
pub struct StatefulBatch {
    pub topic: String,
    pub partition: i32,
    #[component(name = "watermark-ms")]
    pub watermark_ms: Option<i64>,
    pub records: Vec<StatefulRecord>,
}

/// A timer: its clock, instant and tag. Ordered by clock, then instant, then tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    pub domain: Domain,
    pub at_ms: i64,
    pub tag: String,
}

/// The clock of a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Fires when the task's watermark reaches it.
    EventTime,
    /// Fires when the wall clock reaches it.
    WallClock,
}

impl Domain {
    fn of(domain: TimeDomain) -> Self {
        match domain {
            TimeDomain::EventTime => Domain::EventTime,
            TimeDomain::WallClock => Domain::WallClock,
        }
    }

    /// As the contract names it.
    pub fn wit(self) -> TimeDomain {
        match self {
            Domain::EventTime => TimeDomain::EventTime,
            Domain::WallClock => TimeDomain::WallClock,
        }
    }

    /// `event-time` or `wall-clock`.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::EventTime => "event-time",
            Domain::WallClock => "wall-clock",
        }
    }
}

/// What one stage's state uses, all tasks of the process together, and its limits. Shared
/// by the stage's slots on every worker; read by the metrics.
#[derive(Debug)]
pub struct StageState {
    /// Keys stored.
    pub keys: AtomicI64,
    /// Bytes of keys and values stored.
    pub bytes: AtomicI64,
    /// Timers pending.
    pub timers: AtomicI64,
    /// Records dead-lettered because a write would have passed a limit.
    pub refused: AtomicU64,
    /// `limits.max_state_bytes`.
    pub max_bytes: AtomicU64,
    /// `limits.max_keys`.
    pub max_keys: AtomicU64,
}

impl StageState {
    /// A stage with nothing stored yet.
    pub fn new(max_bytes: u64, max_keys: u64) -> Arc<Self> {
        Arc::new(StageState {
            keys: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            timers: AtomicI64::new(0),
            refused: AtomicU64::new(0),
            max_bytes: AtomicU64::new(max_bytes),
            max_keys: AtomicU64::new(max_keys),
        })
    }

    /// Keys stored now.
    pub fn keys(&self) -> u64 {
        u64::try_from(self.keys.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Bytes stored now.
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Timers pending now.
    pub fn timers(&self) -> u64 {
        u64::try_from(self.timers.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// The [`StageState`] of every stateful stage of the process, by pipeline and stage: one per
/// stage whichever worker or version runs it.
#[derive(Debug, Default)]
pub struct StateRegistry {
    stages: std::sync::Mutex<BTreeMap<(String, String), Arc<StageState>>>,
}

impl StateRegistry {
    /// The stage's usage, made on first use; its limits are set to `limits`.
    pub fn stage(
        &self,
        pipeline: &str,
        stage: &str,
        limits: &super::limits::StageLimits,
    ) -> Arc<StageState> {
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let state = stages
            .entry((pipeline.to_owned(), stage.to_owned()))
            .or_insert_with(|| StageState::new(limits.max_state_bytes, limits.max_keys));
        state
            .max_bytes
            .store(limits.max_state_bytes, Ordering::Relaxed);
        state.max_keys.store(limits.max_keys, Ordering::Relaxed);
        state.clone()
    }

    /// Every stateful stage so far, sorted by pipeline and stage.
    pub fn snapshot(&self) -> Vec<(String, String, Arc<StageState>)> {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        stages
            .iter()
            .map(|((p, s), state)| (p.clone(), s.clone(), state.clone()))
            .collect()
    }
}

/// One stage's state for one task: an ordered map and the pending timers.
///
/// Keys and values are boxed slices (16 bytes in the map's nodes rather than a `Vec`'s 24,
/// and no spare capacity): a million entries take a third less memory in the map's nodes.
#[derive(Debug, Default)]
pub struct TaskState {
    entries: BTreeMap<Box<[u8]>, Box<[u8]>>,
    timers: BTreeSet<TimerKey>,
    /// Keys changed since [`TaskState::take_changes`] last ran, with repeats (sorted and
    /// deduplicated when taken: cheaper than keeping a set on every write).
    changed: Vec<Box<[u8]>>,
    /// Timers set or cancelled since then, with repeats.
    changed_timers: Vec<TimerKey>,
}

/// What changed in a task's state: each key's value now (`None`: deleted), each timer's
/// presence now.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timers: Vec<(TimerKey, bool)>,
}

impl TaskState {
    /// Keys stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(|value| &**value)
    }

    /// Pending timers, in order.
    pub fn timers(&self) -> impl Iterator<Item = &TimerKey> {
        self.timers.iter()
    }

    /// Whether a timer of `domain` is due at `now`.
    pub fn has_due(&self, domain: Domain, now: i64) -> bool {
        self.due(domain, now).next().is_some()
    }

    /// The timers of `domain` due at `now`, in order. Timers are ordered by clock, then
    /// instant: the due ones of a clock are a range at its start, found without walking the
    /// timers that are not due.
    fn due(&self, domain: Domain, now: i64) -> impl Iterator<Item = &TimerKey> {
        let first = TimerKey {
            domain,
            at_ms: i64::MIN,
            tag: String::new(),
        };
        self.timers
            .range(first..)
            .take_while(move |t| t.domain == domain && t.at_ms <= now)
    }

    /// Removes and returns the timers of `domain` due at `now` (instant at or before it),
    /// in order; at most `limit`.
    pub fn take_due(&mut self, domain: Domain, now: i64, limit: usize) -> Vec<TimerKey> {
        let due: Vec<TimerKey> = self.due(domain, now).take(limit).cloned().collect();
        for timer in &due {
            self.timers.remove(timer);
            self.changed_timers.push(timer.clone());
        }
        due
    }

    /// Folds a successful call's writes in, and updates the stage's usage.
    pub fn apply(&mut self, writes: CallWrites, usage: &StageState) {
        usage.keys.fetch_add(writes.keys_delta, Ordering::Relaxed);
        usage.bytes.fetch_add(writes.bytes_delta, Ordering::Relaxed);
        for (key, value) in writes.entries {
            let key = key.into_boxed_slice();
            match value {
                Some(value) => {
                    self.changed.push(key.clone());
                    self.entries.insert(key, value.into_boxed_slice());
                }
                None => {
                    self.entries.remove(&key);
                    self.changed.push(key);
                }
            }
        }
        let mut timers_delta = 0i64;
        for (timer, set) in writes.timers {
            let changed = if set {
                self.timers.insert(timer.clone())
            } else {
                self.timers.remove(&timer)
            };
            if changed {
                timers_delta += if set { 1 } else { -1 };
                self.changed_timers.push(timer);
            }
        }
        usage.timers.fetch_add(timers_delta, Ordering::Relaxed);
    }

    /// Counts timers taken by [`TaskState::take_due`] out of the stage's usage.
    pub fn timers_fired(&self, count: usize, usage: &StageState) {
        usage
            .timers
            .fetch_sub(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// What changed since the last time this was called, in key order.
    pub fn take_changes(&mut self) -> Changes {
        let mut keys = std::mem::take(&mut self.changed);
        keys.sort_unstable();
        keys.dedup();
        let entries = keys
            .into_iter()
            .map(|key| {
                let value = self.entries.get(&key).map(|v| v.to_vec());
                (key.into_vec(), value)
            })
            .collect();
        let mut timers = std::mem::take(&mut self.changed_timers);
        timers.sort_unstable();
        timers.dedup();
        let timers = timers
            .into_iter()
            .map(|timer| {
                let set = self.timers.contains(&timer);
                (timer, set)
            })
            .collect();
        Changes { entries, timers }
    }

    /// Sets or removes an entry read back from the changelog (no usage counted, nothing
    /// marked changed: see [`TaskState::count_in`]).
    pub fn restore_entry(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match value {
            Some(value) => {
                self.entries
                    .insert(key.into_boxed_slice(), value.into_boxed_slice());
            }
            None => {
                self.entries.remove(key.as_slice());
            }
        }
    }

    /// Sets or removes a timer read back from the changelog.
    pub fn restore_timer(&mut self, timer: TimerKey, set: bool) {
        if set {
            self.timers.insert(timer);
        } else {
            self.timers.remove(&timer);
        }
    }

    /// Adds (`sign` 1) or takes out (`sign` -1) this task's keys, bytes and timers to or
    /// from the stage's usage: when a restored task is installed, or a task is dropped.
    pub fn count_in(&self, usage: &StageState, sign: i64) {
        let bytes: usize = self.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let n = |x: usize| i64::try_from(x).unwrap_or(i64::MAX) * sign;
        usage
            .keys
            .fetch_add(n(self.entries.len()), Ordering::Relaxed);
        usage.bytes.fetch_add(n(bytes), Ordering::Relaxed);
        usage
            .timers
            .fetch_add(n(self.timers.len()), Ordering::Relaxed);
    }

    /// Empties the task's state, taking its usage out of the stage's.
    pub fn clear(&mut self, usage: &StageState) {
        let bytes: usize = self.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        usage.keys.fetch_sub(
            i64::try_from(self.entries.len()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        usage
            .bytes
            .fetch_sub(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
        usage.timers.fetch_sub(
            i64::try_from(self.timers.len()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.clear_uncounted();
    }

    /// Empties a task's state whose usage is not counted in its stage's: one restored and
    /// not installed yet ([`TaskState::count_in`] counts it at install). As with
    /// [`TaskState::clear`], every key and timer becomes a deletion in its next changelog
    /// batch.
    pub fn clear_uncounted(&mut self) {
        self.changed
            .extend(std::mem::take(&mut self.entries).into_keys());
        self.changed_timers.extend(std::mem::take(&mut self.timers));
    }
}

/// The writes of one call, read before the task's store, applied only if the call succeeds.
#[derive(Debug, Default)]
pub struct CallWrites {
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    timers: BTreeMap<TimerKey, bool>,
    keys_delta: i64,
    bytes_delta: i64,
}

/// What a call into a stateful stage may touch: its task's store (moved in for the call and
/// back out after it), the call's writes, and the stage's usage and limits.
#[derive(Debug)]
pub struct StateAccess {
    pub task: TaskState,
    pub writes: CallWrites,
    pub usage: Arc<StageState>,
}

impl StateAccess {
    /// Access to `task` for one call.
    pub fn new(task: TaskState, usage: Arc<StageState>) -> Self {
        StateAccess {
            task,
            writes: CallWrites::default(),
            usage,
        }
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.entries.get(key) {
            Some(value) => value.clone(),
            None => self.task.entries.get(key).map(|v| v.to_vec()),
        }
    }

    fn current_len(&self, key: &[u8]) -> Option<usize> {
        match self.writes.entries.get(key) {
            Some(value) => value.as_ref().map(Vec::len),
            None => self.task.entries.get(key).map(|v| v.len()),
        }
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), RecordError> {
        use std::collections::btree_map::Entry as Slot;
        // One search of the call's writes finds both the current value and the place of
        // the new one.
        let slot = self.writes.entries.entry(key);
        let old = match &slot {
            Slot::Occupied(written) => written.get().as_ref().map(Vec::len),
            Slot::Vacant(new) => self.task.entries.get(new.key().as_slice()).map(|v| v.len()),
        };
        let key = slot.key();
        let keys_delta = i64::from(old.is_none());
        let new_bytes = i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX);
        let old_bytes = old.map_or(0, |len| i64::try_from(key.len() + len).unwrap_or(0));
        let bytes_delta = new_bytes - old_bytes;
        let keys = self.usage.keys.load(Ordering::Relaxed) + self.writes.keys_delta + keys_delta;
        let bytes =
            self.usage.bytes.load(Ordering::Relaxed) + self.writes.bytes_delta + bytes_delta;
        let max_keys = self.usage.max_keys.load(Ordering::Relaxed);
        let max_bytes = self.usage.max_bytes.load(Ordering::Relaxed);
        if keys_delta > 0 && u64::try_from(keys).unwrap_or(0) > max_keys {
            return Err(RecordError::new(
                ErrorKind::StateFull,
                format!("the stage's state holds {max_keys} keys, its limit (limits.max_keys)"),
            ));
        }
        if bytes_delta > 0 && u64::try_from(bytes).unwrap_or(0) > max_bytes {
            return Err(RecordError::new(
                ErrorKind::StateFull,
                format!(
                    "writing {new_bytes} bytes would take the stage's state past {max_bytes} bytes, its limit (limits.max_state_bytes)"
                ),
            ));
        }
        self.writes.keys_delta += keys_delta;
        self.writes.bytes_delta += bytes_delta;
        match slot {
            Slot::Occupied(mut written) => {
                written.insert(Some(value));
            }
            Slot::Vacant(new) => {
                new.insert(Some(value));
            }
        }
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) {
        if let Some(len) = self.current_len(&key) {
            self.writes.keys_delta -= 1;
            self.writes.bytes_delta -= i64::try_from(key.len() + len).unwrap_or(0);
            self.writes.entries.insert(key, None);
        }
    }

    /// Up to `limit` live entries under `prefix` after `after`, merging the call's writes
    /// over the store.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let range = (start, Bound::Unbounded);
        let mut base = self
            .task
            .entries
            .range::<[u8], _>(range)
            .map(|(k, v)| (&**k, Some(&**v)))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut mine = self
            .writes
            .entries
            .range::<[u8], _>(range)
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let next = match (base.peek(), mine.peek()) {
                (None, None) => break,
                (Some(_), None) => base.next(),
                (None, Some(_)) => mine.next(),
                (Some((bk, _)), Some((mk, _))) => {
                    if bk < mk {
                        base.next()
                    } else {
                        if bk == mk {
                            base.next();
                        }
                        mine.next()
                    }
                }
            };
            if let Some((key, Some(value))) = next {
                out.push(Entry {
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        out
    }

    fn set_timer(&mut self, timer: TimerKey, set: bool) -> Result<(), RecordError> {
        if timer.tag.len() > MAX_TAG_BYTES {
            return Err(RecordError::bad_output(format!(
                "a timer tag of {} bytes; the most is {MAX_TAG_BYTES}",
                timer.tag.len()
            )));
        }
        self.writes.timers.insert(timer, set);
        Ok(())
    }
}

/// The state a call may touch, or the error a stateless call gets (never: a stateless
/// component cannot import `state`).
fn access(state: &mut HostState) -> wasmtime::Result<&mut StateAccess> {
    state
        .state
        .as_mut()
        .ok_or_else(|| wasmtime::format_err!("state is not available in init"))
}

impl stateful::switchyard::plugin::types::Host for HostState {}

impl stateful::switchyard::plugin::host::Host for HostState {
    fn log(&mut self, level: stateful::switchyard::plugin::host::Level, message: String) {
        use super::bindings::Level as L;
        use stateful::switchyard::plugin::host::Level as S;
        let level = match level {
            S::Debug => L::Debug,
            S::Info => L::Info,
            S::Warn => L::Warn,
            S::Error => L::Error,
        };
        super::bindings::switchyard::plugin::host::Host::log(self, level, message);
    }

    fn lookup(&mut self, table: String, key: Vec<u8>) -> Option<Vec<u8>> {
        super::bindings::switchyard::plugin::host::Host::lookup(self, table, key)
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        super::bindings::switchyard::plugin::host::Host::counter_add(self, name, delta);
    }
}

impl stateful::switchyard::plugin::state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(access(self)?.get(&key))
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        access(self)?.set(key, value).map_err(wasmtime::Error::from)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        access(self)?.delete(key);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<Entry>> {
        let limit = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(0);
        Ok(access(self)?.scan(&prefix, after.as_deref(), limit))
    }
}

impl stateful::switchyard::plugin::timers::Host for HostState {
    fn set(&mut self, domain: TimeDomain, at_ms: i64, tag: String) -> wasmtime::Result<()> {
        let timer = TimerKey {
            domain: Domain::of(domain),
            at_ms,
            tag,
        };
        access(self)?
            .set_timer(timer, true)
            .map_err(wasmtime::Error::from)
    }

    fn cancel(&mut self, domain: TimeDomain, at_ms: i64, tag: String) -> wasmtime::Result<()> {
        let timer = TimerKey {
            domain: Domain::of(domain),
            at_ms,
            tag,
        };
        access(self)?
            .set_timer(timer, false)
            .map_err(wasmtime::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_with(max_bytes: u64, max_keys: u64) -> StateAccess {
        StateAccess::new(TaskState::default(), StageState::new(max_bytes, max_keys))
    }

    fn keys(entries: &[Entry]) -> Vec<&[u8]> {
        entries.iter().map(|e| e.key.as_slice()).collect()
    }

    /// A call reads its own writes, scans merge them over the store in key order, and a
    /// cursor resumes after the last key returned.
    #[test]
    fn a_call_reads_its_own_writes_in_key_order() {
        let mut a = access_with(1 << 20, 1000);
        for k in [b"a/1".as_slice(), b"a/3", b"b/1"] {
            a.set(k.to_vec(), b"old".to_vec()).expect("set");
        }
        let usage = a.usage.clone();
        let writes = std::mem::take(&mut a.writes);
        a.task.apply(writes, &usage);
        assert_eq!((usage.keys(), usage.bytes()), (3, 18));

        a.set(b"a/2".to_vec(), b"new".to_vec()).expect("set");
        a.delete(b"a/3".to_vec());
        a.set(b"a/1".to_vec(), b"newer".to_vec()).expect("set");
        assert_eq!(a.get(b"a/1"), Some(b"newer".to_vec()));
        assert_eq!(a.get(b"a/3"), None);
        let all = a.scan(b"a/", None, 10);
        assert_eq!(keys(&all), [b"a/1".as_slice(), b"a/2"]);
        assert_eq!(all[0].value, b"newer");
        let first = a.scan(b"a/", None, 1);
        assert_eq!(keys(&first), [b"a/1".as_slice()]);
        let rest = a.scan(b"a/", Some(b"a/1"), 10);
        assert_eq!(keys(&rest), [b"a/2".as_slice()]);
        assert!(a.scan(b"c", None, 10).is_empty());

        // Nothing reached the store before the call is applied.
        assert_eq!(a.task.get(b"a/2"), None);
        let writes = std::mem::take(&mut a.writes);
        a.task.apply(writes, &usage);
        assert_eq!(a.task.get(b"a/2"), Some(b"new".as_slice()));
        assert_eq!(a.task.get(b"a/3"), None);
        assert_eq!(usage.keys(), 3);
        assert_eq!(usage.bytes(), 8 + 6 + 6, "a/1=newer, a/2=new, b/1=old");
        let changes = a.task.take_changes();
        assert_eq!(changes.entries.len(), 4, "a/1, a/2, a/3 and b/1");
        assert!(changes.entries.contains(&(b"a/3".to_vec(), None)));
        assert!(a.task.take_changes().entries.is_empty());
    }

    /// Writes past either limit fail with kind `state-full` and leave the call's earlier
    /// writes as they were; deletes and overwrites that do not grow always succeed.
    #[test]
    fn writes_past_the_limits_are_refused() {
        let mut a = access_with(20, 2);
        a.set(b"k1".to_vec(), b"12345678".to_vec())
            .expect("10 bytes");
        let e = a
            .set(b"k2".to_vec(), b"123456789".to_vec())
            .expect_err("21 bytes");
        assert_eq!(e.kind, ErrorKind::StateFull);
        assert!(e.message.contains("limits.max_state_bytes"), "{e}");
        a.set(b"k2".to_vec(), b"1".to_vec()).expect("13 bytes");
        let e = a.set(b"k3".to_vec(), Vec::new()).expect_err("3 keys");
        assert!(e.message.contains("limits.max_keys"), "{e}");
        a.delete(b"k2".to_vec());
        a.set(b"k3".to_vec(), Vec::new()).expect("2 keys again");
        a.set(b"k1".to_vec(), b"1".to_vec()).expect("shrinks");
        assert_eq!(a.writes.keys_delta, 2);
        assert_eq!(a.writes.bytes_delta, 3 + 2);
    }

    /// Setting a timer twice is one timer; due timers come out in order and are counted.
    #[test]
    fn timers_are_a_set_and_fire_in_order() {
        let mut a = access_with(1 << 20, 1000);
        let t = |at_ms, tag: &str| TimerKey {
            domain: Domain::EventTime,
            at_ms,
            tag: tag.into(),
        };
        a.set_timer(t(20, "b"), true).expect("set");
        a.set_timer(t(20, "b"), true).expect("set");
        a.set_timer(t(10, "z"), true).expect("set");
        a.set_timer(t(30, "c"), true).expect("set");
        a.set_timer(t(30, "c"), false).expect("cancel");
        assert!(a.set_timer(t(1, &"x".repeat(257)), true).is_err());
        let usage = a.usage.clone();
        let writes = std::mem::take(&mut a.writes);
        a.task.apply(writes, &usage);
        assert_eq!(usage.timers(), 2);
        let due = a.task.take_due(Domain::EventTime, 25, 100);
        assert_eq!(due, vec![t(10, "z"), t(20, "b")]);
        a.task.timers_fired(due.len(), &usage);
        assert_eq!(usage.timers(), 0);
        assert!(a.task.take_due(Domain::WallClock, i64::MAX, 100).is_empty());
    }
}
