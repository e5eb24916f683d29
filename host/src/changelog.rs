//! Durable state of a pipeline's stateful stages: its changelog topic.
//!
//! One compacted topic per pipeline, `<group>-changelog`; partition N holds task N (source
//! partition N of every source topic). Every stateful stage's writes go to it, keyed by the
//! stage's name, so that one ordered log holds everything a batch changed, in every stage:
//!
//! | record key | value |
//! |---|---|
//! | `<stage> 0x00 s <key>` | the state value; a tombstone (null) when deleted |
//! | `<stage> 0x00 t <domain byte> <instant, 8 bytes big-endian> <tag>` | empty while the timer is set; a tombstone once it fired or was cancelled |
//! | `0x00 marker` | JSON: the batch id, the source offsets whose effects the log holds, the watermark |
//!
//! Each record carries the header `switchyard-batch` (the batch id); a batch's marker comes
//! after its entries. The order of a commit is: the batch's outputs are acknowledged, then
//! its changelog records are written (in batch order per task), then, once those are
//! acknowledged, its source records finish and may be committed. So the marker's offsets
//! only ever name records whose outputs were all acknowledged.
//!
//! Restore reads partition N from its start to its end: entries are held per batch and
//! applied when the batch's marker is read; entries of a batch whose marker never came (a
//! crash mid-write) are dropped. Records below the marker's offsets are then skipped when
//! read again: their outputs were written and their effects are in the state. State effects
//! are applied exactly once; outputs are written at least once.

use crate::config::{KafkaConfig, PipelineConfig};
use crate::plugin::state::{Changes, Domain, TaskState, TimerKey};
use crate::source::tracker::{InFlight, PartitionHandle};
use crate::status::PipelineStatus;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header naming a record's batch.
pub const BATCH_HEADER: &str = "switchyard-batch";
/// The marker's key.
pub const MARKER_KEY: &[u8] = b"\0marker";

/// The changelog topic of a pipeline's group.
pub fn topic_name(group: &str) -> String {
    format!("{group}-changelog")
}

/// A source partition's position: topic, partition, the offset after the last record whose
/// effects a state holds.
pub type Position = (String, i32, i64);

/// What a batch's marker says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The batch id.
    pub batch: String,
    /// Per source partition of the task: the offset after the last record whose effects the
    /// log holds.
    pub positions: Vec<Position>,
    /// The task's watermark after the batch.
    pub watermark: Option<i64>,
}

/// One changelog record.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

fn stage_key(stage: &str, kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(stage.len() + 2 + rest.len());
    key.extend_from_slice(stage.as_bytes());
    key.push(0);
    key.push(kind);
    key.extend_from_slice(rest);
    key
}

fn timer_rest(timer: &TimerKey) -> Vec<u8> {
    let mut rest = Vec::with_capacity(9 + timer.tag.len());
    rest.push(match timer.domain {
        Domain::EventTime => 0,
        Domain::WallClock => 1,
    });
    rest.extend_from_slice(&timer.at_ms.to_be_bytes());
    rest.extend_from_slice(timer.tag.as_bytes());
    rest
}

/// The records of one batch: every stage's changes, then the marker.
pub fn encode(changes: &[(String, Changes)], marker: &Marker) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for (stage, changes) in changes {
        for (key, value) in &changes.entries {
            out.push(LogRecord {
                key: stage_key(stage, b's', key),
                value: value.clone(),
            });
        }
        for (timer, set) in &changes.timers {
            out.push(LogRecord {
                key: stage_key(stage, b't', &timer_rest(timer)),
                value: set.then(Vec::new),
            });
        }
    }
    out.push(LogRecord {
        key: MARKER_KEY.to_vec(),
        value: Some(serde_json::to_vec(marker).unwrap_or_default()),
    });
    out
}

/// A task's state as read back from its changelog partition.
#[derive(Debug, Default)]
pub struct Restored {
    /// Per stage name, its state.
    pub stages: BTreeMap<String, TaskState>,
    /// The last complete batch's marker.
    pub marker: Option<Marker>,
    /// Records read.
    pub records: u64,
    /// Records of batches that never completed, dropped.
    pub torn: u64,
}

