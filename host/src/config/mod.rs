//! The configuration file: typed, checked, and strict.
//!
//! Two layers: [`raw`] is the file as written (TOML, every table `deny_unknown_fields`, so a
//! typo is an error naming the key and its line rather than a silent default); [`Config`] is
//! what it becomes once checked, by `TryFrom<RawConfig>`: what serde cannot check (routes name
//! topics, the default route is declared, plugin files exist, limits make sense) is checked
//! there, and the types say what was decided ([`Subscription`], [`StageCode`],
//! [`TableSource`]), so no later code handles a case the check ruled out. `${NAME}` in Kafka
//! client settings, admin tokens and stage config values is replaced by the environment
//! variable `NAME`, so secrets need not sit in the file. A stage's config keeps both forms
//! ([`StageConfig::config`] as written, [`StageConfig::config_values`] expanded): the admin
//! API and the state directory only ever see the written one.
//!
//! This module owns the checked types and their defaults. The file as written is in
//! [`raw`]; reading, parsing, `${NAME}` expansion and path resolution are in `load`
//! ([`Config::load`], [`Config::parse`]); the checks that turn it into a [`Config`] are in
//! `check`.
//!
//! ```toml
//! [kafka]
//! brokers = "127.0.0.1:9092"
//! [kafka.consumer]            # any librdkafka consumer setting, passed through
//! "fetch.wait.max.ms" = "5"
//! [kafka.producer]            # any librdkafka producer setting, passed through
//! "sasl.password" = "${SASL_PASSWORD}"
//!
//! [[pipeline]]
//! name = "events"
//! topics = ["events"]         # or: topic_pattern = "^events-.*"
//! default_route = "standard"
//! dead_letter_topic = "events-dlq"
//! [pipeline.routes]
//! standard = "events-standard"
//! urgent = "events-urgent"
//! [[pipeline.stage]]
//! name = "route"
//! plugin = "plugins/route.wasm"
//! [pipeline.stage.config]
//! urgent_route = "urgent"
//! ```

mod check;
mod load;
mod raw;

pub use load::{escape, expand};

use crate::plugin::StageLimits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default number of records handed to the plugin chain at once.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default longest wait to fill a batch, in milliseconds. Zero: a worker takes whatever is
/// queued (up to the batch size) and runs it at once; under load batches fill by themselves
/// because records queue while the previous batch runs, and at a trickle no record waits.
pub const DEFAULT_BATCH_WAIT_MS: u64 = 0;
/// Default bound on records taken from Kafka but not yet finished (every output acknowledged).
/// Above it the consumer pauses its partitions; below half of it, it resumes.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 20_000;
/// Default longest wait for in-flight records on shutdown or when partitions are revoked.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Default interval between offset commits.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 200;

/// The whole file, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka connection and client settings.
    pub kafka: KafkaConfig,
    /// One or more pipelines.
    pub pipelines: Vec<PipelineConfig>,
    /// Lookup tables plugins read with `host::lookup`.
    pub tables: Vec<TableConfig>,
    /// The admin HTTP API.
    pub admin: AdminConfig,
}

/// What a pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics (at least one).
    Topics(Vec<String>),
    /// Every topic whose name matches this regular expression, present and future.
    Pattern(String),
}

/// One pipeline, checked: sources, the stage chain, and where records go.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Unique name; used in metrics, logs, headers and the default consumer group.
    pub name: String,
    /// What it reads.
    pub source: Subscription,
    /// Consumer group; default `switchyard-<name>`.
    pub group: Option<String>,
    /// Start position for a group with no committed offsets.
    pub start: StartPosition,
    /// Route name -> topic (at least one; no empty topic).
    pub routes: BTreeMap<String, String>,
    /// Route of records no stage routed; one of `routes`.
    pub default_route: String,
    /// Topic for records that cannot or must not be delivered.
    pub dead_letter_topic: String,
    /// Format of dead-letter records.
    pub dead_letter_format: DeadLetterFormat,
    /// Whether routed records carry the provenance headers.
    pub provenance_headers: bool,
    /// Records per plugin call (1..=100000).
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// Worker threads running the chain (1..=256; `None`: one per CPU).
    pub workers: Option<usize>,
    /// Unfinished records above which the consumer pauses (at least `batch_size`).
    pub max_in_flight: usize,
    /// Longest wait for in-flight records on a revocation or a stop, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Interval between offset commits, in milliseconds (above 0).
    pub commit_interval_ms: u64,
    /// Stateful stages: how far the watermark stays behind the highest timestamp, in
    /// milliseconds.
    pub watermark_delay_ms: u64,
    /// Stateful stages: how long a partition may be silent before it stops holding the
    /// watermark back, in milliseconds (above 0).
    pub idle_timeout_ms: u64,
    /// Stateful stages: Switchyard may create the changelog topic.
    pub create_internal_topics: bool,
    /// Offsets skipped on non-compacted source topics are counted and logged.
    pub count_source_gaps: bool,
    /// The stage chain, in order; at least one, names unique.
    pub stages: Vec<StageConfig>,
}

