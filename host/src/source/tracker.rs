//! Every assigned partition's in-flight records, shared by the consumer (which tracks records
//! as it takes them and commits), the workers (which skip records of revoked partitions) and
//! the producer's delivery callbacks (which finish records).
//!
//! A partition's state lives from its assignment to its revocation, inside that assignment's
//! [`PartitionHandle`]. Every record carries its handle, so the hot path (track, finish) locks
//! only that partition's state: no lookup by name, no lock shared by all partitions. Each
//! assignment gets a new handle, so a record finished after its partition was revoked (and
//! perhaps assigned again) lands on the old, revoked handle and never moves the new
//! assignment's commit position.

use super::offsets::PartitionOffsets;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One assignment of one partition, and its in-flight records.
#[derive(Debug)]
pub struct PartitionHandle {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Set when the partition is revoked: its queued records are skipped, not processed.
    /// Written only under the `state` lock, so a track or finish that holds the lock and
    /// sees it clear is counted before the revocation subtracts what was in flight.
    pub revoked: AtomicBool,
    state: Mutex<PartitionState>,
}

impl PartitionHandle {
    fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // A panic while holding this lock leaves consistent data (every update is a single
        // step), so a poisoned lock is used as is rather than taking the process down.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the partition was revoked since this assignment.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// A record taken from Kafka and not yet finished.
#[derive(Debug)]
pub struct InFlight {
    /// Its partition assignment.
    pub handle: Arc<PartitionHandle>,
    /// Its offset.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    offsets: PartitionOffsets,
    /// Highest offset the broker confirmed committed.
    committed: Option<i64>,
    /// Highest offset a commit was sent for (confirmed or not).
    requested: Option<i64>,
    /// Since when a commit sent has been waiting for its confirmation (`None`: the broker
    /// confirmed every commit sent).
    unconfirmed_since: Option<std::time::Instant>,
    /// Offset of the last record taken.
    last_taken: Option<i64>,
    /// The partition's end (the offset the next produced record gets), as last seen.
    high_watermark: Option<i64>,
    /// Where the first record should be: the committed offset at the assignment (`None`: not
    /// known, e.g. a group with no committed offset). After it, the last taken + 1.
    first_expected: Option<i64>,
    /// Whether a gap on this assignment was reported already (logged once per partition).
    gap_reported: bool,
}

/// What [`Tracker::track_on`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Not taken: the partition was revoked, or the offset is not above the last one taken.
    Refused,
    /// Taken.
    Taken,
    /// Taken, but offsets before it were skipped: on a topic that is neither compacted nor
    /// written by transactional producers, records the broker lost.
    AfterGap {
        /// The offset expected instead.
        expected: i64,
        /// The first gap of this assignment (log it).
        first: bool,
    },
}

impl Tracked {
    /// Whether the record was taken.
    pub fn taken(self) -> bool {
        !matches!(self, Tracked::Refused)
    }
}

type Key = (Arc<str>, i32);

