//! The bounded hot-path hand-off between the consumer and the workers.
//!
//! Not a ring buffer: a vector of bounded channels, one lane per worker ([`Ring`] holds the
//! senders, each worker its [`Lane`]). A partition always maps to the same lane, so records
//! of a partition are processed, and their outputs produced, in offset order.
//!
//! A push blocks exactly when the record's lane already holds its capacity of records that
//! its worker has not taken yet; it returns once the worker takes a batch. The pipeline
//! makes every lane `max_in_flight.min(LANE_CAPACITY)` records (`LANE_CAPACITY` is 16,384),
//! and the consumer, before every poll, pauses all partitions once `max_in_flight` records
//! are unfinished (waiting in a lane, in a worker, or waiting for the broker's
//! acknowledgement). So:
//!
//! - `max_in_flight` up to 16,384: a lane is as large as the pause limit and holds only
//!   unfinished records, so it cannot fill before the consumer pauses; a push does not block.
//! - above 16,384 (the default `max_in_flight` is 20,000): each lane holds 16,384 records,
//!   and a push blocks once 16,384 records wait in one lane, which happens before the pause
//!   when one worker has most of the unfinished records (a slow worker, a busy partition).

use crate::plugin::InputRecord;
use crate::source::tracker::PartitionHandle;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// A record and the partition assignment it came from.
#[derive(Debug)]
pub struct Job {
    /// Its partition assignment.
    pub handle: Arc<PartitionHandle>,
    /// The record.
    pub record: InputRecord,
    /// Why the record cannot be given to a plugin (a header key that is not UTF-8): it is
    /// dead-lettered with this reason instead.
    pub problem: Option<String>,
}

/// The lane of `partition` among `lanes` (see [`Ring::lane_of`]).
pub fn lane_for(partition: i32, lanes: usize) -> usize {
    (u64::from(partition.unsigned_abs()) % lanes.max(1) as u64) as usize
}

/// The consumer's end: the sender of every worker's lane.
pub struct Ring {
    lanes: Vec<SyncSender<Job>>,
}

/// A worker's end.
pub struct Lane {
    rx: Receiver<Job>,
}

/// The workers are gone (the pipeline is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the workers have stopped")]
pub struct Closed;

impl Ring {
    /// `workers` lanes of `capacity` records each.
    pub fn new(workers: usize, capacity: usize) -> (Ring, Vec<Lane>) {
        let (lanes, rxs) = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
                (tx, Lane { rx })
            })
            .unzip();
        (Ring { lanes }, rxs)
    }

    /// The worker a partition belongs to: partition N of every topic goes to worker
    /// N mod workers. Consecutive partitions go to consecutive workers, so a topic's
    /// partitions are spread evenly, and partition N of every source topic (one task of a
    /// stateful stage: its state and watermark) is always run by the same worker.
    pub fn lane_of(&self, _topic: &str, partition: i32) -> usize {
        lane_for(partition, self.lanes.len())
    }

    /// Hands a record to its partition's worker; blocks while that worker's lane is full.
    pub fn push(&self, job: Job) -> Result<(), Closed> {
        let lane = &self.lanes[self.lane_of(&job.handle.topic, job.handle.partition)];
        match lane.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => lane.send(job).map_err(|_| Closed),
            Err(TrySendError::Disconnected(_)) => Err(Closed),
        }
    }
}

/// What a worker gets from its lane.
#[derive(Debug)]
pub enum Next {
    /// Records to run, in arrival order.
    Batch(Vec<Job>),
    /// Nothing arrived within the idle tick (time to look for a new chain version).
    Idle,
    /// The ring was dropped and the lane is empty: the worker is done.
    Closed,
}

impl Lane {
    /// The next batch: waits up to `idle` for the first record, then takes what is queued,
    /// up to `max`, waiting at most `wait` for more.
    pub fn next_batch(&self, max: usize, wait: Duration, idle: Duration) -> Next {
        let first = match self.rx.recv_timeout(idle) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => return Next::Idle,
            Err(RecvTimeoutError::Disconnected) => return Next::Closed,
        };
        let mut batch = Vec::with_capacity(max.min(1024));
        batch.push(first);
        let deadline = Instant::now() + wait;
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if wait.is_zero() => break,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(job) => batch.push(job),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        Next::Batch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_partitions_are_spread_evenly_over_the_workers() {
        for workers in 1..=8 {
            let (ring, _lanes) = Ring::new(workers, 1);
            for topic in ["events", "sy1-in", "orders.v2", ""] {
                let mut per_lane = vec![0; workers];
                for partition in 0..(workers as i32 * 3) {
                    per_lane[ring.lane_of(topic, partition)] += 1;
                }
                assert!(
                    per_lane.iter().all(|&n| n == 3),
                    "{topic} on {workers} workers: {per_lane:?}"
                );
            }
        }
    }

    #[test]
    fn a_partition_always_goes_to_the_same_worker() {
        let (ring, _lanes) = Ring::new(4, 1);
        assert_eq!(ring.lane_of("events", 7), ring.lane_of("events", 7));
    }

    #[test]
    fn partition_n_of_every_topic_goes_to_the_same_worker() {
        let (ring, _lanes) = Ring::new(3, 1);
        for partition in 0..12 {
            assert_eq!(
                ring.lane_of("orders", partition),
                ring.lane_of("payments", partition)
            );
        }
    }
}
