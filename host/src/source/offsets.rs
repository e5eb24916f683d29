//! Which offset of a partition may be committed: the first one not yet finished.
//!
//! Records of a partition are taken in offset order but finish out of order (their outputs
//! are acknowledged by the broker whenever it answers). Committing offset `n` tells Kafka
//! "everything before `n` is done", so the tracker commits only up to the oldest record still
//! in flight: after a crash, at most the in-flight records are delivered again, and none is
//! skipped. Offsets may have gaps (compaction, transaction markers); a gap is never waited
//! for because only offsets actually handed out are tracked.

use std::collections::VecDeque;

/// In-flight records of one partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// Tracked offsets in increasing order, each with whether it has finished. The front is
    /// always unfinished (finished ones at the front are popped at once).
    in_flight: VecDeque<(i64, bool)>,
    /// One past the highest offset known finished, once any is.
    next_after_done: Option<i64>,
}

/// A tracker was used out of order: an offset tracked twice or backwards, or finished without
/// being tracked. A bug in the caller, reported rather than silently mis-committing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// `track` with an offset not above the last tracked one.
    #[error("offset {offset} tracked after {last}: offsets must increase")]
    NotIncreasing {
        /// The offending offset.
        offset: i64,
        /// The last one tracked.
        last: i64,
    },
    /// `finish` of an offset that is not in flight.
    #[error("offset {0} finished but it is not in flight")]
    NotInFlight(i64),
}

impl PartitionOffsets {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record at `offset` was taken from the partition.
    pub fn track(&mut self, offset: i64) -> Result<(), OffsetError> {
        let last = self
            .in_flight
            .back()
            .map(|(o, _)| *o)
            .or(self.next_after_done.map(|n| n - 1));
        if let Some(last) = last
            && offset <= last
        {
            return Err(OffsetError::NotIncreasing { offset, last });
        }
        self.in_flight.push_back((offset, false));
        Ok(())
    }

    /// Every output of the record at `offset` was acknowledged (or it produced none).
    pub fn finish(&mut self, offset: i64) -> Result<(), OffsetError> {
        let index = self
            .in_flight
            .binary_search_by_key(&offset, |(o, _)| *o)
            .map_err(|_| OffsetError::NotInFlight(offset))?;
        let entry = &mut self.in_flight[index];
        if entry.1 {
            return Err(OffsetError::NotInFlight(offset));
        }
        entry.1 = true;
        while let Some(&(front, true)) = self.in_flight.front() {
            self.next_after_done = Some(front + 1);
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// The offset to commit now (the next one to consume after a restart), or `None` when
    /// nothing has finished since tracking began.
    pub fn committable(&self) -> Option<i64> {
        match self.in_flight.front() {
            Some(&(oldest, _)) => self.next_after_done.map(|_| oldest),
            None => self.next_after_done,
        }
    }

    /// How many records are in flight (finished ones behind an unfinished one included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|(_, done)| !done).count()
    }

    /// Whether no record is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_up_to_the_oldest_unfinished_record() {
        let mut p = PartitionOffsets::new();
        for o in [10, 11, 12, 15] {
            p.track(o).unwrap();
        }
        assert_eq!(p.committable(), None);
        p.finish(11).unwrap();
        assert_eq!(p.committable(), None, "10 is still in flight");
        p.finish(10).unwrap();
        assert_eq!(p.committable(), Some(12));
        p.finish(15).unwrap();
        assert_eq!(p.committable(), Some(12));
        assert_eq!(p.in_flight(), 1);
        p.finish(12).unwrap();
        assert_eq!(
            p.committable(),
            Some(16),
            "the gap 13..15 is not waited for"
        );
        assert!(p.is_idle());
    }

    #[test]
    fn misuse_is_an_error_not_a_wrong_commit() {
        let mut p = PartitionOffsets::new();
        p.track(5).unwrap();
        assert_eq!(
            p.track(5),
            Err(OffsetError::NotIncreasing { offset: 5, last: 5 })
        );
        assert_eq!(p.finish(6), Err(OffsetError::NotInFlight(6)));
        p.finish(5).unwrap();
        assert_eq!(p.finish(5), Err(OffsetError::NotInFlight(5)));
        assert_eq!(
            p.track(4),
            Err(OffsetError::NotIncreasing { offset: 4, last: 5 })
        );
        assert_eq!(p.committable(), Some(6));
    }

    proptest! {
        /// Whatever the gaps and the order records finish in, the committed offset never
        /// passes an unfinished record, and it reaches one past the last when all finish.
        #[test]
        fn never_commits_past_an_unfinished_record(
            gaps in prop::collection::vec(1i64..5, 1..200),
            seed in any::<u64>(),
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in &gaps {
                o += g;
                offsets.push(o);
            }
            let mut p = PartitionOffsets::new();
            for &o in &offsets {
                p.track(o).unwrap();
            }
            // A deterministic shuffle of the finishing order.
            let mut pending = offsets.clone();
            let mut state = seed | 1;
            let mut finished = std::collections::BTreeSet::new();
            while !pending.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % pending.len() as u64) as usize;
                let o = pending.swap_remove(i);
                p.finish(o).unwrap();
                finished.insert(o);
                if let Some(c) = p.committable() {
                    for &u in &offsets {
                        if !finished.contains(&u) {
                            prop_assert!(c <= u, "committed {} past unfinished {}", c, u);
                        }
                    }
                    prop_assert!(offsets.iter().any(|&t| t < c && finished.contains(&t)));
                }
            }
            prop_assert_eq!(p.committable(), Some(*offsets.last().unwrap() + 1));
        }
    }
}
