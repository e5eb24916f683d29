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
//!
//! With `--expect FILE` the results are compared with a file of the JSON lines `--json`
//! prints ([`compare`]): a plugin project's test that says only whether it still decides as
//! expected.

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
    /// The stage's time budget per record (`None`: the stage default).
    pub time_per_record_ms: Option<u64>,
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
                limits: StageLimits {
                    time_per_record_ms: options
                        .time_per_record_ms
                        .unwrap_or(StageLimits::default().time_per_record_ms),
                    ..StageLimits::default()
                },
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

/// `--expect FILE`: compares the JSON lines [`run`] wrote (`results`) with the expected ones,
/// line by line as JSON values (so spacing and key order do not matter; blank and `#` lines
/// of the file are skipped). Prints each difference, naming the sample's line, and a summary
/// when all are equal; an error says how many differ.
pub fn compare(
    results: &[u8],
    expected: &Path,
    input: &Path,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(expected)
        .with_context(|| format!("cannot read {}", expected.display()))?;
    let mut want = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let value: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not JSON (it holds what `test-plugin --json` prints)",
                expected.display(),
                i + 1
            )
        })?;
        want.push(value);
    }
    let got = String::from_utf8_lossy(results)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .context("test-plugin's own output is not JSON lines")?;
    let total = want.len().max(got.len());
    let mut differ = 0;
    for i in 0..total {
        let (w, g) = (want.get(i), got.get(i));
        if w == g {
            continue;
        }
        differ += 1;
        let place = g
            .or(w)
            .and_then(|v| v["line"].as_u64())
            .map(|l| format!("{} line {l}", input.display()))
            .unwrap_or_else(|| format!("result {}", i + 1));
        let show = |v: Option<&Value>| v.map_or_else(|| "(nothing)".to_owned(), Value::to_string);
        writeln!(
            out,
            "{place}:\n  expected: {}\n  got:      {}",
            show(w),
            show(g)
        )?;
    }
    anyhow::ensure!(
        differ == 0,
        "{differ} of {total} results differ from {}",
        expected.display()
    );
    writeln!(out, "{total} results as expected ({})", expected.display())?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn compare_with(results: &str, expected: &str) -> (anyhow::Result<()>, String) {
        let dir = std::env::temp_dir().join(format!("switchyard-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join(format!("expected-{}.jsonl", expected.len()));
        std::fs::write(&file, expected).expect("write");
        let mut out = Vec::new();
        let result = compare(
            results.as_bytes(),
            &file,
            Path::new("samples.jsonl"),
            &mut out,
        );
        let _ = std::fs::remove_file(&file);
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn equal_as_json_whatever_the_spacing_and_order() {
        let (result, out) = compare_with(
            "{\"line\":2,\"verdict\":\"pass\"}\n",
            "# comment\n\n{ \"verdict\": \"pass\", \"line\": 2 }\n",
        );
        assert!(result.is_ok(), "{result:?}");
        assert!(out.starts_with("1 results as expected"), "{out}");
    }

    #[test]
    fn a_difference_names_the_sample_line_and_counts() {
        let (result, out) = compare_with(
            "{\"line\":2,\"verdict\":\"pass\"}\n{\"line\":3,\"verdict\":\"drop\"}\n",
            "{\"line\":2,\"verdict\":\"pass\"}\n{\"line\":3,\"verdict\":\"pass\"}\n{\"line\":4}\n",
        );
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("2 of 3 results differ from"), "{error}");
        assert!(
            out.contains("samples.jsonl line 3:\n  expected: {\"line\":3,\"verdict\":\"pass\"}"),
            "{out}"
        );
        assert!(
            out.contains("samples.jsonl line 4:\n  expected: {\"line\":4}\n  got:      (nothing)"),
            "{out}"
        );
    }

    #[test]
    fn an_expected_line_that_is_not_json_is_named() {
        let (result, _) = compare_with("", "{\"line\":2}\nnot json\n");
        let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("line 2: not JSON"), "{error}");
    }
}
