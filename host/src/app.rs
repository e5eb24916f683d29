//! Starting a router: the one start-up path of `switchyard run`, the demo and the tests.
//!
//! ```text
//! Config -> plugin engine -> version store -> pipelines (plugins loaded, init run) -> admin API
//!        -> pipelines consuming, each on its own thread            => Running { stop, wait }
//! ```
//!
//! Everything that can fail on a bad config or plugin fails in [`start`], before a record is
//! read: a plugin that does not load, a taken admin port, a table file that does not parse.

use crate::admin::{self, Serving};
use crate::config::Config;
use crate::control::VersionStore;
use crate::kafka;
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineHandle};
use crate::plugin::{EngineConfig, PluginEngine};
use crate::status::Stop;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the admin API listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdminListen {
    /// As the config says (`admin.enabled`, `admin.listen`).
    #[default]
    FromConfig,
    /// On this address instead (port 0: a free port, see [`Running::admin_addr`]).
    At(SocketAddr),
    /// Not at all.
    Off,
}

/// How to start, beyond what the config says.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// A plugin engine to share (several routers in one process share its compiled code);
    /// `None`: a new engine with default settings.
    pub engine: Option<Arc<PluginEngine>>,
    /// Keep uploaded plugin versions in memory only, not in `admin.state_dir`.
    pub ephemeral_versions: bool,
    /// Where the admin API listens.
    pub admin: AdminListen,
}

