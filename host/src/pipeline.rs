//! One pipeline, wired: consumer -> ring -> workers (plugin chain, router) -> producer.
//!
//! # States
//!
//! ```text
//! running --(stop requested)--> draining --(in flight = 0, or drain timeout)--> committed, closed
//! running --(fatal error)-----> draining ------------------------------------> closed, error
//! ```
//!
//! - **running**: the consumer thread (the caller of [`Pipeline::run`]) polls, tracks each
//!   record and pushes it to its partition's worker; it pauses every partition while more than
//!   `max_in_flight` records are unfinished and resumes below half of that; every
//!   `commit_interval_ms` it commits each partition's highest contiguous finished offset.
//! - **draining**: no new record is taken (one already fetched is left for the next reader);
//!   the consumer keeps polling so the group and commit callbacks are served, until every
//!   in-flight record is finished or `drain_timeout_ms` passes; then a final commit (at most
//!   [`COMMIT_TIMEOUT`]) and the consumer leaves the group (at most [`CLOSE_TIMEOUT`]; a silent
//!   group coordinator cannot hold the process).
//!
//! A fatal error (a stage that cannot be instantiated, librdkafka's fatal producer error)
//! leaves the affected records unfinished, so they are never committed past, and ends `run`
//! with that error.

use crate::config::{Config, KafkaConfig, PipelineConfig, StageSource};
use crate::control::{ChainControl, IDLE_TICK};
use crate::kafka::{self, now_ms};
use crate::metrics::{Health, Metrics, PipelineCounters, PipelineMetrics};
use crate::plugin::{
    ChainRunner, ChainSpec, Destination, HostServices, InputRecord, PluginCounters, PluginEngine,
    PluginModule, StageSpec,
};
use crate::ring::{Job, Lane, Next, Ring};
use crate::router::{Router, Source};
use crate::sink::{Pending, Sink, SourceRecord, Ticket};
use crate::source::tracker::{InFlight, PartitionHandle, Tracker};
use crate::source::{CLOSE_TIMEOUT, COMMIT_TIMEOUT, SourceContext, close_within, commit_sync};
use crate::tables::TableSet;
use crate::versions::{StageHistory, VersionStore};
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a running pipeline shares with whoever watches it (the admin API, tests).
#[derive(Debug, Default)]
pub struct PipelineStatus {
    /// Every assigned partition's in-flight records and commit position.
    pub tracker: Arc<Tracker>,
    /// Whether it can make progress.
    pub health: Arc<Health>,
    /// Running totals.
    pub counters: Arc<PipelineCounters>,
}

/// Everything about a pipeline that outlives a single run and that the admin API works on:
/// its config, its live chain, its status and metrics, and each stage's version history.
pub struct PipelineHandle {
    /// Kafka client settings.
    pub kafka: KafkaConfig,
    /// Its config section.
    pub config: PipelineConfig,
    /// The plugin engine.
    pub engine: Arc<PluginEngine>,
    /// Tables and counters plugins reach through their imports.
    pub services: HostServices,
    /// Live status.
    pub status: Arc<PipelineStatus>,
    /// The live chain version.
    pub control: Arc<ChainControl>,
    /// Metric handles.
    pub metrics: PipelineMetrics,
    /// Paused by an operator (not by backpressure).
    pub paused: AtomicBool,
    /// The consumer is running (set by [`Pipeline::run`], cleared when it returns).
    pub consuming: AtomicBool,
    /// Each stage's versions, in stage order; the lock also serializes uploads to a stage.
    pub stages: Vec<Arc<tokio::sync::Mutex<StageHistory>>>,
    /// Where uploaded versions persist.
    pub store: VersionStore,
}