/// Rebuilds a task's state from its changelog records, in log order.
#[derive(Debug, Default)]
pub struct Restorer {
    restored: Restored,
    pending_batch: Option<String>,
    pending: Vec<LogRecord>,
}

impl Restorer {
    /// Takes the next record of the log.
    pub fn read(&mut self, batch: Option<&str>, record: LogRecord) {
        self.restored.records += 1;
        let batch = batch.unwrap_or_default();
        if self.pending_batch.as_deref() != Some(batch) {
            // A batch whose marker never came: its writes never happened.
            self.restored.torn += self.pending.len() as u64;
            self.pending.clear();
            self.pending_batch = Some(batch.to_owned());
        }
        if record.key == MARKER_KEY {
            let marker = record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Marker>(v).ok());
            if let Some(marker) = marker {
                for pending in std::mem::take(&mut self.pending) {
                    self.apply(pending);
                }
                self.restored.marker = Some(marker);
            }
            self.pending_batch = None;
        } else {
            self.pending.push(record);
        }
    }

    fn apply(&mut self, record: LogRecord) {
        let Some(split) = record.key.iter().position(|b| *b == 0) else {
            return;
        };
        let Ok(stage) = std::str::from_utf8(&record.key[..split]) else {
            return;
        };
        let Some((&kind, rest)) = record.key[split + 1..].split_first() else {
            return;
        };
        let state = self.restored.stages.entry(stage.to_owned()).or_default();
        match kind {
            b's' => state.restore_entry(rest.to_vec(), record.value),
            b't' if rest.len() >= 9 => {
                let domain = if rest[0] == 1 {
                    Domain::WallClock
                } else {
                    Domain::EventTime
                };
                let mut at = [0u8; 8];
                at.copy_from_slice(&rest[1..9]);
                let timer = TimerKey {
                    domain,
                    at_ms: i64::from_be_bytes(at),
                    tag: String::from_utf8_lossy(&rest[9..]).into_owned(),
                };
                state.restore_timer(timer, record.value.is_some());
            }
            _ => {}
        }
    }

    /// The state as of the last complete batch.
    pub fn finish(mut self) -> Restored {
        self.restored.torn += self.pending.len() as u64;
        self.restored
    }
}

/// Restores every task in `tasks` from the changelog `topic`, reading each partition from
/// its start to its end (as the end was when the read began). `progress(task, read, end)`
/// is told how far each has come.
///
/// `committed` are the group's committed offsets of the task's source partitions. The log
/// must hold a marker at or past each (a record is committed only after the changelog
/// records of its batch are acknowledged): reading goes on past the partition's end as the
/// broker reports it until it does, for up to [`CATCH_UP`], so that a broker whose reported
/// end lags its acknowledged writes cannot make the state miss a batch whose input was
/// committed. A log without any marker starts the state empty.
pub fn restore(
    kafka: &KafkaConfig,
    pipeline: &str,
    topic: &str,
    tasks: &[i32],
    committed: &[(String, i32, i64)],
    progress: &dyn Fn(i32, i64, i64),
) -> anyhow::Result<HashMap<i32, Restored>> {
    let mut config = rdkafka::ClientConfig::new();
    // librdkafka prefetches up to 64 MiB per consumer by default; during a restore that
    // memory comes on top of the state being rebuilt. 16 MiB still keeps a fetch in flight
    // while the last one is applied. A `[kafka.consumer]` setting of it wins.
    config.set("queued.max.messages.kbytes", "16384");
    for (key, value) in &kafka.consumer {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("switchyard-{pipeline}-restore"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create the restore consumer: {e}"))?;
    let mut out = HashMap::new();
    for &task in tasks {
        let (low, high) = consumer
            .fetch_watermarks(topic, task, Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("changelog {topic} partition {task}: {e}"))?;
        let mut restorer = Restorer::default();
        let mut gaps = 0u64;
        let wanted: Vec<&(String, i32, i64)> =
            committed.iter().filter(|(_, p, _)| *p == task).collect();
        let covered = |marker: Option<&Marker>| match marker {
            None => true,
            Some(m) => wanted.iter().all(|(t, p, o)| {
                m.positions
                    .iter()
                    .any(|(mt, mp, mo)| mt == t && mp == p && mo >= o)
            }),
        };
        let mut caught_up_at: Option<std::time::Instant> = None;
        if high > low || !wanted.is_empty() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, task, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let mut next = low;
            let mut idle = std::time::Instant::now();
            while next < high || !covered(restorer.restored.marker.as_ref()) {
                if next >= high {
                    let since = *caught_up_at.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > CATCH_UP {
                        anyhow::bail!(
                            "changelog {topic} partition {task} ends (offset {next}) before the committed input {wanted:?}: the effects of committed records are missing from it (was it deleted or truncated?); to start this task's state empty, delete the changelog topic and reset the group's offsets"
                        );
                    }
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        idle = std::time::Instant::now();
                        if m.offset() != next {
                            gaps += 1;
                            tracing::warn!(
                                pipeline,
                                topic,
                                task,
                                expected = next,
                                got = m.offset(),
                                "Changelog offsets skip; records between were not read (compacted, or lost by the broker)."
                            );
                        }
                        next = m.offset() + 1;
                        let batch = m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == BATCH_HEADER)
                                .and_then(|h| h.value)
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .map(str::to_owned)
                        });
                        restorer.read(
                            batch.as_deref(),
                            LogRecord {
                                key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                                value: m.payload().map(<[u8]>::to_vec),
                            },
                        );
                        if next % 10_000 == 0 {
                            progress(task, next - low, high - low);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(pipeline, topic, task, error = %e, "Changelog read error; going on.")
                    }
                    None => {
                        if idle.elapsed() > Duration::from_secs(60) {
                            anyhow::bail!(
                                "changelog {topic} partition {task}: no record for 60 s at offset {next} of {high}"
                            );
                        }
                    }
                }
            }
        }
        progress(task, high - low, high - low);
        let restored = restorer.finish();
        tracing::info!(
            pipeline,
            topic,
            task,
            records = restored.records,
            torn = restored.torn,
            gaps,
            low,
            high,
            stages = restored.stages.len(),
            marker = ?restored.marker.as_ref().map(|m| &m.positions),
            "Task state restored from the changelog."
        );
        out.insert(task, restored);
    }
    drop(consumer);
    release_freed_memory();
    Ok(out)
}

