//! What a running pipeline shares with whoever watches it (the admin API, `/metrics`, tests):
//! its offset tracker, its health and its running totals. The consumer, the workers and the
//! producer write to it; nothing here does I/O.

use crate::source::tracker::Tracker;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A running pipeline's shared state.
#[derive(Debug, Default)]
pub struct PipelineStatus {
    /// Every assigned partition's in-flight records and commit position.
    pub tracker: Arc<Tracker>,
    /// Whether it can make progress.
    pub health: Arc<Health>,
    /// Running totals.
    pub counters: Arc<PipelineCounters>,
}

/// A pipeline's running totals.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Records taken from Kafka.
    pub consumed: AtomicU64,
    /// Records the chain dropped (no output).
    pub dropped: AtomicU64,
    /// Outputs acknowledged by the broker on a route topic.
    pub routed: AtomicU64,
    /// Dead-letter records acknowledged by the broker.
    pub dead_lettered: AtomicU64,
    /// Outputs the broker refused for good, dead-lettered instead.
    pub undeliverable: AtomicU64,
    /// Produce attempts that failed and were retried.
    pub produce_retries: AtomicU64,
}

impl PipelineCounters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reports.
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            consumed: g(&self.consumed),
            dropped: g(&self.dropped),
            routed: g(&self.routed),
            dead_lettered: g(&self.dead_lettered),
            undeliverable: g(&self.undeliverable),
            produce_retries: g(&self.produce_retries),
        }
    }
}

/// A copy of [`PipelineCounters`] (also the admin API's view of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    /// Records taken from Kafka.
    pub consumed: u64,
    /// Records the chain dropped.
    pub dropped: u64,
    /// Outputs acknowledged on route topics.
    pub routed: u64,
    /// Dead-letter records acknowledged.
    pub dead_lettered: u64,
    /// Outputs refused by the broker and dead-lettered.
    pub undeliverable: u64,
    /// Produce attempts retried.
    pub produce_retries: u64,
}

/// Whether a pipeline can make progress.
#[derive(Debug, Default)]
pub struct Health {
    /// A dead-letter write failed and has not yet succeeded again. While set, no offset is
    /// committed: a record that cannot be dead-lettered must be read again.
    pub dead_letter_failing: AtomicBool,
    /// Why the pipeline cannot go on (a stage that cannot be instantiated, a fatal producer
    /// error). Once set, the pipeline stops without committing past the affected records.
    fatal: Mutex<Option<String>>,
}

impl Health {
    /// Records a fatal error; the first one wins.
    pub fn fail(&self, why: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            tracing::error!(error = %why, "Pipeline cannot go on; stopping without committing past it.");
            *fatal = Some(why);
        }
    }

    /// The fatal error, if any.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether records flow and every write works.
    pub fn is_healthy(&self) -> bool {
        !self.dead_letter_failing.load(Ordering::Acquire) && self.fatal().is_none()
    }
}

/// A request to stop, shared by the pipelines and whoever runs them: the hot path reads it
/// with one atomic load; async code (signal handling) can wait for it.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Stop {
    /// Asks every pipeline to drain and stop. Idempotent.
    pub fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Completes once a stop is asked for.
    pub async fn requested(&self) {
        loop {
            // Created before the check: a `Notified` receives `notify_waiters` from creation.
            let notified = self.changed.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}
