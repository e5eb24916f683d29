//! Runs a pipeline's chain of stages over one batch, and isolates misbehaving records.
//!
//! Every surviving record of stage k is an input of stage k+1, carrying the route chosen so
//! far; after the last stage each record goes to its route, or to the default route.
//!
//! Isolation: when a call into a stage fails (trap, timeout, memory cap) or returns verdicts
//! the host refuses (wrong count, undeclared route, too much output), the instance is
//! dropped and the batch is re-run one record at a time on fresh instances. Only the records
//! that fail on their own are dead-lettered, each with its error kind and message; the rest
//! go on exactly as if nothing had happened. Nothing is lost: every input record ends as
//! outputs, dead letters, or a deliberate drop.
//!
//! This module owns the [`ChainRunner`]: its warm instances, updates between chain
//! versions, calls and the isolation above. What a chain is made of is in
//! [`spec`](super::spec); what a run reports is in `outcome`; how one verdict is checked
//! and carried out is in `verdict`.

mod outcome;
pub mod stateful;
mod verdict;

pub use outcome::{DeadLetter, Delivery, Destination, StageStats, StageTrace, TraceOutcome};

use super::bindings::{InputRecord, RecordBatch, Verdict};
use super::engine::PluginEngine;
use super::error::{LoadError, RecordError};
use super::host_api::{HostServices, Tags};
use super::instance::{InstanceSetup, StageInstance};
use super::lift::OutputLimits;
use super::spec::{ChainSpec, StageSpec};
use super::state::{StageState, TaskState};
use super::time::TaskClock;
use stateful::BatchTime;
use std::collections::HashMap;
use std::sync::Arc;
use verdict::{Meta, Survivors, apply, check_verdicts, dead_letter};

struct StageSlot {
    spec: StageSpec,
    setup: InstanceSetup,
    instance: Option<StageInstance>,
    stats: StageStats,
    /// What the stage did with each record, when tracing (dry runs).
    trace: Option<Vec<StageTrace>>,
    /// A stateful stage's usage and limits (shared by every worker).
    state: Option<Arc<StageState>>,
    /// A stateful stage's state, per task (source partition number).
    tasks: HashMap<i32, TaskState>,
}

/// Called after every plugin call with the stage's index and the call's duration.
pub type CallObserver = Box<dyn FnMut(usize, std::time::Duration) + Send>;

/// One worker's instances of a chain. Not shared: each worker thread owns its own runner.
pub struct ChainRunner {
    engine: Arc<PluginEngine>,
    spec: Arc<ChainSpec>,
    services: HostServices,
    stages: Vec<StageSlot>,
    observer: Option<CallObserver>,
    /// Per task, its watermark (stateful chains only).
    clocks: HashMap<i32, TaskClock>,
    /// Records flagged late since [`ChainRunner::take_late`] last ran.
    late: u64,
}

/// A chain could not run at all: a stage could not even be instantiated. Records of the
/// batch are not lost (the caller still owns nothing has been produced for them).
#[derive(Debug, thiserror::Error)]
#[error("pipeline {pipeline}, stage {stage}: {error}")]
pub struct StageLoadError {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// Why. Part of this error's own message, so not also its `source` (which would print
    /// the reason twice in an error chain).
    pub error: LoadError,
}

impl ChainRunner {
    /// Makes a warm instance of every stage and calls its `init`.
    pub fn new(
        engine: Arc<PluginEngine>,
        spec: Arc<ChainSpec>,
        services: HostServices,
    ) -> Result<Self, StageLoadError> {
        let mut stages = Vec::with_capacity(spec.stages.len());
        for stage in &spec.stages {
            stages.push(StageSlot::new(&engine, &spec, stage, &services)?);
        }
        Ok(ChainRunner {
            engine,
            spec,
            services,
            stages,
            observer: None,
            clocks: HashMap::new(),
            late: 0,
        })
    }

