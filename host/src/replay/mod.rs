//! `switchyard dlq replay`: a pipeline's dead letters sent back through its chain, from the
//! stage that failed them, with the versions a router would run now.
//!
//! ```text
//! dead-letter topic --(own group, up to the end offsets as of start)--> letter::read
//!   --> select (kind, time) --> chain from the failing stage --> router --> sink --> routes
//!                                                                      \--> dead-letter topic (+ replay count)
//! commit the group's offsets once every write of the records before them is acknowledged
//! ```
//!
//! - The chain is the pipeline's as `switchyard run` would start it: the config's plugins,
//!   or the versions uploaded since (read from the state directory, never written).
//! - Outputs take the router's path: same topics, keys, headers (provenance included) and
//!   timestamps as if the stage had not failed. A record that fails again is dead-lettered
//!   with `switchyard-dlq-replays` one above its dead letter's.
//! - Progress is the consumer group's (`<pipeline group>-dlq-replay` unless `--group`):
//!   committed only past records whose writes are all acknowledged (the sink's tickets and
//!   tracker, as a pipeline's), so a dead letter is replayed at least once and, after a
//!   clean run, never again. A dead letter the selection skips or that cannot be replayed
//!   is passed over too, and reported.
//! - A dry run runs the chain and reports, writes nothing and commits nothing.
//!
//! It does not replay stateful pipelines: their state lives per task in the changelog, which
//! only the router restores.

pub mod letter;
pub mod select;

use crate::config::{Config, PipelineConfig};
use crate::control::VersionStore;
use crate::kafka::{self, headers_from_kafka, now_ms};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Shared};
use crate::plugin::{
    ChainRunner, ChainSpec, Delivery, Destination, EngineConfig, HostServices, PluginEngine,
};
use crate::router::{Router, Source};
use crate::sink::{Pending, Sink, SinkHandle, SourceRecord, Ticket};
use crate::source::tracker::{InFlight, PartitionHandle};
use crate::status::PipelineStatus;
use anyhow::Context as _;
use letter::Letter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use select::Selection;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a replay waits for the broker: metadata, offsets, a commit.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading may go without reaching the end offsets before the replay gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the writes may take to be acknowledged once every dead letter is read.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The config file.
    pub config: PathBuf,
    /// The pipeline whose dead letters are replayed.
    pub pipeline: String,
    /// Run every record from this stage on, whichever stage failed it.
    pub stage: Option<String>,
    /// Which dead letters.
    pub selection: Selection,
    /// The consumer group keeping the replay's progress (default `<group>-dlq-replay`).
    pub group: Option<String>,
    /// Run the chain and report, but write and commit nothing.
    pub dry_run: bool,
}

/// The consumer group of a pipeline's replays when none is given.
pub fn default_group(pipeline: &PipelineConfig) -> String {
    format!("{}-dlq-replay", pipeline.group())
}

/// What a replay did, in total.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// The pipeline.
    pub pipeline: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
    /// The replay's consumer group.
    pub group: String,
    /// Nothing was written or committed.
    pub dry_run: bool,
    /// Dead letters read.
    pub read: u64,
    /// Outputs written per route (with `dry_run`: that would be written).
    pub replayed: BTreeMap<String, u64>,
    /// Records dead-lettered again.
    pub dead_lettered_again: u64,
    /// Records the chain dropped.
    pub dropped: u64,
    /// Dead letters the selection (`--filter-kind`, `--since`, `--until`) passed over.
    pub skipped_by_filter: u64,
    /// Dead letters that cannot be replayed, by reason.
    pub not_replayable: BTreeMap<String, u64>,
    /// The offsets committed, per partition of the dead-letter topic.
    pub committed: BTreeMap<i32, i64>,
}

/// What happened to one dead letter: one JSON line of the report.
#[derive(Debug, Serialize)]
struct Line<'a> {
    partition: i32,
    offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// `replayed`, `dead-lettered-again`, `dropped`, `skipped`, `not-replayable`.
    outcome: &'static str,
    /// The route of each output, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<&'a str>,
    /// Why it was dead-lettered again, skipped or not replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Replays the dead letters of `options.pipeline` up to the dead-letter topic's end as of
