//! The configuration file: typed, checked, and strict.
//!
//! Two layers: [`raw`] is the file as written (TOML, every table `deny_unknown_fields`, so a
//! typo is an error naming the key and its line rather than a silent default); [`Config`] is
//! what it becomes once checked, by `TryFrom<RawConfig>`: what serde cannot check (routes name
//! topics, the default route is declared, plugin files exist, limits make sense) is checked
//! there, and the types say what was decided ([`Subscription`], [`StageCode`],
//! [`TableSource`]), so no later code handles a case the check ruled out. `${NAME}` in Kafka
//! client settings and admin tokens is replaced by the environment variable `NAME`, so secrets
//! need not sit in the file.
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

mod raw;

use crate::plugin::StageLimits;
use raw::{RawConfig, RawPipeline, RawStage, RawTable};
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
    /// The stage chain, in order; at least one, names unique.
    pub stages: Vec<StageConfig>,
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
    /// Config map given to the plugin's `init` (empty for a JSON Schema stage).
    pub config: BTreeMap<String, String>,
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
    /// Address to listen on (default `127.0.0.1:9644`). A non-loopback address needs a token.
    pub listen: String,
    /// Bearer tokens by name (the name appears in audit lines), `${VAR}` expanded. Mutating
    /// endpoints require one of them, or the one in `SWITCHYARD_ADMIN_TOKEN` (named `env`).
    pub tokens: BTreeMap<String, String>,
    /// Where uploaded plugin versions persist (default `.switchyard-state` next to the
    /// config file).
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

impl Config {
    /// Reads, parses, expands and validates a config file. Relative plugin paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok()).map_err(|error| {
            ConfigError::In {
                path: path.to_owned(),
                error: Box::new(error),
            }
        })
    }

    /// Parses and checks config text; `env` looks up `${NAME}` variables; relative paths are
    /// resolved against `base`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_string()))?;
        raw.expand_env(env)?;
        if let Some(token) = env(ADMIN_TOKEN_ENV).filter(|t| !t.is_empty()) {
            raw.admin.tokens.insert("env".into(), token);
        }
        raw.resolve_paths(base);
        Config::try_from(raw)
    }
}

impl RawConfig {
    fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.kafka.brokers = expand(&self.kafka.brokers, "kafka.brokers", env)?;
        for (section, map) in [
            ("kafka.consumer", &mut self.kafka.consumer),
            ("kafka.producer", &mut self.kafka.producer),
        ] {
            for (key, value) in map.iter_mut() {
                *value = expand(value, &format!("{section}.\"{key}\""), env)?;
            }
        }
        for (name, token) in self.admin.tokens.iter_mut() {
            *token = expand(token, &format!("admin.tokens.{name}"), env)?;
        }
        Ok(())
    }

    /// Relative paths (state directory, table files, plugins, schemas) are relative to `base`,
    /// the config file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let mut state_dir = self
            .admin
            .state_dir
            .take()
            .unwrap_or_else(|| PathBuf::from(".switchyard-state"));
        resolve(&mut state_dir);
        self.admin.state_dir = Some(state_dir);
        for table in &mut self.tables {
            table.path.iter_mut().for_each(resolve);
        }
        for stage in self.pipelines.iter_mut().flat_map(|p| &mut p.stages) {
            stage.plugin.iter_mut().for_each(resolve);
            stage.json_schema.iter_mut().for_each(resolve);
        }
    }
}

/// Checks what the types cannot. Each error names the pipeline (or table) and the key.
impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.kafka.brokers.trim().is_empty() {
            return err("kafka.brokers is empty".into());
        }
        if raw.pipelines.is_empty() {
            return err("no [[pipeline]] is configured".into());
        }
        for (section, map) in [
            ("kafka.consumer", &raw.kafka.consumer),
            ("kafka.producer", &raw.kafka.producer),
        ] {
            for key in map.keys() {
                if let Some(why) = reserved_client_key(key) {
                    return err(format!("{section}.\"{key}\": {why}"));
                }
            }
        }
        raw.admin.validate()?;
        let mut table_names = std::collections::HashSet::new();
        let mut tables = Vec::with_capacity(raw.tables.len());
        for (i, t) in raw.tables.into_iter().enumerate() {
            if t.name.trim().is_empty() {
                return err(format!("table[{i}].name is empty"));
            }
            let at = format!("table[{i}] ({})", t.name);
            if !table_names.insert(t.name.clone()) {
                return err(format!("{at}: the name {:?} is used by two tables", t.name));
            }
            tables.push(table(t).map_err(|e| ConfigError::Invalid(format!("{at}.{e}")))?);
        }
        let mut names = std::collections::HashSet::new();
        let mut pipelines = Vec::with_capacity(raw.pipelines.len());
        for (i, p) in raw.pipelines.into_iter().enumerate() {
            if p.name.trim().is_empty() {
                return err(format!("pipeline[{i}].name is empty"));
            }
            let at = format!("pipeline[{i}] ({})", p.name);
            if !names.insert(p.name.clone()) {
                return err(format!(
                    "{at}: the name {:?} is used by two pipelines",
                    p.name
                ));
            }
            pipelines.push(pipeline(&at, p)?);
        }
        Ok(Config {
            kafka: raw.kafka,
            pipelines,
            tables,
            admin: raw.admin,
        })
    }
}