impl PipelineHandle {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `running`, `paused`, `degraded` (cannot make progress, or dead-letter writes fail), or
    /// `stopped`.
    pub fn state(&self) -> &'static str {
        if !self.status.health.is_healthy() {
            "degraded"
        } else if !self.consuming.load(Ordering::Acquire) {
            "stopped"
        } else if self.paused.load(Ordering::Acquire) {
            "paused"
        } else {
            "running"
        }
    }

    /// A router for `spec` with this pipeline's topics.
    pub fn router_for(&self, spec: &ChainSpec) -> anyhow::Result<Router> {
        router_for(&self.config, spec)
    }
}

/// A pipeline ready to run: its plugins are loaded and their `init` succeeded.
pub struct Pipeline {
    shared: Arc<PipelineHandle>,
}

impl Pipeline {
    /// Loads and type-checks every stage's plugin and runs its `init` once, so a bad plugin
    /// or config fails here, before anything is read from Kafka.
    ///
    /// With a [`VersionStore`], a stage whose version was uploaded through the admin API
    /// comes back with that version (and its config), unless the file the config names
    /// has changed since.
    pub fn new(
        engine: Arc<PluginEngine>,
        kafka: &KafkaConfig,
        config: &PipelineConfig,
        services: HostServices,
        metrics: &Metrics,
        store: VersionStore,
    ) -> anyhow::Result<Pipeline> {
        let mut histories = Vec::with_capacity(config.stages.len());
        let stages = config
            .stages
            .iter()
            .map(|stage| {
                let at = || format!("pipeline {}, stage {}", config.name, stage.name);
                let file = stage.file();
                let bytes = std::fs::read(file)
                    .with_context(|| format!("{}: cannot read {}", at(), file.display()))?;
                let file_module = || -> anyhow::Result<Arc<PluginModule>> {
                    match stage.source() {
                        StageSource::Plugin(_) => engine
                            .load(&bytes)
                            .map_err(|e| anyhow::anyhow!("{}: {}: {e}", at(), file.display())),
                        StageSource::JsonSchema(_) => PluginModule::json_schema_file(file)
                            .map_err(|e| anyhow::anyhow!("{}: {e:#}", at())),
                    }
                };
                let configured: Vec<(String, String)> = stage
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let (history, module, stage_config) = StageHistory::start(
                    &store,
                    &engine,
                    &config.name,
                    &stage.name,
                    &bytes,
                    configured,
                    file_module,
                )?;
                histories.push(Arc::new(tokio::sync::Mutex::new(history)));
                Ok(StageSpec {
                    name: stage.name.clone(),
                    module,
                    config: stage_config,
                    limits: stage.limits.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let routes: Vec<String> = config.routes.keys().cloned().collect();
        let spec = Arc::new(
            ChainSpec::new(&config.name, routes, &config.default_route, stages)
                .map_err(|e| anyhow::anyhow!("pipeline {}: {e}", config.name))?,
        );
        let router = router_for(config, &spec)?;
        // One throwaway chain: every stage's init runs now, with its real config.
        ChainRunner::new(engine.clone(), spec.clone(), services.clone())?;
        let routes = spec.routes().to_vec();
        Ok(Pipeline {
            shared: Arc::new(PipelineHandle {
                kafka: kafka.clone(),
                config: config.clone(),
                engine,
                services,
                status: Arc::new(PipelineStatus::default()),
                control: ChainControl::new(spec, router),
                metrics: metrics.pipeline(&config.name, &routes),
                paused: AtomicBool::new(false),
                consuming: AtomicBool::new(false),
                stages: histories,
                store,
            }),
        })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The chain it runs now.
    pub fn spec(&self) -> Arc<ChainSpec> {
        self.shared.control.current().spec.clone()
    }

    /// Its live status.
    pub fn status(&self) -> Arc<PipelineStatus> {
        self.shared.status.clone()
    }

    /// What the admin API holds on to.
    pub fn handle(&self) -> Arc<PipelineHandle> {
        self.shared.clone()
    }

    /// Runs until `stop` is set (then drains, commits and returns `Ok`) or a fatal error.
    /// The calling thread becomes the consumer thread.
    pub fn run(self, stop: &AtomicBool) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        if !wait_for_tables(&shared, stop) {
            return Ok(());
        }
        shared.consuming.store(true, Ordering::Release);
        let result = self.run_inner(stop);
        shared.consuming.store(false, Ordering::Release);
        result
    }

    fn run_inner(self, stop: &AtomicBool) -> anyhow::Result<()> {
        let shared = &self.shared;
        let config = &shared.config;
        let name = config.name.clone();
        let status = shared.status.clone();
        let sink = Sink::start(
            &kafka::producer_config(&shared.kafka, &name),
            &name,
            shared.control.current().router.clone(),
            status.clone(),
            shared.metrics.clone(),
        )?;
        let workers = config.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        // A lane's buffer is allocated up front; the pause at `max_in_flight` keeps the
        // lanes from filling, so they need not be as large as that bound.
        let (ring, lanes) = Ring::new(workers, config.max_in_flight.min(LANE_CAPACITY));
        let mut threads = Vec::with_capacity(workers);
        for (i, lane) in lanes.into_iter().enumerate() {
            let (id, active) = shared.control.register_worker();
            let mut runner = ChainRunner::new(
                shared.engine.clone(),
                active.spec.clone(),
                shared.services.clone(),
            )?;
            let stage_names: Vec<String> = active
                .spec
                .stages()
                .iter()
                .map(|s| s.name.clone())
                .collect();
            let histograms = shared.metrics.call_histograms(&stage_names);
            runner.observe_calls(Box::new(move |stage, took| {
                if let Some(h) = histograms.get(stage) {
                    h.observe(took.as_secs_f64());
                }
            }));
            let worker = Worker {
                id,
                generation: active.generation,
                control: shared.control.clone(),
                lane,
                runner,
                router: active.router.clone(),
                sink: sink.sink.clone(),
                status: status.clone(),
                metrics: shared.metrics.clone(),
                batch_size: config.batch_size,
                batch_wait: Duration::from_millis(config.batch_wait_ms),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-worker-{i}"))
                    .spawn(move || worker.run())?,
            );
        }
        let result = self.consume(ring, &sink.sink, stop);
        // The ring was dropped by `consume`: workers finish their batch and exit.
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!(pipeline = %name, "A worker panicked.");
            }
        }
        sink.close(Duration::from_millis(config.drain_timeout_ms));
        tracing::info!(pipeline = %name, counters = ?status.counters.snapshot(), "Pipeline stopped.");
        result
    }

    fn consume(&self, ring: Ring, sink: &Sink, stop: &AtomicBool) -> anyhow::Result<()> {
        let shared = &self.shared;
        let name = &shared.config.name;
        let status = &shared.status;
        let tracker = &status.tracker;
        let context = SourceContext::new(
            name,
            tracker.clone(),
            shared.config.start,
            Duration::from_millis(shared.config.drain_timeout_ms),
        );
        let consumer: BaseConsumer<SourceContext> =
            kafka::consumer_config(&shared.kafka, &shared.config)
                .create_with_context(context)
                .with_context(|| format!("pipeline {name}: cannot create the consumer"))?;
        match &shared.config.topic_pattern {
            Some(pattern) => {
                // librdkafka treats a subscription starting with `^` as a regex.
                let regex = if pattern.starts_with('^') {
                    pattern.clone()
                } else {
                    format!("^.*{pattern}")
                };
                consumer.subscribe(&[&regex])
            }
            None => {
                let topics: Vec<&str> = shared.config.topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics)
            }
        }
        .with_context(|| format!("pipeline {name}: cannot subscribe"))?;
        tracing::info!(pipeline = %name, group = %shared.config.group(), "Pipeline running.");

        let commit_interval = Duration::from_millis(shared.config.commit_interval_ms);
        let max_in_flight = shared.config.max_in_flight;
        let mut paused = false;
        let mut last_commit = Instant::now();
        let mut last_full_commit = Instant::now();
        let mut last_report = Instant::now();
        let mut last_watermarks = Instant::now();
        let mut fatal = None;
        // Housekeeping (fatal errors, commits, lag, progress) runs when a poll comes back
        // empty or every HOUSEKEEPING_EVERY records, not for every record: under load the
        // loop takes each record with one clock read and a few atomics.
        let mut since_housekeeping = 0u32;
        // The handles of the partitions records came from, so taking a record needs no
        // lookup in the tracker (a handle found revoked is looked up again).
        let mut handles = HandleCache::default();
        let mut now = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let housekeeping = since_housekeeping >= HOUSEKEEPING_EVERY;
            if housekeeping {
                since_housekeeping = 0;
                now = Instant::now();
                if let Some(why) = sink.fatal_error() {
                    status.health.fail(format!("producer: {why}"));
                }
                if let Some(why) = status.health.fatal() {
                    fatal = Some(why);
                    break;
                }
            }
            let in_flight = tracker.in_flight();
            let reassigned = consumer
                .context()
                .assignment_changed
                .swap(false, Ordering::AcqRel);
            if reassigned {
                handles.forget_revoked();
            }
            let operator = shared.paused.load(Ordering::Acquire);
            if (!paused && (in_flight >= max_in_flight || operator)) || (paused && reassigned) {
                set_paused(&consumer, name, true);
                paused = true;
            } else if paused && !operator && in_flight <= max_in_flight / 2 {
                set_paused(&consumer, name, false);
                paused = false;
            }
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(message)) => {
                    since_housekeeping += 1;
                    let Some(handle) = handles.get(tracker, message.topic(), message.partition())
                    else {
                        // Not assigned (any more).
                        continue;
                    };
                    if !tracker.track_on(&handle, message.offset()) {
                        // Revoked meanwhile, or taken already (fetched again after a seek).
                        continue;
                    }
                    PipelineCounters::add(&status.counters.consumed, 1);
                    shared.metrics.records_in.inc();
                    let record = InputRecord {
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        headers: kafka::headers_from_kafka(message.headers()),
                    };
                    if ring.push(Job { handle, record }).is_err() {
                        status.health.fail("the workers stopped".into());
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(pipeline = %name, error = %e, "Consumer error.");
                    since_housekeeping = HOUSEKEEPING_EVERY;
                }
                None => since_housekeeping = HOUSEKEEPING_EVERY,
            }
            if !housekeeping {
                continue;
            }
            if now.duration_since(last_commit) >= commit_interval {
                let again = last_full_commit.elapsed() >= RECOMMIT_INTERVAL;
                commit_async(&consumer, name, status, again);
                last_commit = Instant::now();
                if again {
                    last_full_commit = last_commit;
                }
            }
            if last_watermarks.elapsed() >= WATERMARK_INTERVAL {
                for p in tracker.partitions() {
                    // Cached from fetch responses: no request to the broker.
                    if let Some(high) = cached_high_watermark(&consumer, &p.topic, p.partition) {
                        tracker.set_high_watermark(&p.topic, p.partition, high);
                    }
                }
                last_watermarks = Instant::now();
            }
            if last_report.elapsed() >= REPORT_INTERVAL {
                tracing::debug!(
                    pipeline = %name, in_flight = tracker.in_flight(), paused,
                    counters = ?status.counters.snapshot(), "Progress."
                );
                last_report = Instant::now();
            }
        }