/// Returns memory freed but still held by the allocator to the system: the restore
/// consumer's fetch buffers, interleaved with the state just rebuilt, would otherwise stay
/// resident on top of it.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers; mimalloc is the process's allocator (the
    // `override` feature), and collecting when nothing is free does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Tasks restored on assignment, handed from the consumer (which restores them before any
/// record of the task is read) to the worker that runs them. Each assignment of a task gets
/// a new epoch; a worker installs a task's state when it sees an epoch newer than its own.
#[derive(Debug, Default)]
pub struct RestoreRegistry {
    tasks: Mutex<HashMap<i32, (u64, Option<Restored>)>>,
    epoch: AtomicU64,
    /// Per task being restored: records read, records to read.
    progress: Mutex<BTreeMap<i32, (i64, i64)>>,
    /// Per task run here: its watermark, as of its last batch.
    watermarks: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Records that reached the plugins flagged late.
    late: AtomicU64,
    /// Per task being restored, the stages whose state was reset meanwhile: emptied when
    /// the restored state is put here.
    resets: Mutex<BTreeMap<i32, BTreeSet<String>>>,
}

impl RestoreRegistry {
    /// A task's restored state, under a new epoch.
    pub fn put(&self, task: i32, mut restored: Restored) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let reset = self
            .resets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task);
        for stage in reset.iter().flatten() {
            if let Some(state) = restored.stages.get_mut(stage) {
                state.clear_uncounted();
            }
        }
        tasks.insert(task, (epoch, Some(restored)));
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task);
    }

    /// Empties `stage`'s state in every task restored and not installed yet, and in every
    /// task being restored (when it is put): a reload that resets a stage's state reaches
    /// the tasks whose state a worker has not taken yet, not only those it runs. Every key
    /// and timer becomes a deletion in the task's first changelog batch.
    pub fn reset_stage(&self, stage: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, restored) in tasks.values_mut() {
            if let Some(state) = restored.as_mut().and_then(|r| r.stages.get_mut(stage)) {
                state.clear_uncounted();
            }
        }
        let restoring: Vec<i32> = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let mut resets = self.resets.lock().unwrap_or_else(|p| p.into_inner());
        for task in restoring {
            resets.entry(task).or_default().insert(stage.to_owned());
        }
    }

    /// Tasks whose restored state no worker has taken yet, each with the source positions
    /// (topic, partition, next offset) it covers; tasks restored empty are left out.
    pub fn waiting(&self) -> Vec<(i32, Vec<Position>)> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .filter_map(|(task, (_, restored))| {
                let positions = &restored.as_ref()?.marker.as_ref()?.positions;
                (!positions.is_empty()).then(|| (*task, positions.clone()))
            })
            .collect()
    }

    /// The task's state if its epoch is newer than `installed`.
    pub fn take_newer(&self, task: i32, installed: u64) -> Option<(u64, Restored)> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let (epoch, restored) = tasks.get_mut(&task)?;
        (*epoch > installed).then(|| (*epoch, restored.take().unwrap_or_default()))
    }

    /// Restore progress of a task.
    pub fn set_progress(&self, task: i32, read: i64, total: i64) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task, (read, total));
    }

    /// A task's watermark after a batch, and the late records of the batch.
    pub fn note_batch(&self, task: i32, watermark: Option<i64>, late: u64) {
        self.watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task, watermark);
        if late > 0 {
            self.late.fetch_add(late, Ordering::Relaxed);
        }
    }

    /// Forgets the watermarks of tasks no longer assigned (all of them on a new assignment).
    pub fn forget_watermarks(&self) {
        self.watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Each task's watermark, as of its last batch.
    pub fn watermarks(&self) -> Vec<(i32, Option<i64>)> {
        self.watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, w)| (*t, *w))
            .collect()
    }

    /// Records flagged late so far.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Tasks being restored now: (task, records read, records to read).
    pub fn restoring(&self) -> Vec<(i32, i64, i64)> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, (r, n))| (*t, *r, *n))
            .collect()
    }
}

