//! The admin HTTP API against live pipelines on librdkafka's mock cluster: every endpoint,
//! auth failures, each kind of bad upload, hot reload under load with zero loss, rollback,
//! persistence across a restart, the Prometheus endpoint, and the CLI client.

use rdkafka::producer::Producer as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use switchyard_tests::kafka::{Broker, Consumed, TestRecord, event_records, missing};
use switchyard_tests::pipelines::{
    AdminServer, ROUTING_OUTPUTS, Running, call, create_event_topics, generated_token, raw_request,
    read_routing_outputs, routing_config, start_with, wait_ready,
};
use switchyard_tests::{event, plugin_bytes, plugin_path};

const TOKEN: &str = "test-token-0123456789";
/// Dropped in field order: the admin API, then the pipeline (which drains and commits), then
/// the broker it commits to.
struct Setup {
    admin: AdminServer,
    running: Running,
    broker: Broker,
    dir: std::path::PathBuf,
}

fn setup(name: &str, admin_extra: &str) -> Setup {
    setup_on(Broker::mock(1).expect("mock cluster"), name, admin_extra)
}

fn setup_on(broker: Broker, name: &str, admin_extra: &str) -> Setup {
    let admin = format!("[admin]\ntokens = {{ ops = \"{TOKEN}\" }}\n{admin_extra}");
    setup_admin(broker, name, &admin)
}

/// Like [`setup_on`], with `admin` as the whole `[admin]` table.
fn setup_admin(broker: Broker, name: &str, admin: &str) -> Setup {
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let path = routing_config(
        &broker,
        name,
        admin,
        "commit_interval_ms = 100\nworkers = 2",
    );
    let dir = path.parent().expect("config dir").to_path_buf();
    let running = start_with(&path, true).expect("pipeline starts");
    let admin = running.serve_admin();
    wait_ready(&admin.url);
    Setup {
        admin,
        running,
        broker,
        dir,
    }
}

fn upload_url(url: &str) -> String {
    format!("{url}/api/v1/pipelines/events/stages/route/plugin")
}

fn active_version(url: &str) -> String {
    let (status, body) = call("GET", &format!("{url}/api/v1/pipelines/events"), None, None);
    assert_eq!(status, 200, "{body}");
    body["stages"][0]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {body}"))
        .to_owned()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The `route` stage's version named by an output's provenance header.
fn route_version(c: &Consumed) -> String {
    let versions = c
        .header("switchyard-versions")
        .unwrap_or_else(|| panic!("output without a versions header: {c:?}"));
    versions
        .split(',')
        .find_map(|kv| kv.strip_prefix("route="))
        .unwrap_or_else(|| panic!("no route stage in {versions}"))
        .to_owned()
}

/// A component whose `transform` functions have the wrong types.
fn wrong_types_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $t (export "init" (func $f)) (export "process" (func $f)))
            (export "switchyard:plugin/transform@0.1.0" (instance $t)))"#,
    )
    .expect("wat")
}

#[test]
fn read_endpoints_describe_the_pipeline() {
    let s = setup("admin-read", "");
    let url = &s.admin.url;
    let (status, body) = call("GET", &format!("{url}/healthz"), None, None);
    assert_eq!((status, body), (200, Value::String("ok\n".into())));
    s.broker
        .produce("events", event_records(0..50, 100))
        .expect("produced");
    s.running
        .wait_for("events", Duration::from_secs(30), |c| c.routed == 50);

    let (status, body) = call("GET", &format!("{url}/api/v1/pipelines"), None, None);
    assert_eq!(status, 200, "{body}");
    let p = &body["pipelines"][0];
    assert_eq!(p["name"], "events");
    assert_eq!(p["state"], "running");
    assert_eq!(p["routes"]["urgent"], "events-urgent");
    assert_eq!(p["default_route"], "standard");
    assert_eq!(p["dead_letter_topic"], "events-dlq");
    assert_eq!(p["counters"]["consumed"], 50);
    assert_eq!(p["counters"]["routed"], 50);
    assert_eq!(p["workers"], 2);
    let stage = &p["stages"][0];
    assert_eq!(stage["name"], "route");
    assert_eq!(stage["version"], sha256(&plugin_bytes("route")));
    assert_eq!(stage["origin"], "config");
    assert!(
        stage["loaded_at_ms"].as_i64().is_some_and(|t| t > 0),
        "{stage}"
    );
    let partitions = p["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 4, "{p}");

    // Lag comes from the partitions' ends as the consumer saw them: 0 once all is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = call("GET", &format!("{url}/api/v1/pipelines/events"), None, None);
        let lags: Vec<Option<i64>> = body["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["lag"].as_i64())
            .collect();
        if lags.iter().all(|l| *l == Some(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "lag never reached 0: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, body) = call("GET", &format!("{url}/api/v1/pipelines/nope"), None, None);
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no pipeline \"nope\"") && e.contains("events")),
        "{body}"
    );
    let (status, body) = call(
        "GET",
        &format!("{url}/api/v1/pipelines/events/stages/nope/versions"),
        None,
        None,
    );
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("stages: route")),
        "{body}"
    );
    let (status, _) = call("GET", &format!("{url}/api/v2/whatever"), None, None);
    assert_eq!(status, 404);
}

