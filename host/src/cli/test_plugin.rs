//! `switchyard test-plugin`: runs any plugin over sample records locally, with no Kafka, and
//! shows each record's verdict and outputs.
//!
//! ```sh
//! switchyard test-plugin route.wasm --input records.jsonl --config urgent_values=high \
//!     --route urgent --route errors --table users=users.jsonl:user_id
//! ```
//!
//! Each input line is a JSON object: a sample record (`{"key": .., "value": .., "headers":
//! {..}, "value_base64": .., "timestamp_ms": ..}`, recognised by having a `value` or
//! `value_base64` field and no field outside those) or, otherwise, a bare event used as the
//! value. Blank lines and lines starting with `#` are skipped. The plugin runs as a one-stage
//! chain whose routes are `default` (the default route) and every `--route`; a verdict naming
//! another route is reported as a `bad-output` dead letter naming it.

use crate::config::TableConfig;
use crate::plugin::chain::stateful::Origin;
use crate::plugin::sample::{self, SampleRecord};
use crate::plugin::time::EventTime;
use crate::plugin::{
    ChainRunner, ChainSpec, Destination, EngineConfig, HostServices, PluginCounters, PluginEngine,
    StageLimits, StageSpec,
};
use anyhow::Context as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The source topic the chain is told when a sample record names none.
const SAMPLE_TOPIC: &str = "test-plugin";

/// The default route of the one-stage chain.
pub const DEFAULT_ROUTE: &str = "default";

/// What to run.
#[derive(Debug, Clone)]
pub struct TestPluginOptions {
    /// The component.
    pub plugin: PathBuf,
    /// JSON Lines of sample records.
    pub input: PathBuf,
    /// The config map given to `init`.
    pub config: Vec<(String, String)>,
    /// Tables: (name, file, key field).
    pub tables: Vec<(String, PathBuf, String)>,
    /// Routes besides `default`.
    pub routes: Vec<String>,
    /// JSON Lines even on a terminal.
    pub json: bool,
    /// Stateful plugins: the watermark after the input (`None`: every timer fires).
    pub advance_to: Option<i64>,
    /// Stateful plugins: the watermark delay.
    pub watermark_delay_ms: u64,
}

/// Parses `--table name=path[:key_field]` (key field default `id`).
pub fn parse_table(spec: &str) -> anyhow::Result<(String, PathBuf, String)> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--table {spec:?} is not name=path[:key_field]"))?;
    let (path, key) = match rest.rsplit_once(':') {
        Some((path, key)) if !key.contains('/') && !key.is_empty() => (path, key),
        _ => (rest, "id"),
    };
    anyhow::ensure!(!name.is_empty(), "--table {spec:?}: empty table name");
    Ok((name.to_owned(), PathBuf::from(path), key.to_owned()))
}

/// One input line as a sample record.
fn parse_line(line: &str) -> Result<SampleRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    const FIELDS: [&str; 7] = [
        "key",
        "value",
        "value_base64",
        "headers",
        "timestamp_ms",
        "topic",
        "partition",
    ];
    let is_record = value.as_object().is_some_and(|o| {
        (o.contains_key("value") || o.contains_key("value_base64"))
            && o.keys().all(|k| FIELDS.contains(&k.as_str()))
    });
    if is_record {
        serde_json::from_value(value).map_err(|e| e.to_string())
    } else {
        Ok(SampleRecord {
            key: None,
            value: Value::String(value.to_string()),
            value_base64: None,
            headers: Default::default(),
            timestamp_ms: None,
            topic: None,
            partition: 0,
        })
    }
}