/// What the consumer needs to restore the tasks it is assigned.
#[derive(Clone)]
pub struct StateSource {
    /// The client settings of the restore consumer.
    pub kafka: KafkaConfig,
    /// The changelog topic.
    pub topic: String,
    /// The source topics, when the pipeline names them (every one must have partition N
    /// assigned with task N).
    pub topics: Vec<String>,
    /// Where restored tasks go.
    pub registry: Arc<RestoreRegistry>,
    /// The pipeline's status (a restore that fails stops it).
    pub status: Arc<PipelineStatus>,
}

impl StateSource {
    /// Restores the tasks of an assignment of `partitions`; any failure, or a task without
    /// partition N of every source topic, stops the pipeline with the reason.
    pub fn on_assign(
        &self,
        pipeline: &str,
        partitions: &[(String, i32)],
        committed: &[(String, i32, i64)],
    ) {
        let mut tasks: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        tasks.sort_unstable();
        tasks.dedup();
        if self.topics.len() > 1 {
            for task in &tasks {
                let missing: Vec<&str> = self
                    .topics
                    .iter()
                    .filter(|t| !partitions.iter().any(|(pt, pp)| pt == *t && pp == task))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    self.status.health.fail(format!(
                        "pipeline {pipeline}: task {task} (partition {task} of every source topic) was assigned without partition {task} of {}; stateful pipelines need the source topics {} to have the same number of partitions, and the range assignor (partition.assignment.strategy=range)",
                        missing.join(", "),
                        self.topics.join(", ")
                    ));
                    return;
                }
            }
        }
        self.registry.forget_watermarks();
        for task in &tasks {
            self.registry.set_progress(*task, 0, 0);
        }
        let registry = self.registry.clone();
        let progress =
            move |task: i32, read: i64, total: i64| registry.set_progress(task, read, total);
        match restore(
            &self.kafka,
            pipeline,
            &self.topic,
            &tasks,
            committed,
            &progress,
        ) {
            Ok(restored) => {
                for (task, state) in restored {
                    self.registry.put(task, state);
                }
            }
            Err(e) => self.status.health.fail(format!(
                "pipeline {pipeline}: cannot restore the state of tasks {tasks:?} from {}: {e:#}",
                self.topic
            )),
        }
    }
}