fn err<T>(message: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(message))
}

/// A table's source; the error starts with the key that is wrong.
fn table(raw: RawTable) -> Result<TableConfig, String> {
    let source = match (raw.path, raw.topic) {
        (Some(path), None) => {
            let key_field = raw
                .key_field
                .filter(|k| !k.trim().is_empty())
                .ok_or("key_field: a file table needs the field or column holding the key")?;
            let format = raw
                .format
                .or_else(|| TableFormat::from_path(&path))
                .ok_or("format: set \"jsonl\" or \"csv\" (the file's extension says neither)")?;
            if !path.is_file() {
                return Err(format!("path: no such file {}", path.display()));
            }
            TableSource::File {
                path,
                format,
                key_field,
            }
        }
        (None, Some(topic)) => {
            if topic.trim().is_empty() {
                return Err("topic is empty".into());
            }
            if raw.key_field.is_some() || raw.format.is_some() {
                return Err(
                    "key_field/format: a topic table is keyed by the record key; remove them"
                        .into(),
                );
            }
            TableSource::Topic { topic }
        }
        (None, None) => return Err("set path (a JSON Lines or CSV file) or topic".into()),
        (Some(_), Some(_)) => return Err("set path or topic, not both".into()),
    };
    Ok(TableConfig {
        name: raw.name,
        source,
        watch_interval_ms: raw.watch_interval_ms,
    })
}

fn pipeline(at: &str, p: RawPipeline) -> Result<PipelineConfig, ConfigError> {
    let source = match (p.topics.is_empty(), p.topic_pattern) {
        (true, None) => {
            return err(format!(
                "{at}: set topics (a list) or topic_pattern (a regex)"
            ));
        }
        (false, Some(_)) => {
            return err(format!("{at}: set topics or topic_pattern, not both"));
        }
        (true, Some(pattern)) => {
            if let Err(e) = regex::Regex::new(&pattern) {
                return err(format!("{at}.topic_pattern is not a valid regex: {e}"));
            }
            Subscription::Pattern(pattern)
        }
        (false, None) => Subscription::Topics(p.topics),
    };
    if p.routes.is_empty() {
        return err(format!(
            "{at}.routes: declare at least one route (name = \"topic\")"
        ));
    }
    for (route, topic) in &p.routes {
        if topic.trim().is_empty() {
            return err(format!("{at}.routes.{route} names no topic"));
        }
    }
    if !p.routes.contains_key(&p.default_route) {
        let declared: Vec<&str> = p.routes.keys().map(String::as_str).collect();
        return err(format!(
            "{at}.default_route {:?} is not a declared route (declared: {})",
            p.default_route,
            declared.join(", ")
        ));
    }
    if p.dead_letter_topic.trim().is_empty() {
        return err(format!("{at}.dead_letter_topic is empty"));
    }
    if p.batch_size == 0 || p.batch_size > 100_000 {
        return err(format!(
            "{at}.batch_size must be between 1 and 100000, not {}",
            p.batch_size
        ));
    }
    if p.workers == Some(0) || p.workers.is_some_and(|w| w > 256) {
        return err(format!(
            "{at}.workers must be between 1 and 256, not {}",
            p.workers.unwrap_or(0)
        ));
    }
    if p.max_in_flight < p.batch_size {
        return err(format!(
            "{at}.max_in_flight ({}) must be at least batch_size ({})",
            p.max_in_flight, p.batch_size
        ));
    }
    if p.commit_interval_ms == 0 {
        return err(format!("{at}.commit_interval_ms must be above 0"));
    }
    if p.stages.is_empty() {
        return err(format!("{at}: add at least one [[pipeline.stage]]"));
    }
    let mut stage_names = std::collections::HashSet::new();
    let mut stages = Vec::with_capacity(p.stages.len());
    for (j, s) in p.stages.into_iter().enumerate() {
        let at = format!("{at}.stage[{j}] ({})", s.name);
        if !stage_names.insert(s.name.clone()) {
            return err(format!("{at}: the stage name {:?} is used twice", s.name));
        }
        stages.push(stage(&at, s)?);
    }
    Ok(PipelineConfig {
        name: p.name,
        source,
        group: p.group,
        start: p.start,
        routes: p.routes,
        default_route: p.default_route,
        dead_letter_topic: p.dead_letter_topic,
        dead_letter_format: p.dead_letter_format,
        provenance_headers: p.provenance_headers,
        batch_size: p.batch_size,
        batch_wait_ms: p.batch_wait_ms,
        workers: p.workers,
        max_in_flight: p.max_in_flight,
        drain_timeout_ms: p.drain_timeout_ms,
        commit_interval_ms: p.commit_interval_ms,
        stages,
    })
}

