//! Enrichment tables end to end (a users topic and a plans file, kept up to date while the
//! pipeline runs) and the built-in `json-schema` stage, on the tansu broker.

use serde_json::Value;
use std::time::{Duration, Instant};
use switchyard_tests::kafka::{Broker, Consumed, TestRecord};
use switchyard_tests::pipelines::{
    Running, call, generated_token, kafka_toml, pipeline_toml, scratch_dir, start, wait_ready,
    write_file,
};

const SETTLE: Duration = Duration::from_millis(500);
const DEADLINE: Duration = Duration::from_secs(60);

fn event(id: &str, user: &str) -> TestRecord {
    TestRecord::new(
        user,
        format!(r#"{{"event_id":"{id}","user_id":"{user}"}}"#).as_bytes(),
    )
}

fn user(id: &str, name: &str) -> TestRecord {
    TestRecord::new(id, format!(r#"{{"name":"{name}"}}"#).as_bytes())
}

fn tombstone(id: &str) -> TestRecord {
    TestRecord {
        key: Some(id.as_bytes().to_vec()),
        value: None,
        ..TestRecord::default()
    }
}

fn plans(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(user, plan)| format!("{{\"user_id\":\"{user}\",\"plan\":\"{plan}\"}}\n"))
        .collect()
}

/// The named table as `GET /api/v1/tables` shows it.
fn table(url: &str, name: &str) -> Value {
    let (status, body) = call("GET", &format!("{url}/api/v1/tables"), None, None);
    assert_eq!(status, 200, "{body}");
    body["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no table {name} in {body}"))
}

fn wait_table(url: &str, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = table(url, name);
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "table {name}: never {what}: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `events` and reads the outputs until `total` arrived (every record so far): each
/// must be on the enriched topic, none dead-lettered. Returns them by event id.
fn enrich(
    broker: &Broker,
    events: [TestRecord; 3],
    total: usize,
) -> std::collections::HashMap<String, Value> {
    broker.produce("events", events).expect("events produced");
    let out = broker
        .consume_all(&["enriched", "dlq"], total, SETTLE, DEADLINE)
        .expect("consumed");
    assert_eq!(out.len(), total, "{out:?}");
    assert!(out.iter().all(|c| c.topic == "enriched"), "{out:?}");
    by_id(&out)
}

/// (event id -> the enriched output) of records read from the output topic.
fn by_id(out: &[Consumed]) -> std::collections::HashMap<String, Value> {
    out.iter()
        .map(|c| {
            let v = c.json();
            (v["event_id"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

#[test]
fn enrichment_follows_a_users_topic_and_a_plans_file() {
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[("events", 2), ("users", 2), ("enriched", 1), ("dlq", 1)])
        .expect("topics created");
    broker
        .produce(
            "users",
            [user("u1", "Ann"), user("u2", "Bo"), user("u3", "Cy")],
        )
        .expect("users produced");
    let dir = scratch_dir("tables");
    let plans_file = write_file(
        &dir,
        "plans.jsonl",
        &plans(&[("u1", "free"), ("u2", "team")]),
    );
    let text = format!(
        "{}\n{}\n\
         [[table]]\nname = \"users\"\ntopic = \"users\"\n\
         [[table]]\nname = \"plans\"\npath = \"{}\"\nkey_field = \"user_id\"\nwatch_interval_ms = 100\n",
        kafka_toml(broker.bootstrap()),
        pipeline_toml(
            "events",
            "events",
            &[("standard", "enriched")],
            "dlq",
            &[
                (
                    "users",
                    "enrich",
                    &[("table", "users"), ("fields", "name:user_name")],
                ),
                (
                    "plans",
                    "enrich",
                    &[("table", "plans"), ("fields", "plan:user_plan")],
                ),
            ],
            "commit_interval_ms = 100",
        ),
        plans_file.display()
    );
    let config = write_file(&dir, "switchyard.toml", &text);
    let running: Running = start(&config).expect("pipeline starts");
    let admin = running.serve_admin();
    // Ready only once the users topic has been read to its end.
    wait_ready(&admin.url);
    let users = table(&admin.url, "users");
    assert_eq!(users["rows"], 3, "{users}");
    assert_eq!(users["ready"], true);
    assert_eq!(users["source"]["topic"], "users");
    let plans_table = table(&admin.url, "plans");
    assert_eq!(plans_table["rows"], 2, "{plans_table}");
    assert_eq!(plans_table["source"]["format"], "jsonl");

    // Phase 1: a known user, a user with no plan, an unknown user (kept, with nulls).
    let got = enrich(
        &broker,
        [event("a1", "u1"), event("a2", "u3"), event("a3", "u9")],
        3,
    );
    assert_eq!(got["a1"]["user_name"], "Ann");
    assert_eq!(got["a1"]["user_plan"], "free");
    assert_eq!(got["a2"]["user_name"], "Cy");
    assert!(got["a2"]["user_plan"].is_null() && got["a2"].get("user_plan").is_some());
    assert!(got["a3"]["user_name"].is_null() && got["a3"].get("user_name").is_some());
    assert!(got["a3"]["user_plan"].is_null());

    // Phase 2: a users update and a tombstone on the topic, a plans file change.
    broker
        .produce("users", [user("u1", "Ann B"), tombstone("u2")])
        .expect("updates produced");
    write_file(
        &dir,
        "plans.jsonl",
        &plans(&[("u1", "pro"), ("u2", "team"), ("u3", "free")]),
    );
    wait_table(&admin.url, "users", "updated", |t| {
        t["records_applied"] == 5
    });
    let users = table(&admin.url, "users");
    assert_eq!(users["rows"], 2, "the tombstone removed u2: {users}");
    assert_eq!(users["tombstones"], 1);
    wait_table(&admin.url, "plans", "reloaded", |t| t["loads"] == 2);

    let got = enrich(
        &broker,
        [event("b1", "u1"), event("b2", "u2"), event("b3", "u3")],
        6,
    );
    assert_eq!(
        got["b1"]["user_name"], "Ann B",
        "the update applies to later records"
    );
    assert_eq!(got["b1"]["user_plan"], "pro", "the file change applies");
    assert!(
        got["b2"]["user_name"].is_null(),
        "u2 was deleted: {}",
        got["b2"]
    );
    assert_eq!(got["b2"]["user_plan"], "team");
    assert_eq!(got["b3"]["user_name"], "Cy");
    assert_eq!(got["b3"]["user_plan"], "free");
    // Earlier records are not rewritten.
    assert_eq!(got["a1"]["user_name"], "Ann");

    // No token configured: a reload needs the one the router generated.
    let token = generated_token(&dir);
    // A broken file: the reload is refused with the line, the table keeps its rows.
    let watch_loads = table(&admin.url, "plans")["loads"].clone();
    write_file(
        &dir,
        "plans.jsonl",
        "{\"user_id\":\"u1\",\"plan\":\"x\"}\n{oops\n",
    );
    let (status, body) = call(
        "POST",
        &format!("{}/api/v1/tables/plans/reload", admin.url),
        Some(&token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("table plans keeps its rows") && message.contains("plans.jsonl line 2"),
        "{body}"
    );
    let plans_table = table(&admin.url, "plans");
    assert_eq!(plans_table["rows"], 3, "{plans_table}");
    assert_eq!(plans_table["loads"], watch_loads);
    assert!(
        plans_table["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("line 2"))
    );
    // Fixed, and reloaded by hand.
    write_file(&dir, "plans.jsonl", &plans(&[("u1", "gold")]));
    let (status, body) = call(
        "POST",
        &format!("{}/api/v1/tables/plans/reload", admin.url),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], 1, "{body}");
    assert!(body["last_error"].is_null());
    // Topic tables do not reload; unknown tables are named.
    let (status, body) = call(
        "POST",
        &format!("{}/api/v1/tables/users/reload", admin.url),
        Some(&token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = call(
        "POST",
        &format!("{}/api/v1/tables/nope/reload", admin.url),
        Some(&token),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("users, plans") || e.contains("plans, users")),
        "{body}"
    );
    drop(admin);
    running.stop().expect("clean stop");
}

const SCHEMA: &str = r#"{
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["event_id", "user_id", "timestamp"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1},
        "user_id": {"type": "string", "pattern": "^u[0-9]+$"},
        "timestamp": {"type": "integer", "minimum": 0},
        "priority": {"enum": ["low", "normal", "high"]}
    },
    "additionalProperties": false
}"#;

fn schema_config(broker: &Broker, dir: &std::path::Path, schema: &str) -> std::path::PathBuf {
    let schema = write_file(dir, "event.schema.json", schema);
    let pipeline = pipeline_toml(
        "events",
        "events",
        &[("standard", "valid"), ("urgent", "urgent")],
        "dlq",
        &[],
        "commit_interval_ms = 100",
    );
    let text = format!(
        "{}\n{pipeline}\n[[pipeline.stage]]\nname = \"schema\"\njson_schema = \"{}\"\n\
         [[pipeline.stage]]\nname = \"route\"\nplugin = \"{}\"\n",
        kafka_toml(broker.bootstrap()),
        schema.display(),
        switchyard_tests::plugin_path("route").display()
    );
    write_file(dir, "switchyard.toml", &text)
}

#[test]
fn schema_stage_passes_valid_records_and_dead_letters_the_rest_with_the_reason() {
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[("events", 1), ("valid", 1), ("urgent", 1), ("dlq", 1)])
        .expect("topics created");
    let dir = scratch_dir("schema");
    let running = start(&schema_config(&broker, &dir, SCHEMA)).expect("pipeline starts");
    let cases: [(&str, Option<&str>); 9] = [
        (r#"{"event_id":"e1","user_id":"u1","timestamp":1}"#, None),
        (
            r#"{"event_id":"e2","user_id":"u2","timestamp":2,"priority":"high"}"#,
            None,
        ),
        (
            r#"{"event_id":"e3","timestamp":3}"#,
            Some(r#"schema: /: "user_id" is a required property"#),
        ),
        (
            r#"{"event_id":"e4","user_id":"u4","timestamp":"now"}"#,
            Some(r#"schema: /timestamp: "now" is not of type "integer""#),
        ),
        (
            r#"{"event_id":"e5","user_id":"x5","timestamp":5}"#,
            Some(r#"schema: /user_id: "x5" does not match "^u[0-9]+$""#),
        ),
        (
            r#"{"event_id":"e6","user_id":"u6","timestamp":6,"priority":"asap"}"#,
            Some(r#"schema: /priority: "asap" is not one of "low", "normal" or "high""#),
        ),
        (
            r#"{"event_id":"e7","user_id":"u7","timestamp":7,"extra":1}"#,
            Some("schema: /: Additional properties are not allowed ('extra' was unexpected)"),
        ),
        (
            r#"{"event_id":"e8","user_id":"u8","#,
            Some("not JSON: EOF while parsing a value at byte 31"),
        ),
        ("", Some("not JSON: EOF while parsing a value at byte 0")),
    ];
    let records = cases
        .iter()
        .enumerate()
        .map(|(i, (value, _))| TestRecord::new(&format!("k{i}"), value.as_bytes()));
    let null_value = TestRecord {
        key: Some(b"k-null".to_vec()),
        ..TestRecord::default()
    };
    broker
        .produce("events", records.chain([null_value]))
        .expect("produced");
    let out = broker
        .consume_all(
            &["valid", "urgent", "dlq"],
            cases.len() + 1,
            SETTLE,
            DEADLINE,
        )
        .expect("consumed");
    running.stop().expect("clean stop");
    assert_eq!(out.len(), cases.len() + 1, "{out:?}");
    let find = |key: &str| {
        out.iter()
            .find(|c| c.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("no output for {key}"))
    };
    // Valid records go on through the chain (route sends high priority to urgent).
    assert_eq!(find("k0").topic, "valid");
    assert_eq!(find("k1").topic, "urgent");
    for (i, (value, reason)) in cases.iter().enumerate() {
        let Some(reason) = reason else { continue };
        let c = find(&format!("k{i}"));
        assert_eq!(c.topic, "dlq", "{value}");
        assert_eq!(c.header("switchyard-dlq-reason"), Some(*reason), "{value}");
        assert_eq!(c.header("switchyard-dlq-kind"), Some("rejected"));
        assert_eq!(c.header("switchyard-dlq-stage"), Some("schema"));
        assert_eq!(c.value_str(), *value, "the original value is kept");
    }
    let c = find("k-null");
    assert_eq!(c.topic, "dlq");
    assert_eq!(c.header("switchyard-dlq-reason"), Some("null value"));
}

#[test]
fn an_invalid_schema_file_stops_the_start_with_the_reason() {
    let broker = Broker::mock(1).expect("mock cluster");
    let dir = scratch_dir("bad-schema");
    let config = schema_config(&broker, &dir, r#"{"type": "strnig"}"#);
    let err = match start(&config) {
        Ok(_) => panic!("a bad schema must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("pipeline events, stage schema")
            && err.contains("event.schema.json")
            && err.contains("invalid schema")
            && err.contains("strnig"),
        "{err}"
    );
    let config = schema_config(&broker, &dir, "{ not json");
    let err = match start(&config) {
        Ok(_) => panic!("a schema that is not JSON must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("the schema is not JSON"), "{err}");
}
