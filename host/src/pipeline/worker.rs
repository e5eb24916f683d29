//! One worker thread of a pipeline: takes batches from its lane of the ring, runs the plugin
//! chain over each partition's records (in offset order), routes the deliveries and hands
//! them to the producer. At a batch boundary it moves to a newly published chain version.

use crate::control::{ChainControl, IDLE_TICK};
use crate::kafka::now_ms;
use crate::metrics::PipelineMetrics;
use crate::plugin::{ChainRunner, Destination, InputRecord};
use crate::ring::{Lane, Next};
use crate::router::{Router, Source};
use crate::sink::{Pending, Sink, SourceRecord, Ticket};
use crate::source::tracker::{InFlight, PartitionHandle};
use crate::status::{PipelineCounters, PipelineStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One worker thread: runs the chain over its lane's batches and hands the outputs to the
/// producer.
pub(super) struct Worker {
    pub(super) id: usize,
    /// The chain version this worker runs.
    pub(super) generation: u64,
    pub(super) control: Arc<ChainControl>,
    pub(super) lane: Lane,
    pub(super) runner: ChainRunner,
    pub(super) router: Router,
    pub(super) sink: Sink,
    pub(super) status: Arc<PipelineStatus>,
    pub(super) metrics: PipelineMetrics,
    pub(super) batch_size: usize,
    pub(super) batch_wait: Duration,
    /// Stateful chains: per task, the partition and offset of the last record run, for the
    /// outputs of wall-clock timers.
    pub(super) tasks: HashMap<i32, (Arc<PartitionHandle>, i64)>,
    /// When wall-clock timers were last looked at.
    pub(super) timers_checked: Instant,
}

/// How often a stateful worker looks for due wall-clock timers.
const WALL_CLOCK_TICK: Duration = Duration::from_millis(100);

impl Worker {
    pub(super) fn run(mut self) {
        loop {
            let next = self
                .lane
                .next_batch(self.batch_size, self.batch_wait, IDLE_TICK);
            // A batch boundary: the batch about to run is run wholly by one version.
            if self.control.generation() != self.generation {
                self.switch();
            }
            if self.timers_checked.elapsed() >= WALL_CLOCK_TICK {
                self.timers_checked = Instant::now();
                self.fire_wall_clock();
            }
            let jobs = match next {
                Next::Batch(jobs) => jobs,
                Next::Idle => continue,
                Next::Closed => break,
            };
            // Records of several partitions, each partition's in offset order.
            let mut groups: Vec<(Arc<PartitionHandle>, Vec<InputRecord>)> = Vec::new();
            for job in jobs {
                if let Some(problem) = job.problem {
                    self.reject(job.handle, job.record, problem);
                    continue;
                }
                match groups.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &job.handle)) {
                    Some((_, records)) => records.push(job.record),
                    None => groups.push((job.handle, vec![job.record])),
                }
            }
            for (handle, records) in groups {
                self.run_group(handle, records);
            }
        }
        self.control.worker_exited(self.id);
    }

    /// Moves to the current chain version. On failure the worker keeps the version it has
    /// (the publisher then puts that one back).
    fn switch(&mut self) {
        let active = self.control.current();
        let result = self
            .runner
            .update(active.spec.clone())
            .map(|()| self.router = active.router.clone())
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(
                pipeline = %active.spec.pipeline(), worker = self.id, error = %e,
                "Cannot switch to the new chain version; keeping the old one."
            );
        }
        self.generation = active.generation;
        self.control
            .worker_switched(self.id, active.generation, result);
    }

    /// Fires the wall-clock timers due now; their outputs wait for no source record.
    fn fire_wall_clock(&mut self) {
        if self.tasks.is_empty() || self.status.health.fatal().is_some() {
            return;
        }
        self.tasks.retain(|_, (handle, _)| !handle.is_revoked());
        let tasks = &self.tasks;
        let fired = self.runner.fire_wall_clock(
            |task| {
                tasks
                    .get(&task)
                    .map(|(h, offset)| (h.topic.to_string(), *offset))
            },
            now_ms(),
        );
        let fired = match fired {
            Ok(fired) => fired,
            Err(e) => {
                self.status.health.fail(e.to_string());
                return;
            }
        };
        let now = now_ms();
        for (task, deliveries) in fired {
            let Some((handle, offset)) = self.tasks.get(&task).cloned() else {
                continue;
            };
            let source = Source {
                topic: &handle.topic,
                partition: handle.partition,
            };
            for delivery in deliveries {
                let route = match &delivery.destination {
                    Destination::Route { route, .. } => Some(*route),
                    Destination::DeadLetter(dead) => {
                        self.metrics
                            .dead_lettered(&dead.stage_name, dead.error.kind.as_str());
                        None
                    }
                };
                let owner = SourceRecord::Timer(InFlight {
                    handle: handle.clone(),
                    offset,
                });
                let (out, provenance) = self.router.route_apart(source, delivery.destination, now);
                self.sink.send(out, provenance, Ticket::new(owner, route));
            }
        }
    }

    /// Dead-letters a record no plugin can be given (kind `bad-input`).
    fn reject(&mut self, handle: Arc<PartitionHandle>, record: InputRecord, problem: String) {
        if handle.revoked.load(Ordering::Acquire) || self.status.health.fatal().is_some() {
            return;
        }
        tracing::warn!(
            pipeline = %self.router.pipeline(), topic = %handle.topic, partition = handle.partition,
            offset = record.offset, reason = %problem, "Record cannot be read; dead-lettering it."
        );
        self.metrics.dead_lettered("", crate::router::BAD_INPUT);
        let source = Source {
            topic: &handle.topic,
            partition: handle.partition,
        };
        let owner = SourceRecord::Only(InFlight {
            handle: handle.clone(),
            offset: record.offset,
        });
        let out = self.router.unreadable(source, record, problem, now_ms());
        self.sink.send(out, &[], Ticket::new(owner, None));
    }

    fn run_group(&mut self, handle: Arc<PartitionHandle>, records: Vec<InputRecord>) {
        // A revoked partition's records belong to its next owner; a failed pipeline's stay
        // unfinished so they are never committed past.
        if handle.revoked.load(Ordering::Acquire) || self.status.health.fatal().is_some() {
            return;
        }
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        if self.runner.spec().is_stateful()
            && let Some(&last) = offsets.last()
        {
            self.tasks.insert(handle.partition, (handle.clone(), last));
        }
        let deliveries = match self
            .runner
            .process(&handle.topic, handle.partition, records)
        {
            Ok(d) => d,
            Err(e) => {
                self.status.health.fail(e.to_string());
                return;
            }
        };
        let mut writes = vec![0u32; offsets.len()];
        for d in &deliveries {
            if let Some(w) = writes.get_mut(d.source) {
                *w += 1;
            }
        }
        let dropped: Vec<i64> = offsets
            .iter()
            .zip(&writes)
            .filter(|(_, w)| **w == 0)
            .map(|(o, _)| *o)
            .collect();
        if !dropped.is_empty() {
            PipelineCounters::add(&self.status.counters.dropped, dropped.len() as u64);
            self.metrics.records_dropped.inc_by(dropped.len() as u64);
            self.status.tracker.finish_many(&handle, dropped);
        }
        // A shared count only for records with several writes.
        let shared: Vec<Option<Arc<Pending>>> = offsets
            .iter()
            .zip(&writes)
            .map(|(offset, w)| (*w > 1).then(|| Pending::new(handle.clone(), *offset, *w)))
            .collect();
        let now = now_ms();
        let source = Source {
            topic: &handle.topic,
            partition: handle.partition,
        };
        for delivery in deliveries {
            let owner = match (shared.get(delivery.source), offsets.get(delivery.source)) {
                (Some(Some(pending)), _) => SourceRecord::Shared(pending.clone()),
                (Some(None), Some(&offset)) => SourceRecord::Only(InFlight {
                    handle: handle.clone(),
                    offset,
                }),
                // A delivery always names a record of its batch.
                _ => continue,
            };
            let route = match &delivery.destination {
                Destination::Route { route, .. } => Some(*route),
                Destination::DeadLetter(dead) => {
                    self.metrics
                        .dead_lettered(&dead.stage_name, dead.error.kind.as_str());
                    None
                }
            };
            let (out, provenance) = self.router.route_apart(source, delivery.destination, now);
            let ticket = Ticket::new(owner, route);
            self.sink.send(out, provenance, ticket);
        }
    }
}
