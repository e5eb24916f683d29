//! One worker thread of a pipeline: takes batches from its lane of the ring, runs the plugin
//! chain over each partition's records (in offset order), routes the deliveries and hands
//! them to the producer. At a batch boundary it moves to a newly published chain version.

use crate::changelog::{self, Changelog, Marker, RestoreRegistry};
use crate::control::{ChainControl, IDLE_TICK};
use crate::kafka::now_ms;
use crate::metrics::PipelineMetrics;
use crate::plugin::{ChainRunner, Destination, InputRecord};
use crate::ring::{Lane, Next};
use crate::router::{Router, Source};
use crate::sink::{Pending, Sink, SourceRecord, Ticket};
use crate::source::tracker::{InFlight, PartitionHandle};
use crate::status::{PipelineCounters, PipelineStatus};
use std::collections::{BTreeMap, HashMap};
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
    /// Stateful pipelines: the changelog writer and the tasks restored on assignment.
    pub(super) durable: Option<Durable>,
}

/// A stateful worker's part in making state durable.
pub(super) struct Durable {
    /// This worker's lane and the number of lanes: the tasks it runs.
    pub(super) lane: (usize, usize),
    pub(super) log: Arc<Changelog>,
    pub(super) registry: Arc<RestoreRegistry>,
    /// Per task, the epoch of the restored state installed.
    pub(super) installed: HashMap<i32, u64>,
    /// Per task, per source partition: the offset after the last record run.
    pub(super) positions: HashMap<i32, BTreeMap<(String, i32), i64>>,
    /// Per source partition: records below this offset were run before a restart; their
    /// effects are in the restored state and their outputs were written.
    pub(super) skip: HashMap<(String, i32), i64>,
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
        // The runner reset the tasks it runs; the registry resets those restored and not
        // taken yet (by this worker or another).
        if let (Ok(()), Some(stage), Some(durable)) =
            (&result, active.spec.reset(), self.durable.as_ref())
        {
            durable.registry.reset_stage(stage);
        }
        self.generation = active.generation;
        self.control
            .worker_switched(self.id, active.generation, result);
    }

    /// Fires the wall-clock timers due now; their outputs wait for no source record.
    fn fire_wall_clock(&mut self) {
        self.adopt_restored();
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
            if self.durable.is_some() {
                let first = InFlight {
                    handle: handle.clone(),
                    offset,
                };
                self.send_gated(task, deliveries, Vec::new(), first, &handle);
                continue;
            }
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

    /// Installs `task`'s restored state if the registry holds one newer than the installed
    /// one (records below the source positions it covers are then skipped); whether it did.
    fn install_newer(&mut self, task: i32) -> bool {
        let Some(durable) = self.durable.as_mut() else {
            return false;
        };
        let installed = durable.installed.get(&task).copied().unwrap_or(0);
        let Some((epoch, restored)) = durable.registry.take_newer(task, installed) else {
            return false;
        };
        durable.log.reset_task(task);
        let positions: BTreeMap<(String, i32), i64> = restored
            .marker
            .iter()
            .flat_map(|m| m.positions.iter())
            .map(|(t, p, o)| ((t.clone(), *p), *o))
            .collect();
        for (place, offset) in &positions {
            durable.skip.insert(place.clone(), *offset);
        }
        tracing::info!(
            pipeline = %self.router.pipeline(), task, epoch, positions = ?positions,
            "Task state installed."
        );
        durable.positions.insert(task, positions);
        durable.installed.insert(task, epoch);
        self.runner.install_task(task, restored);
        true
    }

    /// Installs the restored state of this worker's tasks that no record has reached since
    /// their assignment, so that their wall-clock timers fire while their partitions stay
    /// quiet (after a restart or a rebalance).
    fn adopt_restored(&mut self) {
        let Some(durable) = self.durable.as_ref() else {
            return;
        };
        let (lane, lanes) = durable.lane;
        for (task, positions) in durable.registry.waiting() {
            if crate::ring::lane_for(task, lanes) != lane {
                continue;
            }
            // Its timer outputs name the last record the state holds, of a source partition
            // assigned here (the consumer restores a task's state before it registers the
            // task's partitions: until then, the next tick tries again).
            let owned = positions.iter().find_map(|(topic, partition, next)| {
                let handle = self.status.tracker.handle(topic, *partition)?;
                (!handle.is_revoked()).then(|| (handle, next - 1))
            });
            if let Some(owned) = owned
                && self.install_newer(task)
            {
                self.tasks.insert(task, owned);
            }
        }
    }

    /// A stateful pipeline's group: installs the task's restored state on a new assignment,
    /// skips records whose effects the state already holds, and hands the outputs to the
    /// changelog's gate: the batch's changelog records are written once its outputs are
    /// acknowledged, and its source records finish once those are.
    fn run_group_durably(&mut self, handle: Arc<PartitionHandle>, mut records: Vec<InputRecord>) {
        let task = handle.partition;
        self.install_newer(task);
        let Some(durable) = self.durable.as_mut() else {
            return;
        };
        let place = (handle.topic.to_string(), handle.partition);
        if let Some(&below) = durable.skip.get(&place) {
            let done: Vec<i64> = records
                .iter()
                .map(|r| r.offset)
                .filter(|o| *o < below)
                .collect();
            if !done.is_empty() {
                tracing::info!(
                    pipeline = %self.router.pipeline(), task, below, skipped = done.len(),
                    first = done[0], "Records the restored state already holds skipped."
                );
                records.retain(|r| r.offset >= below);
                self.status.tracker.finish_many(&handle, done);
            }
            if records.is_empty() {
                return;
            }
            durable.skip.remove(&place);
        }
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        let Some(&last) = offsets.last() else {
            return;
        };
        self.tasks.insert(task, (handle.clone(), last));
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
        let mut written = vec![false; offsets.len()];
        for d in &deliveries {
            if let Some(w) = written.get_mut(d.source) {
                *w = true;
            }
        }
        let dropped = written.iter().filter(|w| !**w).count() as u64;
        if dropped > 0 {
            PipelineCounters::add(&self.status.counters.dropped, dropped);
            self.metrics.records_dropped.inc_by(dropped);
        }
        let Some(durable) = self.durable.as_mut() else {
            return;
        };
        durable
            .registry
            .note_batch(task, self.runner.watermark(task), self.runner.take_late());
        durable
            .positions
            .entry(task)
            .or_default()
            .insert(place, last + 1);
        let first = InFlight {
            handle: handle.clone(),
            offset: offsets[0],
        };
        let finish = vec![(handle.clone(), offsets)];
        self.send_gated(task, deliveries, finish, first, &handle);
    }

    /// Queues a stateful batch's changelog records behind its outputs, then sends them.
    fn send_gated(
        &mut self,
        task: i32,
        deliveries: Vec<crate::plugin::Delivery>,
        finish: Vec<(Arc<PartitionHandle>, Vec<i64>)>,
        first: InFlight,
        handle: &PartitionHandle,
    ) {
        let Some(durable) = self.durable.as_ref() else {
            return;
        };
        let changes = self.runner.take_changes(task);
        let marker = Marker {
            batch: durable.log.next_batch(),
            positions: durable
                .positions
                .get(&task)
                .map(|p| p.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect())
                .unwrap_or_default(),
            watermark: self.runner.watermark(task),
        };
        let records = changelog::encode(&changes, &marker);
        let outputs = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        let gated = durable.log.submit(task, outputs, records, finish, first);
        let now = now_ms();
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
            let (out, provenance) = self.router.route_apart(source, delivery.destination, now);
            let ticket = Ticket::new(SourceRecord::Gated(gated.clone()), route);
            self.sink.send(out, provenance, ticket);
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
        if self.durable.is_some() {
            self.run_group_durably(handle, records);
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
