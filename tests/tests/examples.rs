//! The runnable examples under `examples/<use case>/`, run as a user would: each config passes
//! `switchyard check`, then runs against a tansu broker with its topics created by the
//! `kafka-topics.sh --create` lines its header documents; its sample records
//! (`input.jsonl`) are produced and every record that reaches an output or dead-letter topic
//! must be one `expected.jsonl` names, and every one it names must arrive.
//!
//! An expected line is `{"topic", "key", "value", "reason"?}`: the value compares as JSON (a
//! top-level field whose expected value is `"<any>"` matches anything), `reason` must be
//! part of the dead letter's `switchyard-dlq-reason` header.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use switchyard::config::Config;
use switchyard_tests::kafka::{Broker, Consumed, TestRecord};
use switchyard_tests::pipelines::{scratch_dir, start, write_file};
use switchyard_tests::plugin_path;
use switchyard_tests::router_process::run_switchyard;

/// Every example directory; each must have `switchyard.toml`, `input.jsonl` and
/// `expected.jsonl`.
const EXAMPLES: [&str; 6] = [
    "routing",
    "validation",
    "enrichment",
    "transformation",
    "windows",
    "join",
];

/// Where the example configs expect the plugins, relative to their directory.
const PLUGINS: &str = "../../plugins/target/wasm32-wasip2/release";
/// The broker the example configs name.
const BROKERS: &str = "brokers = \"localhost:9092\"";

/// The example's files copied to a scratch directory, its config pointed at the plugins this
/// crate built and at `bootstrap`; the config's path.
fn prepare(name: &str, bootstrap: &str) -> std::path::PathBuf {
    let source = switchyard_tests::repo_root().join("examples").join(name);
    let dir = scratch_dir(&format!("example-{name}"));
    for entry in std::fs::read_dir(&source).expect("example directory") {
        let path = entry.expect("directory entry").path();
        let file = path.file_name().expect("file name").to_owned();
        std::fs::copy(&path, dir.join(&file)).expect("copy example file");
    }
    let text = std::fs::read_to_string(source.join("switchyard.toml")).expect("config");
    assert!(
        text.contains(BROKERS),
        "{name}: the config must name {BROKERS}"
    );
    let built = plugin_path("route")
        .parent()
        .expect("plugin directory")
        .display()
        .to_string();
    let text = text
        .replace(PLUGINS, &built)
        .replace(BROKERS, &format!("brokers = \"{bootstrap}\""));
    write_file(&dir, "switchyard.toml", &text)
}

/// A topic a config's header documents: name, partitions, `--config` settings.
type Documented = (String, i32, Vec<(String, String)>);

/// The topics of the `kafka-topics.sh --create` commands of a config's header (a command
/// may go on over lines ending in `\`).
fn documented_topics(config: &str) -> Vec<Documented> {
    let mut commands: Vec<String> = Vec::new();
    let mut going_on = false;
    for line in config.lines() {
        let Some(text) = line.strip_prefix('#') else {
            going_on = false;
            continue;
        };
        let text = text.trim();
        let (text, continued) = match text.strip_suffix('\\') {
            Some(head) => (head.trim(), true),
            None => (text, false),
        };
        match commands.last_mut() {
            Some(command) if going_on => {
                command.push(' ');
                command.push_str(text);
            }
            _ => commands.push(text.to_owned()),
        }
        going_on = continued;
    }
    commands
        .iter()
        .filter_map(|command| command.strip_prefix("kafka-topics.sh"))
        .filter(|command| command.contains("--create"))
        .map(|command| {
            let words: Vec<&str> = command.split_whitespace().collect();
            let after = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .unwrap_or_else(|| panic!("no {flag} in `{command}`"))
                    .to_string()
            };
            let partitions = after("--partitions").parse().expect("a partition count");
            let configs = words
                .windows(2)
                .filter(|w| w[0] == "--config")
                .map(|w| {
                    let (key, value) = w[1]
                        .split_once('=')
                        .unwrap_or_else(|| panic!("--config {} is not key=value", w[1]));
                    (key.to_owned(), value.to_owned())
                })
                .collect();
            (after("--topic"), partitions, configs)
        })
        .collect()
}

/// A sample line (`test-plugin`'s format plus the topic) as a record to produce, with its topic.
fn sample(line: &str) -> (String, TestRecord) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let value = match &v["value"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    };
    let record = TestRecord {
        key: v["key"].as_str().map(|k| k.as_bytes().to_vec()),
        value,
        timestamp_ms: v["timestamp_ms"].as_i64(),
        partition: v["partition"].as_i64().map(|p| p as i32),
        ..Default::default()
    };
    let topic = v["topic"].as_str().expect("every sample names its topic");
    (topic.to_owned(), record)
}