/// A started router: its pipelines consume on their own threads, its admin API serves on a
/// small tokio runtime. [`Running::stop`] asks for a drain; [`Running::wait`] waits for it.
/// Dropping it stops and waits too.
pub struct Running {
    config: Config,
    pipelines: Vec<Arc<PipelineHandle>>,
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
    /// Set to true once every pipeline thread has returned.
    finished: tokio::sync::watch::Receiver<bool>,
    /// The pipelines' runner; taken by [`Running::wait`].
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    admin: Option<Serving>,
    /// Serves the admin API; shut down after the pipelines.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Loads `config` (plugins compiled, type-checked and their `init` run; tables loaded),
/// binds the admin API, and starts consuming.
pub fn start(config: Config, options: StartOptions) -> anyhow::Result<Running> {
    let engine = match options.engine {
        Some(engine) => engine,
        None => {
            let settings = EngineConfig::for_pipelines(
                config
                    .pipelines
                    .iter()
                    .map(|p| (crate::pipeline::worker_count(p.workers), p.stages.len())),
            );
            tracing::debug!(
                instances = settings.max_instances,
                "Plugin instance pool sized."
            );
            PluginEngine::new(&settings).context("cannot start the plugin engine")?
        }
    };
    let metrics = Arc::new(Metrics::new());
    let store = match (&config.admin.state_dir, options.ephemeral_versions) {
        (Some(dir), false) => VersionStore::at(dir.clone()).context("admin.state_dir")?,
        _ => VersionStore::memory(),
    };
    let shared = pipeline::Shared::start(&config)?;
    let pipelines = pipeline::load(&config, engine, &metrics, &store, &shared)?;
    check_output_topics(&config)?;
    let handles: Vec<_> = pipelines.iter().map(pipeline::Pipeline::handle).collect();
    for handle in &handles {
        if handle.control.current().spec.is_stateful() {
            check_changelog_topic(&config.kafka, &handle.config)?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("admin")
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    let mut admin_config = config.admin.clone();
    let serve = match options.admin {
        AdminListen::FromConfig => config.admin.enabled,
        AdminListen::At(address) => {
            admin_config.listen = address.to_string();
            true
        }
        AdminListen::Off => false,
    };
    // Bound before any record is read: a taken port fails the start, naming the key.
    let admin = if serve {
        let serving = admin::start(
            &runtime,
            &admin_config,
            handles.clone(),
            shared.tables.clone(),
            metrics.clone(),
        )?;
        tracing::info!(address = %serving.address, state_dir = ?store.dir(), "Admin API listening.");
        Some(serving)
    } else {
        None
    };
    let stop = Arc::new(Stop::default());
    let (done, finished) = tokio::sync::watch::channel(false);
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("pipelines".into())
            .spawn(move || {
                let result = pipeline::run_all(pipelines, stop);
                let _ = done.send(true);
                result
            })
            .context("cannot start the pipelines thread")?
    };
    Ok(Running {
        config,
        pipelines: handles,
        metrics,
        stop,
        finished,
        thread: Some(thread),
        admin,
        runtime: Some(runtime),
    })
}

/// Refuses to start when a route topic or a dead-letter topic does not exist (Switchyard
/// never creates topics): otherwise every record would find it out on its own, retried
/// without end. A cluster that does not answer in time is not a refusal: the pipelines then
/// wait for it as they always do.
fn check_output_topics(config: &Config) -> anyhow::Result<()> {
    let pipelines: Vec<&crate::config::PipelineConfig> = config.pipelines.iter().collect();
    let missing = match crate::kafka::missing_output_topics(
        &config.kafka,
        &pipelines,
        crate::kafka::TOPIC_CHECK_TIMEOUT,
    ) {
        Ok(missing) => missing,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot ask the cluster whether the output topics exist; starting anyway.");
            return Ok(());
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "these output topics do not exist: {}; create them first (Switchyard never creates topics)",
        missing.join(", ")
    )
}

/// A stateful pipeline needs its changelog topic (`<group>-changelog`, compacted) with at
/// least as many partitions as its source topics, which must all have the same number. The
/// topic is created only when the pipeline sets `create_internal_topics = true`; otherwise
/// the start is refused with the command that creates it. A cluster that does not answer in
/// time is not a refusal (the restore then waits for it).
fn check_changelog_topic(
    kafka: &crate::config::KafkaConfig,
    pipeline: &crate::config::PipelineConfig,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let topic = crate::changelog::topic_name(&pipeline.group());
    let mut client = rdkafka::ClientConfig::new();
    for (key, value) in &kafka.consumer {
        client.set(key, value);
    }
    let client: BaseConsumer = client
        .set("bootstrap.servers", &kafka.brokers)
        .set("allow.auto.create.topics", "false")
        .set("client.id", "switchyard-topic-check")
        .create()?;
    let timeout = crate::kafka::TOPIC_CHECK_TIMEOUT;
    let partitions = |name: &str| -> anyhow::Result<Option<usize>> {
        let metadata = client.fetch_metadata(Some(name), timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    };
    let sources: Vec<String> = match &pipeline.source {
        crate::config::Subscription::Topics(t) => t.clone(),
        crate::config::Subscription::Pattern(_) => Vec::new(),
    };
    let mut counts = Vec::new();
    for source in &sources {
        match partitions(source) {
            Ok(Some(n)) => counts.push((source.clone(), n)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, error = %e, "Cannot ask the cluster about the source topics; starting anyway.");
                return Ok(());
            }
        }
    }
    if counts.windows(2).any(|w| w[0].1 != w[1].1) {
        let listed: Vec<String> = counts
            .iter()
            .map(|(t, n)| format!("{t} ({n} partitions)"))
            .collect();
        anyhow::bail!(
            "pipeline {} keeps state per task (partition N of every source topic), so its source topics must have the same number of partitions: {}",
            pipeline.name,
            listed.join(", ")
        );
    }
    let needed = counts.iter().map(|(_, n)| *n).max().unwrap_or(1);
    match partitions(&topic) {
        Ok(Some(n)) if n >= needed => check_compacted(&kafka.brokers, &pipeline.name, &topic),
        Ok(Some(n)) => anyhow::bail!(
            "pipeline {}: the changelog topic {topic} has {n} partitions, fewer than the {needed} of its source topics; make one with at least {needed}",
            pipeline.name
        ),
        Ok(None) if pipeline.create_internal_topics => {
            create_changelog(&kafka.brokers, &topic, needed)?;
            tracing::info!(pipeline = %pipeline.name, topic, partitions = needed, "Changelog topic created (create_internal_topics).");
            Ok(())
        }
        Ok(None) => anyhow::bail!(
            "pipeline {} keeps state, and its changelog topic {topic} does not exist; create it (compacted, one partition per source partition): kafka-topics.sh --bootstrap-server {} --create --topic {topic} --partitions {needed} --config cleanup.policy=compact; or set create_internal_topics = true in the pipeline to let Switchyard create it",
            pipeline.name,
            kafka.brokers
        ),
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "Cannot ask the cluster about the changelog topic; starting anyway.");
            Ok(())
        }
    }
}

