//! The checks a config passes once parsed: `TryFrom<RawConfig> for Config`, with what
//! serde cannot check (routes name topics, the default route is declared, plugin files
//! exist, limits make sense, reserved client settings are left alone), each error naming the
//! pipeline (or table) and the key. Not parsing, `${NAME}` expansion or path resolution
//! (the parent module).

use super::raw::{RawConfig, RawPipeline, RawStage, RawTable};
use super::{
    ADMIN_TOKEN_ENV, AdminConfig, Config, ConfigError, PipelineConfig, StageCode, StageConfig,
    Subscription, TableConfig, TableFormat, TableSource,
};

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
        for (key, value) in &raw.kafka.producer {
            if let Some(why) = unsafe_producer_setting(key, value) {
                return err(format!("kafka.producer.\"{key}\" = {value:?}: {why}"));
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
    if p.idle_timeout_ms == 0 {
        return err(format!("{at}.idle_timeout_ms must be above 0"));
    }
    if i64::try_from(p.watermark_delay_ms).is_err() {
        return err(format!("{at}.watermark_delay_ms is too large"));
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
        watermark_delay_ms: p.watermark_delay_ms,
        idle_timeout_ms: p.idle_timeout_ms,
        create_internal_topics: p.create_internal_topics,
        count_source_gaps: p.count_source_gaps,
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
        config_values: s.config_values,
        limits: s.limits,
    })
}

impl AdminConfig {
    /// Checks the admin section: an address, long enough tokens, a token whenever it listens
    /// beyond loopback, an upload limit above 0.
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
        if let Some(i) = self.allowed_hosts.iter().position(|h| h.trim().is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "admin.allowed_hosts[{i}] is empty; write a Host as clients send it, e.g. \"router.internal:9644\""
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

/// Producer settings whose value would void the delivery guarantee: an output counted as
/// written before the broker has it safely (its source offset is then committed, so a broker
/// failure loses it), or retries that duplicate or reorder a partition's records.
fn unsafe_producer_setting(key: &str, value: &str) -> Option<&'static str> {
    let value = value.trim().to_ascii_lowercase();
    match key {
        "acks" | "request.required.acks" if value != "all" && value != "-1" => Some(
            "an output would count as written before every in-sync replica has it, and its source offset would then be committed, so a broker failure could lose it; use \"all\" (the default) or remove this key",
        ),
        "enable.idempotence" if value != "true" => Some(
            "without idempotence a retried write can be duplicated or reordered within a partition; remove this key (Switchyard turns idempotence on)",
        ),
        _ => None,
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
