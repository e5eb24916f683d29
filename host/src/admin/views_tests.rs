//! The answers keep the API's JSON shape, and what the server sends the client reads back.

use super::*;
use serde_json::{Value, json};

fn pipeline() -> PipelineView {
    PipelineView {
        name: "events".into(),
        state: "running".into(),
        problem: None,
        dead_letter_failing: false,
        group: "switchyard-events".into(),
        topics: vec!["events".into()],
        topic_pattern: None,
        routes: BTreeMap::from([("urgent".into(), "events-urgent".into())]),
        default_route: "urgent".into(),
        dead_letter_topic: "events-dlq".into(),
        chain_generation: 3,
        workers: 2,
        stages: vec![
            StageView {
                name: "schema".into(),
                version: "aa".into(),
                size_bytes: 10,
                builtin: Some("json-schema".into()),
                active: None,
                change_in_progress: true,
            },
            StageView {
                name: "route".into(),
                version: "bb".into(),
                size_bytes: 2000,
                builtin: None,
                active: Some(StageActiveView {
                    loaded_at_ms: 1_700_000_000_000,
                    loaded_by: "ops".into(),
                    origin: "upload".into(),
                    config: BTreeMap::from([("x".into(), "y".into())]),
                    rollback_to: None,
                }),
                change_in_progress: false,
            },
        ],
        counters: CountersView {
            consumed: 50,
            dropped: 1,
            routed: 48,
            dead_lettered: 1,
            undeliverable: 0,
            produce_retries: 0,
        },
        in_flight: 0,
        partitions: vec![PartitionView {
            topic: "events".into(),
            partition: 0,
            in_flight: 0,
            committed: Some(50),
            position: Some(50),
            high_watermark: None,
            lag: None,
        }],
        stateful: None,
    }
}

/// The shape the API has always sent for a pipeline.
#[test]
fn a_pipeline_serializes_to_the_api_shape() {
    let got = serde_json::to_value(pipeline()).expect("serializes");
    let expected = json!({
        "name": "events", "state": "running", "problem": null, "dead_letter_failing": false,
        "group": "switchyard-events", "topics": ["events"], "topic_pattern": null,
        "routes": {"urgent": "events-urgent"}, "default_route": "urgent",
        "dead_letter_topic": "events-dlq", "chain_generation": 3, "workers": 2,
        "stages": [
            {"name": "schema", "version": "aa", "size_bytes": 10, "builtin": "json-schema",
             "change_in_progress": true},
            {"name": "route", "version": "bb", "size_bytes": 2000,
             "loaded_at_ms": 1_700_000_000_000_i64, "loaded_by": "ops", "origin": "upload",
             "config": {"x": "y"}, "rollback_to": null},
        ],
        "counters": {"consumed": 50, "dropped": 1, "routed": 48, "dead_lettered": 1,
                     "undeliverable": 0, "produce_retries": 0},
        "in_flight": 0,
        "partitions": [{"topic": "events", "partition": 0, "in_flight": 0, "committed": 50,
                        "position": 50, "high_watermark": null, "lag": null}],
    });
    assert_eq!(got, expected);
}

/// What the server writes, the command line's client reads into the same value, and prints
/// as the same JSON.
fn round_trips<T>(view: &T)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let sent = serde_json::to_string(view).expect("serializes");
    let read: T = crate::cli::client::decode(&sent).expect("the client reads it");
    assert_eq!(&read, view);
    assert_eq!(
        serde_json::to_value(&read).expect("serializes"),
        serde_json::from_str::<Value>(&sent).expect("JSON"),
        "printed as sent"
    );
}

#[test]
fn every_answer_the_client_reads_round_trips() {
    let mut p = pipeline();
    round_trips(&p);
    p.stages[1].active.as_mut().expect("active").rollback_to = Some("cc".into());
    p.problem = Some("the producer failed".into());
    round_trips(&PipelinesView {
        pipelines: vec![p.clone(), pipeline()],
    });
    round_trips(&SwitchedView {
        pipeline: "events".into(),
        stage: "route".into(),
        version: "bb".into(),
        previous: "aa".into(),
        workers: 2,
        switched_in_ms: 12,
    });
    let record = |version: &str, origin: &str| VersionRecord {
        version: version.into(),
        config: BTreeMap::from([("x".into(), "y".into())]),
        loaded_at_ms: 1,
        by: "ops".into(),
        origin: origin.into(),
    };
    round_trips(&VersionsView {
        pipeline: "events".into(),
        stage: "route".into(),
        active: record("bb", "upload"),
        rollback_stack: vec![record("aa", "config")],
        history: vec![HistoryEntry {
            at_ms: 2,
            by: "ops".into(),
            action: "upload".into(),
            version: "bb".into(),
            result: "ok".into(),
        }],
    });
    round_trips(&TablesView {
        tables: vec![json!({"name": "users", "rows": 3, "ready": true})],
    });
    round_trips(&PipelineStateView {
        pipeline: "events".into(),
        state: "paused".into(),
    });
}

#[test]
fn versions_keep_their_field_names() {
    let v = serde_json::to_value(VersionsView {
        pipeline: "p".into(),
        stage: "s".into(),
        active: VersionRecord {
            version: "v".into(),
            config: BTreeMap::new(),
            loaded_at_ms: 1,
            by: "config".into(),
            origin: "config".into(),
        },
        rollback_stack: Vec::new(),
        history: Vec::new(),
    })
    .expect("serializes");
    assert_eq!(
        v,
        json!({"pipeline": "p", "stage": "s", "rollback_stack": [], "history": [],
               "active": {"version": "v", "config": {}, "loaded_at_ms": 1, "by": "config",
                          "origin": "config"}})
    );
    let ready = serde_json::to_value(ReadyView {
        ready: true,
        problems: Vec::new(),
    })
    .expect("serializes");
    assert_eq!(ready, json!({"ready": true}));
}