        // Draining.
        tracing::info!(pipeline = %name, in_flight = tracker.in_flight(), "Draining.");
        set_paused(&consumer, name, true);
        let deadline = Instant::now() + Duration::from_millis(shared.config.drain_timeout_ms);
        while tracker.in_flight() > 0 && Instant::now() < deadline && fatal.is_none() {
            // Records fetched now are not taken: they stay uncommitted for the next reader.
            let _ = consumer.poll(Duration::from_millis(10));
            if let Some(why) = status.health.fatal() {
                fatal = Some(why);
            }
        }
        let left = tracker.in_flight();
        if left > 0 {
            tracing::warn!(pipeline = %name, in_flight = left, "Stopped before every record finished; those will be delivered again.");
        }
        if status.health.dead_letter_failing.load(Ordering::Acquire) {
            tracing::error!(pipeline = %name, "Not committing: dead-letter writes are failing.");
        } else {
            let all: Vec<(String, i32)> = tracker
                .partitions()
                .into_iter()
                .map(|p| (p.topic, p.partition))
                .collect();
            let _ = commit_sync(
                &consumer,
                name,
                &tracker.committable_of(&all),
                COMMIT_TIMEOUT,
            );
        }
        // Nothing left to wait for when the group takes the partitions away on close.
        tracker.revoke_all();
        close_within(consumer, CLOSE_TIMEOUT);
        drop(ring);
        match fatal {
            Some(why) => Err(anyhow::anyhow!("pipeline {name} stopped: {why}")),
            None => Ok(()),
        }
    }
}