#[test]
fn changes_need_a_valid_token_and_are_audited_in_the_history() {
    let s = setup("admin-auth", "");
    let url = &s.admin.url;
    let noop = plugin_bytes("noop");
    for (token, expected) in [(None, 401), (Some("wrong-token-0123456789"), 403)] {
        let (status, body) = call("PUT", &upload_url(url), token, Some(&noop));
        assert_eq!(status, expected, "{body}");
        let (status, _) = call(
            "POST",
            &format!("{url}/api/v1/pipelines/events/pause"),
            token,
            None,
        );
        assert_eq!(status, expected);
        let (status, _) = call(
            "POST",
            &format!("{url}/api/v1/pipelines/events/stages/route/rollback"),
            token,
            None,
        );
        assert_eq!(status, expected);
        let (status, _) = call(
            "POST",
            &format!("{url}/api/v1/pipelines/events/dry-run"),
            token,
            Some(br#"{"records":[]}"#),
        );
        assert_eq!(status, expected);
    }
    assert_eq!(active_version(url), sha256(&plugin_bytes("route")));

    let (status, body) = call("PUT", &upload_url(url), Some(TOKEN), Some(&noop));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], sha256(&noop));
    assert_eq!(body["previous"], sha256(&plugin_bytes("route")));
    assert_eq!(body["workers"], 2);
    let (status, body) = call(
        "GET",
        &format!("{url}/api/v1/pipelines/events/stages/route/versions"),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(body["active"]["version"], sha256(&noop));
    assert_eq!(body["active"]["by"], "ops");
    let last = body["history"]
        .as_array()
        .and_then(|h| h.last())
        .expect("history");
    assert_eq!(last["action"], "upload");
    assert_eq!(last["result"], "ok");
    assert_eq!(last["by"], "ops");
}

#[test]
fn bad_uploads_are_refused_with_the_reason_and_the_old_version_keeps_serving() {
    let s = setup("admin-bad", "max_upload_bytes = 2000000");
    let url = &s.admin.url;
    let route = sha256(&plugin_bytes("route"));
    let mut truncated = plugin_bytes("noop");
    truncated.truncate(truncated.len() / 2);
    let foreign = wat::parse_str(
        r#"(component (import "acme:secrets/vault" (instance (export "get" (func)))))"#,
    )
    .expect("wat");
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "not wasm",
            b"hello, I am a text file".to_vec(),
            "",
            400,
            "not a WebAssembly",
        ),
        (
            "core module",
            wat::parse_str("(module)").expect("wat"),
            "",
            400,
            "not a component",
        ),
        ("truncated", truncated, "", 422, ""),
        (
            "missing export",
            wat::parse_str("(component)").expect("wat"),
            "",
            422,
            "transform",
        ),
        ("wrong types", wrong_types_component(), "", 422, ""),
        ("foreign import", foreign, "", 422, "acme:secrets/vault"),
        (
            "init error",
            plugin_bytes("misbehave"),
            "?config=%7B%22fail_init%22%3A%22no%20database%20configured%22%7D",
            422,
            "no database configured",
        ),
        (
            "bad config query",
            plugin_bytes("noop"),
            "?config=notjson",
            400,
            "JSON object",
        ),
    ];
    let mut sent = 0u64;
    for (what, bytes, query, status, needle) in cases {
        // Records keep flowing around every refused upload.
        s.broker
            .produce("events", event_records(sent..sent + 20, 100))
            .expect("produced");
        sent += 20;
        let (got, body) = call(
            "PUT",
            &format!("{}{query}", upload_url(url)),
            Some(TOKEN),
            Some(&bytes),
        );
        assert_eq!(got, status, "{what}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle) && !message.is_empty(),
            "{what}: {message:?} should mention {needle:?}"
        );
        assert_eq!(active_version(url), route, "{what}");
    }
    // Too large: refused on the declared length, before the body is sent.
    let answer = send_headers_only(url, 3_000_000);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_upload_bytes"), "{answer}");
    assert_eq!(active_version(url), route);

    let c = s.running.wait_for("events", Duration::from_secs(30), |c| {
        c.routed + c.dead_lettered == sent
    });
    assert_eq!(c.routed + c.dead_lettered, sent, "{c:?}");
    let out = read_routing_outputs(&s.broker, sent, Duration::from_secs(1));
    assert!(out.iter().all(|c| route_version(c) == route));
    let (_, body) = call(
        "GET",
        &format!("{url}/api/v1/pipelines/events/stages/route/versions"),
        None,
        None,
    );
    let rejected = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| {
            h["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("rejected: "))
        })
        .count();
    // Every upload that was read (not the bad query, nor the oversized body: those are
    // refused before the stage is touched).
    assert_eq!(rejected, 7, "{body}");
}

