//! `switchyard dlq replay` on tansu: a bad plugin version dead-letters records, a fixed one is
//! uploaded through the admin API, and the replay (the binary, as a user runs it) delivers
//! every dead letter to its route with the original key, value, headers and timestamp, in
//! both dead-letter formats; a second replay finds nothing; a dry run writes and commits
//! nothing; filters, `--stage`, records that fail again (with the replay count) and refused
//! arguments.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_tests::kafka::{Broker, Consumed, TestRecord};
use switchyard_tests::pipelines::{
    call, kafka_toml, pipeline_toml, scratch_dir, start_with, wait_ready, write_file,
};
use switchyard_tests::plugin_bytes;
use switchyard_tests::router_process::run_switchyard;

const TOKEN: &str = "dlq-replay-test-token-0123456789";
const STANDARD: &str = "events-standard";
const URGENT: &str = "events-urgent";
const ERRORS: &str = "events-errors";
const DLQ: &str = "events-dlq";
/// The replay's group when none is given: `<pipeline group>-dlq-replay`.
const REPLAY_GROUP: &str = "switchyard-events-dlq-replay";

/// A broker with the topics, and a config: `validate` (requires a number `id`), then `route`,
/// whose first version is the `misbehave` test plugin (it traps, loops and dead-letters on
/// command).
fn setup(name: &str, format: &str) -> (Broker, PathBuf) {
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[
            ("events", 1),
            (STANDARD, 1),
            (URGENT, 1),
            (ERRORS, 1),
            (DLQ, 1),
        ])
        .expect("topics created");
    // One record per batch from the router and the replay too: tansu reports a partition's
    // end offset short of the records of a last batch that holds several, and the replay
    // reads up to the end offsets.
    let text = format!(
        "{}[kafka.producer]\n\"batch.num.messages\" = \"1\"\n\"linger.ms\" = \"0\"\n[admin]\ntokens = {{ ops = \"{TOKEN}\" }}\n{}",
        kafka_toml(broker.bootstrap()),
        pipeline_toml(
            "events",
            "events",
            &[
                ("standard", STANDARD),
                ("urgent", URGENT),
                ("errors", ERRORS)
            ],
            DLQ,
            &[
                ("validate", "validate", &[("required", "id:number")]),
                ("route", "misbehave", &[]),
            ],
            &format!("dead_letter_format = \"{format}\"\ncommit_interval_ms = 100"),
        )
    );
    let config = write_file(&scratch_dir(name), "switchyard.toml", &text);
    (broker, config)
}

/// Runs the config's router until it has routed `routed` records and dead-lettered
/// `dead_lettered`, uploading `fix` (a plugin's bytes) to the `route` stage if given, then
/// stops it.
fn run_router(config: &Path, routed: u64, dead_lettered: u64, fix: Option<&[u8]>) {
    let running = start_with(config, true).expect("router starts");
    let admin = running.serve_admin();
    wait_ready(&admin.url);
    let counters = running.wait_for("events", Duration::from_secs(120), |c| {
        c.routed >= routed && c.dead_lettered >= dead_lettered
    });
    assert_eq!(
        (counters.routed, counters.dead_lettered),
        (routed, dead_lettered),
        "{counters:?}"
    );
    if let Some(fix) = fix {
        let url = format!("{}/api/v1/pipelines/events/stages/route/plugin", admin.url);
        let (status, body) = call("PUT", &url, Some(TOKEN), Some(fix));
        assert_eq!(status, 200, "{body}");
    }
    running.stop().expect("router stops cleanly");
}