/// The consumer's handles of its assigned partitions: a few entries, searched in order.
#[derive(Default)]
struct HandleCache {
    handles: Vec<Arc<PartitionHandle>>,
}

impl HandleCache {
    /// The current assignment of a partition: the cached handle unless it was revoked, else
    /// the tracker's (cached for the next record).
    fn get(
        &mut self,
        tracker: &Tracker,
        topic: &str,
        partition: i32,
    ) -> Option<Arc<PartitionHandle>> {
        let found = self
            .handles
            .iter()
            .position(|h| h.partition == partition && &*h.topic == topic);
        if let Some(i) = found {
            if !self.handles[i].is_revoked() {
                return Some(self.handles[i].clone());
            }
            self.handles.swap_remove(i);
        }
        let handle = tracker.handle(topic, partition)?;
        self.handles.push(handle.clone());
        Some(handle)
    }

    /// Drops the handles of revoked partitions (after an assignment change).
    fn forget_revoked(&mut self) {
        self.handles.retain(|h| !h.is_revoked());
    }
}

/// How often every partition's commit position is sent again, changed or not: an
/// asynchronous commit can fail without the failure reaching us, and the next reader must
/// not start further back than needed.
const RECOMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Most records a worker's lane holds (a full lane makes the consumer wait).
const LANE_CAPACITY: usize = 16_384;