/// Sends an upload's headers declaring `length` bytes, and no body; returns the answer.
fn send_headers_only(url: &str, length: usize) -> String {
    use std::io::{Read as _, Write as _};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "PUT /api/v1/pipelines/events/stages/route/plugin HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/wasm\r\nContent-Length: {length}\r\n\r\n"
    )
    .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).expect("an answer before the body");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[test]
fn pause_stops_consuming_and_resume_restarts_it() {
    let s = setup("admin-pause", "");
    let url = &s.admin.url;
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/pause"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    // Let the pause reach the consumer loop before producing.
    std::thread::sleep(Duration::from_millis(300));
    s.broker
        .produce("events", event_records(0..100, 100))
        .expect("produced");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.running.counters("events").consumed,
        0,
        "consumed while paused"
    );
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/resume"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running");
    let c = s
        .running
        .wait_for("events", Duration::from_secs(30), |c| c.routed == 100);
    assert_eq!(c.routed, 100, "{c:?}");
}

#[test]
fn dry_run_shows_each_stage_and_writes_nothing() {
    let s = setup("admin-dry", "");
    let url = &s.admin.url;
    let request = serde_json::json!({ "records": [
        { "key": "u1", "value": { "event_id": "a", "priority": "high", "event_type": "click" } },
        { "key": "u2", "value": { "event_id": "b", "priority": "normal", "event_type": "error" } },
        { "key": "u3", "value": { "event_id": "c", "priority": "normal", "event_type": "click" }, "headers": { "h": "v" } },
        { "key": "u4", "value": "not json" },
        { "key": null, "value_base64": "/w==" },
    ]});
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/dry-run"),
        Some(TOKEN),
        Some(request.to_string().as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], false);
    let r = &body["records"];
    assert_eq!(r[0]["stages"][0]["verdict"], "route");
    assert_eq!(r[0]["outputs"][0]["route"], "urgent");
    assert_eq!(r[0]["outputs"][0]["topic"], "events-urgent");
    assert_eq!(r[0]["outputs"][0]["key"], "u1");
    assert_eq!(r[1]["outputs"][0]["topic"], "events-errors");
    assert_eq!(r[2]["stages"][0]["verdict"], "pass");
    assert_eq!(r[2]["outputs"][0]["route"], "standard");
    let headers = r[2]["outputs"][0]["headers"].as_array().expect("headers");
    assert!(
        headers.iter().any(|h| h["key"] == "h" && h["value"] == "v"),
        "{headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|h| h["key"] == "switchyard-pipeline" && h["value"] == "events"),
        "{headers:?}"
    );
    assert_eq!(r[3]["stages"][0]["verdict"], "dead-letter");
    assert_eq!(r[3]["dead_letter"]["kind"], "rejected");
    assert_eq!(r[3]["dead_letter"]["stage"], "route");
    assert_eq!(r[3]["dead_letter"]["record"]["topic"], "events-dlq");
    assert!(r[3]["outputs"].as_array().is_some_and(Vec::is_empty));
    assert_eq!(r[4]["dead_letter"]["kind"], "rejected");

    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/dry-run"),
        Some(TOKEN),
        Some(b"[1,2]"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("records")),
        "{body}"
    );
    // Nothing was written or consumed.
    std::thread::sleep(Duration::from_millis(500));
    let c = s.running.counters("events");
    assert_eq!((c.consumed, c.routed, c.dead_lettered), (0, 0, 0), "{c:?}");
}