impl PipelineConfig {
    /// The event-time settings of the pipeline's stateful stages.
    pub fn event_time(&self) -> crate::plugin::time::EventTime {
        crate::plugin::time::EventTime {
            topics: match &self.source {
                Subscription::Topics(topics) => topics.clone(),
                Subscription::Pattern(_) => Vec::new(),
            },
            watermark_delay_ms: i64::try_from(self.watermark_delay_ms).unwrap_or(i64::MAX),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

/// What runs a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageCode {
    /// A WebAssembly component file (it exists).
    Plugin(PathBuf),
    /// The built-in JSON Schema validator with this schema file (it exists).
    JsonSchema(PathBuf),
}

impl StageCode {
    /// The file the stage's code comes from.
    pub fn file(&self) -> &Path {
        match self {
            StageCode::Plugin(path) | StageCode::JsonSchema(path) => path,
        }
    }
}

/// One stage of a chain, checked.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// Unique name within the pipeline.
    pub name: String,
    /// What runs it.
    pub code: StageCode,
    /// Config map given to the plugin's `init` (empty for a JSON Schema stage), as written:
    /// `${NAME}` unexpanded. This is what the admin API shows and the state directory keeps.
    pub config: BTreeMap<String, String>,
    /// The same map with every `${NAME}` replaced by its environment variable: what `init`
    /// gets. Kept in memory only.
    pub config_values: BTreeMap<String, String>,
    /// Resource limits, checked.
    pub limits: StageLimits,
}

impl StageConfig {
    /// The file the stage's code comes from.
    pub fn file(&self) -> &Path {
        self.code.file()
    }
}

/// An enrichment table plugins read with `host::lookup`, checked.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Name plugins use in `lookup(table, key)`; unique.
    pub name: String,
    /// Where its rows come from.
    pub source: TableSource,
    /// File tables: how often the file is checked for changes, in ms (0: only on request).
    pub watch_interval_ms: u64,
}

/// Where a table's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSource {
    /// A file (it exists when the config is loaded).
    File {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: TableFormat,
        /// The field or column holding the key.
        key_field: String,
    },
    /// A topic, keyed by the record key; a null value deletes the key.
    Topic {
        /// The topic.
        topic: String,
    },
}

impl TableConfig {
    /// A JSON Lines or CSV file table (for `test-plugin` and tests); the format comes from
    /// the extension (JSON Lines when it says neither).
    pub fn file(name: &str, path: PathBuf, key_field: &str) -> Self {
        let format = TableFormat::from_path(&path).unwrap_or(TableFormat::Jsonl);
        TableConfig {
            name: name.to_owned(),
            source: TableSource::File {
                path,
                format,
                key_field: key_field.to_owned(),
            },
            watch_interval_ms: DEFAULT_WATCH_INTERVAL_MS,
        }
    }
}

/// Default address of the admin API.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9644";
/// Default largest plugin upload, in bytes.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 << 20;
/// Default longest wait for every worker to switch to an uploaded version.
pub const DEFAULT_SWITCH_TIMEOUT_MS: u64 = 30_000;
/// The environment variable holding an admin token (named `env` in audit lines).
pub const ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// The admin HTTP API: hot reload, rollback, dry-run, pause, health, metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the API at all (default true).
    pub enabled: bool,
    /// Address to listen on (default `127.0.0.1:9644`). A non-loopback address needs a token,
    /// and then reads of `/api/v1` need one too.
    pub listen: String,
    /// Bearer tokens by name (the name appears in audit lines), `${VAR}` expanded. Every
    /// change requires one of them, or the one in `SWITCHYARD_ADMIN_TOKEN` (named `env`).
    /// None configured: the router makes one (named `local`) in `state_dir/admin-token`.
    pub tokens: BTreeMap<String, String>,
    /// `Host` values clients may use besides the listen address, `localhost` and loopback
    /// addresses, as they send them (`router.internal:9644`): any other is refused, so that a
    /// web page cannot re-point its own name at the API (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Where uploaded plugin versions and the generated admin token persist (default
    /// `.switchyard-state` next to the config file).
    pub state_dir: Option<PathBuf>,
    /// Largest plugin upload in bytes (default 64 MiB); a larger one gets 413 before it is
    /// read.
    pub max_upload_bytes: usize,
    /// Longest wait for every worker to switch to a new version, in ms (default 30000).
    pub switch_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN.into(),
            tokens: BTreeMap::new(),
            allowed_hosts: Vec::new(),
            state_dir: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            switch_timeout_ms: DEFAULT_SWITCH_TIMEOUT_MS,
        }
    }
}