/// Records the consumer takes between two housekeeping passes (fatal errors, commits, lag,
/// progress) while records keep coming; an empty poll always triggers one.
const HOUSEKEEPING_EVERY: u32 = 64;

/// How often the consumer reads each partition's end (for lag).
const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the consumer logs its progress (at debug level).
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A partition's end as librdkafka last saw it in a fetch response: no request to the
/// broker (rdkafka's safe API only offers the round trip, `fetch_watermarks`).
fn cached_high_watermark(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a valid C
    // string for the duration of the call; `low` and `high` are valid for writes.
    // rd_kafka_get_watermark_offsets only reads librdkafka's local state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn set_paused(consumer: &BaseConsumer<SourceContext>, pipeline: &str, pause: bool) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "Cannot read the assignment to pause or resume it.");
            return;
        }
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => tracing::debug!(pipeline, pause, "Backpressure."),
        Err(e) => tracing::warn!(pipeline, pause, error = %e, "Cannot pause or resume."),
    }
}

fn commit_async(
    consumer: &BaseConsumer<SourceContext>,
    pipeline: &str,
    status: &PipelineStatus,
    again: bool,
) {
    if status.health.dead_letter_failing.load(Ordering::Acquire) {
        return;
    }
    let offsets = status.tracker.to_commit(again);
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in &offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(pipeline, error = %e, "Cannot list an offset to commit.");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(pipeline, error = %e, "Cannot send an offset commit; retrying.");
        for (topic, partition, _) in &offsets {
            status.tracker.commit_failed(topic, *partition);
        }
    }
}

/// One worker thread: runs the chain over its lane's batches and hands the outputs to the
/// producer.
struct Worker {
    id: usize,
    /// The chain version this worker runs.
    generation: u64,
    control: Arc<ChainControl>,
    lane: Lane,
    runner: ChainRunner,
    router: Router,
    sink: Sink,
    status: Arc<PipelineStatus>,
    metrics: PipelineMetrics,
    batch_size: usize,
    batch_wait: Duration,
}