/// now, writing one JSON line per dead letter and then the summary to `report`.
pub fn replay(options: &ReplayOptions, report: &mut dyn Write) -> anyhow::Result<Summary> {
    let config = Config::load(&options.config)?;
    let Some(pipeline) = config.pipelines.iter().find(|p| p.name == options.pipeline) else {
        let names: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        anyhow::bail!(
            "no pipeline {:?} in {}; its pipelines are {}",
            options.pipeline,
            options.config.display(),
            names.join(", ")
        );
    };
    if let Some(stage) = &options.stage {
        anyhow::ensure!(
            pipeline.stages.iter().any(|s| &s.name == stage),
            "--stage: pipeline {} has no stage {stage:?}; its stages are {}",
            pipeline.name,
            pipeline
                .stages
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let chain = Chain::load(&config, pipeline)?;
    let group = options
        .group
        .clone()
        .unwrap_or_else(|| default_group(pipeline));
    let mut summary = Summary {
        pipeline: pipeline.name.clone(),
        dead_letter_topic: pipeline.dead_letter_topic.clone(),
        group: group.clone(),
        dry_run: options.dry_run,
        ..Summary::default()
    };
    let reader = Reader::open(&config, pipeline, &group)?;
    let writer = if options.dry_run {
        None
    } else {
        Some(Writer::start(&config, pipeline, &chain, &reader)?)
    };
    let mut run = Run {
        options,
        pipeline,
        chain,
        writer,
        runners: HashMap::new(),
        summary: &mut summary,
        report,
    };
    let read = reader.read_to_end(|message| run.one(message));
    let finished = match run.writer.take() {
        Some(writer) => writer.finish(&reader, run.summary),
        None => Ok(()),
    };
    read.and(finished)?;
    serde_json::to_writer(&mut *report, &serde_json::json!({ "summary": &summary }))?;
    writeln!(report)?;
    Ok(summary)
}

/// The pipeline's chain as a router would start it now, and its route table.
struct Chain {
    engine: Arc<PluginEngine>,
    spec: Arc<ChainSpec>,
    router: Router,
    services: HostServices,
    /// Kept for topic tables, which follow their topics while it lives.
    _shared: Shared,
}

impl Chain {
    fn load(config: &Config, pipeline: &PipelineConfig) -> anyhow::Result<Chain> {
        let settings = EngineConfig::for_pipelines([(1, pipeline.stages.len())]);
        let engine = PluginEngine::new(&settings).context("cannot start the plugin engine")?;
        let shared = Shared::start(config)?;
        // The versions `switchyard run` would start with, uploads included; a replay beside a
        // running router must not change its files.
        let store = match &config.admin.state_dir {
            Some(dir) => VersionStore::read_only(dir.clone()),
            None => VersionStore::memory(),
        };
        let loaded = Pipeline::new(
            engine.clone(),
            &config.kafka,
            pipeline,
            shared.services.clone(),
            shared.tables.clone(),
            &Metrics::new(),
            store,
        )?;
        let handle = loaded.handle();
        let active = handle.control.current();
        anyhow::ensure!(
            !active.spec.is_stateful(),
            "pipeline {} has stateful stages, whose state lives in its changelog per task: its dead letters cannot be replayed outside the router",
            pipeline.name
        );
        wait_for_tables(&shared);
        Ok(Chain {
            engine,
            spec: active.spec.clone(),
            router: active.router.clone(),
            services: handle.services.clone(),
            _shared: shared,
        })
    }

    /// The chain from stage `from` on: the same routes (so the same route ids) and default
    /// route; the stages before it already passed the record.
    fn from(&self, from: usize) -> anyhow::Result<ChainRunner> {
        let spec = &self.spec;
        let tail = ChainSpec::new(
            spec.pipeline(),
            spec.routes().to_vec(),
            spec.route_name(spec.default_route()),
            spec.stages().get(from..).unwrap_or_default().to_vec(),
        )?;
        Ok(ChainRunner::new(
            self.engine.clone(),
            Arc::new(tail),
            self.services.clone(),
        )?)
    }
}

/// Waits for every table to load and catch up with its topic, as a pipeline does before it
/// consumes, so no record is enriched from a table still filling.
fn wait_for_tables(shared: &Shared) {
    let mut logged: Option<Instant> = None;
    loop {
        let pending = shared.tables.pending();
        if pending.is_empty() {
            return;
        }
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            tracing::info!(tables = %pending.join(", "), "Waiting for tables to catch up with their topics.");
            logged = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The dead-letter topic, read by the replay's group from its committed offsets (or the
/// beginning) up to the end offsets it had when the replay started.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    /// Per partition, the end offset as of start.
    ends: BTreeMap<i32, i64>,
}

impl Reader {
    fn open(config: &Config, pipeline: &PipelineConfig, group: &str) -> anyhow::Result<Reader> {
        let topic = pipeline.dead_letter_topic.clone();
        let mut client = kafka::consumer_config(&config.kafka, pipeline);
        let consumer: BaseConsumer = client
            .set("group.id", group)
            // A new group starts at the oldest dead letter still kept.
            .set("auto.offset.reset", "earliest")
            .set(
                "client.id",
                format!("switchyard-{}-dlq-replay", pipeline.name),
            )
            .create()
            .context("cannot create the dead-letter topic's consumer")?;
        let partitions = kafka::partition_ids(&consumer, &topic, BROKER_TIMEOUT)?;
        anyhow::ensure!(
            !partitions.is_empty(),
            "the dead-letter topic {topic} (dead_letter_topic of pipeline {}) does not exist",
            pipeline.name
        );
        let mut all = TopicPartitionList::new();
        for p in &partitions {
            all.add_partition(&topic, *p);
        }
        let committed = consumer
            .committed_offsets(all, BROKER_TIMEOUT)
            .with_context(|| format!("cannot read the committed offsets of group {group}"))?;
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, BROKER_TIMEOUT)
                .with_context(|| format!("cannot read the end offset of {topic} [{p}]"))?;
            let start = committed
                .find_partition(&topic, p)
                .map(|e| e.offset())
                .and_then(|o| o.to_raw())
                .filter(|o| *o >= 0);
            if start.is_some_and(|s| s >= high) || high == 0 {
                continue;
            }
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            assignment.add_partition_offset(&topic, p, offset)?;
            ends.insert(p, high);
        }
        consumer.assign(&assignment)?;
        tracing::info!(topic, group, ends = ?ends, "Replaying dead letters up to these end offsets.");
        Ok(Reader {
            consumer,
            topic,
            ends,
        })
    }

    /// Hands every record below the end offsets to `each`, in offset order per partition.
    /// Stops at the first error `each` returns.
    fn read_to_end(
        &self,
        mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut open: BTreeMap<i32, i64> = self.ends.clone();
        let mut progress = Instant::now();
        while !open.is_empty() {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let (p, offset) = (message.partition(), message.offset());
                    let Some(&end) = open.get(&p) else { continue };
                    progress = Instant::now();
                    if offset < end {
                        each(&message)?;
                    }
                    if offset + 1 >= end {
                        open.remove(&p);
                    }
                    tracing::debug!(partition = p, offset, end, "Dead letter read.");
                }
                Some(Err(e)) => {
                    return Err(e).with_context(|| format!("cannot read {}", self.topic));
                }
                None => {
                    // The last offsets before the end may hold no record (transaction
                    // markers, compaction): the position says when a partition is done.
                    if let Ok(positions) = self.consumer.position() {
                        for e in positions.elements() {
                            if let (Some(end), Some(at)) =
                                (open.get(&e.partition()), e.offset().to_raw())
                                && at >= *end
                            {
                                tracing::debug!(
                                    partition = e.partition(),
                                    position = at,
                                    "End offset reached."
                                );
                                open.remove(&e.partition());
                            }
                        }
                    }
                    anyhow::ensure!(
                        progress.elapsed() < STALL_TIMEOUT,
                        "no record of {} read for {} s before its end offsets {:?} were reached",
                        self.topic,
                        STALL_TIMEOUT.as_secs(),
                        open
                    );
                }
            }
        }
        Ok(())
    }
}

