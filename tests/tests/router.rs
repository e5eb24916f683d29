//! The router turns the chain's deliveries into the records Switchyard produces: the route's
//! topic with provenance headers, or the dead-letter topic with the reason in headers or in a
//! JSON envelope.

use std::collections::BTreeMap;
use switchyard::config::DeadLetterFormat;
use switchyard::plugin::{
    ChainSpec, DeadLetter, Destination, ErrorKind, Header, InputRecord, RecordError, RouteId,
};
use switchyard::router::{Outgoing, Router, Source};
use switchyard_tests::{module, stage};

fn spec() -> ChainSpec {
    ChainSpec::new(
        "orders",
        vec!["standard".into(), "urgent".into()],
        "standard",
        vec![stage("validate", "noop", &[]), stage("route", "route", &[])],
    )
    .expect("valid chain")
}

fn topics() -> BTreeMap<String, String> {
    [("standard", "orders-standard"), ("urgent", "orders-urgent")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn original() -> InputRecord {
    InputRecord {
        offset: 77,
        timestamp_ms: Some(1_700_000_000_123),
        key: Some(b"user-1".to_vec()),
        value: Some(br#"{"id":1}"#.to_vec()),
        headers: vec![Header {
            key: "trace".into(),
            value: Some(b"t-1".to_vec()),
        }],
    }
}

fn dead() -> Destination {
    Destination::DeadLetter(DeadLetter {
        stage: 0,
        stage_name: "validate".into(),
        version: module("noop").version.clone(),
        error: RecordError {
            kind: ErrorKind::Rejected,
            message: "missing field user_id".into(),
        },
        record: original(),
    })
}

fn header<'a>(headers: &'a [Header], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

const SOURCE: Source<'static> = Source {
    topic: "orders",
    partition: 4,
};

/// The original record, routed to route 1 (`urgent`).
fn to_urgent(router: &Router) -> Outgoing {
    router.route(
        SOURCE,
        Destination::Route {
            route: RouteId(1),
            record: original(),
        },
        5,
    )
}

#[test]
fn routed_records_keep_key_headers_timestamp_and_gain_provenance() {
    let router =
        Router::new(&spec(), &topics(), "orders-dlq", DeadLetterFormat::Headers).expect("router");
    let out = to_urgent(&router);
    assert_eq!(&*out.topic, "orders-urgent");
    assert!(!out.dead_letter);
    assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(out.value.as_deref(), Some(&br#"{"id":1}"#[..]));
    assert_eq!(out.timestamp_ms, Some(1_700_000_000_123));
    assert_eq!(header(&out.headers, "trace"), Some("t-1"));
    assert_eq!(header(&out.headers, "switchyard-pipeline"), Some("orders"));
    let versions = format!(
        "validate={},route={}",
        module("noop").version,
        module("route").version
    );
    assert_eq!(
        header(&out.headers, "switchyard-versions"),
        Some(versions.as_str())
    );
}

#[test]
fn provenance_headers_can_be_turned_off_for_routed_records_only() {
    let router = Router::new(&spec(), &topics(), "orders-dlq", DeadLetterFormat::Headers)
        .expect("router")
        .without_provenance();
    let out = to_urgent(&router);
    assert_eq!(&*out.topic, "orders-urgent");
    let keys: Vec<&str> = out.headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, ["trace"], "only the record's own headers");
    // A dead letter still says where it came from and why.
    let dead = router.route(SOURCE, dead(), 1_700_000_999_000);
    assert_eq!(header(&dead.headers, "switchyard-pipeline"), Some("orders"));
    assert_eq!(
        header(&dead.headers, "switchyard-dlq-reason"),
        Some("missing field user_id")
    );
}

#[test]
fn dead_letters_in_headers_keep_the_record_and_say_why() {
    let router =
        Router::new(&spec(), &topics(), "orders-dlq", DeadLetterFormat::Headers).expect("router");
    let out = router.route(SOURCE, dead(), 1_700_000_999_000);
    assert_eq!(&*out.topic, "orders-dlq");
    assert!(out.dead_letter);
    assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(out.value.as_deref(), Some(&br#"{"id":1}"#[..]));
    assert_eq!(out.timestamp_ms, Some(1_700_000_000_123));
    let version = module("noop").version.to_string();
    let expected = [
        ("trace", "t-1"),
        ("switchyard-pipeline", "orders"),
        ("switchyard-dlq-reason", "missing field user_id"),
        ("switchyard-dlq-kind", "rejected"),
        ("switchyard-dlq-stage", "validate"),
        ("switchyard-dlq-plugin-version", version.as_str()),
        ("switchyard-dlq-source-topic", "orders"),
        ("switchyard-dlq-source-partition", "4"),
        ("switchyard-dlq-source-offset", "77"),
        ("switchyard-dlq-timestamp", "1700000999000"),
    ];
    for (key, value) in expected {
        assert_eq!(header(&out.headers, key), Some(value), "{key}");
    }
    assert_eq!(out.headers.len(), expected.len());
}

#[test]
fn dead_letters_as_a_json_envelope() {
    let router = Router::new(
        &spec(),
        &topics(),
        "orders-dlq",
        DeadLetterFormat::JsonEnvelope,
    )
    .expect("router");
    let out = router.route(SOURCE, dead(), 1_700_000_999_000);
    let envelope: serde_json::Value =
        serde_json::from_slice(out.value.as_deref().expect("value")).expect("JSON envelope");
    assert_eq!(envelope["value"], serde_json::json!({"id": 1}));
    assert_eq!(envelope["value_encoding"], "json");
    assert_eq!(envelope["dlq_reason"], "missing field user_id");
    assert_eq!(envelope["dlq_kind"], "rejected");
    assert_eq!(envelope["dlq_stage"], "validate");
    assert_eq!(envelope["dlq_source_offset"], 77);
    assert_eq!(envelope["dlq_timestamp"], 1_700_000_999_000i64);
    assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(header(&out.headers, "trace"), Some("t-1"));
}

#[test]
fn every_route_needs_a_topic() {
    let mut partial = topics();
    partial.remove("urgent");
    let e = Router::new(&spec(), &partial, "dlq", DeadLetterFormat::Headers).unwrap_err();
    assert_eq!(e, "route `urgent` has no topic");
}