/// `switchyard dlq replay --config C --pipeline events ARGS`: its report lines and summary;
/// panics unless it exits 0.
fn replay(config: &Path, args: &[&str]) -> (Vec<Value>, Value) {
    let config = config.display().to_string();
    let mut all = vec![
        "dlq",
        "replay",
        "--config",
        config.as_str(),
        "--pipeline",
        "events",
    ];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_switchyard(&all).expect("switchyard runs");
    // Shown with a failing test's output.
    eprintln!("{all:?}:\n{stderr}");
    assert_eq!(
        code,
        Some(0),
        "{all:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    assert!(summary.is_object(), "{stdout}");
    (lines, summary)
}

/// Every record of `topics`, read from the beginning.
fn read(broker: &Broker, topics: &[&str], expected: usize) -> Vec<Consumed> {
    broker
        .consume_all(
            topics,
            expected,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )
        .expect("consumed")
}

fn header<'a>(c: &'a Consumed, name: &str) -> Option<&'a str> {
    c.headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The records the bad version dead-letters (a trap, a timeout, a rejection by `route`), each
/// with a key or none, own headers (a binary value, a null one) and a timestamp of its own;
/// the value of the third is JSON with spacing and a number no float holds.
fn bad_version_inputs() -> Vec<TestRecord> {
    let mut trap = TestRecord::new("k1", br#"{"id":1,"do":"panic","priority":"high"}"#);
    trap.headers = vec![
        ("trace".into(), Some(b"t-1".to_vec())),
        ("bin".into(), Some(vec![0, 0xff, 7])),
        ("nothing".into(), None),
    ];
    trap.timestamp_ms = Some(1_600_000_000_001);
    let mut timeout = TestRecord::new("k2", br#"{"id":2,"do":"loop","event_type":"error"}"#);
    timeout.timestamp_ms = Some(1_600_000_000_002);
    let rejected = TestRecord {
        key: None,
        value: Some(
            br#"{"id":3, "do":"dead-letter",  "n":123456789012345678901234567890}"#.to_vec(),
        ),
        headers: vec![("trace".into(), Some(b"t-3".to_vec()))],
        timestamp_ms: Some(1_600_000_000_003),
        ..Default::default()
    };
    let mut fine = TestRecord::new("k4", br#"{"id":4,"priority":"high"}"#);
    fine.timestamp_ms = Some(1_600_000_000_004);
    vec![trap, timeout, rejected, fine]
}

fn replay_after_a_fix(format: &str) {
    let (broker, config) = setup(&format!("dlq-replay-{format}"), format);
    let inputs = bad_version_inputs();
    broker.produce("events", inputs.clone()).expect("produced");
    let fix = plugin_bytes("route");
    run_router(&config, 1, 3, Some(&fix));
    let before = read(&broker, &[STANDARD, URGENT, ERRORS, DLQ], 4);
    assert_eq!(before.len(), 4, "{before:?}");

    // A dry run says where each would go, writes nothing and commits nothing.
    let (lines, summary) = replay(&config, &["--dry-run"]);
    let routes: Vec<&Value> = lines.iter().map(|l| &l["routes"]).collect();
    assert_eq!(
        routes,
        [
            &serde_json::json!(["urgent"]),
            &serde_json::json!(["errors"]),
            &serde_json::json!(["standard"])
        ],
        "{lines:?}"
    );
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["trap", "timeout", "rejected"]);
    assert!(
        lines
            .iter()
            .all(|l| l["stage"] == "route" && l["outcome"] == "replayed")
    );
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["read"], 3);
    assert_eq!(
        summary["replayed"],
        serde_json::json!({"errors": 1, "standard": 1, "urgent": 1})
    );
    // Filters, in dry runs: by kind, and by the time of the dead letter.
    let (lines, summary) = replay(&config, &["--dry-run", "--filter-kind", "timeout"]);
    assert_eq!(summary["skipped_by_filter"], 2, "{lines:?}");
    assert_eq!(summary["replayed"], serde_json::json!({"errors": 1}));
    let (_, summary) = replay(
        &config,
        &[
            "--dry-run",
            "--filter-kind",
            "trap,rejected",
            "--filter-kind",
            "memory",
        ],
    );
    assert_eq!(
        summary["replayed"],
        serde_json::json!({"urgent": 1, "standard": 1})
    );
    // As the README shows it.
    let (_, summary) = replay(
        &config,
        &[
            "--filter-kind",
            "trap,timeout",
            "--since",
            "2024-05-01T00:00:00Z",
            "--dry-run",
        ],
    );
    assert_eq!(
        summary["replayed"],
        serde_json::json!({"urgent": 1, "errors": 1})
    );
    assert_eq!(summary["skipped_by_filter"], 1);
    let (_, summary) = replay(&config, &["--dry-run", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(summary["skipped_by_filter"], 3);
    let (_, summary) = replay(
        &config,
        &[
            "--dry-run",
            "--since",
            "2000-01-01T00:00:00+02:00",
            "--until",
            "32503680000000",
        ],
    );
    assert_eq!(summary["skipped_by_filter"], 0);
    assert_eq!(summary["read"], 3);
    let after_dry_runs = read(&broker, &[STANDARD, URGENT, ERRORS, DLQ], 4);
    assert_eq!(
        after_dry_runs.len(),
        4,
        "a dry run wrote: {after_dry_runs:?}"
    );
    assert!(
        broker
            .committed(REPLAY_GROUP, DLQ)
            .expect("committed")
            .is_empty(),
        "a dry run committed"
    );

    // The replay: every dead letter to its route, as the originals.
    let (lines, summary) = replay(&config, &[]);
    assert_eq!(summary["dry_run"], false);
    assert_eq!(summary["read"], 3, "{lines:?}");
    assert_eq!(
        summary["replayed"],
        serde_json::json!({"errors": 1, "standard": 1, "urgent": 1})
    );
    assert_eq!(summary["dead_lettered_again"], 0);
    assert_eq!(summary["committed"], serde_json::json!({"0": 3}));
    assert_eq!(
        broker.committed(REPLAY_GROUP, DLQ).expect("committed"),
        [(0, 3)].into()
    );
    let out = read(&broker, &[STANDARD, URGENT, ERRORS, DLQ], 7);
    let in_topic =
        |topic: &str| -> Vec<&Consumed> { out.iter().filter(|c| c.topic == topic).collect() };
    assert_eq!(in_topic(DLQ).len(), 3, "nothing dead-lettered again");
    let expected = [
        (URGENT, &inputs[0]),
        (ERRORS, &inputs[1]),
        (STANDARD, &inputs[2]),
    ];
    let fix_version = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&fix))
    };
    for (topic, original) in expected {
        let got: Vec<&Consumed> = in_topic(topic)
            .into_iter()
            .filter(|c| c.value == original.value)
            .collect();
        assert_eq!(got.len(), 1, "{topic}: {:?}", in_topic(topic));
        let got = got[0];
        assert_eq!(got.key, original.key, "{topic}");
        assert_eq!(got.timestamp_ms, original.timestamp_ms, "{topic}");
        let own = got.headers.len() - 2;
        assert_eq!(got.headers[..own], original.headers[..], "{topic}");
        assert_eq!(got.headers[own].0, "switchyard-pipeline");
        let versions = header(got, "switchyard-versions").unwrap_or_default();
        assert!(
            versions.contains(&format!("route={fix_version}")),
            "the replay ran the uploaded fix: {versions}"
        );
    }
    // The record the bad version routed is there once, untouched by the replay.
    assert_eq!(in_topic(STANDARD).len(), 2);

    // A second replay finds nothing new.
    let (lines, summary) = replay(&config, &[]);
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(summary["read"], 0);
    assert_eq!(summary["replayed"], serde_json::json!({}));
    assert_eq!(read(&broker, &[STANDARD, URGENT, ERRORS, DLQ], 7).len(), 7);
}

