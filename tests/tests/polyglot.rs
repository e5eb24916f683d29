//! The `route` and `validate` plugins written in Python and JavaScript decide exactly as the
//! Rust ones do: the shared cases (`examples/plugins/cases/*.jsonl`) run through the host
//! with `switchyard test-plugin --json` for every language, and every record must get the
//! same verdict, the same outputs (route, key, value, headers) and the same dead-letter kind.
//! Dead-letter reasons must agree up to their first `:` (a trailing ` at byte N` removed):
//! the class of the problem (`invalid JSON`, `not a JSON object`, `missing field user_id`,
//! ...) is the contract; the JSON parser's own wording after it differs by language.
//!
//! The stateful `window` plugin in Python aggregates exactly as the Rust one does: over
//! `window.jsonl`, in both output modes, with the watermark 30 s behind, every record line and
//! the end-of-input line must carry the same verdict, outputs (an output's value compared as
//! JSON with every number as an `f64`: float text may differ, values may not) and dead letter,
//! reason word for word (its reasons are its own, no parser's wording).

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use switchyard_tests::router_process::run_switchyard;
use switchyard_tests::{plugin_path, polyglot_plugin, repo_root};

const LANGUAGES: [&str; 2] = ["python", "javascript"];
const REQUIRED: &str = "required=event_id:string,user_id:string,event_type:string,timestamp:number";

/// Runs `plugin` over a case file; one JSON object per input line.
fn verdicts(plugin: &Path, cases: &str, args: &[&str]) -> Vec<Value> {
    let input = repo_root()
        .join("examples/plugins/cases")
        .join(cases)
        .display()
        .to_string();
    let plugin = plugin.display().to_string();
    let mut all = vec![
        "test-plugin",
        plugin.as_str(),
        "--input",
        input.as_str(),
        "--json",
        // Same logic in every language is the question, not speed: a record must not time
        // out on a loaded machine.
        "--time-per-record-ms",
        "10000",
    ];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_switchyard(&all).expect("switchyard runs");
    assert_eq!(code, Some(0), "test-plugin {plugin} failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The part of a reason every language must agree on.
fn reason_class(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason);
    match head.rfind(" at byte ") {
        Some(at) if head[at + 9..].chars().all(|c| c.is_ascii_digit()) => head[..at].to_owned(),
        _ => head.to_owned(),
    }
}

/// What must be identical across languages.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(reason) = v["dead_letter"]["reason"].as_str() {
        v["dead_letter"]["reason"] = Value::String(reason_class(reason));
    }
    v
}

fn same_as_rust(plugin: &str, cases: &str, args: &[&str]) {
    let rust = verdicts(&plugin_path(plugin), cases, args);
    assert!(rust.len() >= 15, "too few cases in {cases}: {}", rust.len());
    // The cases cover every verdict the plugin gives.
    let kinds: BTreeSet<&str> = rust.iter().filter_map(|v| v["verdict"].as_str()).collect();
    assert!(
        kinds.contains("dead-letter") && kinds.len() >= 2,
        "{kinds:?}"
    );
    for language in LANGUAGES {
        let path: PathBuf = polyglot_plugin(language, plugin);
        let other = verdicts(&path, cases, args);
        assert_eq!(other.len(), rust.len(), "{language} {plugin}: line count");
        for (r, o) in rust.iter().zip(&other) {
            assert_eq!(
                comparable(o),
                comparable(r),
                "{language} {plugin} differs from Rust on {cases} line {}:\n  {language}: {o}\n  rust: {r}",
                r["line"]
            );
        }
    }
}

#[test]
fn reason_classes() {
    assert_eq!(
        reason_class("invalid JSON at byte 17: trailing comma"),
        "invalid JSON"
    );
    assert_eq!(
        reason_class("invalid JSON: unexpected `b` at byte 1"),
        "invalid JSON"
    );
    assert_eq!(reason_class("not UTF-8: invalid byte at 4"), "not UTF-8");
    assert_eq!(
        reason_class("missing field user_id"),
        "missing field user_id"
    );
    assert_eq!(
        reason_class("expected number at timestamp, found string"),
        "expected number at timestamp, found string"
    );
}

#[test]
fn route_decides_the_same_in_every_language() {
    same_as_rust(
        "route",
        "route.jsonl",
        &["--route", "urgent", "--route", "errors"],
    );
}

#[test]
fn validate_decides_the_same_in_every_language() {
    same_as_rust("validate", "validate.jsonl", &["--config", REQUIRED]);
}

#[test]
fn init_errors_name_the_key_in_every_language() {
    for language in LANGUAGES {
        let path = polyglot_plugin(language, "route").display().to_string();
        let input = repo_root()
            .join("examples/plugins/cases/route.jsonl")
            .display()
            .to_string();
        let (code, _, stderr) = run_switchyard(&[
            "test-plugin",
            &path,
            "--input",
            &input,
            "--config",
            "urgent_valuez=high",
        ])
        .expect("switchyard runs");
        assert_ne!(code, Some(0), "{language}: a bad config key must fail init");
        assert!(
            stderr.contains("urgent_valuez"),
            "{language}: the error names the key:\n{stderr}"
        );
    }
}