fn stage(at: &str, s: RawStage) -> Result<StageConfig, ConfigError> {
    let code = match (s.plugin, s.json_schema) {
        (None, None) => {
            return err(format!(
                "{at}: set plugin (a .wasm component) or json_schema (a JSON Schema file)"
            ));
        }
        (Some(_), Some(_)) => {
            return err(format!("{at}: set plugin or json_schema, not both"));
        }
        (Some(plugin), None) if !plugin.is_file() => {
            return err(format!("{at}.plugin: no such file {}", plugin.display()));
        }
        (None, Some(schema)) if !schema.is_file() => {
            return err(format!(
                "{at}.json_schema: no such file {}",
                schema.display()
            ));
        }
        (None, Some(_)) if !s.config.is_empty() => {
            return err(format!(
                "{at}.config: a json_schema stage takes no config map"
            ));
        }
        (Some(plugin), None) => StageCode::Plugin(plugin),
        (None, Some(schema)) => StageCode::JsonSchema(schema),
    };
    if let Err(e) = s.limits.validate() {
        return err(format!("{at}.{e}"));
    }
    Ok(StageConfig {
        name: s.name,
        code,
        config: s.config,
        limits: s.limits,
    })
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

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let address = self.address()?;
        for (name, token) in &self.tokens {
            if token.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "admin.tokens.{name} is shorter than 16 characters; use a long random token"
                )));
            }
        }
        if !address.ip().is_loopback() && self.tokens.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "admin.listen {address} is not a loopback address: set admin.tokens (or {ADMIN_TOKEN_ENV}) so that changes need a token"
            )));
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid(
                "admin.max_upload_bytes must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// Client settings Switchyard owns: setting them would break at-least-once delivery or the
/// pipeline's own settings.
fn reserved_client_key(key: &str) -> Option<&'static str> {
    match key {
        "enable.auto.commit" | "enable.auto.offset.store" => Some(
            "Switchyard commits offsets itself, only after every output is acknowledged; remove this key",
        ),
        "group.id" => Some("set the consumer group with the pipeline's `group` key"),
        "auto.offset.reset" => Some("set the start position with the pipeline's `start` key"),
        "bootstrap.servers" | "metadata.broker.list" => Some("set the brokers with kafka.brokers"),
        "transactional.id" => Some("transactions are not supported; Switchyard is at least once"),
        _ => None,
    }
}

/// Replaces every `${NAME}` in `value`; `$${` stands for a literal `${`.
fn expand(
    value: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                ConfigError::Invalid(format!("{key}: unterminated ${{ in {value:?}"))
            })?;
            let name = &after[..end];
            let found = env(name).ok_or_else(|| {
                ConfigError::Invalid(format!("{key}: environment variable {name} is not set"))
            })?;
            out.push_str(&found);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "hunter2".to_string())
    }

    #[test]
    fn expands_variables_and_escapes() {
        let e = |v: &str| expand(v, "k", &env).map_err(|e| e.to_string());
        assert_eq!(e("a${SECRET}b").unwrap(), "ahunter2b");
        assert_eq!(e("$${SECRET}").unwrap(), "${SECRET}");
        assert_eq!(e("cost $5").unwrap(), "cost $5");
        assert_eq!(
            e("${MISSING}").unwrap_err(),
            "k: environment variable MISSING is not set"
        );
        assert!(e("${SECRET").unwrap_err().contains("unterminated"));
    }

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
