//! The configuration file as written: serde structs, every table `deny_unknown_fields`, so a
//! typo is an error naming the key and its line. [`super::Config`] is what they become once
//! checked.

use super::{
    AdminConfig, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_WAIT_MS, DEFAULT_COMMIT_INTERVAL_MS,
    DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_WATCH_INTERVAL_MS, DeadLetterFormat,
    KafkaConfig, StartPosition, TableFormat,
};
use crate::plugin::StageLimits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Kafka connection and client settings.
    pub kafka: KafkaConfig,
    /// One or more pipelines.
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<RawPipeline>,
    /// Lookup tables plugins read with `host::lookup`.
    #[serde(rename = "table", default)]
    pub tables: Vec<RawTable>,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// An enrichment table plugins read with `host::lookup` (see `tables.rs`): from a file
/// (`path`, JSON Lines or CSV, keyed by `key_field`) or from a topic (`topic`, keyed by the
/// record key, like a compacted topic).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// Name plugins use in `lookup(table, key)`.
    pub name: String,
    /// A JSON Lines or CSV file, relative to the config file's directory. Exactly one of
    /// `path` and `topic`.
    pub path: Option<PathBuf>,
    /// A Kafka topic: the latest value per key; a null value deletes the key.
    pub topic: Option<String>,
    /// File tables: the field (JSON Lines) or column (CSV) holding each row's key.
    pub key_field: Option<String>,
    /// File tables: `jsonl` or `csv` (default: from the file's extension).
    pub format: Option<TableFormat>,
    /// File tables: how often the file is checked for changes, in ms (default 1000; 0: only
    /// `POST /api/v1/tables/{name}/reload` reads it again).
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

/// One pipeline: sources, the stage chain, and where records go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// Unique name; used in metrics, logs, headers and the default consumer group.
    pub name: String,
    /// Source topics. Exactly one of `topics` and `topic_pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Source topics as a regular expression (subscribes to every matching topic, present
    /// and future).
    pub topic_pattern: Option<String>,
    /// Consumer group; default `switchyard-<name>`.
    pub group: Option<String>,
    /// Start position for a group with no committed offsets (default `earliest`).
    #[serde(default = "default_start")]
    pub start: StartPosition,
    /// Route name -> topic. A plugin names routes, never topics.
    pub routes: BTreeMap<String, String>,
    /// Route of records no stage routed.
    pub default_route: String,
    /// Topic for records that cannot or must not be delivered.
    pub dead_letter_topic: String,
    /// Format of dead-letter records (default `headers`).
    #[serde(default = "default_dlq_format")]
    pub dead_letter_format: DeadLetterFormat,
    /// Whether routed records carry the provenance headers `switchyard-pipeline` and
    /// `switchyard-versions` (default true). Dead letters always carry theirs.
    #[serde(default = "default_true")]
    pub provenance_headers: bool,
    /// Records per plugin call (default 256).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds (default 0: run what is queued at once).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Worker threads running the chain (default: one per CPU). All records of a partition go
    /// to the same worker, so order within a partition is kept.
    pub workers: Option<usize>,
    /// Records taken from Kafka and not yet finished above which the consumer pauses
    /// (default 20000).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Longest wait for in-flight records when partitions are revoked or on shutdown, in
    /// milliseconds (default 10000). Records still in flight then are delivered again later.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Interval between offset commits, in milliseconds (default 200).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Stateful stages: how far a task's watermark stays behind the highest record
    /// timestamp seen, in milliseconds (default 0).
    #[serde(default)]
    pub watermark_delay_ms: u64,
    /// Stateful stages: how long a source partition may show no record before it stops
    /// holding its task's watermark back, in milliseconds (default 60000).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Stateful stages: whether Switchyard may create the pipeline's changelog topic
    /// (default false: it must exist).
    #[serde(default)]
    pub create_internal_topics: bool,
    /// Whether offsets skipped on the source topics are counted and logged as records the
    /// broker lost (default true; compacted topics are never counted). Set false for topics
    /// written by transactional producers, whose commit markers take offsets.
    #[serde(default = "default_true")]
    pub count_source_gaps: bool,
    /// The stage chain, in order; at least one.
    #[serde(rename = "stage", default)]
    pub stages: Vec<RawStage>,
}

/// One stage of a chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    /// Unique name within the pipeline.
    pub name: String,
    /// Path to the plugin component, relative to the config file's directory. Exactly one
    /// of `plugin` and `json_schema`.
    pub plugin: Option<PathBuf>,
    /// Path to a JSON Schema file: the stage is the built-in `json-schema` validator instead
    /// of a plugin (relative to the config file's directory).
    pub json_schema: Option<PathBuf>,
    /// Config map given to the plugin's `init`; values may hold `${NAME}`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `config` with `${NAME}` expanded; filled by loading (never read from the file).
    #[serde(skip)]
    pub config_values: BTreeMap<String, String>,
    /// Resource limits; every key optional.
    #[serde(default)]
    pub limits: StageLimits,
}

fn default_start() -> StartPosition {
    StartPosition::Earliest
}
fn default_dlq_format() -> DeadLetterFormat {
    DeadLetterFormat::Headers
}
fn default_true() -> bool {
    true
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_batch_wait_ms() -> u64 {
    DEFAULT_BATCH_WAIT_MS
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}
fn default_commit_interval_ms() -> u64 {
    DEFAULT_COMMIT_INTERVAL_MS
}

fn default_idle_timeout_ms() -> u64 {
    crate::plugin::time::DEFAULT_IDLE_TIMEOUT_MS
}

fn default_watch_interval_ms() -> u64 {
    DEFAULT_WATCH_INTERVAL_MS
}