/// The window's runs: update mode on the default fields; final mode to a route of its own;
/// update mode keyed by other fields, in windows that do not divide a minute.
const WINDOW_RUNS: [&[&str]; 3] = [
    &["--watermark-delay-ms", "30000"],
    &[
        "--watermark-delay-ms",
        "30000",
        "--config",
        "mode=final",
        "--config",
        "route=totals",
        "--route",
        "totals",
    ],
    &[
        "--watermark-delay-ms",
        "30000",
        "--config",
        "key_field=user",
        "--config",
        "value_field=n",
        "--config",
        "window_ms=7000",
    ],
];

/// Every number of a JSON value as an `f64`.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => items.into_iter().map(numbers_as_f64).collect(),
        Value::Object(fields) => fields
            .into_iter()
            .map(|(k, v)| (k, numbers_as_f64(v)))
            .collect(),
        other => other,
    }
}

/// A `test-plugin` line of the window with each output's value parsed (numbers as `f64`).
fn window_comparable(line: &Value) -> Value {
    let mut line = line.clone();
    if let Some(outputs) = line["outputs"].as_array_mut() {
        for output in outputs {
            let text = output["value"]
                .as_str()
                .expect("a window output has a text value");
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("an output value is not JSON ({e}): {text}"));
            output["value"] = numbers_as_f64(value);
        }
    }
    line
}

#[test]
fn window_aggregates_the_same_in_python() {
    let python = polyglot_plugin("python", "window");
    for args in WINDOW_RUNS {
        let rust = verdicts(&plugin_path("window"), "window.jsonl", args);
        let other = verdicts(&python, "window.jsonl", args);
        assert_eq!(other.len(), rust.len(), "{args:?}: line count");
        // The cases cover what the window does: emits (update) or absorbs (final), windows
        // closed by the watermark during the input and at its end, late and bad records.
        let (records, end) = rust.split_at(rust.len() - 1);
        assert!(records.len() >= 200, "{args:?}: {} records", records.len());
        assert_eq!(end[0]["end_of_input"], true, "{args:?}");
        let verdicts: BTreeSet<&str> = records
            .iter()
            .filter_map(|v| v["verdict"].as_str())
            .collect();
        let final_mode = args.contains(&"mode=final");
        let expected = if final_mode {
            ["dead-letter", "drop"]
        } else {
            ["dead-letter", "emit"]
        };
        assert_eq!(verdicts, BTreeSet::from(expected), "{args:?}");
        let reasons: Vec<&str> = records
            .iter()
            .filter_map(|v| v["dead_letter"]["reason"].as_str())
            .collect();
        assert!(reasons.iter().any(|r| r.starts_with("late: ")), "{args:?}");
        assert!(reasons.contains(&"not a JSON object"), "{args:?}");
        if final_mode {
            let fired_during = records
                .iter()
                .filter(|v| v["outputs"].as_array().is_some_and(|o| !o.is_empty()))
                .count();
            assert!(
                fired_during >= 3,
                "{args:?}: {fired_during} records fire windows"
            );
            assert!(
                !end[0]["outputs"].as_array().unwrap().is_empty(),
                "{args:?}"
            );
        }
        for (r, o) in rust.iter().zip(&other) {
            assert_eq!(
                window_comparable(o),
                window_comparable(r),
                "python window differs from Rust ({args:?}) on line {}:\n  python: {o}\n  rust: {r}",
                r["line"]
            );
        }
    }
}

#[test]
fn window_init_errors_are_the_same_in_python() {
    let input = repo_root()
        .join("examples/plugins/cases/window.jsonl")
        .display()
        .to_string();
    let init_error = |plugin: &Path, config: &str| {
        let plugin = plugin.display().to_string();
        let (code, _, stderr) = run_switchyard(&[
            "test-plugin",
            &plugin,
            "--input",
            &input,
            "--config",
            config,
        ])
        .expect("switchyard runs");
        assert_ne!(
            code,
            Some(0),
            "{plugin} {config}: a bad config must fail init"
        );
        let at = stderr
            .find("init failed: ")
            .unwrap_or_else(|| panic!("{plugin} {config}: no init error in:\n{stderr}"));
        stderr[at..].lines().next().unwrap_or_default().to_owned()
    };
    let python = polyglot_plugin("python", "window");
    for config in [
        "mode=eventually",
        "window_ms=0",
        "window_ms=1m",
        "key_field= ",
        "watermark_delay_ms=5",
    ] {
        let rust = init_error(&plugin_path("window"), config);
        let key = config.split('=').next().unwrap_or_default();
        assert!(rust.contains(&format!("`{key}`")), "{rust}");
        assert_eq!(init_error(&python, config), rust, "{config}");
    }
}
