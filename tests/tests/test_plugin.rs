//! `switchyard test-plugin`: a plugin over sample records, no Kafka.

use serde_json::Value;
use switchyard_tests::pipelines::{scratch_dir, write_file};
use switchyard_tests::plugin_path;
use switchyard_tests::router_process::run_switchyard;

fn run(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let (code, stdout, stderr) = run_switchyard(args).expect("switchyard runs");
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (code, lines, stderr)
}

#[test]
fn verdicts_and_outputs_of_each_sample_record() {
    let dir = scratch_dir("test-plugin");
    let input = write_file(
        &dir,
        "records.jsonl",
        concat!(
            "# bare events are used as the value\n",
            r#"{"event_id":"a","priority":"high","event_type":"click"}"#,
            "\n",
            r#"{"event_id":"b","priority":"normal","event_type":"error"}"#,
            "\n",
            "\n",
            r#"{"key":"u3","value":{"event_id":"c","priority":"normal","event_type":"click"},"headers":{"h":"v"}}"#,
            "\n",
            r#"{"key":"u4","value":"not json"}"#,
            "\n",
        ),
    );
    let route = plugin_path("route");
    let (code, lines, stderr) = run(&[
        "test-plugin",
        route.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
        "--route",
        "urgent",
        "--route",
        "errors",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["line"], 2);
    assert_eq!(lines[0]["verdict"], "route");
    assert_eq!(lines[0]["outputs"][0]["route"], "urgent");
    assert_eq!(lines[1]["outputs"][0]["route"], "errors");
    assert_eq!(lines[2]["line"], 5);
    assert_eq!(lines[2]["verdict"], "pass");
    assert_eq!(lines[2]["outputs"][0]["route"], "default");
    assert_eq!(lines[2]["outputs"][0]["key"], "u3");
    assert_eq!(lines[2]["outputs"][0]["headers"][0]["value"], "v");
    assert_eq!(lines[3]["verdict"], "dead-letter");
    assert_eq!(lines[3]["dead_letter"]["kind"], "rejected");
    assert!(lines[3]["outputs"].as_array().is_some_and(Vec::is_empty));

    // Without `--route urgent`, routing there is an error that names the route.
    let (_, lines, _) = run(&[
        "test-plugin",
        route.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(lines[0]["dead_letter"]["kind"], "bad-output");
    assert!(
        lines[0]["dead_letter"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("route `urgent` is not declared")),
        "{:?}",
        lines[0]
    );
}

#[test]
fn tables_and_config_reach_the_plugin() {
    let dir = scratch_dir("test-plugin-table");
    let users = write_file(
        &dir,
        "users.jsonl",
        "{\"user_id\":\"u1\",\"name\":\"Ada\",\"segment\":\"smb\"}\n",
    );
    let input = write_file(
        &dir,
        "records.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
    );
    let enrich = plugin_path("enrich");
    let (code, lines, stderr) = run(&[
        "test-plugin",
        enrich.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
        "--table",
        &format!("people={}:user_id", users.display()),
        "--config",
        "table=people",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let value = |i: usize| -> Value {
        serde_json::from_str(lines[i]["outputs"][0]["value"].as_str().expect("text")).expect("JSON")
    };
    assert_eq!(value(0)["user_name"], "Ada");
    assert_eq!(
        value(1)["user_name"],
        Value::Null,
        "left join keeps unknown users"
    );
}

#[test]
fn errors_name_the_problem() {
    let dir = scratch_dir("test-plugin-errors");
    let input = write_file(&dir, "records.jsonl", "{\"ok\":1}\n{broken\n");
    let route = plugin_path("route");
    let (code, _, stderr) = run(&[
        "test-plugin",
        route.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("records.jsonl line 2: not JSON"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[
        "test-plugin",
        route.to_str().expect("path"),
        "--input",
        write_file(&dir, "good.jsonl", "{\"ok\":1}\n")
            .to_str()
            .expect("path"),
        "--config",
        "nonsense_key=1",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("nonsense_key"), "{stderr}");
}