/// The producer and the tracker of a replay that writes: a dead letter finishes once every
/// write of its record is acknowledged, and the group commits past finished ones only.
struct Writer {
    sink: SinkHandle,
    status: Arc<PipelineStatus>,
    /// Per partition of the dead-letter topic.
    partitions: HashMap<i32, Arc<PartitionHandle>>,
}

impl Writer {
    fn start(
        config: &Config,
        pipeline: &PipelineConfig,
        chain: &Chain,
        reader: &Reader,
    ) -> anyhow::Result<Writer> {
        let status = Arc::new(PipelineStatus::default());
        let partitions = reader
            .ends
            .keys()
            .map(|p| (*p, status.tracker.assign(&reader.topic, *p)))
            .collect();
        let sink = Sink::start(
            &kafka::producer_config(&config.kafka, &pipeline.name),
            &pipeline.name,
            chain.router.clone(),
            status.clone(),
            Metrics::new().pipeline(&pipeline.name, chain.spec.routes()),
        )?;
        Ok(Writer {
            sink,
            status,
            partitions,
        })
    }

    /// Waits for the writes, then commits past every dead letter whose writes are all
    /// acknowledged.
    fn finish(self, reader: &Reader, summary: &mut Summary) -> anyhow::Result<()> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        let tracker = &self.status.tracker;
        while tracker.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let unfinished = tracker.in_flight();
        self.sink.close(Duration::from_secs(5));
        let mut commit = TopicPartitionList::new();
        for (topic, partition, offset) in tracker.to_commit(true) {
            commit.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            summary.committed.insert(partition, offset);
        }
        if commit.count() > 0 {
            reader
                .consumer
                .commit(&commit, CommitMode::Sync)
                .with_context(|| {
                    format!(
                        "cannot commit the replay's progress (group {})",
                        summary.group
                    )
                })?;
        }
        anyhow::ensure!(
            unfinished == 0,
            "{unfinished} replayed records were not acknowledged within {} s; progress is committed up to the first of them, which the next replay writes again",
            ACK_TIMEOUT.as_secs()
        );
        Ok(())
    }
}