/// Runs the plugin over the input; writes one report per record to `out`. Returns how many
/// records were dead-lettered.
pub fn run(options: &TestPluginOptions, out: &mut dyn std::io::Write) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(&options.input)
        .with_context(|| format!("cannot read {}", options.input.display()))?;
    let mut records = Vec::new();
    let mut lines = Vec::new();
    let mut places = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let record = parse_line(line)
            .inspect(|r| {
                let topic = r.topic.clone().unwrap_or_else(|| SAMPLE_TOPIC.to_owned());
                places.push((topic, r.partition));
            })
            .and_then(|r| r.into_input(records.len() as i64))
            .map_err(|e| anyhow::anyhow!("{} line {line_no}: {e}", options.input.display()))?;
        records.push(record);
        lines.push(line_no);
    }

    let engine =
        PluginEngine::new(&EngineConfig::default()).context("cannot start the plugin engine")?;
    let module = engine.load_file(&options.plugin)?;
    let tables: Vec<TableConfig> = options
        .tables
        .iter()
        .map(|(name, path, key_field)| TableConfig::file(name, path.clone(), key_field))
        .collect();
    let services = HostServices {
        tables: Arc::new(crate::tables::TableSet::start(None, &tables)?),
        counters: Arc::new(PluginCounters::default()),
        states: Default::default(),
    };
    let mut routes = vec![DEFAULT_ROUTE.to_owned()];
    routes.extend(
        options
            .routes
            .iter()
            .filter(|r| *r != DEFAULT_ROUTE)
            .cloned(),
    );
    let name = stage_name(&options.plugin);
    let spec = Arc::new(
        ChainSpec::new(
            "test-plugin",
            routes,
            DEFAULT_ROUTE,
            vec![StageSpec {
                name: name.clone(),
                module,
                config: options.config.clone(),
                limits: StageLimits::default(),
            }],
        )?
        .with_event_time(EventTime {
            watermark_delay_ms: i64::try_from(options.watermark_delay_ms).unwrap_or(i64::MAX),
            ..EventTime::default()
        }),
    );
    let mut runner = ChainRunner::new(engine.clone(), spec.clone(), services.clone())?;
    // A stateful plugin gets one record per call, so the watermark and the timers it fires
    // move record by record, as they would over a partition in offset order; the outputs
    // of the timers a record made due are listed with it.
    let mut explained = Vec::with_capacity(records.len());
    let mut finals = Vec::new();
    if spec.is_stateful() {
        let mut last: std::collections::BTreeMap<(String, i32), i64> = Default::default();
        for (record, (topic, partition)) in records.into_iter().zip(&places) {
            last.insert((topic.clone(), *partition), record.offset);
            explained.extend(sample::explain(
                &mut runner,
                &spec,
                topic,
                *partition,
                vec![record],
            )?);
        }
        let mut tasks: Vec<(i32, String, i64)> = Vec::new();
        for ((topic, partition), offset) in last {
            if !tasks.iter().any(|(t, ..)| *t == partition) {
                tasks.push((partition, topic, offset));
            }
        }
        for (task, topic, offset) in tasks {
            let origin = Origin {
                topic: &topic,
                task,
                source: 0,
                offset,
            };
            finals.extend(runner.finish_input(&origin, options.advance_to)?);
        }
    } else {
        explained = sample::explain(&mut runner, &spec, SAMPLE_TOPIC, 0, records)?;
    }

    let table = !options.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    if table {
        writeln!(
            out,
            "{:>5}  {:<12} {:<10} value / reason",
            "line", "verdict", "route"
        )?;
    }
    let mut dead = 0;
    for (e, line) in explained.into_iter().zip(lines) {
        let verdict = e
            .stages
            .first()
            .and_then(|v| v["verdict"].as_str())
            .unwrap_or("drop")
            .to_owned();
        let mut outputs = Vec::new();
        let mut dead_letter = Value::Null;
        for d in e.deliveries {
            match d.destination {
                Destination::Route { route, record } => outputs.push(json!({
                    "route": spec.route_name(route),
                    "key": record.key.as_deref().map(sample::bytes_json),
                    "value": record.value.as_deref().map(sample::bytes_json),
                    "headers": sample::headers_json(&record.headers),
                })),
                Destination::DeadLetter(d) => {
                    dead += 1;
                    dead_letter =
                        json!({ "kind": d.error.kind.as_str(), "reason": d.error.message });
                }
            }
        }
        if table {
            if dead_letter.is_null() && outputs.is_empty() {
                writeln!(out, "{line:>5}  {verdict:<12} {:<10} -", "-")?;
            }
            for o in &outputs {
                let value = o["value"].to_string();
                writeln!(
                    out,
                    "{line:>5}  {verdict:<12} {:<10} {}",
                    o["route"].as_str().unwrap_or("?"),
                    truncate(&value, 100)
                )?;
            }
            if !dead_letter.is_null() {
                writeln!(
                    out,
                    "{line:>5}  {:<12} {:<10} {}: {}",
                    "dead-letter",
                    "-",
                    dead_letter["kind"].as_str().unwrap_or("?"),
                    dead_letter["reason"].as_str().unwrap_or("?")
                )?;
            }
        } else {
            writeln!(
                out,
                "{}",
                json!({
                    "line": line, "verdict": verdict, "outputs": outputs,
                    "dead_letter": dead_letter,
                })
            )?;
        }
    }
    if spec.is_stateful() {
        let mut outputs = Vec::new();
        let mut dead_letters = Vec::new();
        for d in finals {
            match d.destination {
                Destination::Route { route, record } => outputs.push(json!({
                    "route": spec.route_name(route),
                    "key": record.key.as_deref().map(sample::bytes_json),
                    "value": record.value.as_deref().map(sample::bytes_json),
                    "headers": sample::headers_json(&record.headers),
                })),
                Destination::DeadLetter(d) => {
                    dead += 1;
                    dead_letters
                        .push(json!({ "kind": d.error.kind.as_str(), "reason": d.error.message }));
                }
            }
        }
        if table {
            for o in &outputs {
                let value = o["value"].to_string();
                writeln!(
                    out,
                    "{:>5}  {:<12} {:<10} {}",
                    "end",
                    "timer",
                    o["route"].as_str().unwrap_or("?"),
                    truncate(&value, 100)
                )?;
            }
            for d in &dead_letters {
                writeln!(out, "{:>5}  {:<12} {:<10} {d}", "end", "dead-letter", "-")?;
            }
        } else {
            writeln!(
                out,
                "{}",
                json!({ "end_of_input": true, "outputs": outputs, "dead_letters": dead_letters })
            )?;
        }
    }
    for (key, total) in services.counters.snapshot() {
        if table {
            writeln!(out, "counter {} = {total}", key.name)?;
        } else {
            writeln!(out, "{}", json!({ "counter": key.name, "total": total }))?;
        }
    }
    Ok(dead)
}

fn stage_name(plugin: &Path) -> String {
    plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("plugin")
        .to_owned()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}