/// How long a restore waits, past the partition's end as the broker reported it, for the
/// marker that covers the committed input.
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// A batch of a task waiting for its outputs before its changelog records are written.
pub struct Gated {
    log: Arc<Changelog>,
    task: i32,
    /// Outputs not yet acknowledged.
    outputs: AtomicU32,
    records: Mutex<Vec<LogRecord>>,
    /// The source records that finish once the changelog records are acknowledged.
    finish: Mutex<Vec<(Arc<PartitionHandle>, Vec<i64>)>>,
    /// One of them (for logs and revocation checks).
    pub first: InFlight,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated")
            .field("task", &self.task)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Gated {
    /// One output acknowledged (or given up for a revoked partition).
    pub fn output_done(&self) {
        if self.outputs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.log.release(self.task);
        }
    }
}

/// Acknowledgements of one batch's changelog records.
struct Written {
    remaining: AtomicU32,
    finish: Vec<(Arc<PartitionHandle>, Vec<i64>)>,
}

struct LogContext {
    pipeline: String,
    topic: String,
    status: Arc<PipelineStatus>,
}

impl ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(&self.pipeline, level, fac, log_message);
    }
}

impl ProducerContext for LogContext {
    type DeliveryOpaque = Arc<Written>;

    fn delivery(&self, result: &DeliveryResult<'_>, written: Arc<Written>) {
        match result {
            Ok(_) => {
                if written.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    for (handle, offsets) in &written.finish {
                        self.status.tracker.finish_many(handle, offsets.iter().copied());
                    }
                }
            }
            Err((error, _)) => self.status.health.fail(format!(
                "a write to the changelog topic {} was refused ({error}); the state cannot be made durable",
                self.topic
            )),
        }
    }
}

/// A pipeline's changelog writer: per task, batches in order, each written once its outputs
/// are acknowledged.
pub struct Changelog {
    topic: String,
    producer: ThreadedProducer<LogContext>,
    queues: Mutex<HashMap<i32, VecDeque<Arc<Gated>>>>,
    /// This writer's batch ids: `<epoch>-<sequence>`.
    epoch: u64,
    sequence: AtomicU64,
}

