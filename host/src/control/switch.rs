//! The live version of a pipeline's chain, and switching every worker to a new one.
//!
//! A reload ([`super::reload`]) publishes a new [`ActiveChain`] (a stage's plugin or config
//! changed); each worker notices the new generation at its next batch boundary (an idle
//! worker within [`IDLE_TICK`]), makes the new stage's instance, and acknowledges. The
//! publisher waits until every live worker has acknowledged, so the answer to an upload means
//! "every worker runs it". A batch is always run by exactly one version, start to finish.
//!
//! ```text
//! publish(gen n) --> worker 0: batch boundary -> update runner -> ack(n, ok)
//!                \-> worker 1: batch boundary -> update runner -> ack(n, ok)   => wait_for(n) = Ok
//! ```
//!
//! A worker that cannot make the new instance keeps running the old version and
//! acknowledges with the error; the publisher then publishes the old version again.

use crate::plugin::ChainSpec;
use crate::router::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an idle worker waits for a record before it looks for a new chain version.
pub const IDLE_TICK: Duration = Duration::from_millis(20);

/// One version of a pipeline's chain, with the router that stamps its versions on outputs.
#[derive(Clone)]
pub struct ActiveChain {
    /// Increases with every publish.
    pub generation: u64,
    /// The chain.
    pub spec: Arc<ChainSpec>,
    /// Its router (the provenance header names this chain's plugin versions).
    pub router: Router,
}

#[derive(Default)]
struct WorkerState {
    generation: u64,
    error: Option<String>,
    alive: bool,
}

struct State {
    active: Arc<ActiveChain>,
    workers: Vec<WorkerState>,
}

/// The live chain of one pipeline, shared by its workers and the admin API.
pub struct ChainControl {
    state: Mutex<State>,
    switched: Condvar,
    generation: AtomicU64,
    /// Held for a whole change (read the current chain, publish, wait, maybe put back), so
    /// two changes to different stages never build on the same chain and undo each other.
    changes: Mutex<()>,
}

/// Why not every worker switched.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SwitchError {
    /// A worker could not make the new version's instance.
    #[error("worker {worker} could not start the new version: {error}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// Why.
        error: String,
    },
    /// Not every worker reached a batch boundary in time.
    #[error("{pending} worker(s) had not switched after {waited:?}")]
    Timeout {
        /// How many had not.
        pending: usize,
        /// How long we waited.
        waited: Duration,
    },
}

impl ChainControl {
    /// Starts at generation 0 with `spec`.
    pub fn new(spec: Arc<ChainSpec>, router: Router) -> Arc<Self> {
        Arc::new(ChainControl {
            state: Mutex::new(State {
                active: Arc::new(ActiveChain {
                    generation: 0,
                    spec,
                    router,
                }),
                workers: Vec::new(),
            }),
            switched: Condvar::new(),
            generation: AtomicU64::new(0),
            changes: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a single assignment: a poisoned lock holds
        // consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serializes changes of this pipeline's chain: hold the guard from reading
    /// [`ChainControl::current`] to the end of the change.
    pub fn change(&self) -> MutexGuard<'_, ()> {
        // It guards no data, so a poisoned lock is as good as any.
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current generation (cheap: workers read it before every batch).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current version.
    pub fn current(&self) -> Arc<ActiveChain> {
        self.lock().active.clone()
    }

    /// Makes `spec` the current version; returns its generation. Workers pick it up at their
    /// next batch boundary; [`ChainControl::wait_for`] waits until they have.
    pub fn publish(&self, spec: Arc<ChainSpec>, router: Router) -> u64 {
        let mut state = self.lock();
        let generation = state.active.generation + 1;
        state.active = Arc::new(ActiveChain {
            generation,
            spec,
            router,
        });
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// A worker starts; returns its id. It runs the current version.
    pub fn register_worker(&self) -> (usize, Arc<ActiveChain>) {
        let mut state = self.lock();
        let active = state.active.clone();
        state.workers.push(WorkerState {
            generation: active.generation,
            error: None,
            alive: true,
        });
        (state.workers.len() - 1, active)
    }

    /// A worker stopped; nobody waits for it any more.
    pub fn worker_exited(&self, worker: usize) {
        if let Some(w) = self.lock().workers.get_mut(worker) {
            w.alive = false;
        }
        self.switched.notify_all();
    }

    /// A worker has dealt with `generation`: switched to it (`Ok`) or could not (`Err`).
    pub fn worker_switched(&self, worker: usize, generation: u64, result: Result<(), String>) {
        if let Some(w) = self.lock().workers.get_mut(worker) {
            w.generation = generation;
            w.error = result.err();
        }
        self.switched.notify_all();
    }

    /// How many workers are running.
    pub fn live_workers(&self) -> usize {
        self.lock().workers.iter().filter(|w| w.alive).count()
    }

    /// Waits until every live worker has dealt with `generation` (or a later one). The first
    /// worker error wins.
    pub fn wait_for(&self, generation: u64, timeout: Duration) -> Result<(), SwitchError> {
        let started = Instant::now();
        let mut state = self.lock();
        loop {
            let mut pending = 0;
            for (worker, w) in state.workers.iter().enumerate() {
                if !w.alive {
                    continue;
                }
                if w.generation < generation {
                    pending += 1;
                } else if w.generation == generation
                    && let Some(error) = &w.error
                {
                    return Err(SwitchError::Worker {
                        worker,
                        error: error.clone(),
                    });
                }
            }
            if pending == 0 {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(SwitchError::Timeout { pending, waited });
            }
            state = self
                .switched
                .wait_timeout(state, timeout - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