/// 100,000 records on tansu while 10 uploads happen (5 good, each a version never seen before:
/// two plugins alternating, each upload marked by a custom section of its own; 5 bad): none
/// lost, every output names a version that was active, per key the versions follow the
/// uploads (a revert to an earlier version would show), a rollback restores the previous
/// version.
#[test]
fn hot_reload_under_load_loses_nothing() {
    const N: u64 = 100_000;
    // On tansu: the mock cluster keeps only the last few MB of each partition.
    let s = setup_on(
        Broker::tansu().expect("tansu"),
        "admin-reload",
        "max_upload_bytes = 50000000",
    );
    let url = s.admin.url.clone();
    let route = plugin_bytes("route");
    let route_v = sha256(&route);
    let uploads: Vec<(Vec<u8>, String)> = (0..5)
        .map(|n| {
            let base = if n % 2 == 0 { "noop" } else { "route" };
            let bytes =
                switchyard_tests::with_custom_section(&plugin_bytes(base), &format!("upload-{n}"));
            let v = sha256(&bytes);
            (bytes, v)
        })
        .collect();

    let producer = {
        let broker_records: Vec<TestRecord> = event_records(0..N, 100).collect();
        let producer = s.broker.producer().expect("producer");
        std::thread::spawn(move || {
            for (i, r) in broker_records.iter().enumerate() {
                switchyard_tests::kafka::send(&producer, "events", r).expect("sent");
                if i % 2_000 == 0 {
                    // About 10 s of load, so the reloads land in the middle of it.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            producer
                .flush(Duration::from_secs(300))
                .expect("all acknowledged");
        })
    };
    let bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        wat::parse_str("(module)").expect("wat"),
        wat::parse_str("(component)").expect("wat"),
        wrong_types_component(),
        vec![1u8; 100],
    ];
    let mut active = vec![route_v.clone()];
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(700));
        if i % 2 == 0 {
            let (bytes, v) = &uploads[i / 2];
            let (status, body) = call("PUT", &upload_url(&url), Some(TOKEN), Some(bytes));
            assert_eq!(status, 200, "reload {i}: {body}");
            assert_eq!(&body["version"], v.as_str());
            active.push(v.clone());
        } else {
            let (status, body) = call("PUT", &upload_url(&url), Some(TOKEN), Some(&bad[i / 2]));
            assert!((400..500).contains(&status), "reload {i}: {status} {body}");
        }
        assert_eq!(&active_version(&url), active.last().expect("active"));
    }
    producer.join().expect("producer thread");
    let reading = Instant::now();
    let out = read_routing_outputs(&s.broker, N, Duration::from_secs(2));

    // None lost; each output names a version that was active; per key the versions follow
    // the order of the uploads (a switch happens at a batch boundary, never backwards).
    let mut seen: HashMap<u64, usize> = HashMap::new();
    // Per key, by event id (the order they were produced and, per key, processed in).
    let mut by_key: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for c in &out {
        assert_ne!(c.topic, "events-dlq", "dead-lettered: {:?}", c.headers);
        let id = c.event_number();
        *seen.entry(id).or_default() += 1;
        let v = route_version(c);
        assert!(active.contains(&v), "version {v} was never active");
        let key = String::from_utf8_lossy(c.key.as_deref().unwrap_or_default()).into_owned();
        by_key.entry(key).or_default().insert(id, v);
    }
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, outputs) in by_key {
        let versions = per_key.entry(key).or_default();
        for v in outputs.into_values() {
            if versions.last() != Some(&v) {
                versions.push(v);
            }
        }
    }
    let lost = missing(&seen, N);
    assert!(
        lost.is_empty(),
        "lost (first 10): {lost:?}; read {} outputs; counters {:?}",
        out.len(),
        s.running.counters("events")
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{} outputs, {duplicates} duplicates, read in {:?}",
        out.len(),
        reading.elapsed()
    );
    for (key, versions) in &per_key {
        assert!(
            versions.len() <= active.len(),
            "key {key}: versions went {versions:?}, more changes than uploads ({active:?})"
        );
        for (v, expected) in versions
            .iter()
            .zip(active.iter().skip_while(|a| *a != &versions[0]))
        {
            assert_eq!(
                v, expected,
                "key {key}: versions {versions:?} do not follow {active:?}"
            );
        }
    }
    let c = s.running.counters("events");
    assert_eq!(c.dead_lettered, 0, "{c:?}");

    // Rollback: back to the version before the last upload.
    let last = active.last().expect("last").clone();
    let before = active[active.len() - 2].clone();
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/stages/route/rollback"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], before.as_str());
    assert_eq!(body["previous"], last.as_str());
    assert_eq!(active_version(&url), before);
    let (_, body) = call(
        "GET",
        &format!("{url}/api/v1/pipelines/events/stages/route/versions"),
        None,
        None,
    );
    assert_eq!(body["active"]["origin"], "rollback");
    let uploads: BTreeSet<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["action"] == "upload")
        .filter_map(|h| h["result"].as_str())
        .map(|r| if r == "ok" { "ok" } else { "rejected" })
        .collect();
    assert_eq!(uploads, BTreeSet::from(["ok", "rejected"]));
}

