//! The example plugins for each use case, run through the host runtime as a pipeline would
//! run them: routing, validation with dead-letter, enrichment from a table, transformation,
//! and the full validate -> enrich -> transform -> route chain.

use std::sync::Arc;
use switchyard::plugin::{
    ChainRunner, ChainSpec, Delivery, Destination, ErrorKind, HostServices, MemoryTables, StageSpec,
};
use switchyard_tests::{engine, event, record, stage};

const ROUTES: [&str; 3] = ["standard", "urgent", "errors"];
const REQUIRED: &str = "event_id:string,user_id:string,event_type:string,timestamp:number";

fn users() -> HostServices {
    let mut tables = MemoryTables::empty();
    for i in 0..100 {
        let segment = if i % 2 == 0 { "gold" } else { "basic" };
        tables.insert(
            "users",
            format!("user-{i:05}"),
            format!(r#"{{"name":"User {i}","segment":"{segment}"}}"#),
        );
    }
    HostServices {
        tables: Arc::new(tables),
        ..HostServices::default()
    }
}

fn runner(stages: Vec<StageSpec>, services: HostServices) -> ChainRunner {
    let spec = ChainSpec::new(
        "use-case",
        ROUTES.iter().map(|s| s.to_string()).collect(),
        "standard",
        stages,
    )
    .expect("valid chain");
    ChainRunner::new(engine(), Arc::new(spec), services).expect("chain instantiates")
}

fn run(c: &mut ChainRunner, values: &[String]) -> Vec<Delivery> {
    let records = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(i as i64, v.as_bytes()))
        .collect();
    c.process("events", 0, records).expect("chain runs")
}

/// (route name or "DLQ: reason", value) of every delivery.
fn outcome(c: &ChainRunner, d: &Delivery) -> (String, String) {
    match &d.destination {
        Destination::Route { route, record } => (
            c.spec().route_name(*route).to_string(),
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned(),
        ),
        Destination::DeadLetter(dl) => (
            format!("DLQ {}: {}", dl.error.kind, dl.error.message),
            String::from_utf8_lossy(dl.record.value.as_deref().unwrap_or_default()).into_owned(),
        ),
    }
}

#[test]
fn routing_sends_urgent_errors_and_the_rest_to_their_routes() {
    let mut c = runner(vec![stage("route", "route", &[])], HostServices::default());
    let values = vec![
        r#"{"event_type":"click","priority":"high"}"#.to_string(),
        r#"{"event_type":"error","priority":"normal"}"#.to_string(),
        r#"{"event_type":"error","priority":"high"}"#.to_string(),
        r#"{"event_type":"click","priority":"normal"}"#.to_string(),
        r#"{"event_type":"click"}"#.to_string(),
        r#"not json"#.to_string(),
    ];
    let out = run(&mut c, &values);
    let routes: Vec<String> = out.iter().map(|d| outcome(&c, d).0).collect();
    assert_eq!(
        &routes[..5],
        ["urgent", "errors", "urgent", "standard", "standard"]
    );
    assert!(routes[5].starts_with("DLQ rejected: "), "{}", routes[5]);
}

#[test]
fn routing_fields_values_and_routes_come_from_config() {
    let mut c = runner(
        vec![stage(
            "route",
            "route",
            &[
                ("priority_field", "sev"),
                ("urgent_values", "p0,p1"),
                ("urgent_route", "errors"),
                ("type_field", "kind"),
                ("error_values", "failure"),
                ("error_route", "urgent"),
            ],
        )],
        HostServices::default(),
    );
    let values = vec![
        r#"{"sev":"p1","kind":"x"}"#.to_string(),
        r#"{"sev":"p2","kind":"failure"}"#.to_string(),
        r#"{"priority":"high","event_type":"error"}"#.to_string(),
    ];
    let out = run(&mut c, &values);
    let routes: Vec<String> = out.iter().map(|d| outcome(&c, d).0).collect();
    assert_eq!(routes, ["errors", "urgent", "standard"]);
}

