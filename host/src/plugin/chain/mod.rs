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

use super::bindings::{Header, InputRecord, OutputRecord, RecordBatch, Verdict};
use super::engine::PluginEngine;
use super::error::{ErrorKind, LoadError, RecordError};
use super::host_api::{HostServices, Tags};
use super::instance::{InstanceSetup, StageInstance};
use super::limits::StageLimits;
use super::module::{PluginModule, PluginVersion};
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a route in [`ChainSpec::routes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u16);

/// One stage as configured.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// Stage name, unique in its pipeline; used in logs, metrics and dead-letter headers.
    pub name: String,
    /// The compiled plugin.
    pub module: Arc<PluginModule>,
    /// The config map handed to `init`.
    pub config: Vec<(String, String)>,
    /// Resource limits.
    pub limits: StageLimits,
}

/// A pipeline's chain: its declared routes, default route and stages.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pipeline: String,
    routes: Vec<String>,
    route_ids: HashMap<String, RouteId>,
    default_route: RouteId,
    stages: Vec<StageSpec>,
}

/// Why a chain cannot be assembled. Each names the pipeline and the offending route, stage
/// or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// More routes than a [`RouteId`] can number.
    #[error("pipeline {pipeline}: too many routes ({count}; at most 65535)")]
    TooManyRoutes {
        /// The pipeline.
        pipeline: String,
        /// How many were declared.
        count: usize,
    },
    /// A route name appears twice.
    #[error("pipeline {pipeline}: route `{route}` is declared twice")]
    DuplicateRoute {
        /// The pipeline.
        pipeline: String,
        /// The route.
        route: String,
    },
    /// The default route is not among the routes.
    #[error("pipeline {pipeline}: default route `{route}` is not declared (declared: {declared})")]
    UnknownDefaultRoute {
        /// The pipeline.
        pipeline: String,
        /// The default route asked for.
        route: String,
        /// The declared routes, comma-separated.
        declared: String,
    },
    /// A stage name appears twice.
    #[error("pipeline {pipeline}: stage `{stage}` appears twice")]
    DuplicateStage {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
    },
    /// A stage's limits make no sense.
    #[error("pipeline {pipeline}, stage {stage}: {problem}")]
    BadLimits {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// What is wrong, naming the key.
        problem: String,
    },
}

impl ChainSpec {
    /// Checks and assembles a chain.
    pub fn new(
        pipeline: impl Into<String>,
        routes: Vec<String>,
        default_route: &str,
        mut stages: Vec<StageSpec>,
    ) -> Result<Self, SpecError> {
        let pipeline = pipeline.into();
        let mut route_ids = HashMap::new();
        for (i, name) in routes.iter().enumerate() {
            let Ok(id) = u16::try_from(i) else {
                return Err(SpecError::TooManyRoutes {
                    pipeline,
                    count: routes.len(),
                });
            };
            if route_ids.insert(name.clone(), RouteId(id)).is_some() {
                return Err(SpecError::DuplicateRoute {
                    pipeline,
                    route: name.clone(),
                });
            }
        }
        let Some(&default_route) = route_ids.get(default_route) else {
            return Err(SpecError::UnknownDefaultRoute {
                pipeline,
                route: default_route.to_owned(),
                declared: routes.join(", "),
            });
        };
        let mut seen = std::collections::HashSet::new();
        for stage in &mut stages {
            if !seen.insert(stage.name.clone()) {
                return Err(SpecError::DuplicateStage {
                    pipeline,
                    stage: stage.name.clone(),
                });
            }
            if let Err(problem) = stage.limits.validate() {
                return Err(SpecError::BadLimits {
                    pipeline,
                    stage: stage.name.clone(),
                    problem,
                });
            }
            stage.config.sort();
        }
        Ok(ChainSpec {
            pipeline,
            routes,
            route_ids,
            default_route,
            stages,
        })
    }

    /// The pipeline name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The declared route names, indexed by [`RouteId`].
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    /// The id of a declared route.
    pub fn route_id(&self, name: &str) -> Option<RouteId> {
        self.route_ids.get(name).copied()
    }

    /// The name of a route.
    pub fn route_name(&self, id: RouteId) -> &str {
        self.routes
            .get(usize::from(id.0))
            .map_or("<unknown route>", String::as_str)
    }

    /// The default route.
    pub fn default_route(&self) -> RouteId {
        self.default_route
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageSpec] {
        &self.stages
    }
}

/// Where one record went.
#[derive(Debug, PartialEq)]
pub enum Destination {
    /// To a route. The record carries the source record's offset and timestamp, and the key,
    /// value and headers the chain left it with.
    Route {
        /// The route.
        route: RouteId,
        /// The record.
        record: InputRecord,
    },
    /// To the dead-letter topic.
    DeadLetter(DeadLetter),
}

/// A record a stage refused or could not process.
#[derive(Debug, PartialEq)]
pub struct DeadLetter {
    /// Index of the failing stage.
    pub stage: usize,
    /// Name of the failing stage.
    pub stage_name: String,
    /// Version of the failing stage's plugin.
    pub version: PluginVersion,
    /// Kind and reason.
    pub error: RecordError,
    /// The record as the failing stage received it.
    pub record: InputRecord,
}

/// One result of a batch: which input record it descends from, and where it goes.
#[derive(Debug, PartialEq)]
pub struct Delivery {
    /// Index of the source record in the batch given to [`ChainRunner::process`].
    pub source: usize,
    /// Where it goes.
    pub destination: Destination,
}

/// What happened in one stage, cumulatively since the runner was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Records given to the stage.
    pub records_in: u64,
    /// Records the stage passed on (after fan-out).
    pub records_out: u64,
    /// Records the stage dropped.
    pub dropped: u64,
    /// Records dead-lettered, by kind.
    pub dead_lettered: HashMap<ErrorKind, u64>,
    /// Batch calls that failed and were re-run record by record.
    pub isolations: u64,
    /// Fresh instances made after a failure.
    pub restarts: u64,
}

/// Records between stages, in two parallel vectors so the records themselves move straight
/// into the next stage's batch: `records[i]` descends from source record `meta[i].source`
/// and is on route `meta[i].route` (`None`: not chosen yet, the default route).
#[derive(Default)]
struct Survivors {
    meta: Vec<Meta>,
    records: Vec<InputRecord>,
}

#[derive(Clone, Copy)]
struct Meta {
    source: usize,
    route: Option<RouteId>,
}

impl Survivors {
    fn with_capacity(n: usize) -> Self {
        Survivors {
            meta: Vec::with_capacity(n),
            records: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, meta: Meta, record: InputRecord) {
        self.meta.push(meta);
        self.records.push(record);
    }
}

struct StageSlot {
    spec: StageSpec,
    setup: InstanceSetup,
    instance: Option<StageInstance>,
    stats: StageStats,
    /// What the stage did with each record, when tracing (dry runs).
    trace: Option<Vec<StageTrace>>,
}

/// What one stage did with one record (recorded only when tracing, for dry runs).
#[derive(Clone, Debug, PartialEq)]
pub struct StageTrace {
    /// Index of the stage.
    pub stage: usize,
    /// Index of the source record in the batch.
    pub source: usize,
    /// What the stage decided.
    pub outcome: TraceOutcome,
}

/// A stage's decision for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceOutcome {
    /// Passed on unchanged.
    Pass,
    /// Passed on, to this route.
    Route(String),
    /// Replaced by this many records (each with its route, if it named one).
    Emit(Vec<Option<String>>),
    /// Dropped.
    Drop,
    /// Dead-lettered.
    DeadLetter {
        /// Error kind.
        kind: ErrorKind,
        /// Reason.
        reason: String,
    },
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
            survivors = self.run_stage(index, topic, partition, survivors, &mut deliveries)?;
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
        Ok(deliveries)
    }

    fn run_stage(
        &mut self,
        index: usize,
        topic: &str,
        partition: i32,
        inputs: Survivors,
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
        let started = observer.as_ref().map(|_| std::time::Instant::now());
        let verdicts = slot.call(&engine, &batch)?;
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
                    let verdict = slot.call(&engine, &single)?.and_then(|mut verdicts| {
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
        Ok(StageSlot {
            spec: stage.clone(),
            setup,
            instance: Some(instance),
            stats: StageStats::default(),
            trace: None,
        })
    }

    /// Calls the stage's instance, making a fresh one first if the last call failed.
    /// The outer error means no instance could be made at all.
    fn call(
        &mut self,
        engine: &PluginEngine,
        batch: &RecordBatch,
    ) -> Result<Result<Vec<Verdict>, RecordError>, StageLoadError> {
        let instance = match &mut self.instance {
            Some(instance) => instance,
            empty => {
                self.stats.restarts += 1;
                let fresh = StageInstance::new(engine.engine(), &self.spec.module, &self.setup)
                    .map_err(|error| StageLoadError {
                        pipeline: self.setup.tags.pipeline.clone(),
                        stage: self.spec.name.clone(),
                        error,
                    })?;
                empty.insert(fresh)
            }
        };
        let budget = self.spec.limits.batch_budget(batch.records.len());
        Ok(instance.process(batch, budget))
    }
}

fn dead_letter(
    slot: &mut StageSlot,
    stage: usize,
    source: usize,
    error: RecordError,
    record: InputRecord,
    deliveries: &mut Vec<Delivery>,
) {
    *slot.stats.dead_lettered.entry(error.kind).or_insert(0) += 1;
    if let Some(trace) = &mut slot.trace {
        trace.push(StageTrace {
            stage,
            source,
            outcome: TraceOutcome::DeadLetter {
                kind: error.kind,
                reason: error.message.clone(),
            },
        });
    }
    deliveries.push(Delivery {
        source,
        destination: Destination::DeadLetter(DeadLetter {
            stage,
            stage_name: slot.spec.name.clone(),
            version: slot.spec.module.version.clone(),
            error,
            record,
        }),
    });
}

/// Carries out one checked verdict.
#[allow(clippy::too_many_arguments)]
fn apply(
    slot: &mut StageSlot,
    stage: usize,
    spec: &ChainSpec,
    verdict: Verdict,
    meta: Meta,
    record: InputRecord,
    out: &mut Survivors,
    deliveries: &mut Vec<Delivery>,
) {
    let source = meta.source;
    if let Some(trace) = &mut slot.trace {
        let outcome = match &verdict {
            Verdict::Pass => Some(TraceOutcome::Pass),
            Verdict::Route(name) => Some(TraceOutcome::Route(name.clone())),
            Verdict::Emit(outputs) => Some(TraceOutcome::Emit(
                outputs.iter().map(|o| o.route.clone()).collect(),
            )),
            Verdict::Drop => Some(TraceOutcome::Drop),
            // Traced by `dead_letter`.
            Verdict::DeadLetter(_) => None,
        };
        if let Some(outcome) = outcome {
            trace.push(StageTrace {
                stage,
                source,
                outcome,
            });
        }
    }
    match verdict {
        Verdict::Pass => out.push(meta, record),
        Verdict::Route(name) => match spec.route_id(&name) {
            Some(id) => out.push(
                Meta {
                    source,
                    route: Some(id),
                },
                record,
            ),
            None => dead_letter(
                slot,
                stage,
                source,
                unknown_route(spec, &name),
                record,
                deliveries,
            ),
        },
        Verdict::Emit(outputs) => {
            // Routes were checked by `check_verdicts`; resolve them all before moving
            // anything, so that even a mistake there dead-letters the input instead of
            // losing it.
            let mut routes = Vec::with_capacity(outputs.len());
            for output in &outputs {
                match &output.route {
                    None => routes.push(meta.route),
                    Some(name) => match spec.route_id(name) {
                        Some(id) => routes.push(Some(id)),
                        None => {
                            let error = unknown_route(spec, name);
                            dead_letter(slot, stage, source, error, record, deliveries);
                            return;
                        }
                    },
                }
            }
            for (output, route) in outputs.into_iter().zip(routes) {
                let OutputRecord {
                    key,
                    value,
                    headers,
                    ..
                } = output;
                out.push(
                    Meta { source, route },
                    InputRecord {
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                        key,
                        value,
                        headers,
                    },
                );
            }
        }
        Verdict::Drop => slot.stats.dropped += 1,
        Verdict::DeadLetter(reason) => dead_letter(
            slot,
            stage,
            source,
            RecordError::new(ErrorKind::Rejected, reason),
            record,
            deliveries,
        ),
    }
}

fn unknown_route(spec: &ChainSpec, name: &str) -> RecordError {
    RecordError::bad_output(format!(
        "route `{name}` is not declared in pipeline {} (declared: {})",
        spec.pipeline,
        spec.routes.join(", ")
    ))
}

/// Refuses verdicts the host will not carry out. Allocation-free on the happy path.
fn check_verdicts(
    verdicts: &[Verdict],
    records: usize,
    spec: &ChainSpec,
    limits: &StageLimits,
) -> Result<(), RecordError> {
    if verdicts.len() != records {
        return Err(RecordError::bad_output(format!(
            "the plugin returned {} verdicts for {} records; it must return exactly one per record",
            verdicts.len(),
            records
        )));
    }
    for verdict in verdicts {
        match verdict {
            Verdict::Route(name) if spec.route_id(name).is_none() => {
                return Err(unknown_route(spec, name));
            }
            Verdict::Emit(outputs) => {
                if outputs.len() > limits.max_outputs as usize {
                    return Err(RecordError::bad_output(format!(
                        "the plugin emitted {} records for one input; the stage allows {} (limits.max_outputs)",
                        outputs.len(),
                        limits.max_outputs
                    )));
                }
                let mut bytes: u64 = 0;
                for output in outputs {
                    if let Some(name) = &output.route
                        && spec.route_id(name).is_none()
                    {
                        return Err(unknown_route(spec, name));
                    }
                    bytes = bytes.saturating_add(output_size(output));
                }
                if bytes > limits.max_output_bytes {
                    return Err(RecordError::bad_output(format!(
                        "the plugin emitted {bytes} bytes for one input; the stage allows {} (limits.max_output_bytes)",
                        limits.max_output_bytes
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn output_size(output: &OutputRecord) -> u64 {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len) as u64;
    let headers: u64 = output
        .headers
        .iter()
        .map(|h: &Header| h.key.len() as u64 + len(&h.value))
        .sum();
    len(&output.key) + len(&output.value) + headers
}