impl Worker {
    fn run(mut self) {
        loop {
            let next = self
                .lane
                .next_batch(self.batch_size, self.batch_wait, IDLE_TICK);
            // A batch boundary: the batch about to run is run wholly by one version.
            if self.control.generation() != self.generation {
                self.switch();
            }
            let jobs = match next {
                Next::Batch(jobs) => jobs,
                Next::Idle => continue,
                Next::Closed => break,
            };
            // Records of several partitions, each partition's in offset order.
            let mut groups: Vec<(Arc<PartitionHandle>, Vec<InputRecord>)> = Vec::new();
            for job in jobs {
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

    fn run_group(&mut self, handle: Arc<PartitionHandle>, records: Vec<InputRecord>) {
        // A revoked partition's records belong to its next owner; a failed pipeline's stay
        // unfinished so they are never committed past.
        if handle.revoked.load(Ordering::Acquire) || self.status.health.fatal().is_some() {
            return;
        }
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
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

/// The route table of `config` for `spec`.
fn router_for(config: &PipelineConfig, spec: &ChainSpec) -> anyhow::Result<Router> {
    let router = Router::new(
        spec,
        &config.routes,
        &config.dead_letter_topic,
        config.dead_letter_format,
    )
    .map_err(|e| anyhow::anyhow!("pipeline {}: {e}", config.name))?;
    Ok(if config.provenance_headers {
        router
    } else {
        router.without_provenance()
    })
}

/// Waits until every table is loaded and caught up with its topic, so that no record is
/// enriched from a table still filling. False if `stop` was set meanwhile.
fn wait_for_tables(shared: &PipelineHandle, stop: &AtomicBool) -> bool {
    let started = Instant::now();
    let mut logged = started;
    loop {
        let pending = shared.services.tables.pending();
        if pending.is_empty() {
            return true;
        }
        if stop.load(Ordering::Acquire) {
            return false;
        }
        if logged.elapsed() >= Duration::from_secs(5) || logged == started {
            tracing::info!(
                pipeline = %shared.config.name, tables = %pending.join(", "),
                waited_s = started.elapsed().as_secs(),
                "Waiting for tables to catch up with their topics before consuming."
            );
            logged = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loads every pipeline of a config (plugins compiled and type-checked, `init` called).
/// Versions uploaded earlier come back from `store`.
pub fn load(
    config: &Config,
    engine: Arc<PluginEngine>,
    metrics: &Metrics,
    store: &VersionStore,
) -> anyhow::Result<Vec<Pipeline>> {
    let services = HostServices {
        tables: Arc::new(TableSet::start(Some(&config.kafka), &config.tables)?),
        counters: Arc::new(PluginCounters::default()),
    };
    config
        .pipelines
        .iter()
        .map(|p| {
            Pipeline::new(
                engine.clone(),
                &config.kafka,
                p,
                services.clone(),
                metrics,
                store.clone(),
            )
        })
        .collect()
}

/// Runs pipelines, each on its own consumer thread, until `stop` is set or one fails; a
/// failing one stops the others.
pub fn run_all(pipelines: Vec<Pipeline>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let threads: Vec<(String, JoinHandle<anyhow::Result<()>>)> = pipelines
        .into_iter()
        .map(|p| {
            let name = p.name().to_owned();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-consumer"))
                .spawn(move || {
                    let result = p.run(&stop);
                    // One pipeline failing stops the process, so a supervisor restarts it.
                    stop.store(true, Ordering::Release);
                    result
                })?;
            Ok((name, thread))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut first_error = None;
    for (name, thread) in threads {
        let result = thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("pipeline {name}: consumer thread panicked")));
        if let Err(e) = result {
            tracing::error!(pipeline = %name, error = %e, "Pipeline failed.");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