/// Whether `got` (an output's value) is what `want` says.
fn value_matches(want: &Value, got: Option<&[u8]>) -> bool {
    let Some(got) = got else {
        return want.is_null();
    };
    match (want, serde_json::from_slice::<Value>(got)) {
        (Value::Object(want), Ok(Value::Object(got))) => {
            want.len() == got.len()
                && want.iter().all(|(k, w)| {
                    got.get(k)
                        .is_some_and(|g| w.as_str() == Some("<any>") || w == g)
                })
        }
        (Value::String(want), _) => want.as_bytes() == got,
        (want, Ok(got)) => *want == got,
        (_, Err(_)) => false,
    }
}

/// Whether an arrived record is the expected one.
fn matches(want: &Value, got: &Consumed) -> bool {
    want["topic"].as_str() == Some(got.topic.as_str())
        && want["key"].as_str().map(str::as_bytes) == got.key.as_deref()
        && value_matches(&want["value"], got.value.as_deref())
        && want["reason"].as_str().is_none_or(|reason| {
            got.header("switchyard-dlq-reason")
                .is_some_and(|r| r.contains(reason))
        })
}

fn describe(c: &Consumed) -> String {
    format!(
        "{} key={:?} value={} reason={:?}",
        c.topic,
        c.key.as_deref().map(String::from_utf8_lossy),
        c.value_str(),
        c.header("switchyard-dlq-reason")
    )
}

/// Runs the example `name` on a fresh broker and checks where its samples land.
fn run_example(name: &str) {
    let broker = Broker::tansu().expect("tansu starts");
    let config_path = prepare(name, broker.bootstrap());
    let config_text = std::fs::read_to_string(&config_path).expect("config");
    let path = config_path.display().to_string();

    let (code, stdout, stderr) =
        run_switchyard(&["check", "--config", &path]).expect("switchyard runs");
    assert_eq!(code, Some(0), "{name}: check failed:\n{stdout}\n{stderr}");

    let topics = documented_topics(&config_text);
    assert!(!topics.is_empty(), "{name}: no kafka-topics.sh lines");
    let config = Config::load(&config_path).expect("config loads");
    // Every topic the config reads or writes is among the documented ones (the changelog of
    // a stateful pipeline may instead be created by the router).
    let documented: BTreeSet<&str> = topics.iter().map(|(t, _, _)| t.as_str()).collect();
    let mut outputs = Vec::new();
    for p in &config.pipelines {
        let switchyard::config::Subscription::Topics(sources) = &p.source else {
            panic!("{name}: examples name their source topics");
        };
        for topic in sources.iter().chain([&p.dead_letter_topic]) {
            assert!(
                documented.contains(topic.as_str()),
                "{name}: {topic} not documented"
            );
        }
        for topic in p.routes.values() {
            assert!(
                documented.contains(topic.as_str()),
                "{name}: {topic} not documented"
            );
            outputs.push(topic.clone());
        }
        outputs.push(p.dead_letter_topic.clone());
    }
    outputs.sort();
    outputs.dedup();
    for (topic, partitions, configs) in &topics {
        let configs: Vec<(&str, &str)> = configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        broker
            .create_topics_with(&[(topic.as_str(), *partitions)], &configs)
            .expect("topic created");
    }

    let dir = config_path.parent().expect("scratch dir");
    let read = |file: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{name}/{file}: {e}"))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let expected: Vec<Value> = read("expected.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();

    let running = start(&config_path).expect("the example starts");
    for line in read("input.jsonl") {
        let (topic, record) = sample(&line);
        broker.produce(&topic, [record]).expect("sample produced");
    }
    let output_topics: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let arrived = broker
        .consume_all(
            &output_topics,
            expected.len(),
            Duration::from_secs(2),
            Duration::from_secs(90),
        )
        .expect("outputs read");
    drop(running);

    let mut unmatched: Vec<&Consumed> = arrived.iter().collect();
    let mut missing = Vec::new();
    for want in &expected {
        match unmatched.iter().position(|got| matches(want, got)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => missing.push(want.to_string()),
        }
    }
    assert!(
        missing.is_empty() && unmatched.is_empty(),
        "{name}: expected but not arrived:\n  {}\narrived but not expected:\n  {}",
        missing.join("\n  "),
        unmatched
            .iter()
            .map(|c| describe(c))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn every_example_has_its_files_and_passes_check_offline() {
    let examples = switchyard_tests::repo_root().join("examples");
    let mut dirs: Vec<String> = std::fs::read_dir(&examples)
        .expect("examples/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("switchyard.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        dirs, listed,
        "every example directory is run by a test below"
    );
    for name in EXAMPLES {
        for file in ["input.jsonl", "expected.jsonl"] {
            assert!(
                Path::new(&examples.join(name).join(file)).exists(),
                "{name}/{file}"
            );
        }
    }
}

#[test]
fn routing_example() {
    run_example("routing");
}

#[test]
fn validation_example() {
    run_example("validation");
}

#[test]
fn enrichment_example() {
    run_example("enrichment");
}

#[test]
fn transformation_example() {
    run_example("transformation");
}

#[test]
fn windows_example() {
    run_example("windows");
}

#[test]
fn join_example() {
    run_example("join");
}
