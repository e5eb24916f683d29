//! One pipeline, wired: consumer -> ring -> workers (plugin chain, router) -> producer.
//!
//! - [`Pipeline::new`] loads and checks every stage (compiled, type-checked, `init` run) before
//!   anything is read from Kafka; [`PipelineHandle`] is what outlives a run and what the admin
//!   API works on.
//! - [`Pipeline::run`] starts the producer ([`crate::sink`]) and the workers ([`worker`]),
//!   then the calling thread becomes the consumer ([`crate::source::consumer`], where the
//!   consuming and draining states are described) until a stop or a fatal error.
//!
//! A fatal error (a stage that cannot be instantiated, librdkafka's fatal producer error)
//! leaves the affected records unfinished, so they are never committed past, and ends `run`
//! with that error.

mod worker;

use crate::config::{Config, KafkaConfig, PipelineConfig, StageCode};
use crate::control::{ChainControl, StageHistory, VersionStore};
use crate::kafka;
use crate::metrics::{Metrics, PipelineMetrics};
use crate::plugin::{
    ChainRunner, ChainSpec, HostServices, PluginCounters, PluginEngine, PluginModule, StageSpec,
};
use crate::ring::Ring;
use crate::router::{RouteError, Router};
use crate::sink::Sink;
use crate::source::consumer::{Consumer, ConsumerSettings};
use crate::status::{PipelineStatus, Stop};
use crate::tables::TableSet;
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use worker::Worker;

/// Most records a worker's lane holds. The consumer pauses at `max_in_flight` unfinished
/// records; when that is larger than a lane, a lane that fills makes the consumer wait.
const LANE_CAPACITY: usize = 16_384;

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
    /// The enrichment tables (shared by every pipeline), for readiness and the admin API.
    pub tables: Arc<TableSet>,
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
    /// Stateful pipelines: the tasks restored from the changelog (and those being restored).
    pub restoring: std::sync::Mutex<Option<Arc<crate::changelog::RestoreRegistry>>>,
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
    pub fn router_for(&self, spec: &ChainSpec) -> Result<Router, RouteError> {
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
        tables: Arc<TableSet>,
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
                    match &stage.code {
                        StageCode::Plugin(_) => engine
                            .load(&bytes)
                            .map_err(|e| anyhow::anyhow!("{}: {}: {e}", at(), file.display())),
                        StageCode::JsonSchema(_) => PluginModule::json_schema_file(file)
                            .map_err(|e| anyhow::anyhow!("{}: {e:#}", at())),
                    }
                };
                let (history, module, stage_config) =
                    StageHistory::start(&store, &engine, &config.name, stage, &bytes, file_module)?;
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
                .map_err(|e| anyhow::anyhow!("pipeline {}: {e}", config.name))?
                .with_event_time(config.event_time()),
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
                tables,
                status: Arc::new(PipelineStatus::default()),
                control: ChainControl::new(spec, router),
                metrics: metrics.pipeline(&config.name, &routes),
                paused: AtomicBool::new(false),
                consuming: AtomicBool::new(false),
                restoring: std::sync::Mutex::new(None),
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
    pub fn run(self, stop: &Stop) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        if !wait_for_tables(&shared, stop) {
            return Ok(());
        }
        shared.consuming.store(true, Ordering::Release);
        let result = self.run_inner(stop);
        shared.consuming.store(false, Ordering::Release);
        result
    }

    fn run_inner(self, stop: &Stop) -> anyhow::Result<()> {
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
        let workers = worker_count(config.workers);
        // Stateful pipelines: the changelog writer, and the tasks the consumer restores.
        let durable = if shared.control.current().spec.is_stateful() {
            let log = crate::changelog::Changelog::start(&shared.kafka, config, status.clone())?;
            let registry = Arc::new(crate::changelog::RestoreRegistry::default());
            Some((log, registry))
        } else {
            None
        };
        *shared.restoring.lock().unwrap_or_else(|p| p.into_inner()) =
            durable.as_ref().map(|(_, r)| r.clone());
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
                tasks: HashMap::new(),
                timers_checked: std::time::Instant::now(),
                durable: durable.as_ref().map(|(log, registry)| worker::Durable {
                    lane: (i, workers),
                    log: log.clone(),
                    registry: registry.clone(),
                    installed: HashMap::new(),
                    positions: HashMap::new(),
                    skip: HashMap::new(),
                }),
            };
            let (control, status) = (shared.control.clone(), status.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-worker-{i}"))
                    .spawn(move || {
                        let run =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                        if let Err(panic) = run {
                            // Its records stay unfinished (never committed past); the
                            // pipeline stops and a reload no longer waits for this worker.
                            status
                                .health
                                .fail(format!("worker {i} panicked: {}", panic_text(&panic)));
                            control.worker_exited(id);
                        }
                    })?,
            );
        }
        let producer = sink.sink.clone();
        let producer_fatal = move || producer.fatal_error();
        let mut client = kafka::consumer_config(&shared.kafka, config);
        let state = durable.as_ref().map(|(log, registry)| {
            // Partition N of every source topic to the same member: one task, one owner.
            client.set("partition.assignment.strategy", "range");
            crate::changelog::StateSource {
                kafka: shared.kafka.clone(),
                topic: log.topic().to_owned(),
                topics: match &config.source {
                    crate::config::Subscription::Topics(t) => t.clone(),
                    crate::config::Subscription::Pattern(_) => Vec::new(),
                },
                registry: registry.clone(),
                status: status.clone(),
            }
        });
        let consumer = Consumer::open(
            ConsumerSettings {
                pipeline: &name,
                client,
                subscription: &config.source,
                start: config.start,
                drain_timeout: Duration::from_millis(config.drain_timeout_ms),
                commit_interval: Duration::from_millis(config.commit_interval_ms),
                max_in_flight: config.max_in_flight,
                operator_paused: &shared.paused,
                status: &status,
                records_in: shared.metrics.records_in.clone(),
                source_gaps: shared.metrics.source_gaps.clone(),
                count_source_gaps: config.count_source_gaps,
                producer_fatal: &producer_fatal,
                state,
            },
            ring,
        );
        let result = match consumer {
            Ok(consumer) => {
                tracing::info!(pipeline = %name, group = %config.group(), "Pipeline running.");
                consumer.run(stop)
            }
            Err(e) => Err(e),
        };
        // The ring is closed (dropped by the consumer): workers finish their batch and exit.
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!(pipeline = %name, "A worker panicked.");
            }
        }
        sink.close(Duration::from_millis(config.drain_timeout_ms));
        if let Some((log, _)) = &durable {
            log.flush(Duration::from_millis(config.drain_timeout_ms));
        }
        tracing::info!(pipeline = %name, counters = ?status.counters.snapshot(), "Pipeline stopped.");
        result
    }
}