/// One replay under way.
struct Run<'a> {
    options: &'a ReplayOptions,
    pipeline: &'a PipelineConfig,
    chain: Chain,
    writer: Option<Writer>,
    /// One runner per stage the chain starts from, made when first needed.
    runners: HashMap<usize, ChainRunner>,
    summary: &'a mut Summary,
    report: &'a mut dyn Write,
}

impl Run<'_> {
    /// One record of the dead-letter topic.
    fn one(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        self.summary.read += 1;
        let held = match &self.writer {
            Some(writer) => {
                let handle = writer
                    .partitions
                    .get(&partition)
                    .context("a record of a partition the replay did not assign")?
                    .clone();
                if !writer.status.tracker.track_on(&handle, offset).taken() {
                    // Read twice (a fetch again after an error): the first one counts.
                    self.summary.read -= 1;
                    return Ok(());
                }
                Some(handle)
            }
            None => None,
        };
        let (headers, _) = headers_from_kafka(message.headers());
        let read = letter::read(
            self.pipeline.dead_letter_format,
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            headers,
        );
        let mut line = Line {
            partition,
            offset,
            kind: None,
            stage: None,
            source: None,
            outcome: "not-replayable",
            routes: Vec::new(),
            reason: None,
        };
        let letter = match read {
            Ok(letter) => letter,
            Err(e) => {
                let reason = e.to_string();
                self.count_not_replayable("not a Switchyard dead letter");
                line.reason = Some(reason);
                return self.done(line, held, offset);
            }
        };
        line.kind = Some(&letter.kind);
        line.stage = letter.stage.as_deref();
        line.source = Some(format!(
            "{}/{}@{}",
            letter.source_topic, letter.source_partition, letter.source_offset
        ));
        let at = letter
            .dead_lettered_ms
            .or_else(|| message.timestamp().to_millis());
        if let Some(why) = self.options.selection.skips(&letter.kind, at) {
            self.summary.skipped_by_filter += 1;
            line.outcome = "skipped";
            line.reason = Some(why);
            return self.done(line, held, offset);
        }
        let from = match self.start_stage(&letter) {
            Ok(from) => from,
            Err(why) => {
                self.count_not_replayable(&why);
                line.reason = Some(why);
                return self.done(line, held, offset);
            }
        };
        let record = match &letter.original {
            Ok(record) => record.clone(),
            Err(e) => {
                self.count_not_replayable(&e.to_string());
                line.reason = Some(e.to_string());
                return self.done(line, held, offset);
            }
        };
        let runner = match self.runners.entry(from) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.chain.from(from)?),
        };
        let deliveries =
            runner.process(&letter.source_topic, letter.source_partition, vec![record])?;
        let spec = self.chain.spec.clone();
        let mut routes = Vec::new();
        let mut again = None;
        for d in &deliveries {
            match &d.destination {
                Destination::Route { route, .. } => {
                    routes.push(spec.route_name(*route).to_owned());
                }
                Destination::DeadLetter(dead) => {
                    again.get_or_insert_with(|| {
                        format!(
                            "{}: {} (stage {})",
                            dead.error.kind, dead.error.message, dead.stage_name
                        )
                    });
                }
            }
        }
        for route in &routes {
            *self.summary.replayed.entry(route.clone()).or_insert(0) += 1;
        }
        line.outcome = if again.is_some() {
            self.summary.dead_lettered_again += 1;
            "dead-lettered-again"
        } else if deliveries.is_empty() {
            self.summary.dropped += 1;
            "dropped"
        } else {
            "replayed"
        };
        line.reason = again;
        let routes_text: Vec<&str> = routes.iter().map(String::as_str).collect();
        line.routes = routes_text;
        self.write_line(&line)?;
        if let Some(handle) = held {
            self.send(&letter, deliveries, handle, offset);
        }
        Ok(())
    }

    /// Where the record's chain starts: `--stage`, else the stage its dead letter names.
    fn start_stage(&self, letter: &Letter) -> Result<usize, String> {
        let stages = self.chain.spec.stages();
        let Some(name) = self.options.stage.as_deref().or(letter.stage.as_deref()) else {
            return Err("it names no stage".into());
        };
        stages
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("stage {name} is no longer in the pipeline"))
    }

    fn count_not_replayable(&mut self, why: &str) {
        *self
            .summary
            .not_replayable
            .entry(why.to_owned())
            .or_insert(0) += 1;
    }

    /// Reports a dead letter with nothing to write, and finishes it.
    fn done(
        &mut self,
        line: Line<'_>,
        held: Option<Arc<PartitionHandle>>,
        offset: i64,
    ) -> anyhow::Result<()> {
        self.write_line(&line)?;
        self.finish(held, offset);
        Ok(())
    }

    fn finish(&self, held: Option<Arc<PartitionHandle>>, offset: i64) {
        if let (Some(writer), Some(handle)) = (&self.writer, held) {
            writer.status.tracker.finish_many(&handle, [offset]);
        }
    }

    fn write_line(&mut self, line: &Line<'_>) -> anyhow::Result<()> {
        serde_json::to_writer(&mut *self.report, line)?;
        writeln!(self.report)?;
        Ok(())
    }

    /// Writes a record's deliveries, each with a ticket naming its dead letter, which
    /// finishes when the last is acknowledged.
    fn send(
        &self,
        letter: &Letter,
        deliveries: Vec<Delivery>,
        handle: Arc<PartitionHandle>,
        offset: i64,
    ) {
        let Some(writer) = &self.writer else {
            return;
        };
        let writes = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        if writes == 0 {
            writer.status.tracker.finish_many(&handle, [offset]);
            return;
        }
        let shared = (writes > 1).then(|| Pending::new(handle.clone(), offset, writes));
        let source = Source {
            topic: &letter.source_topic,
            partition: letter.source_partition,
        };
        let now = now_ms();
        let router = &self.chain.router;
        for delivery in deliveries {
            let owner = match &shared {
                Some(pending) => SourceRecord::Shared(pending.clone()),
                None => SourceRecord::Only(InFlight {
                    handle: handle.clone(),
                    offset,
                }),
            };
            match delivery.destination {
                Destination::Route { route, record } => {
                    let destination = Destination::Route { route, record };
                    let (out, provenance) = router.route_apart(source, destination, now);
                    writer
                        .sink
                        .sink
                        .send(out, provenance, Ticket::new(owner, Some(route)));
                }
                Destination::DeadLetter(dead) => {
                    let replays = letter.replays.saturating_add(1);
                    let out = router.dead_letter_again(source, dead, now, Some(replays));
                    writer.sink.sink.send(out, &[], Ticket::new(owner, None));
                }
            }
        }
    }
}