#[test]
fn validation_dead_letters_with_precise_reasons() {
    let mut c = runner(
        vec![stage("validate", "validate", &[("required", REQUIRED)])],
        HostServices::default(),
    );
    let good = event(1);
    let values = [
        good.clone(),
        r#"{"event_id":"e","event_type":"click","timestamp":1}"#.to_string(),
        r#"{"event_id":"e","user_id":"u","event_type":"click","timestamp":"now"}"#.to_string(),
        r#"{"event_id":"e", "user_id": tru}"#.to_string(),
        r#"[1,2]"#.to_string(),
    ];
    let mut records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(i as i64, v.as_bytes()))
        .collect();
    records.push(record(5, vec![b'{', 0xff, b'}']));
    let mut null = record(6, Vec::new());
    null.value = None;
    records.push(null);
    let out = c.process("events", 0, records).expect("runs");
    let got: Vec<String> = out.iter().map(|d| outcome(&c, d).0).collect();
    assert_eq!(got[0], "standard");
    assert_eq!(got[1], "DLQ rejected: missing field user_id");
    assert_eq!(
        got[2],
        "DLQ rejected: expected number at timestamp, found string"
    );
    // `{"event_id":"e", "user_id": tru}`: byte 31 is the `}` where the `e` of `true` belongs.
    assert_eq!(
        got[3],
        "DLQ rejected: invalid JSON at byte 31: expected ident"
    );
    assert_eq!(got[4], "DLQ rejected: not a JSON object");
    assert_eq!(got[5], "DLQ rejected: not UTF-8: invalid byte at 1");
    assert_eq!(got[6], "DLQ rejected: null value");
    // The dead-lettered record is the original, unchanged.
    assert_eq!(outcome(&c, &out[1]).1, values[1]);
}

#[test]
fn enrichment_adds_user_fields_and_keeps_unknown_users_with_nulls() {
    let mut c = runner(vec![stage("enrich", "enrich", &[])], users());
    let values = vec![
        r#"{"event_id":"a","user_id":"user-00002"}"#.to_string(),
        r#"{"event_id":"b","user_id":"user-99999"}"#.to_string(),
        r#"{"event_id":"c"}"#.to_string(),
    ];
    let out = run(&mut c, &values);
    let parsed: Vec<serde_json::Value> = out
        .iter()
        .map(|d| serde_json::from_str(&outcome(&c, d).1).expect("JSON out"))
        .collect();
    assert_eq!(parsed[0]["user_name"], "User 2");
    assert_eq!(parsed[0]["user_segment"], "gold");
    assert_eq!(parsed[0]["event_id"], "a");
    assert!(parsed[1]["user_name"].is_null() && parsed[1].get("user_name").is_some());
    assert!(parsed[1]["user_segment"].is_null());
    assert!(parsed[2].get("user_name").is_some_and(|v| v.is_null()));
    assert_eq!(out.len(), 3, "left join: never dropped");
}

#[test]
fn transformation_renames_removes_and_stamps() {
    let mut c = runner(
        vec![stage(
            "transform",
            "transform",
            &[("rename", "event_type:type"), ("remove", "email,session")],
        )],
        HostServices::default(),
    );
    let out = run(&mut c, &[event(5)]);
    let text = outcome(&c, &out[0]).1;
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        v.get("email").is_none() && v.get("session").is_none(),
        "{text}"
    );
    assert!(
        v.get("event_type").is_none() && v.get("type").is_some(),
        "{text}"
    );
    assert!(
        v["processed_at"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "{text}"
    );
    assert!(!text.contains(' '), "compact: {text}");
    assert!(
        text.starts_with(r#"{"event_id":"#),
        "field order kept: {text}"
    );
}

/// validate -> enrich -> transform -> route over a realistic stream with some invalid
/// events: every event is accounted for exactly once, in the expected place.
#[test]
fn the_full_chain_accounts_for_every_event() {
    let mut c = runner(
        vec![
            stage("validate", "validate", &[("required", REQUIRED)]),
            stage("enrich", "enrich", &[]),
            stage("transform", "transform", &[("remove", "email")]),
            stage("route", "route", &[]),
        ],
        users(),
    );
    let values: Vec<String> = (0..1000u64)
        .map(|i| {
            if i % 50 == 7 {
                format!(r#"{{"event_id":"evt-{i}","broken":true}}"#)
            } else {
                event(i)
            }
        })
        .collect();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for chunk in values.chunks(256) {
        let out = run(&mut c, chunk);
        assert_eq!(out.len(), chunk.len(), "one delivery per event");
        for (d, v) in out.iter().zip(chunk) {
            let (route, value) = outcome(&c, d);
            let source: serde_json::Value = serde_json::from_str(v).expect("JSON");
            let expected = if source.get("broken").is_some() {
                "DLQ rejected: missing field user_id".to_string()
            } else if source["priority"] == "high" {
                "urgent".into()
            } else if source["event_type"] == "error" {
                "errors".into()
            } else {
                "standard".into()
            };
            assert_eq!(route, expected, "{v}");
            if !route.starts_with("DLQ") {
                let out: serde_json::Value = serde_json::from_str(&value).expect("JSON");
                assert_eq!(out["event_id"], source["event_id"]);
                assert!(out.get("email").is_none());
                assert!(out.get("user_segment").is_some());
            }
            *counts.entry(route).or_default() += 1;
        }
    }
    assert_eq!(counts["DLQ rejected: missing field user_id"], 20);
    assert_eq!(counts.values().sum::<usize>(), 1000);
    let stats = c.stats();
    assert_eq!(stats[0].dead_lettered.get(&ErrorKind::Rejected), Some(&20));
    assert_eq!(stats[3].records_in, 980);
}