/// A changelog topic must be compacted: with deletion by age or size, a key written once
/// and never again (a long-lived aggregate, a join's stored record) is dropped from it, and
/// a restore after that brings the state back without it. `cleanup.policy` is read with
/// DescribeConfigs; a topic that does not set it gets the broker's default, `delete` on
/// Kafka. A cluster that does not answer is not a refusal.
fn check_compacted(brokers: &str, pipeline: &str, topic: &str) -> anyhow::Result<()> {
    match kafka::cleanup_policy(brokers, topic) {
        Ok(Some(policy)) if policy.split(',').any(|p| p.trim() == "compact") => Ok(()),
        Ok(policy) => anyhow::bail!(
            "pipeline {pipeline}: the changelog topic {topic} is not compacted (cleanup.policy {}), so a restore could miss state written long ago; make it compacted: kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact",
            match &policy {
                Some(p) => format!("= {p}"),
                None => "not set: the broker's default, delete on Kafka".to_owned(),
            }
        ),
        Err(e) => {
            tracing::warn!(pipeline, topic, error = %format!("{e:#}"), "Cannot read the changelog topic's cleanup.policy; starting anyway.");
            Ok(())
        }
    }
}

/// Creates a compacted changelog topic.
fn create_changelog(brokers: &str, topic: &str, partitions: usize) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create an admin client")?;
    let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
    let new = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to create the changelog topic")?;
    let results = runtime
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .with_context(|| format!("cannot create the changelog topic {topic}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                anyhow::bail!("cannot create the changelog topic {topic}: {code}")
            }
        }
    }
    Ok(())
}

impl Running {
    /// The config it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every pipeline, as the admin API sees it.
    pub fn pipelines(&self) -> &[Arc<PipelineHandle>] {
        &self.pipelines
    }

    /// One pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<&Arc<PipelineHandle>> {
        self.pipelines.iter().find(|p| p.name() == name)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where the admin API listens, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.address)
    }

    /// Asks every pipeline to drain in-flight records, commit and stop. Returns at once.
    pub fn stop(&self) {
        self.stop.request();
    }

    /// Whether a stop was asked for (by [`Running::stop`], or by a pipeline that failed).
    pub fn is_stopping(&self) -> bool {
        self.stop.is_requested()
    }

    /// Whether every pipeline has returned.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// Completes once a stop is asked for.
    pub async fn stopping(&self) {
        self.stop.requested().await;
    }

    /// Completes once every pipeline has returned.
    pub async fn finished(&self) {
        let mut finished = self.finished.clone();
        // An error means the sender is gone, which it only is once the thread ended.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Runs `future` to completion on the router's runtime (for signal handling).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            // The runtime is only taken by `wait` and `drop`, which consume `self`.
            None => unreachable!("the runtime lives as long as Running"),
        }
    }

    /// Waits until every pipeline has stopped (ask with [`Running::stop`]), then stops the
    /// admin API. Returns the first pipeline error.
    pub fn wait(mut self) -> anyhow::Result<()> {
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        let result = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the pipelines thread panicked"))),
            None => Ok(()),
        };
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.request();
        let _ = self.join();
    }
}
