//! The configuration file: typed, checked, and strict.
//!
//! TOML, with every table `deny_unknown_fields`, so a typo is an error naming the key and its
//! line rather than a silent default. After parsing, [`Config::validate`] checks what serde
//! cannot: that routes name topics, that the default route is declared, that plugin files
//! exist, that limits make sense. `${NAME}` in Kafka client settings is replaced by the
//! environment variable `NAME`, so secrets need not sit in the file.
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

use crate::plugin::StageLimits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default number of records handed to the plugin chain at once.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Default longest wait to fill a batch, in milliseconds.
pub const DEFAULT_BATCH_WAIT_MS: u64 = 5;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and client settings.
    pub kafka: KafkaConfig,
    /// One or more pipelines.
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
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

/// One pipeline: sources, the stage chain, and where records go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
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
    /// Records per plugin call (default 256).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds (default 5).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// The stage chain, in order; at least one.
    #[serde(rename = "stage", default)]
    pub stages: Vec<StageConfig>,
}

/// One stage of a chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unique name within the pipeline.
    pub name: String,
    /// Path to the plugin component, relative to the config file's directory.
    pub plugin: PathBuf,
    /// Config map given to the plugin's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
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
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_batch_wait_ms() -> u64 {
    DEFAULT_BATCH_WAIT_MS
}

/// A config that cannot be used. The message names the file, the key, and where possible the
/// line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl PipelineConfig {
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
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok())
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates config text; `env` looks up `${NAME}` variables.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_string()))?;
        config.expand_env(env)?;
        for pipeline in &mut config.pipelines {
            for stage in &mut pipeline.stages {
                if stage.plugin.is_relative() {
                    stage.plugin = base.join(&stage.plugin);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

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
        Ok(())
    }

    /// Checks what the types cannot. Each error names the pipeline and the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.kafka.brokers.trim().is_empty() {
            return err("kafka.brokers is empty".into());
        }
        if self.pipelines.is_empty() {
            return err("no [[pipeline]] is configured".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipeline[{i}] ({})", p.name);
            if p.name.trim().is_empty() {
                return err(format!("pipeline[{i}].name is empty"));
            }
            if !names.insert(p.name.as_str()) {
                return err(format!(
                    "{at}: the name {:?} is used by two pipelines",
                    p.name
                ));
            }
            match (&p.topics.is_empty(), &p.topic_pattern) {
                (true, None) => {
                    return err(format!(
                        "{at}: set topics (a list) or topic_pattern (a regex)"
                    ));
                }
                (false, Some(_)) => {
                    return err(format!("{at}: set topics or topic_pattern, not both"));
                }
                (true, Some(pattern)) => {
                    if let Err(e) = regex::Regex::new(pattern) {
                        return err(format!("{at}.topic_pattern is not a valid regex: {e}"));
                    }
                }
                (false, None) => {}
            }
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
            if p.stages.is_empty() {
                return err(format!("{at}: add at least one [[pipeline.stage]]"));
            }
            let mut stage_names = std::collections::HashSet::new();
            for (j, s) in p.stages.iter().enumerate() {
                let at = format!("{at}.stage[{j}] ({})", s.name);
                if !stage_names.insert(s.name.as_str()) {
                    return err(format!("{at}: the stage name {:?} is used twice", s.name));
                }
                if !s.plugin.is_file() {
                    return err(format!("{at}.plugin: no such file {}", s.plugin.display()));
                }
                if let Err(e) = s.limits.validate() {
                    return err(format!("{at}.{e}"));
                }
            }
        }
        Ok(())
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
            let end = after
                .find('}')
                .ok_or_else(|| ConfigError(format!("{key}: unterminated ${{ in {value:?}")))?;
            let name = &after[..end];
            let found = env(name).ok_or_else(|| {
                ConfigError(format!("{key}: environment variable {name} is not set"))
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
        let e = |v: &str| expand(v, "k", &env).map_err(|e| e.0);
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