#[test]
fn metrics_parse_as_prometheus_text_and_add_up() {
    let s = setup("admin-metrics", "");
    let url = &s.admin.url;
    const N: u64 = 700;
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for i in 0..N {
        let v: Value = serde_json::from_str(&event(i)).expect("event");
        let route = if v["priority"] == "high" {
            "urgent"
        } else if v["event_type"] == "error" {
            "errors"
        } else {
            "standard"
        };
        *expected.entry(route).or_default() += 1;
    }
    s.broker
        .produce("events", event_records(0..N, 100))
        .expect("produced");
    // 30 records that are not JSON: dead-lettered by the route stage.
    s.broker
        .produce(
            "events",
            (0..30).map(|i| TestRecord::new(&format!("bad-{i}"), b"{oops")),
        )
        .expect("produced");
    s.running.wait_for("events", Duration::from_secs(30), |c| {
        c.routed + c.dead_lettered == N + 30
    });

    // Lag appears once the consumer has seen the partitions' ends (it looks every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, samples) = loop {
        let (status, text) = call("GET", &format!("{url}/metrics"), None, None);
        assert_eq!(status, 200);
        let text = text.as_str().expect("text").to_owned();
        let samples = parse_prometheus(&text);
        if samples
            .iter()
            .any(|(n, _, _)| n == "switchyard_consumer_lag_records")
            || Instant::now() > deadline
        {
            break (text, samples);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let get = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    };
    let p = ("pipeline", "events");
    assert_eq!(get("switchyard_records_in_total", &[p]), (N + 30) as f64);
    for (route, n) in &expected {
        assert_eq!(
            get("switchyard_records_out_total", &[p, ("route", route)]),
            *n as f64,
            "route {route}"
        );
    }
    assert_eq!(
        get(
            "switchyard_dead_lettered_total",
            &[p, ("stage", "route"), ("kind", "rejected")]
        ),
        30.0
    );
    assert_eq!(
        get("switchyard_records_out_total", &[p]) + get("switchyard_dead_lettered_total", &[p]),
        (N + 30) as f64
    );
    assert!(
        get(
            "switchyard_plugin_call_seconds_count",
            &[p, ("stage", "route")]
        ) >= 1.0
    );
    assert_eq!(
        get("switchyard_end_to_end_latency_seconds_count", &[p]),
        (N + 30) as f64
    );
    let version = sha256(&plugin_bytes("route"));
    assert_eq!(
        get(
            "switchyard_plugin_info",
            &[p, ("stage", "route"), ("version", &version)]
        ),
        1.0
    );
    assert_eq!(
        get("switchyard_pipeline_state", &[p, ("state", "running")]),
        1.0
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "switchyard_consumer_lag_records")
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

/// Parses the text exposition format strictly enough to fail on a malformed line: every
/// line is a comment (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT ", "EOF"]
                    .iter()
                    .any(|p| comment.starts_with(p)),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), HashMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        out.push((name, labels, value));
    }
    out
}

#[test]
fn an_uploaded_version_comes_back_after_a_restart() {
    let s = setup("admin-restart", "");
    let noop = plugin_bytes("noop");
    let (status, body) = call("PUT", &upload_url(&s.admin.url), Some(TOKEN), Some(&noop));
    assert_eq!(status, 200, "{body}");
    let Setup {
        admin,
        running,
        broker,
        dir,
    } = s;
    drop(admin);
    running.stop().expect("clean stop");
    let state = dir.join(".switchyard-state/events/route");
    assert!(
        state.join("state.json").is_file(),
        "no state in {}",
        state.display()
    );
    assert!(
        state
            .join(format!("plugins/{}.wasm", sha256(&noop)))
            .is_file()
    );

    let running = start_with(&dir.join("switchyard.toml"), true).expect("restarts");
    let admin = running.serve_admin();
    wait_ready(&admin.url);
    let (_, body) = call(
        "GET",
        &format!("{}/api/v1/pipelines/events", admin.url),
        None,
        None,
    );
    assert_eq!(body["stages"][0]["version"], sha256(&noop), "{body}");
    assert_eq!(body["stages"][0]["origin"], "restart");
    // And the rollback stack survived too.
    assert_eq!(
        body["stages"][0]["rollback_to"],
        sha256(&plugin_bytes("route"))
    );
    // The pipeline drains and commits before its broker goes.
    drop(admin);
    running.stop().expect("clean stop");
    drop(broker);
}