/// The in-flight records of every assigned partition.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The current assignment of each partition. Taken on assignment changes, commits and
    /// reports; never per record.
    partitions: Mutex<HashMap<Key, Arc<PartitionHandle>>>,
    in_flight: AtomicUsize,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<PartitionHandle>>> {
        // As for PartitionHandle::lock: every update is a single step.
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A partition was assigned: start tracking it afresh.
    pub fn assign(&self, topic: &str, partition: i32) -> Arc<PartitionHandle> {
        let topic: Arc<str> = Arc::from(topic);
        let handle = Arc::new(PartitionHandle {
            topic: topic.clone(),
            partition,
            revoked: AtomicBool::new(false),
            state: Mutex::new(PartitionState::default()),
        });
        if let Some(old) = self.lock().insert((topic, partition), handle.clone()) {
            self.forget(&old);
        }
        handle
    }

    fn forget(&self, old: &PartitionHandle) {
        let state = old.lock();
        if !old.revoked.swap(true, Ordering::AcqRel) {
            self.in_flight
                .fetch_sub(state.offsets.in_flight(), Ordering::AcqRel);
        }
    }

    /// A partition was revoked: stop tracking it. Its records still in flight are skipped by
    /// the workers and ignored when they finish.
    pub fn revoke(&self, topic: &str, partition: i32) {
        let old = self.lock().remove(&(Arc::from(topic), partition));
        if let Some(old) = old {
            self.forget(&old);
        }
    }

    /// Every partition was revoked (or the assignment was lost).
    pub fn revoke_all(&self) {
        let drained: Vec<Arc<PartitionHandle>> = self.lock().drain().map(|(_, h)| h).collect();
        for old in drained {
            self.forget(&old);
        }
    }

    /// The current assignment of a partition, if it is assigned.
    pub fn handle(&self, topic: &str, partition: i32) -> Option<Arc<PartitionHandle>> {
        self.lock().get(&(Arc::from(topic), partition)).cloned()
    }

    /// A record was taken from Kafka. `None` when its partition is not assigned, or the
    /// offset is not above the last one taken (a record fetched again after a seek): such a
    /// record is not processed, and is not committed past.
    pub fn track(&self, topic: &str, partition: i32, offset: i64) -> Option<Arc<PartitionHandle>> {
        let handle = self.handle(topic, partition)?;
        self.track_on(&handle, offset).taken().then_some(handle)
    }

    /// [`Tracker::track`] for a caller that already holds the partition's handle (the hot
    /// path: the consumer keeps the handles of its partitions). Refused when the handle was
    /// revoked or the offset is not above the last one taken; taken after a gap when the
    /// offset is above the one expected.
    pub fn track_on(&self, handle: &PartitionHandle, offset: i64) -> Tracked {
        let mut state = handle.lock();
        if handle.is_revoked() || state.offsets.track(offset).is_err() {
            return Tracked::Refused;
        }
        let expected = state.last_taken.map(|o| o + 1).or(state.first_expected);
        state.last_taken = Some(offset);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        match expected {
            Some(expected) if offset > expected => {
                let first = !std::mem::replace(&mut state.gap_reported, true);
                Tracked::AfterGap { expected, first }
            }
            _ => Tracked::Taken,
        }
    }

    /// The partition's first record should be at `offset` (its committed offset, or where
    /// a start timestamp placed it): a later first record counts as a gap. Once a record was
    /// taken, the next is expected right after it whatever this says.
    pub fn expect(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(handle) = self.handle(topic, partition) {
            let mut state = handle.lock();
            state.first_expected = Some(offset);
        }
    }

    /// Every output of a record was acknowledged (or it had none).
    pub fn finish(&self, record: &InFlight) {
        self.finish_many(&record.handle, std::iter::once(record.offset));
    }

    /// Several records of one partition assignment finished. Ignored for a revoked
    /// assignment (its records were already subtracted from the in-flight count).
    pub fn finish_many(&self, handle: &PartitionHandle, offsets: impl IntoIterator<Item = i64>) {
        let mut state = handle.lock();
        if handle.is_revoked() {
            return;
        }
        let mut finished = 0;
        for offset in offsets {
            if state.offsets.finish(offset).is_ok() {
                finished += 1;
            }
        }
        self.in_flight.fetch_sub(finished, Ordering::AcqRel);
    }

    /// Records taken and not finished, in every partition.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The handles of the given partitions that are assigned.
    fn handles_of(&self, partitions: &[(String, i32)]) -> Vec<Arc<PartitionHandle>> {
        let map = self.lock();
        partitions
            .iter()
            .filter_map(|(t, p)| map.get(&(Arc::from(t.as_str()), *p)).cloned())
            .collect()
    }

    /// Records in flight in the given partitions.
    pub fn in_flight_of(&self, partitions: &[(String, i32)]) -> usize {
        self.handles_of(partitions)
            .iter()
            .map(|h| h.lock().offsets.in_flight())
            .sum()
    }

    /// Offsets worth committing now: partitions whose committable offset is above the last
    /// one requested, or (with `again`) every partition with a committable offset, so a
    /// commit that failed without its failure being reported is sent again. Marks them
    /// requested.
    pub fn to_commit(&self, again: bool) -> Vec<(Arc<str>, i32, i64)> {
        let handles: Vec<Arc<PartitionHandle>> = self.lock().values().cloned().collect();
        let mut out = Vec::new();
        for handle in handles {
            let mut state = handle.lock();
            if let Some(offset) = state.offsets.committable()
                && (again || state.requested.is_none_or(|r| offset > r))
            {
                state.requested = Some(offset);
                state
                    .unconfirmed_since
                    .get_or_insert_with(std::time::Instant::now);
                out.push((handle.topic.clone(), handle.partition, offset));
            }
        }
        out
    }

    /// Committable offsets of the given partitions, whether or not already requested.
    pub fn committable_of(&self, partitions: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        self.handles_of(partitions)
            .iter()
            .filter_map(|h| {
                let offset = h.lock().offsets.committable()?;
                Some((h.topic.to_string(), h.partition, offset))
            })
            .collect()
    }

    /// The broker confirmed a commit of `offset`.
    pub fn commit_confirmed(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(handle) = self.handle(topic, partition) {
            let mut state = handle.lock();
            state.committed = Some(state.committed.map_or(offset, |c| c.max(offset)));
            if state.committed >= state.requested {
                state.unconfirmed_since = None;
            }
        }
    }

    /// Whether some partition has waited longer than `age` for a commit's confirmation.
    /// Kafka confirms within milliseconds; some brokers (tansu) commit without ever
    /// answering an asynchronous commit in a way librdkafka reports.
    pub fn has_commits_unconfirmed_for(&self, age: std::time::Duration) -> bool {
        let handles: Vec<Arc<PartitionHandle>> = self.lock().values().cloned().collect();
        handles.iter().any(|h| {
            h.lock()
                .unconfirmed_since
                .is_some_and(|since| since.elapsed() > age)
        })
    }

    /// A commit for the partition failed (whatever offset it carried): the next commit asks
    /// again for everything past the last confirmed offset.
    pub fn commit_failed(&self, topic: &str, partition: i32) {
        if let Some(handle) = self.handle(topic, partition) {
            let mut state = handle.lock();
            state.requested = state.committed;
            state.unconfirmed_since = None;
        }
    }

    /// The partition's end as the consumer last saw it (for lag).
    pub fn set_high_watermark(&self, topic: &str, partition: i32, high: i64) {
        if let Some(handle) = self.handle(topic, partition) {
            handle.lock().high_watermark = Some(high);
        }
    }

    /// Assigned partitions with their confirmed committed offset, for status reports.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        let handles: Vec<Arc<PartitionHandle>> = self.lock().values().cloned().collect();
        let mut out: Vec<PartitionStatus> = handles
            .iter()
            .map(|h| {
                let s = h.lock();
                PartitionStatus {
                    topic: h.topic.to_string(),
                    partition: h.partition,
                    in_flight: s.offsets.in_flight(),
                    committed: s.committed,
                    position: s.last_taken.map(|o| o + 1),
                    high_watermark: s.high_watermark,
                    lag: s.high_watermark.map(|high| {
                        // Records not yet finished: from the first unfinished one (or the
                        // next to read) to the end of the partition.
                        let done = s
                            .offsets
                            .committable()
                            .or(s.committed)
                            .or(s.last_taken.map(|o| o + 1));
                        done.map_or(0, |d| (high - d).max(0))
                    }),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }
}

/// One assigned partition, as reported (also the admin API's view of it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records in flight.
    pub in_flight: usize,
    /// Last offset the broker confirmed committed.
    pub committed: Option<i64>,
    /// The next offset to read (the last taken + 1).
    pub position: Option<i64>,
    /// The partition's end as last seen.
    pub high_watermark: Option<i64>,
    /// Records between the first unfinished one and the end of the partition.
    pub lag: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn finishes_of_a_revoked_assignment_are_ignored() {
        let t = Tracker::new();
        let first = t.assign("a", 0);
        for o in 0..3 {
            t.track("a", 0, o).unwrap();
        }
        assert_eq!(t.in_flight(), 3);
        t.revoke("a", 0);
        assert!(first.revoked.load(Ordering::Acquire));
        assert_eq!(t.in_flight(), 0);
        let second = t.assign("a", 0);
        t.track("a", 0, 1).unwrap();
        // A late acknowledgement from the first assignment does not finish offset 1.
        t.finish_many(&first, [0, 1]);
        assert_eq!(t.in_flight(), 1);
        assert!(t.to_commit(false).is_empty());
        t.finish_many(&second, [1]);
        assert_eq!(t.to_commit(false), vec![(Arc::from("a"), 0, 2)]);
        assert!(t.to_commit(false).is_empty(), "already requested");
        assert_eq!(
            t.to_commit(true),
            vec![(Arc::from("a"), 0, 2)],
            "asked again"
        );
    }

    #[test]
    fn refused_commits_are_asked_again() {
        let t = Tracker::new();
        let h = t.assign("a", 1);
        t.track("a", 1, 5).unwrap();
        t.finish_many(&h, [5]);
        assert_eq!(t.to_commit(false), vec![(Arc::from("a"), 1, 6)]);
        t.commit_failed("a", 1);
        assert_eq!(t.to_commit(false), vec![(Arc::from("a"), 1, 6)]);
        t.commit_confirmed("a", 1, 6);
        assert!(t.to_commit(false).is_empty());
        assert_eq!(t.partitions()[0].committed, Some(6));
    }

    /// A commit counts as unconfirmed for long only while its confirmation is missing: a
    /// confirmation clears it, and so does a failure (the commit is sent again).
    #[test]
    fn a_commit_waits_for_confirmation_until_it_is_confirmed() {
        let t = Tracker::new();
        let h = t.assign("a", 0);
        t.track("a", 0, 0).unwrap();
        t.finish_many(&h, [0]);
        assert!(
            !t.has_commits_unconfirmed_for(Duration::ZERO),
            "nothing sent"
        );
        assert_eq!(t.to_commit(false).len(), 1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(t.has_commits_unconfirmed_for(Duration::ZERO));
        assert!(!t.has_commits_unconfirmed_for(Duration::from_secs(3600)));
        t.commit_confirmed("a", 0, 1);
        assert!(!t.has_commits_unconfirmed_for(Duration::ZERO));
        t.track("a", 0, 1).unwrap();
        t.finish_many(&h, [1]);
        assert_eq!(t.to_commit(false).len(), 1);
        t.commit_failed("a", 0);
        assert!(!t.has_commits_unconfirmed_for(Duration::ZERO));
    }

    #[test]
    fn a_revoked_handle_takes_no_record_and_finishes_none() {
        let t = Tracker::new();
        let h = t.assign("a", 0);
        assert!(t.track_on(&h, 0).taken());
        assert!(t.track_on(&h, 1).taken());
        t.revoke("a", 0);
        assert!(h.is_revoked());
        assert_eq!(t.in_flight(), 0, "revoking subtracts what was in flight");
        assert!(
            !t.track_on(&h, 2).taken(),
            "a cached handle of a revoked partition"
        );
        t.finish_many(&h, [0, 1]);
        assert_eq!(t.in_flight(), 0, "late finishes do not go below zero");
        assert!(t.handle("a", 0).is_none());
        let again = t.assign("a", 0);
        assert!(!Arc::ptr_eq(&again, &h));
        assert!(Arc::ptr_eq(&t.handle("a", 0).expect("assigned"), &again));
    }

    #[test]
    fn untracked_partitions_and_repeated_offsets_are_refused() {
        let t = Tracker::new();
        assert!(t.track("a", 0, 0).is_none());
        t.assign("a", 0);
        assert!(t.track("a", 0, 3).is_some());
        assert!(t.track("a", 0, 3).is_none());
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn offsets_skipped_after_the_expected_position_are_a_gap_reported_once() {
        let t = Tracker::new();
        let h = t.assign("a", 0);
        t.expect("a", 0, 5);
        assert_eq!(t.track_on(&h, 5), Tracked::Taken);
        assert_eq!(t.track_on(&h, 6), Tracked::Taken);
        assert_eq!(
            t.track_on(&h, 9),
            Tracked::AfterGap {
                expected: 7,
                first: true
            }
        );
        assert_eq!(t.track_on(&h, 10), Tracked::Taken);
        assert_eq!(
            t.track_on(&h, 20),
            Tracked::AfterGap {
                expected: 11,
                first: false
            }
        );
        // The first record after the committed offset.
        let h = t.assign("a", 1);
        t.expect("a", 1, 100);
        assert_eq!(
            t.track_on(&h, 150),
            Tracked::AfterGap {
                expected: 100,
                first: true
            }
        );
        // No committed offset: the first record sets the position.
        let h = t.assign("a", 2);
        assert_eq!(t.track_on(&h, 40), Tracked::Taken);
        assert_eq!(t.track_on(&h, 41), Tracked::Taken);
    }
}