    /// Switches to another version of the chain (same pipeline, a stage's plugin or config
    /// changed): stages whose plugin, config and limits are unchanged keep their warm
    /// instance and counts; the others get a fresh instance, whose `init` runs now. All or
    /// nothing: if any new instance cannot be made, the runner is left as it was.
    pub fn update(&mut self, spec: Arc<ChainSpec>) -> Result<(), StageLoadError> {
        let mut fresh: Vec<Option<StageSlot>> = Vec::with_capacity(spec.stages.len());
        for stage in &spec.stages {
            let same = self.stages.iter().any(|old| same_stage(&old.spec, stage));
            fresh.push(if same {
                None
            } else {
                Some(StageSlot::new(&self.engine, &spec, stage, &self.services)?)
            });
        }
        let mut old: Vec<Option<StageSlot>> = self.stages.drain(..).map(Some).collect();
        for (stage, new) in spec.stages.iter().zip(fresh) {
            let slot = match new {
                Some(mut slot) => {
                    // The stage keeps its counts across versions.
                    if let Some(prev) = old
                        .iter_mut()
                        .find(|o| o.as_ref().is_some_and(|o| o.spec.name == stage.name))
                        .and_then(Option::take)
                    {
                        slot.stats = prev.stats;
                        slot.trace = prev.trace.map(|_| Vec::new());
                        // A new version reads what the old one wrote.
                        slot.tasks = prev.tasks;
                    }
                    slot
                }
                None => old
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|o| same_stage(&o.spec, stage)))
                    .and_then(Option::take)
                    .ok_or_else(|| StageLoadError {
                        pipeline: spec.pipeline.clone(),
                        stage: stage.name.clone(),
                        error: LoadError::Instantiate("stage vanished during an update".into()),
                    })?,
            };
            self.stages.push(slot);
        }
        if let Some(reset) = &spec.reset {
            for slot in self.stages.iter_mut().filter(|s| &s.spec.name == reset) {
                if let Some(usage) = &slot.state {
                    // Every key and timer becomes a deletion in the next changelog batch.
                    for task in slot.tasks.values_mut() {
                        task.clear(usage);
                    }
                }
            }
        }
        self.spec = spec;
        Ok(())
    }

    /// Records what every stage does with every record from now on (see
    /// [`ChainRunner::take_trace`]); for dry runs, not the hot path.
    pub fn set_tracing(&mut self, on: bool) {
        for slot in &mut self.stages {
            slot.trace = on.then(Vec::new);
        }
    }

    /// What the stages did since tracing was switched on or last taken, in stage order.
    pub fn take_trace(&mut self) -> Vec<StageTrace> {
        self.stages
            .iter_mut()
            .filter_map(|s| s.trace.as_mut().map(std::mem::take))
            .flatten()
            .collect()
    }

    /// Calls `observer` after every plugin call (metrics).
    pub fn observe_calls(&mut self, observer: CallObserver) {
        self.observer = Some(observer);
    }

    /// The chain this runner runs.
    pub fn spec(&self) -> &Arc<ChainSpec> {
        &self.spec
    }

    /// Cumulative counts per stage, in stage order.
    pub fn stats(&self) -> Vec<StageStats> {
        self.stages.iter().map(|s| s.stats.clone()).collect()
    }

    /// Runs every stage over `records` (all from `topic`/`partition`, in offset order).
    /// Returns every delivery, ordered by source record and, within one source record, in
    /// the order the plugins produced them. A source record with no delivery was dropped.
    pub fn process(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<InputRecord>,
    ) -> Result<Vec<Delivery>, StageLoadError> {
        let time = self.batch_time(topic, partition, &records);
        let last = records.last().map(|r| (records.len() - 1, r.offset));
        let mut deliveries = Vec::new();
        let mut survivors = Survivors {
            meta: (0..records.len())
                .map(|source| Meta {
                    source,
                    route: None,
                })
                .collect(),
            records,
        };
        for index in 0..self.stages.len() {
            if survivors.records.is_empty() {
                break;
            }
            survivors =
                self.run_stage(index, topic, partition, survivors, &time, &mut deliveries)?;
        }
        // Dead letters were added as they happened; the survivors come after them.
        let needs_sort = !deliveries.is_empty();
        let default_route = self.spec.default_route;
        deliveries.reserve(survivors.records.len());
        deliveries.extend(survivors.meta.into_iter().zip(survivors.records).map(
            |(meta, record)| Delivery {
                source: meta.source,
                destination: Destination::Route {
                    route: meta.route.unwrap_or(default_route),
                    record,
                },
            },
        ));
        if needs_sort {
            // Stable: keeps the plugins' order within one source record.
            deliveries.sort_by_key(|d| d.source);
        }
        // Event-time timers the batch made due; their outputs belong to its last record.
        if let (Some(time), Some((source, offset))) = (&time, last) {
            let watermark = self.clocks.get(&partition).and_then(TaskClock::watermark);
            if let Some(watermark) = watermark {
                let origin = stateful::Origin {
                    topic,
                    task: time.task,
                    source,
                    offset,
                };
                self.fire(
                    &origin,
                    super::state::Domain::EventTime,
                    watermark,
                    Some(watermark),
                    &mut deliveries,
                )?;
            }
        }
        Ok(deliveries)
    }

    fn run_stage(
        &mut self,
        index: usize,
        topic: &str,
        partition: i32,
        inputs: Survivors,
        time: &Option<BatchTime>,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<Survivors, StageLoadError> {
        let spec = Arc::clone(&self.spec);
        let engine = Arc::clone(&self.engine);
        let observer = &mut self.observer;
        let slot = &mut self.stages[index];
        slot.stats.records_in += inputs.records.len() as u64;
        let Survivors { meta, records } = inputs;
        let mut batch = RecordBatch {
            topic: topic.to_owned(),
            partition,
            records,
        };

        let mut out = Survivors::with_capacity(meta.len());
        let longest_route = spec.routes.iter().map(String::len).max().unwrap_or(0);
        let started = observer.as_ref().map(|_| std::time::Instant::now());
        let verdicts = slot.call(&engine, &mut batch, &meta, time, longest_route)?;
        if let (Some(observe), Some(started)) = (observer.as_mut(), started) {
            observe(index, started.elapsed());
        }
        let verdicts = verdicts.and_then(|verdicts| {
            check_verdicts(&verdicts, batch.records.len(), &spec, &slot.spec.limits)?;
            Ok(verdicts)
        });
        match verdicts {
            Ok(verdicts) => {
                for ((verdict, record), meta) in verdicts.into_iter().zip(batch.records).zip(meta) {
                    apply(
                        slot, index, &spec, verdict, meta, record, &mut out, deliveries,
                    );
                }
            }
            Err(error) if batch.records.len() == 1 => {
                slot.instance = None;
                let source = meta[0].source;
                let record = batch.records.remove(0);
                dead_letter(slot, index, source, error, record, deliveries);
            }
            Err(error) => {
                slot.instance = None;
                slot.stats.isolations += 1;
                tracing::warn!(
                    pipeline = %spec.pipeline,
                    stage = %slot.spec.name,
                    records = batch.records.len(),
                    error = %error,
                    "Plugin call failed; re-running the batch one record at a time."
                );
                let RecordBatch { topic, records, .. } = batch;
                let mut single = RecordBatch {
                    topic,
                    partition,
                    records: Vec::with_capacity(1),
                };
                for (record, meta) in records.into_iter().zip(meta) {
                    single.records.push(record);
                    let one = std::slice::from_ref(&meta);
                    let verdict = slot
                        .call(&engine, &mut single, one, time, longest_route)?
                        .and_then(|mut verdicts| {
                            check_verdicts(&verdicts, 1, &spec, &slot.spec.limits)?;
                            verdicts
                                .pop()
                                .ok_or_else(|| RecordError::bad_output("no verdict"))
                        });
                    // The call only borrowed the batch: the record is still its one element.
                    let record = single.records.swap_remove(0);
                    match verdict {
                        Ok(verdict) => apply(
                            slot, index, &spec, verdict, meta, record, &mut out, deliveries,
                        ),
                        Err(error) => {
                            slot.instance = None;
                            dead_letter(slot, index, meta.source, error, record, deliveries);
                        }
                    }
                }
            }
        }
        slot.stats.records_out += out.records.len() as u64;
        Ok(out)
    }
}