impl Changelog {
    /// A writer to the pipeline's changelog topic.
    pub fn start(
        kafka: &KafkaConfig,
        pipeline: &PipelineConfig,
        status: Arc<PipelineStatus>,
    ) -> anyhow::Result<Arc<Self>> {
        let topic = topic_name(&pipeline.group());
        let mut config = crate::kafka::producer_config(kafka, &pipeline.name);
        config
            .set(
                "client.id",
                format!("switchyard-{}-changelog", pipeline.name),
            )
            .set("queue.buffering.max.messages", "1000000");
        let producer = config
            .create_with_context(LogContext {
                pipeline: pipeline.name.clone(),
                topic: topic.clone(),
                status,
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "pipeline {}: cannot create the changelog producer: {e}",
                    pipeline.name
                )
            })?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Arc::new(Changelog {
            topic,
            producer,
            queues: Mutex::new(HashMap::new()),
            epoch,
            sequence: AtomicU64::new(0),
        }))
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A new batch id.
    pub fn next_batch(&self) -> String {
        format!(
            "{:x}-{}",
            self.epoch,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Queues a batch of `task` whose `outputs` outputs are about to be sent; its records are
    /// written once they are all acknowledged and every earlier batch of the task is written.
    pub fn submit(
        self: &Arc<Self>,
        task: i32,
        outputs: u32,
        records: Vec<LogRecord>,
        finish: Vec<(Arc<PartitionHandle>, Vec<i64>)>,
        first: InFlight,
    ) -> Arc<Gated> {
        let gated = Arc::new(Gated {
            log: self.clone(),
            task,
            outputs: AtomicU32::new(outputs),
            records: Mutex::new(records),
            finish: Mutex::new(finish),
            first,
        });
        self.lock()
            .entry(task)
            .or_default()
            .push_back(gated.clone());
        if outputs == 0 {
            self.release(task);
        }
        gated
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, VecDeque<Arc<Gated>>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the task's batches whose outputs are all acknowledged, in order, up to the
    /// first that still waits.
    fn release(&self, task: i32) {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(&task) else {
            return;
        };
        while queue
            .front()
            .is_some_and(|g| g.outputs.load(Ordering::Acquire) == 0)
        {
            let Some(gated) = queue.pop_front() else {
                break;
            };
            let records =
                std::mem::take(&mut *gated.records.lock().unwrap_or_else(|p| p.into_inner()));
            let finish =
                std::mem::take(&mut *gated.finish.lock().unwrap_or_else(|p| p.into_inner()));
            self.write(task, records, finish);
        }
    }

    fn write(
        &self,
        task: i32,
        records: Vec<LogRecord>,
        finish: Vec<(Arc<PartitionHandle>, Vec<i64>)>,
    ) {
        let Ok(count) = u32::try_from(records.len()) else {
            return;
        };
        let written = Arc::new(Written {
            remaining: AtomicU32::new(count),
            finish,
        });
        let batch = self.next_batch_of(&records);
        for record in records {
            let headers = OwnedHeaders::new_with_capacity(1).insert(KafkaHeader {
                key: BATCH_HEADER,
                value: Some(batch.as_bytes()),
            });
            let mut out = BaseRecord::<[u8], [u8], Arc<Written>>::with_opaque_to(
                &self.topic,
                written.clone(),
            )
            .partition(task)
            .key(record.key.as_slice())
            .headers(headers);
            if let Some(value) = &record.value {
                out = out.payload(value.as_slice());
            }
            loop {
                match self.producer.send(out) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        out = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => {
                        self.producer.context().status.health.fail(format!(
                            "cannot write to the changelog topic {} ({error}); the state cannot be made durable",
                            self.topic
                        ));
                        return;
                    }
                }
            }
        }
    }

    /// The batch id the marker of `records` names (the last record is the marker).
    fn next_batch_of(&self, records: &[LogRecord]) -> String {
        records
            .last()
            .and_then(|m| m.value.as_deref())
            .and_then(|v| serde_json::from_slice::<Marker>(v).ok())
            .map(|m| m.batch)
            .unwrap_or_else(|| self.next_batch())
    }

    /// Forgets the task's batches still waiting for outputs (they belong to an assignment
    /// that ended; their source records are never finished, so never committed past).
    pub fn reset_task(&self, task: i32) {
        self.lock().remove(&task);
    }

    /// Waits up to `timeout` for every changelog write to be acknowledged.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(topic = %self.topic, error = %e, "Changelog writes not all acknowledged before closing.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task assigned without partition N of every source topic stops the pipeline,
    /// naming the topics (unequal partition counts, or another assignor than range).
    #[test]
    fn a_task_missing_a_topic_stops_the_pipeline() {
        let status = Arc::new(PipelineStatus::default());
        let source = StateSource {
            kafka: KafkaConfig {
                brokers: "127.0.0.1:1".into(),
                consumer: Default::default(),
                producer: Default::default(),
            },
            topic: "g-changelog".into(),
            topics: vec!["orders".into(), "payments".into()],
            registry: Arc::default(),
            status: status.clone(),
        };
        source.on_assign("p", &[("orders".into(), 2)], &[]);
        let why = status.health.fatal().expect("stopped");
        assert!(
            why.contains("task 2") && why.contains("without partition 2 of payments"),
            "{why}"
        );
    }

    /// Restored tasks with positions wait until a worker takes them; one restored empty does
    /// not.
    #[test]
    fn restored_tasks_wait_with_their_positions_until_taken() {
        let registry = RestoreRegistry::default();
        let marker = Marker {
            batch: "b".into(),
            positions: vec![("orders".into(), 3, 42), ("payments".into(), 3, 7)],
            watermark: None,
        };
        registry.put(
            3,
            Restored {
                marker: Some(marker.clone()),
                ..Restored::default()
            },
        );
        // Restored empty: nothing to run before its first record.
        registry.put(4, Restored::default());
        assert_eq!(registry.waiting(), [(3, marker.positions.clone())]);
        assert!(registry.take_newer(3, 0).is_some());
        assert_eq!(registry.waiting(), []);
    }

    /// A reset reaches tasks restored and not installed yet, and tasks whose restore is
    /// under way (emptied when put): their keys and timers become deletions, and other
    /// stages and tasks keep theirs.
    #[test]
    fn a_reset_reaches_restored_tasks_not_installed_yet() {
        let restored = |keys: &[&str]| {
            let mut window = TaskState::default();
            for key in keys {
                window.restore_entry(key.as_bytes().to_vec(), Some(b"v".to_vec()));
            }
            window.restore_timer(
                TimerKey {
                    domain: Domain::EventTime,
                    at_ms: 60_000,
                    tag: "w".into(),
                },
                true,
            );
            let mut other = TaskState::default();
            other.restore_entry(b"o".to_vec(), Some(b"kept".to_vec()));
            Restored {
                stages: [("window".to_owned(), window), ("other".to_owned(), other)].into(),
                ..Restored::default()
            }
        };
        let registry = RestoreRegistry::default();
        registry.put(0, restored(&["a", "b"]));
        registry.set_progress(1, 5, 10);
        registry.reset_stage("window");
        registry.put(1, restored(&["c"]));
        registry.put(2, restored(&["d"]));

        for (task, deleted) in [(0, vec!["a", "b"]), (1, vec!["c"])] {
            let (_, mut got) = registry.take_newer(task, 0).expect("restored");
            let window = got.stages.get_mut("window").expect("window");
            assert!(
                window.is_empty() && window.timers().next().is_none(),
                "task {task}"
            );
            let changes = window.take_changes();
            let expected: Vec<(Vec<u8>, Option<Vec<u8>>)> = deleted
                .iter()
                .map(|k| (k.as_bytes().to_vec(), None))
                .collect();
            assert_eq!(changes.entries, expected, "task {task}");
            assert_eq!(changes.timers.len(), 1, "the timer is deleted too");
            assert!(!changes.timers[0].1);
            assert_eq!(
                got.stages["other"].len(),
                1,
                "other stages keep their state"
            );
        }
        // Restored after the reset (a later assignment): untouched.
        let (_, later) = registry.take_newer(2, 0).expect("restored");
        assert_eq!(later.stages["window"].len(), 1);
    }

    fn read_all(restorer: &mut Restorer, batch: &str, records: Vec<LogRecord>) {
        for r in records {
            restorer.read(Some(batch), r);
        }
    }

    /// What a batch changed comes back from its records; a batch cut short before its
    /// marker is dropped whole, even when the next writer's batches follow it.
    #[test]
    fn restore_applies_complete_batches_only() {
        let changes = Changes {
            entries: vec![(b"a".to_vec(), Some(b"1".to_vec()))],
            timers: vec![],
        };
        let marker = |batch: &str, offset| Marker {
            batch: batch.into(),
            positions: vec![("events".into(), 0, offset)],
            watermark: Some(offset * 10),
        };
        let first = encode(&[("window".into(), changes)], &marker("e1-0", 5));
        let timer = TimerKey {
            domain: Domain::EventTime,
            at_ms: -7,
            tag: "w".into(),
        };
        let second = encode(
            &[(
                "window".into(),
                Changes {
                    entries: vec![(b"a".to_vec(), None), (b"b".to_vec(), Some(b"2".to_vec()))],
                    timers: vec![(timer.clone(), true)],
                },
            )],
            &marker("e1-1", 9),
        );
        let torn: Vec<LogRecord> = second[..2].to_vec();

        let mut r = Restorer::default();
        read_all(&mut r, "e1-0", first.clone());
        read_all(&mut r, "e1-1", torn);
        let third = encode(
            &[(
                "window".into(),
                Changes {
                    entries: vec![(b"c".to_vec(), Some(b"3".to_vec()))],
                    timers: vec![],
                },
            )],
            &marker("e2-0", 7),
        );
        read_all(&mut r, "e2-0", third);
        let restored = r.finish();
        assert_eq!(restored.torn, 2);
        let state = &restored.stages["window"];
        assert_eq!(state.get(b"a"), Some(b"1".as_slice()));
        assert_eq!(state.get(b"b"), None, "torn batch dropped");
        assert_eq!(state.get(b"c"), Some(b"3".as_slice()));
        assert_eq!(restored.marker.expect("marker").batch, "e2-0");

        let mut r = Restorer::default();
        read_all(&mut r, "e1-0", first);
        read_all(&mut r, "e1-1", second);
        let restored = r.finish();
        let state = &restored.stages["window"];
        assert_eq!(state.get(b"a"), None);
        assert_eq!(state.get(b"b"), Some(b"2".as_slice()));
        assert_eq!(state.timers().cloned().collect::<Vec<_>>(), vec![timer]);
        assert_eq!(restored.torn, 0);
    }
}