/// The route table of `config` for `spec`.
fn router_for(config: &PipelineConfig, spec: &ChainSpec) -> Result<Router, RouteError> {
    let router = Router::for_chain(
        spec,
        &config.routes,
        &config.dead_letter_topic,
        config.dead_letter_format,
    )?;
    Ok(if config.provenance_headers {
        router
    } else {
        router.without_provenance()
    })
}

/// Waits until every table is loaded and caught up with its topic, so that no record is
/// enriched from a table still filling. False if `stop` was set meanwhile.
fn wait_for_tables(shared: &PipelineHandle, stop: &Stop) -> bool {
    let started = Instant::now();
    let mut logged = started;
    loop {
        let pending = shared.tables.pending();
        if pending.is_empty() {
            return true;
        }
        if stop.is_requested() {
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

/// What every pipeline of a config shares: its tables (loaded; topic tables following their
/// topics) and, through [`HostServices`], what plugins reach with their imports: those tables
/// and one set of plugin counters. The admin API reaches the tables too.
pub struct Shared {
    /// The enrichment tables.
    pub tables: Arc<TableSet>,
    /// What plugins reach through their imports.
    pub services: HostServices,
}

impl Shared {
    /// Loads the config's tables (and starts following topic tables).
    pub fn start(config: &Config) -> anyhow::Result<Shared> {
        let tables = Arc::new(TableSet::start(Some(&config.kafka), &config.tables)?);
        Ok(Shared {
            services: HostServices {
                tables: tables.clone(),
                counters: Arc::new(PluginCounters::default()),
                states: Default::default(),
            },
            tables,
        })
    }
}

/// Loads every pipeline of a config (plugins compiled and type-checked, `init` called), all
/// sharing `shared`. Versions uploaded earlier come back from `store`.
pub fn load(
    config: &Config,
    engine: Arc<PluginEngine>,
    metrics: &Metrics,
    store: &VersionStore,
    shared: &Shared,
) -> anyhow::Result<Vec<Pipeline>> {
    config
        .pipelines
        .iter()
        .map(|p| {
            Pipeline::new(
                engine.clone(),
                &config.kafka,
                p,
                shared.services.clone(),
                shared.tables.clone(),
                metrics,
                store.clone(),
            )
        })
        .collect()
}

/// Runs pipelines, each on its own consumer thread, until `stop` is requested or one fails;
/// a failing one stops the others (so that a supervisor restarts the process). A pipeline
/// whose thread panics counts as failed.
pub fn run_all(pipelines: Vec<Pipeline>, stop: Arc<Stop>) -> anyhow::Result<()> {
    let threads: Vec<(String, JoinHandle<anyhow::Result<()>>)> = pipelines
        .into_iter()
        .map(|p| {
            let name = p.name().to_owned();
            let stop = stop.clone();
            let status = p.status();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-consumer"))
                .spawn(move || {
                    // A panic must not skip the stop nor leave the pipeline looking healthy:
                    // the process stops (a supervisor restarts it) and is unready meanwhile.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.run(&stop)))
                            .unwrap_or_else(|panic| {
                                let why =
                                    format!("the pipeline thread panicked: {}", panic_text(&panic));
                                status.health.fail(why.clone());
                                Err(anyhow::anyhow!(why))
                            });
                    stop.request();
                    result
                })?;
            Ok((name, thread))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut first_error = None;
    for (name, thread) in threads {
        let result = thread.join().unwrap_or_else(|_| {
            stop.request();
            Err(anyhow::anyhow!("pipeline {name}: consumer thread panicked"))
        });
        if let Err(e) = result {
            tracing::error!(pipeline = %name, error = %e, "Pipeline failed.");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes).
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The worker threads of a pipeline configured with `workers` (`None`: one per CPU).
pub fn worker_count(workers: Option<usize>) -> usize {
    workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}