/// Same plugin, config and limits: an update need not touch the stage.
fn same_stage(a: &StageSpec, b: &StageSpec) -> bool {
    a.name == b.name
        && a.module.version == b.module.version
        && a.config == b.config
        && a.limits == b.limits
}

impl StageSlot {
    fn new(
        engine: &PluginEngine,
        spec: &ChainSpec,
        stage: &StageSpec,
        services: &HostServices,
    ) -> Result<Self, StageLoadError> {
        let setup = InstanceSetup {
            tags: Tags {
                pipeline: spec.pipeline.clone(),
                stage: stage.name.clone(),
            },
            services: services.clone(),
            limits: stage.limits.clone(),
            config: stage.config.clone(),
        };
        let instance =
            StageInstance::new(engine.engine(), &stage.module, &setup).map_err(|error| {
                StageLoadError {
                    pipeline: spec.pipeline.clone(),
                    stage: stage.name.clone(),
                    error,
                }
            })?;
        let state = stage.module.is_stateful().then(|| {
            services
                .states
                .stage(&spec.pipeline, &stage.name, &stage.limits)
        });
        Ok(StageSlot {
            spec: stage.clone(),
            setup,
            instance: Some(instance),
            stats: StageStats::default(),
            trace: None,
            state,
            tasks: HashMap::new(),
        })
    }