#[test]
fn replay_delivers_the_originals_after_a_fix_headers_format() {
    replay_after_a_fix("headers");
}

#[test]
fn replay_delivers_the_originals_after_a_fix_json_envelope_format() {
    replay_after_a_fix("json-envelope");
}

/// Records the first stage refuses fail again on every replay: each time they are
/// dead-lettered with the replay count one higher and their original bytes (JSON, a string,
/// binary) exact; `--stage` starts them further on instead.
#[test]
fn records_that_fail_again_count_their_replays() {
    let (broker, config) = setup("dlq-replay-again", "json-envelope");
    let mut missing_id = TestRecord::new("a", br#"{"do":"panic"}"#);
    missing_id.headers = vec![("trace".into(), Some(b"t-a".to_vec()))];
    let inputs = vec![
        missing_id,
        TestRecord::new("b", b"not json"),
        TestRecord::new("c", &[0xff, 0x00, 0x80]),
    ];
    broker.produce("events", inputs.clone()).expect("produced");
    run_router(&config, 0, 3, None);

    // From `route` on (the bad version still active): the trap traps again, the rest pass.
    let (lines, summary) = replay(&config, &["--dry-run", "--stage", "route"]);
    let outcomes: Vec<&str> = lines.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(
        outcomes,
        ["dead-lettered-again", "replayed", "replayed"],
        "{lines:?}"
    );
    assert_eq!(summary["replayed"], serde_json::json!({"standard": 2}));

    for (round, end) in [(1, 6), (2, 9)] {
        let (lines, summary) = replay(&config, &["--filter-kind", "rejected"]);
        assert_eq!(summary["read"], 3, "round {round}: {lines:?}");
        assert_eq!(summary["dead_lettered_again"], 3, "round {round}");
        assert!(lines.iter().all(|l| l["stage"] == "validate"));
        assert_eq!(summary["committed"], serde_json::json!({"0": end - 3}));
        let dlq = read(&broker, &[DLQ], end);
        assert_eq!(dlq.len(), end, "round {round}");
        for (dead, original) in dlq[end - 3..].iter().zip(&inputs) {
            assert_eq!(
                header(dead, "switchyard-dlq-replays"),
                Some(&*round.to_string())
            );
            assert_eq!(header(dead, "switchyard-dlq-stage"), Some("validate"));
            assert_eq!(header(dead, "switchyard-dlq-kind"), Some("rejected"));
            assert_eq!(header(dead, "switchyard-dlq-source-topic"), Some("events"));
            assert_eq!(dead.key, original.key);
            let own: Vec<_> = dead
                .headers
                .iter()
                .take_while(|(k, _)| !k.starts_with("switchyard-"))
                .cloned()
                .collect();
            assert_eq!(own, original.headers);
            let envelope = dead.json();
            assert_eq!(envelope["dlq_replays"], round);
            // The original bytes as the envelope embeds them: JSON as is, other UTF-8 as a
            // string, anything else as base64 (0xff 0x00 0x80 is "/wCA").
            let embedded = (
                envelope["value_encoding"].clone(),
                envelope["value"].clone(),
            );
            let expected = match dead.key.as_deref() {
                Some(b"a") => (Value::from("json"), serde_json::json!({"do": "panic"})),
                Some(b"b") => (Value::from("string"), Value::from("not json")),
                _ => (Value::from("base64"), Value::from("/wCA")),
            };
            assert_eq!(embedded, expected, "round {round}");
        }
    }
}

/// Arguments a replay refuses before it reads anything, with the reason.
#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let (_broker, config) = setup("dlq-replay-args", "headers");
    let config = config.display().to_string();
    let base = ["dlq", "replay", "--config", config.as_str()];
    let cases: [(&[&str], &str); 5] = [
        (
            &["--pipeline", "events", "--stage", "nope"],
            "has no stage \"nope\"; its stages are validate, route",
        ),
        (&["--pipeline", "nope"], "no pipeline \"nope\""),
        (
            &["--pipeline", "events", "--filter-kind", "crash"],
            "unknown kind \"crash\"",
        ),
        (
            &["--pipeline", "events", "--since", "yesterday"],
            "--since: \"yesterday\" is neither",
        ),
        (
            &["--pipeline", "events", "--since", "20", "--until", "10"],
            "--since must be before --until",
        ),
    ];
    for (args, expected) in cases {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        let (code, _, stderr) = run_switchyard(&all).expect("switchyard runs");
        assert_eq!(code, Some(1), "{all:?}: {stderr}");
        assert!(stderr.contains(expected), "{all:?}: {stderr}");
    }
}
