//! Switchyard end to end against a real Kafka-protocol broker (tansu, started per test): each
//! use case, 100,000 records with exact accounting, and bad input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use switchyard::plugin::PluginVersion;
use switchyard_tests::event;
use switchyard_tests::kafka::{Broker, Consumed, TestRecord, event_records};
use switchyard_tests::pipelines::{
    ROUTING_OUTPUTS, Running, StageDef, create_event_topics, kafka_toml, pipeline_toml,
    read_routing_outputs, scratch_dir, start, write_file,
};

const REQUIRED: &str = "event_id:string,user_id:string,event_type:string,timestamp:number";
const SETTLE: Duration = Duration::from_millis(500);
const DEADLINE: Duration = Duration::from_secs(120);
/// The topics of a pipeline started by [`start_standard`].
const STANDARD: [&str; 2] = ["events-standard", "events-dlq"];

/// The route `route` picks for `event(i)`: priority first, then the event type.
fn expected_route(i: u64) -> &'static str {
    if i.is_multiple_of(10) {
        "urgent"
    } else if i % 7 == 3 {
        "errors"
    } else {
        "standard"
    }
}

/// `event(i)` without its user_id: fails validation.
fn invalid_event(i: u64) -> String {
    let e = event(i);
    let start = e.find(r#""user_id""#).expect("event has user_id");
    let end = start + e[start..].find(',').expect("a comma after user_id") + 1;
    format!("{}{}", &e[..start], &e[end..])
}

fn user_key(i: u64) -> String {
    format!("user-{:05}", i % 10_000)
}

fn users_table(dir: &std::path::Path) -> std::path::PathBuf {
    let rows: String = (0..100)
        .map(|i| {
            let segment = if i % 2 == 0 { "gold" } else { "basic" };
            format!(
                "{{\"user_id\":\"user-{i:05}\",\"name\":\"User {i}\",\"segment\":\"{segment}\"}}\n"
            )
        })
        .collect();
    write_file(dir, "users.jsonl", &rows)
}

fn version_of(plugin: &str) -> String {
    PluginVersion::of(&switchyard_tests::plugin_bytes(plugin)).0
}

struct Setup {
    broker: Broker,
    dir: std::path::PathBuf,
}

/// A tansu broker with the input topic (4 partitions) and the output topics, and a config
/// directory.
fn setup(name: &str, outputs: &[&str]) -> Setup {
    setup_on(Broker::tansu().expect("tansu starts"), name, outputs)
}

/// [`setup`] on another broker.
fn setup_on(broker: Broker, name: &str, outputs: &[&str]) -> Setup {
    create_event_topics(&broker, outputs);
    Setup {
        broker,
        dir: scratch_dir(name),
    }
}

fn config(
    s: &Setup,
    routes: &[(&str, &str)],
    stages: &[StageDef<'_>],
    extra: &str,
) -> std::path::PathBuf {
    let table = users_table(&s.dir);
    let text = format!(
        "{}\n{}\n[[table]]\nname = \"users\"\npath = \"{}\"\nkey_field = \"user_id\"\n",
        kafka_toml(s.broker.bootstrap()),
        pipeline_toml("events", "events", routes, "events-dlq", stages, extra),
        table.display()
    );
    write_file(&s.dir, "switchyard.toml", &text)
}

/// The config of the routing pipeline: the `route` plugin sending to the standard, urgent
/// and errors topics.
fn routing(s: &Setup, extra: &str) -> std::path::PathBuf {
    config(
        s,
        &[
            ("standard", "events-standard"),
            ("urgent", "events-urgent"),
            ("errors", "events-errors"),
        ],
        &[("route", "route", &[])],
        extra,
    )
}

/// A broker and a running pipeline whose `stages` write to one route, `events-standard`
/// (dead letters to `events-dlq`).
fn start_standard(name: &str, stages: &[StageDef<'_>]) -> (Running, Setup) {
    let s = setup(name, &STANDARD);
    let cfg = config(&s, &[("standard", "events-standard")], stages, "");
    (start(&cfg).expect("pipeline starts"), s)
}

fn keyed(i: u64, value: String) -> TestRecord {
    TestRecord::new(&user_key(i), value.as_bytes())
}

#[test]
fn validation_passes_good_records_and_dead_letters_bad_ones_with_the_reason() {
    let (running, s) = start_standard(
        "validate",
        &[("validate", "validate", &[("required", REQUIRED)])],
    );
    let mut records: Vec<TestRecord> = event_records(0..200, 10_000).collect();
    records[7] = keyed(7, invalid_event(7));
    records[8] = TestRecord::new("k", b"{not json");
    s.broker.produce("events", records).expect("produced");

    let out = running.stop_after_reading(&s.broker, &STANDARD, 200, SETTLE);
    let (dlq, good): (Vec<_>, Vec<_>) = out.iter().partition(|c| c.topic == "events-dlq");
    assert_eq!(good.len(), 198);
    assert_eq!(dlq.len(), 2);
    let reasons: HashSet<&str> = dlq
        .iter()
        .map(|c| c.header("switchyard-dlq-reason").expect("reason header"))
        .collect();
    assert!(reasons.contains("missing field user_id"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("invalid JSON at byte")),
        "{reasons:?}"
    );
    let version = version_of("validate");
    for c in &dlq {
        assert_eq!(c.header("switchyard-dlq-kind"), Some("rejected"));
        assert_eq!(c.header("switchyard-dlq-stage"), Some("validate"));
        assert_eq!(
            c.header("switchyard-dlq-plugin-version"),
            Some(version.as_str())
        );
        assert_eq!(c.header("switchyard-dlq-source-topic"), Some("events"));
        assert!(c.header("switchyard-dlq-source-offset").is_some());
        assert!(c.header("switchyard-dlq-timestamp").is_some());
    }
    // The original key and value are kept.
    let missing = dlq
        .iter()
        .find(|c| c.header("switchyard-dlq-reason") == Some("missing field user_id"))
        .expect("the invalid event");
    assert_eq!(missing.key.as_deref(), Some(user_key(7).as_bytes()));
    assert_eq!(missing.value_str(), invalid_event(7));
    for c in &good {
        assert_eq!(c.header("switchyard-pipeline"), Some("events"));
        assert_eq!(
            c.header("switchyard-versions"),
            Some(format!("validate={version}").as_str())
        );
    }
}

#[test]
fn enrichment_joins_the_users_table_and_keeps_unknown_users() {
    let (running, s) = start_standard("enrich", &[("enrich", "enrich", &[])]);
    // Users 0..100 are in the table; 100..110 are not.
    let ids: Vec<u64> = (0..50).chain(100..110).collect();
    s.broker
        .produce("events", ids.iter().map(|&i| keyed(i, event(i))))
        .expect("produced");
    let out = running.stop_after_reading(&s.broker, &STANDARD, ids.len(), SETTLE);
    assert_eq!(out.len(), ids.len());
    for c in &out {
        assert_eq!(c.topic, "events-standard");
        let v = c.json();
        let n = c.event_number();
        if n < 100 {
            assert_eq!(v["user_name"], format!("User {n}"));
            let segment = if n.is_multiple_of(2) { "gold" } else { "basic" };
            assert_eq!(v["user_segment"], segment);
        } else {
            assert!(
                v["user_name"].is_null() && v.get("user_name").is_some(),
                "{v}"
            );
        }
    }
}

#[test]
fn routing_sends_urgent_errors_and_the_rest_to_their_topics() {
    let s = setup("route", &ROUTING_OUTPUTS);
    let cfg = routing(&s, "");
    let running = start(&cfg).expect("pipeline starts");
    s.broker
        .produce("events", event_records(0..300, 10_000))
        .expect("produced");
    let out = running.stop_after_reading(&s.broker, &ROUTING_OUTPUTS, 300, SETTLE);
    assert_eq!(out.len(), 300);
    for c in &out {
        let n = c.event_number();
        assert_eq!(
            c.topic,
            format!("events-{}", expected_route(n)),
            "event {n}"
        );
        // Key, value and timestamp pass through untouched.
        assert_eq!(c.key.as_deref(), Some(user_key(n).as_bytes()));
        assert_eq!(c.value_str(), event(n));
    }
}

/// The status shows each partition's committed offset once the broker confirmed it (the
/// admin API's `committed`), on tansu too: every partition read to its end is committed to
/// its end while the pipeline runs.
#[test]
fn the_status_shows_the_committed_offsets() {
    let s = setup("committed", &ROUTING_OUTPUTS);
    let cfg = routing(&s, "commit_interval_ms = 100");
    let running = start(&cfg).expect("pipeline starts");
    s.broker
        .produce("events", event_records(0..200, 10_000))
        .expect("produced");
    let out = read_routing_outputs(&s.broker, 200, SETTLE);
    assert_eq!(out.len(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        let partitions = running.status("events").tracker.partitions();
        let done = partitions
            .iter()
            .all(|p| p.position.is_none() || p.committed == p.position);
        if done || std::time::Instant::now() >= deadline {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(partitions.len(), 4, "{partitions:?}");
    for p in &partitions {
        assert!(p.position.is_some(), "every partition got records: {p:?}");
        assert_eq!(p.committed, p.position, "committed to its end: {p:?}");
    }
    running.stop().expect("clean stop");
}

#[test]
fn transformation_rewrites_each_value() {
    let (running, s) = start_standard(
        "transform",
        &[(
            "transform",
            "transform",
            &[("rename", "event_type:type"), ("remove", "email,session")],
        )],
    );
    s.broker
        .produce("events", event_records(0..100, 10_000))
        .expect("produced");
    let out = running.stop_after_reading(&s.broker, &STANDARD, 100, SETTLE);
    assert_eq!(out.len(), 100);
    for c in &out {
        assert_eq!(c.topic, "events-standard");
        let v = c.json();
        assert!(
            v.get("email").is_none() && v.get("session").is_none(),
            "{v}"
        );
        assert!(
            v.get("event_type").is_none() && v.get("type").is_some(),
            "{v}"
        );
        assert!(v["processed_at"].as_i64().is_some(), "{v}");
    }
}

/// The acceptance test of the data path: 100,000 records with unique ids through
/// validate -> enrich -> route, 1% invalid.
#[test]
fn hundred_thousand_records_each_land_once_in_the_expected_topic_in_key_order() {
    const N: u64 = 100_000;
    let s = setup("100k", &ROUTING_OUTPUTS);
    let cfg = config(
        &s,
        &[
            ("standard", "events-standard"),
            ("urgent", "events-urgent"),
            ("errors", "events-errors"),
        ],
        &[
            ("validate", "validate", &[("required", REQUIRED)]),
            ("enrich", "enrich", &[]),
            ("route", "route", &[]),
        ],
        "",
    );
    let invalid = |i: u64| i % 100 == 42;
    let running = start(&cfg).expect("pipeline starts");
    s.broker
        .produce(
            "events",
            (0..N).map(|i| {
                keyed(
                    i,
                    if invalid(i) {
                        invalid_event(i)
                    } else {
                        event(i)
                    },
                )
            }),
        )
        .expect("produced");
    let out = s
        .broker
        .consume_all(
            &ROUTING_OUTPUTS,
            N as usize,
            SETTLE,
            Duration::from_secs(600),
        )
        .expect("consumed");
    let counters = running.counters("events");
    running.stop().expect("clean stop");

    let mut seen: HashMap<u64, &str> = HashMap::new();
    let validate = version_of("validate");
    for c in &out {
        let n = c.event_number();
        if let Some(first) = seen.insert(n, &c.topic) {
            panic!("event {n} written twice: {first} and {}", c.topic);
        }
        if invalid(n) {
            assert_eq!(c.topic, "events-dlq", "event {n}");
            assert_eq!(
                c.header("switchyard-dlq-reason"),
                Some("missing field user_id")
            );
            assert_eq!(c.header("switchyard-dlq-kind"), Some("rejected"));
            assert_eq!(c.header("switchyard-dlq-stage"), Some("validate"));
            assert_eq!(
                c.header("switchyard-dlq-plugin-version"),
                Some(validate.as_str())
            );
            assert_eq!(c.header("switchyard-dlq-source-topic"), Some("events"));
        } else {
            assert_eq!(
                c.topic,
                format!("events-{}", expected_route(n)),
                "event {n}"
            );
        }
    }
    let lost: Vec<u64> = (0..N).filter(|i| !seen.contains_key(i)).take(10).collect();
    assert!(lost.is_empty(), "events lost (first 10): {lost:?}");
    assert_eq!(out.len() as u64, N);
    assert_eq!(counters.dead_lettered, N / 100);
    assert_eq!(counters.routed, N - N / 100);

    // Per key, each output topic holds the events in the order they were produced.
    let mut last: BTreeMap<(&str, Vec<u8>), u64> = BTreeMap::new();
    let mut by_position: Vec<&Consumed> = out.iter().collect();
    by_position.sort_by_key(|c| (c.topic.clone(), c.partition, c.offset));
    for c in by_position {
        let n = c.event_number();
        let key = (c.topic.as_str(), c.key.clone().unwrap_or_default());
        if let Some(prev) = last.insert(key, n) {
            assert!(
                prev < n,
                "{}: event {n} after {prev} for the same key",
                c.topic
            );
        }
    }
}

/// Awkward records are routed or dead-lettered, never lost, and never stop the pipeline.
#[test]
fn bad_input_is_routed_or_dead_lettered_and_nothing_is_lost() {
    let s = setup("bad-input", &STANDARD);
    let cfg = config(
        &s,
        &[("standard", "events-standard")],
        &[("misbehave", "misbehave", &[])],
        "",
    );
    // Building the 3 MB output takes milliseconds, but on two cores shared with other tests a
    // stall can pass the default 50 ms budget and turn it into a `timeout` dead letter: this
    // test is about what the broker refuses, not about time limits.
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "[pipeline.stage.config]\n",
        "[pipeline.stage.limits]\ntime_per_record_ms = 5000\n[pipeline.stage.config]\n",
    );
    std::fs::write(&cfg, text).expect("config written");
    let running = start(&cfg).expect("pipeline starts");
    let pass = br#"{"do":"pass"}"#;
    let headers: Vec<(String, Option<Vec<u8>>)> = (0..1000)
        .map(|i| (format!("h{i}"), Some(format!("v{i}").into_bytes())))
        .collect();
    let mut big = br#"{"do":"pass","pad":""#.to_vec();
    big.resize(900_000, b'x');
    big.extend_from_slice(br#""}"#);
    let records = vec![
        TestRecord {
            key: None,
            ..TestRecord::new("", pass)
        },
        TestRecord {
            value: None,
            ..TestRecord::new("null-value", b"")
        },
        TestRecord::new("empty", b""),
        TestRecord::new("not-utf8", &[0xff, 0xfe, 0x00, 0x80]),
        TestRecord {
            headers: headers.clone(),
            ..TestRecord::new("many-headers", pass)
        },
        TestRecord::new("big", &big),
        // An output far larger than the broker takes (librdkafka's message.max.bytes is 1 MB).
        TestRecord::new("huge-output", br#"{"do":"emit","count":1,"bytes":3000000}"#),
        // A header key that is not UTF-8 (a plugin's header key is a string): dead-lettered
        // as `bad-input` naming the bytes, the record otherwise as it was.
        TestRecord {
            headers: vec![("ok".into(), Some(b"1".to_vec()))],
            raw_headers: vec![(vec![b'k', 0xff, 0xfe], Some(b"v".to_vec()))],
            ..TestRecord::new("bad-header-key", pass)
        },
        TestRecord::new("after", pass),
    ];
    let n = records.len();
    s.broker.produce("events", records).expect("produced");
    let out = running.stop_after_reading(&s.broker, &STANDARD, n, SETTLE);
    let by_key: HashMap<Option<&[u8]>, &Consumed> =
        out.iter().map(|c| (c.key.as_deref(), c)).collect();
    assert_eq!(
        out.len(),
        n,
        "{:?}",
        out.iter().map(|c| (&c.topic, &c.key)).collect::<Vec<_>>()
    );
    let get = |k: &str| {
        *by_key
            .get(&Some(k.as_bytes()))
            .unwrap_or_else(|| panic!("no output for {k}"))
    };
    assert!(
        out.iter().any(|c| c.key.is_none()
            && c.topic == "events-standard"
            && c.value.as_deref() == Some(&pass[..])),
        "the null-key record is routed"
    );
    // misbehave passes anything that is not a JSON command: the values arrive byte for byte,
    // a null value as null and an empty one as empty.
    for k in ["null-value", "empty", "not-utf8"] {
        assert_eq!(get(k).topic, "events-standard", "{k}");
    }
    assert_eq!(get("null-value").value, None, "a null value stays null");
    assert_eq!(
        get("empty").value.as_deref(),
        Some(&b""[..]),
        "an empty value stays empty"
    );
    assert_eq!(
        get("not-utf8").value.as_deref(),
        Some(&[0xff, 0xfe, 0x00, 0x80][..])
    );
    let many = get("many-headers");
    assert_eq!(many.topic, "events-standard");
    assert_eq!(many.headers[..1000], headers[..], "headers kept in order");
    assert_eq!(
        get("big").value.as_deref().map(<[u8]>::len),
        Some(big.len())
    );
    // The plugin's output (no key, 3 MB) is refused by the producer: it is dead-lettered with
    // the reason, its value omitted.
    let huge: Vec<&Consumed> = out
        .iter()
        .filter(|c| c.header("switchyard-dlq-kind") == Some("undeliverable"))
        .collect();
    assert_eq!(huge.len(), 1);
    let reason = huge[0].header("switchyard-dlq-reason").expect("reason");
    assert!(
        reason.contains("events-standard") && reason.contains("value omitted (3000000 bytes)"),
        "{reason}"
    );
    assert_eq!(huge[0].topic, "events-dlq");
    assert_eq!(huge[0].value, None);
    assert!(huge[0].header("switchyard-dlq-source-offset").is_some());
    let bad_key = get("bad-header-key");
    assert_eq!(bad_key.topic, "events-dlq");
    assert_eq!(bad_key.header("switchyard-dlq-kind"), Some("bad-input"));
    let reason = bad_key.header("switchyard-dlq-reason").expect("reason");
    assert!(
        reason.contains("header 1's key is not UTF-8 (bytes: 6bfffe)"),
        "{reason}"
    );
    assert_eq!(bad_key.value.as_deref(), Some(&pass[..]));
    assert_eq!(bad_key.header("ok"), Some("1"));
    assert_eq!(bad_key.header("k\u{fffd}\u{fffd}"), Some("v"));
    assert_eq!(get("after").topic, "events-standard");
}

/// tansu answers every by-time offset lookup with 0 and librdkafka's mock cluster with "no such
/// record" (both checked by hand; on tansu all 20 old records came through), so no broker here
/// can place a partition in the middle by time. This test covers the rest: a new group with a
/// start timestamp later than every record starts at the end of each partition and takes
/// only what is written after it.
#[test]
fn a_start_timestamp_after_every_record_starts_at_the_end() {
    let s = setup_on(
        Broker::mock(1).expect("mock cluster"),
        "start_ts",
        &["events-standard", "events-dlq"],
    );
    let hour_ago = switchyard::kafka::now_ms() - 3_600_000;
    let old = (0..20).map(|i| TestRecord {
        timestamp_ms: Some(hour_ago + i as i64),
        ..keyed(i, event(i))
    });
    s.broker.produce("events", old).expect("produced");
    let cfg = config(
        &s,
        &[("standard", "events-standard")],
        &[("validate", "validate", &[("required", REQUIRED)])],
        &format!("start = \"timestamp:{}\"", hour_ago + 60_000),
    );
    let running = start(&cfg).expect("pipeline starts");
    let tracker = running.handles[0].status.tracker.clone();
    let deadline = std::time::Instant::now() + DEADLINE;
    while tracker.partitions().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "partitions never assigned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The end offset is looked up when fetching starts, just after the assignment.
    std::thread::sleep(Duration::from_secs(2));
    s.broker
        .produce("events", event_records(20..40, 10_000))
        .expect("produced");
    let out = running.stop_after_reading(&s.broker, &STANDARD, 20, SETTLE * 4);
    let mut got: Vec<u64> = out.iter().map(Consumed::event_number).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (20..40).collect::<Vec<u64>>(),
        "only the records written after the start, once each"
    );
}

#[test]
fn a_record_with_several_outputs_is_committed_once_all_are_written() {
    let (running, s) = start_standard("fan-out", &[("misbehave", "misbehave", &[])]);
    // Ten records of three outputs each, and ten of one.
    let records = (0..20).map(|i| {
        let count = if i % 2 == 0 { 3 } else { 1 };
        let value = format!(r#"{{"do":"emit","count":{count},"bytes":8}}"#);
        TestRecord::new(&format!("k{i}"), value.as_bytes())
    });
    s.broker.produce("events", records).expect("produced");
    let out = running.stop_after_reading(&s.broker, &STANDARD, 40, SETTLE);
    assert_eq!(out.len(), 40, "every output written once");
    assert!(out.iter().all(|c| c.topic == "events-standard"));
    assert!(
        out.iter()
            .all(|c| c.value.as_deref() == Some(&b"xxxxxxxx"[..]))
    );
    // The stop commits: every record is finished, so the group is at the end of each
    // partition.
    let committed = s
        .broker
        .committed("switchyard-events", "events")
        .expect("committed offsets");
    assert_eq!(committed.values().sum::<i64>(), 20, "{committed:?}");
}

/// Output topics are checked when the router starts, not found one record at a time: a
/// config whose dead-letter topic and one route topic do not exist fails to start, naming
/// both (and the keys that name them).
#[test]
fn a_missing_output_topic_stops_the_start_naming_it() {
    let broker = Broker::tansu().expect("tansu");
    broker
        .create_topics(&[("events", 4), ("events-standard", 2), ("events-errors", 2)])
        .expect("topics");
    let config = switchyard_tests::pipelines::routing_config(&broker, "missing-topics", "", "");
    let error = match switchyard_tests::pipelines::start(&config) {
        Ok(_) => panic!("started although events-urgent and events-dlq do not exist"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("events-urgent") && error.contains("routes.urgent"),
        "{error}"
    );
    assert!(
        error.contains("events-dlq") && error.contains("dead_letter_topic"),
        "{error}"
    );
    assert!(!error.contains("events-standard"), "{error}");
}

/// A broker that loses records: tansu's memory engine answers a fetch that starts inside a
/// record batch from the next batch, so a group whose committed offset falls inside a batch
/// never sees the rest of that batch. The router cannot get those records back, but it must
/// show the loss: `switchyard_source_gaps_total` and one log line per partition.
#[test]
fn offsets_the_broker_skipped_are_counted_as_a_source_gap() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use rdkafka::producer::Producer as _;
    use rdkafka::{Offset, TopicPartitionList};
    let s = setup("source_gap", &STANDARD);
    // Ten records in one batch, then five in another, all on partition 0.
    let producer: rdkafka::producer::ThreadedProducer<switchyard_tests::kafka::Counting> = s
        .broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "200")
        .set("batch.num.messages", "1000")
        .create_with_context(Default::default())
        .expect("producer");
    for batch in [0..10, 10..15] {
        for i in batch {
            let r = TestRecord {
                partition: Some(0),
                ..keyed(i, event(i))
            };
            switchyard_tests::kafka::send(&producer, "events", &r).expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("flushed");
    }
    // The group's position: inside the first batch.
    let group: BaseConsumer = s
        .broker
        .client_config()
        .set("group.id", "switchyard-events")
        .create()
        .expect("consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("events", 0, Offset::Offset(5))
        .expect("listed");
    group.commit(&at, CommitMode::Sync).expect("committed");
    drop(group);

    let cfg = config(
        &s,
        &[("standard", "events-standard")],
        &[("validate", "validate", &[("required", REQUIRED)])],
        "",
    );
    let running = start(&cfg).expect("pipeline starts");
    let metrics = running.metrics.clone();
    let out = running.stop_after_reading(&s.broker, &STANDARD, 5, SETTLE * 4);
    let mut got: Vec<u64> = out.iter().map(Consumed::event_number).collect();
    got.sort_unstable();
    assert_eq!(got, (10..15).collect::<Vec<u64>>(), "what the broker gave");
    let text = metrics.encode();
    assert!(
        text.contains("switchyard_source_gaps_total{pipeline=\"events\"} 1\n"),
        "one gap counted:\n{}",
        text.lines()
            .filter(|l| l.contains("source_gaps"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