#[test]
fn the_cli_pushes_rolls_back_and_lists() {
    let s = setup("admin-cli", "");
    let bin = switchyard_tests::router_process::switchyard_binary().expect("switchyard binary");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .env("SWITCHYARD_ADMIN", &s.admin.url)
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let noop = plugin_path("noop");
    let noop_path = noop.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = cli(&[
        "plugin", "push", "-p", "events", "-s", "route", noop_path, "--config", "x=y",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&sha256(&plugin_bytes("noop"))), "{stdout}");
    let (code, stdout, _) = cli(&["plugin", "versions", "-p", "events", "-s", "route"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["active"]["config"]["x"], "y");
    let (code, stdout, stderr) = cli(&["plugin", "rollback", "-p", "events", "-s", "route"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&sha256(&plugin_bytes("route"))), "{stdout}");
    let (code, stdout, _) = cli(&["pipelines"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"events\""), "{stdout}");
    // Errors name the problem and exit non-zero.
    let (code, _, stderr) = cli(&["plugin", "push", "-p", "events", "-s", "nope", noop_path]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("404") && stderr.contains("no stage"),
        "{stderr}"
    );
    let out = std::process::Command::new(&bin)
        .args(["plugin", "push", "-p", "events", "-s", "route", noop_path])
        .env("SWITCHYARD_ADMIN", &s.admin.url)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// With no token in the config, nothing changes without a credential: the router makes one
/// (64 hex digits) in its state directory, readable by its user only, and the command line
/// finds it by itself. Reads on the loopback address stay open.
#[test]
fn without_a_configured_token_changes_need_the_generated_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = setup_admin(
        Broker::mock(1).expect("mock cluster"),
        "admin-generated-token",
        "",
    );
    let url = &s.admin.url;
    let pause = format!("{url}/api/v1/pipelines/events/pause");
    let (status, body) = call("POST", &pause, None, None);
    assert_eq!(status, 401, "a change without a token: {body}");
    let (status, _) = call("PUT", &upload_url(url), None, Some(&plugin_bytes("noop")));
    assert_eq!(status, 401);
    assert_eq!(active_version(url), sha256(&plugin_bytes("route")));

    let file = s.dir.join(".switchyard-state/admin-token");
    let mode = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("no token file {}: {e}", file.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let token = generated_token(&s.dir);
    assert!(
        token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token:?}"
    );
    let (status, body) = call("POST", &pause, Some(&token), None);
    assert_eq!(
        (status, &body["state"]),
        (200, &Value::from("paused")),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/resume"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");

    // The command line, given no token, finds the file.
    let bin = switchyard_tests::router_process::switchyard_binary().expect("switchyard binary");
    let noop = plugin_path("noop");
    let out = std::process::Command::new(&bin)
        .args(["plugin", "push", "-p", "events", "-s", "route"])
        .arg(&noop)
        .env("SWITCHYARD_ADMIN", url)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env_remove("SWITCHYARD_ADMIN_TOKEN_FILE")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(active_version(url), sha256(&plugin_bytes("noop")));
    let (_, body) = call(
        "GET",
        &format!("{url}/api/v1/pipelines/events/stages/route/versions"),
        None,
        None,
    );
    assert_eq!(body["active"]["by"], "local", "{body}");
}

/// A request with the wrong content type: method, path, headers besides `Host` and
/// `Authorization`, body, and what the refusal must name.
type Forged<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8], &'a str);