/// Default interval between checks of a table file.
pub const DEFAULT_WATCH_INTERVAL_MS: u64 = 1_000;

/// The format of a table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// One JSON object per line; the value is the line.
    Jsonl,
    /// A header row, then one row per line; the value is the row as a JSON object of strings.
    Csv,
}

impl TableFormat {
    /// The format a file's extension says: `.jsonl`, `.ndjson`, `.json` or `.csv`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "jsonl" | "ndjson" | "json" => Some(TableFormat::Jsonl),
            "csv" => Some(TableFormat::Csv),
            _ => None,
        }
    }

    /// `jsonl` or `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Jsonl => "jsonl",
            TableFormat::Csv => "csv",
        }
    }
}

/// Kafka connection and client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated (`bootstrap.servers`).
    pub brokers: String,
    /// librdkafka settings for every consumer, by their usual names (`security.protocol`,
    /// `sasl.mechanism`, `fetch.wait.max.ms`, ...). They override Switchyard's defaults.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// librdkafka settings for the producer (`compression.type`, `linger.ms`, `acks`, ...).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

/// Where a pipeline starts when its consumer group has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still in the topic.
    Earliest,
    /// Only records produced from now on.
    Latest,
    /// The first record at or after this time (milliseconds since the Unix epoch).
    Timestamp(i64),
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            other => other
                .strip_prefix("timestamp:")
                .and_then(|ms| ms.trim().parse().ok())
                .map(StartPosition::Timestamp)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "start must be \"earliest\", \"latest\" or \"timestamp:<ms since epoch>\", not {other:?}"
                    ))
                }),
        }
    }
}

/// How dead-lettered records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterFormat {
    /// The original key, value, headers and timestamp, plus `switchyard.dlq.*` headers with
    /// the reason, kind, stage, plugin version, source position and time.
    Headers,
    /// A JSON object holding the original value with `dlq_reason` and `dlq_timestamp`
    /// fields, like a Spark dead-letter table.
    JsonEnvelope,
}

/// A config that cannot be used. Every message names the key, and where possible the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (serde's message, with the
    /// line and column).
    #[error("{0}")]
    Syntax(String),
    /// A value that cannot be used, or a `${NAME}` that cannot be expanded.
    #[error("{0}")]
    Invalid(String),
    /// An error in a file.
    #[error("{}: {error}", path.display())]
    In {
        /// The file.
        path: PathBuf,
        /// The error.
        error: Box<ConfigError>,
    },
}

impl PipelineConfig {
    /// The source topics (none when it subscribes by pattern).
    pub fn topics(&self) -> &[String] {
        match &self.source {
            Subscription::Topics(topics) => topics,
            Subscription::Pattern(_) => &[],
        }
    }

    /// The source pattern, when it subscribes by one.
    pub fn topic_pattern(&self) -> Option<&str> {
        match &self.source {
            Subscription::Topics(_) => None,
            Subscription::Pattern(pattern) => Some(pattern),
        }
    }

    /// The consumer group, explicit or derived from the name.
    pub fn group(&self) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("switchyard-{}", self.name))
    }
}

impl AdminConfig {
    /// The address to listen on.
    pub fn address(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError::Invalid(format!(
                "admin.listen {:?} is not an address like 127.0.0.1:9644: {e}",
                self.listen
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions() {
        #[derive(Deserialize)]
        struct S {
            start: StartPosition,
        }
        let p = |t: &str| toml::from_str::<S>(t).map(|s| s.start);
        assert_eq!(p("start = \"earliest\"").unwrap(), StartPosition::Earliest);
        assert_eq!(p("start = \"latest\"").unwrap(), StartPosition::Latest);
        assert_eq!(
            p("start = \"timestamp:1700000000000\"").unwrap(),
            StartPosition::Timestamp(1_700_000_000_000)
        );
        assert!(
            p("start = \"yesterday\"")
                .unwrap_err()
                .to_string()
                .contains("timestamp:<ms")
        );
    }
}
