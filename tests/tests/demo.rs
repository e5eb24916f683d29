//! `switchyard demo` on the embedded broker: it runs, and its summary adds up.

use serde_json::Value;
use switchyard_tests::pipelines::scratch_dir;
use switchyard_tests::router_process::switchyard_binary;

/// Runs `switchyard demo` with `args` on the example plugins, in a scratch directory named
/// after `name`; its summary JSON, stdout and stderr, once it has exited successfully.
fn run_demo(name: &str, args: &[&str]) -> (Value, String, String) {
    let dir = scratch_dir(name);
    let summary_path = dir.join("summary.json");
    // Any plugin's path gives the directory the example plugins were built into.
    let plugins = switchyard_tests::plugin_path("route")
        .parent()
        .expect("plugin dir")
        .to_path_buf();
    let out = std::process::Command::new(switchyard_binary().expect("switchyard binary"))
        .arg("demo")
        .args(args)
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--plugins")
        .arg(&plugins)
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--summary-json")
        .arg(&summary_path)
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let s: Value = serde_json::from_slice(&std::fs::read(&summary_path).expect("summary"))
        .expect("summary JSON");
    (s, stdout, stderr)
}

#[test]
fn the_demo_accounts_for_every_generated_event() {
    let (s, stdout, stderr) = run_demo("demo", &["--rate", "400", "--duration", "4"]);
    let generated = s["generated"].as_u64().expect("generated");
    assert!(generated >= 1_000, "{s}");
    let per_topic = s["per_topic"].as_object().expect("per_topic");
    for topic in ["demo-standard", "demo-urgent", "demo-errors", "demo-dlq"] {
        assert!(
            per_topic
                .get(topic)
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0),
            "{topic} got nothing: {s}"
        );
    }
    let placed: u64 = per_topic.values().filter_map(Value::as_u64).sum();
    assert_eq!(placed, generated, "{s}");
    assert_eq!(s["missing"], 0, "{s}");
    assert_eq!(s["split"], 0, "{s}");
    assert_eq!(
        s["rerouted"], 0,
        "no reload happened, so the stock routing holds: {s}"
    );
    assert_eq!(s["all_accounted"], true);
    let reasons: u64 = s["dead_letter_reasons"]
        .as_object()
        .expect("reasons")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(
        reasons >= per_topic["demo-dlq"].as_u64().unwrap_or(0),
        "{s}"
    );
    assert!(
        s["latency_ms"]["p99"].as_f64().is_some_and(|p| p > 0.0),
        "{s}"
    );
    // The printed summary says the same, and the intro tells how to hot-reload.
    assert!(
        stdout.contains(&format!("{generated} of {generated} generated events")),
        "{stdout}"
    );
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(stderr.contains("switchyard plugin push"), "{stderr}");
    assert!(stderr.contains("kcat -b"), "{stderr}");
}

/// `--scenario windows` adds a stateful pipeline over the same events: it writes window
/// aggregates while the routing pipeline's accounting still adds up.
#[test]
fn the_windows_scenario_writes_aggregates() {
    let (s, stdout, _) = run_demo(
        "demo-windows",
        &["--scenario", "windows", "--rate", "400", "--duration", "3"],
    );
    assert_eq!(s["all_accounted"], true, "{s}");
    let w = &s["windows"];
    let aggregates = w["aggregates"].as_u64().expect("aggregates");
    let windows = w["windows"].as_u64().expect("windows");
    assert!(windows > 10 && aggregates > windows, "{s}");
    for a in w["busiest"].as_array().expect("busiest") {
        let count = a["count"].as_f64().expect("count");
        let sum = a["sum"].as_f64().expect("sum");
        assert_eq!(a["avg"].as_f64(), Some(sum / count), "{a}");
        assert_eq!(
            a["window_end"].as_i64().expect("end") - a["window_start"].as_i64().expect("start"),
            10_000
        );
    }
    assert!(stdout.contains("demo-aggregates"), "{stdout}");
}