/// What a web page could send is refused: a `Host` that is not this API's address (DNS
/// rebinding) on any request, a change from another site's `Origin`, and a change whose body
/// has the wrong content type (a form), each with a message naming the problem.
#[test]
fn requests_a_web_page_could_forge_are_refused() {
    let s = setup("admin-browser", "");
    let url = &s.admin.url;
    let port = url.rsplit(':').next().expect("a port");
    let auth = format!("Bearer {TOKEN}");
    let own = format!("127.0.0.1:{port}");
    let evil = format!("evil.example:{port}");

    for path in ["/api/v1/pipelines", "/healthz", "/metrics"] {
        let (status, body) = raw_request(url, "GET", path, &[("Host", &evil)], b"");
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("Host") && body.contains("evil.example"),
            "{body}"
        );
    }
    for host in [&own, &format!("localhost:{port}"), &format!("[::1]:{port}")] {
        let (status, body) = raw_request(url, "GET", "/api/v1/pipelines", &[("Host", host)], b"");
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    // The right host on another port is another server.
    let (status, _) = raw_request(url, "GET", "/healthz", &[("Host", "127.0.0.1:1")], b"");
    assert_eq!(status, 403);

    let pause = "/api/v1/pipelines/events/pause";
    for origin in ["http://evil.example", "null", &format!("http://{evil}")] {
        let (status, body) = raw_request(
            url,
            "POST",
            pause,
            &[("Host", &own), ("Authorization", &auth), ("Origin", origin)],
            b"",
        );
        assert_eq!(status, 403, "Origin {origin}: {body}");
        assert!(body.contains("Origin"), "{body}");
    }
    assert_eq!(s.running.handles[0].state(), "running");
    let (status, body) = raw_request(
        url,
        "POST",
        pause,
        &[
            ("Host", &own),
            ("Authorization", &auth),
            ("Origin", &format!("http://localhost:{port}")),
        ],
        b"",
    );
    assert_eq!(status, 200, "the API's own origin: {body}");
    let (status, _) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/resume"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200);

    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let noop = plugin_bytes("noop");
    let cases: Vec<Forged> = vec![
        (
            "PUT",
            "/api/v1/pipelines/events/stages/route/plugin",
            vec![("Content-Type", "text/plain")],
            noop.as_slice(),
            "application/wasm",
        ),
        (
            "PUT",
            "/api/v1/pipelines/events/stages/route/plugin",
            vec![],
            noop.as_slice(),
            "application/wasm",
        ),
        (
            "POST",
            "/api/v1/pipelines/events/dry-run",
            vec![form],
            &br#"{"records":[]}"#[..],
            "application/json",
        ),
        (
            "POST",
            "/api/v1/pipelines/events/dry-run",
            vec![],
            &br#"{"records":[]}"#[..],
            "application/json",
        ),
        ("POST", pause, vec![form], &b"a=b"[..], "no body"),
        (
            "POST",
            "/api/v1/pipelines/events/stages/route/rollback",
            vec![("Content-Type", "text/plain")],
            &b"x"[..],
            "no body",
        ),
    ];
    for (method, path, mut headers, body, expected) in cases {
        headers.extend([("Host", own.as_str()), ("Authorization", auth.as_str())]);
        let (status, answer) = raw_request(url, method, path, &headers, body);
        assert_eq!(status, 415, "{method} {path} {headers:?}: {answer}");
        assert!(answer.contains(expected), "{method} {path}: {answer}");
    }
    assert_eq!(s.running.handles[0].state(), "running");
    assert_eq!(active_version(url), sha256(&plugin_bytes("route")));
    // The accepted types pass.
    let (status, body) = raw_request(
        url,
        "PUT",
        "/api/v1/pipelines/events/stages/route/plugin",
        &[
            ("Host", &own),
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &noop,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_request(
        url,
        "POST",
        "/api/v1/pipelines/events/dry-run",
        &[
            ("Host", &own),
            ("Authorization", &auth),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        br#"{"records":[]}"#,
    );
    assert_eq!(status, 200, "{body}");
}

/// On an address other machines reach, reading the pipelines (their stages' config) needs a
/// token too; health, readiness and metrics stay open to probes and Prometheus.
#[test]
fn on_a_non_loopback_address_reads_need_a_token() {
    let broker = Broker::mock(1).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let path = routing_config(
        &broker,
        "admin-public",
        &format!("[admin]\nlisten = \"0.0.0.0:0\"\ntokens = {{ ops = \"{TOKEN}\" }}\n"),
        "",
    );
    let config = switchyard::config::Config::load(&path).expect("config");
    let running = switchyard_tests::pipelines::start_parsed(
        config,
        false,
        std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    )
    .expect("starts");
    let admin = running.serve_admin();
    let url = &admin.url;
    wait_ready(url);
    for path in [
        "/api/v1/pipelines",
        "/api/v1/pipelines/events",
        "/api/v1/pipelines/events/stages/route/versions",
        "/api/v1/tables",
    ] {
        let (status, body) = call("GET", &format!("{url}{path}"), None, None);
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = call(
            "GET",
            &format!("{url}{path}"),
            Some("wrong-token-0123456789"),
            None,
        );
        assert_eq!(status, 403, "{path}: {body}");
        let (status, body) = call("GET", &format!("{url}{path}"), Some(TOKEN), None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = call("GET", &format!("{url}{path}"), None, None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    drop(admin);
    running.stop().expect("clean stop");
    drop(broker);
}

/// `${NAME}` in a stage's config reaches the plugin's `init` expanded, and only in memory: the
/// admin API and the state directory keep the written form. An uploaded config is taken
/// literally (shown with `$${` for its `${`), so an upload cannot read the router's
/// environment; a rollback to the config's version expands it again.
#[test]
fn stage_config_secrets_reach_init_but_are_never_shown_or_stored() {
    use switchyard_tests::pipelines::{
        kafka_toml, routing_pipeline_with, scratch_dir, start_parsed, write_file,
    };
    const SECRET: &str = "s3cret-priority";
    let broker = Broker::mock(1).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let dir = scratch_dir("admin-stage-secret");
    let text = format!(
        "{}\n[admin]\ntokens = {{ ops = \"{TOKEN}\" }}\n{}",
        kafka_toml(broker.bootstrap()),
        routing_pipeline_with(
            &[(
                "route",
                "route",
                &[("urgent_values", "high,${URGENT_EXTRA}")]
            )],
            ""
        )
    );
    write_file(&dir, "switchyard.toml", &text);
    let env = |name: &str| (name == "URGENT_EXTRA").then(|| SECRET.to_owned());
    let start = || {
        let config = switchyard::config::Config::parse(&text, &dir, &env).expect("config");
        let running = start_parsed(
            config,
            true,
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .expect("starts");
        let admin = running.serve_admin();
        wait_ready(&admin.url);
        (admin, running)
    };
    let route_of_secret = |url: &str| {
        let request = serde_json::json!({ "records": [
            { "key": "k", "value": { "event_id": "a", "priority": SECRET, "event_type": "click" } },
        ]});
        let (status, body) = call(
            "POST",
            &format!("{url}/api/v1/pipelines/events/dry-run"),
            Some(TOKEN),
            Some(request.to_string().as_bytes()),
        );
        assert_eq!(status, 200, "{body}");
        body["records"][0]["outputs"][0]["route"].clone()
    };
    let state = dir.join(".switchyard-state/events/route/state.json");
    let shown = |url: &str, expected: &str| {
        for path in [
            "/api/v1/pipelines",
            "/api/v1/pipelines/events/stages/route/versions",
        ] {
            let (status, body) = call("GET", &format!("{url}{path}"), Some(TOKEN), None);
            assert_eq!(status, 200, "{body}");
            assert!(!body.to_string().contains(SECRET), "{path}: {body}");
        }
        let (_, body) = call("GET", &format!("{url}/api/v1/pipelines/events"), None, None);
        assert_eq!(
            body["stages"][0]["config"]["urgent_values"], expected,
            "{body}"
        );
        let stored = std::fs::read_to_string(&state)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", state.display()));
        assert!(!stored.contains(SECRET), "{stored}");
        assert!(stored.contains("${URGENT_EXTRA}"), "{stored}");
    };
    let (admin, running) = start();
    let url = admin.url.clone();
    // The plugin got the value: a record of the secret priority is urgent.
    assert_eq!(route_of_secret(&url), "urgent");
    shown(&url, "high,${URGENT_EXTRA}");

    // Uploaded, the same text is literal.
    let literal = "%7B%22urgent_values%22%3A%22high%2C%24%7BURGENT_EXTRA%7D%22%7D";
    let (status, body) = call(
        "PUT",
        &format!("{}?config={literal}", upload_url(&url)),
        Some(TOKEN),
        Some(&plugin_bytes("route")),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(route_of_secret(&url), "standard");
    shown(&url, "high,$${URGENT_EXTRA}");

    // And stays literal after a restart (read back from state.json).
    drop(admin);
    running.stop().expect("clean stop");
    let (admin, running) = start();
    let url = admin.url.clone();
    assert_eq!(route_of_secret(&url), "standard");
    shown(&url, "high,$${URGENT_EXTRA}");

    // Back to the config's version: expanded again.
    let (status, body) = call(
        "POST",
        &format!("{url}/api/v1/pipelines/events/stages/route/rollback"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(route_of_secret(&url), "urgent");
    shown(&url, "high,${URGENT_EXTRA}");
    drop(admin);
    running.stop().expect("clean stop");
    drop(broker);
}
