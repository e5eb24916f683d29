//! The `route` and `validate` plugins written in Python and JavaScript decide exactly as the
//! Rust ones do: the shared cases (`examples/plugins/cases/*.jsonl`) run through the host
//! with `switchyard test-plugin --json` for every language, and every record must get the
//! same verdict, the same outputs (route, key, value, headers) and the same dead-letter kind.
//! Dead-letter reasons must agree up to their first `:` (a trailing ` at byte N` removed):
//! the class of the problem (`invalid JSON`, `not a JSON object`, `missing field user_id`,
//! ...) is the contract; the JSON parser's own wording after it differs by language.

use serde_json::Value;
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
    let kinds: std::collections::BTreeSet<&str> =
        rust.iter().filter_map(|v| v["verdict"].as_str()).collect();
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