    /// Calls the stage's instance, making a fresh one first if the last call failed.
    /// The outer error means no instance could be made at all, even after retrying for
    /// [`REINSTANTIATE_PATIENCE`].
    fn call(
        &mut self,
        engine: &PluginEngine,
        batch: &mut RecordBatch,
        meta: &[Meta],
        time: &Option<BatchTime>,
        longest_route: usize,
    ) -> Result<Result<Vec<Verdict>, RecordError>, StageLoadError> {
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => {
                self.stats.restarts += 1;
                self.reinstantiate(engine)?
            }
        };
        let budget = self.spec.limits.batch_budget(batch.records.len());
        let limits = OutputLimits {
            records: batch.records.len(),
            max_outputs: self.spec.limits.max_outputs,
            max_output_bytes: self.spec.limits.max_output_bytes,
            longest_route,
        };
        let result = match (&self.state, time) {
            (Some(usage), Some(time)) => {
                let usage = usage.clone();
                self.call_stateful(&mut instance, batch, meta, time, &usage, budget, limits)
            }
            _ => instance.process(batch, budget, limits),
        };
        self.instance = Some(instance);
        Ok(result)
    }

    /// A fresh instance after a failed call. Making it can fail where the first one did not
    /// (an `init` that is slow or depends on something outside, a full instance pool): it
    /// is retried with backoff, and the batch waits, rather than failing the pipeline. Only
    /// after [`REINSTANTIATE_PATIENCE`] of failures does the error stop the chain.
    fn reinstantiate(&mut self, engine: &PluginEngine) -> Result<StageInstance, StageLoadError> {
        let started = std::time::Instant::now();
        let mut delay = REINSTANTIATE_FIRST_DELAY;
        let mut attempt = 1u32;
        loop {
            let error = match StageInstance::new(engine.engine(), &self.spec.module, &self.setup) {
                Ok(instance) => {
                    if attempt > 1 {
                        tracing::info!(
                            pipeline = %self.setup.tags.pipeline,
                            stage = %self.spec.name,
                            attempts = attempt,
                            "Plugin instance made again; the stage goes on."
                        );
                    }
                    return Ok(instance);
                }
                Err(error) => error,
            };
            if started.elapsed() + delay > REINSTANTIATE_PATIENCE {
                tracing::error!(
                    pipeline = %self.setup.tags.pipeline,
                    stage = %self.spec.name,
                    attempts = attempt,
                    error = %error,
                    "Cannot make a fresh plugin instance; giving up."
                );
                return Err(StageLoadError {
                    pipeline: self.setup.tags.pipeline.clone(),
                    stage: self.spec.name.clone(),
                    error,
                });
            }
            tracing::warn!(
                pipeline = %self.setup.tags.pipeline,
                stage = %self.spec.name,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %error,
                "Cannot make a fresh plugin instance after a failed call; the stage's next \
                 records wait while it retries."
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(REINSTANTIATE_MAX_DELAY);
            attempt += 1;
        }
    }
}

/// The first wait before making a fresh instance again, doubled after each failure up to
/// [`REINSTANTIATE_MAX_DELAY`].
const REINSTANTIATE_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest wait between two attempts.
const REINSTANTIATE_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a stage keeps trying to make a fresh instance before the error stops the chain
/// (and the pipeline with it): long enough to ride out a slow `init` or a pool that is full
/// during a reload, short enough that a stop does not wait on it for long.
const REINSTANTIATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
