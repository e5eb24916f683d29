//! Stateful plugins (`switchyard:plugin@0.2.0`): the `window` and `join` examples give the
//! results a reference computed independently here gives, through `switchyard test-plugin`
//! and end to end on the tansu broker.
//!
//! The reference models the contract, not the plugins: per task (source partition), in offset
//! order, the watermark is the highest timestamp seen so far minus the delay; a record below
//! it is late; a tumbling window is final once the watermark reaches its end.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_tests::kafka::{Broker, TestRecord};
use switchyard_tests::pipelines::{kafka_toml, pipeline_toml, scratch_dir, start, write_file};
use switchyard_tests::plugin_path;
use switchyard_tests::router_process::run_switchyard;

const WINDOW_MS: i64 = 60_000;
const DELAY_MS: i64 = 30_000;

/// One event of the window tests: partition, event type, amount, timestamp.
#[derive(Clone, Debug)]
struct Event {
    partition: i32,
    kind: String,
    amount: i64,
    ts: i64,
}

impl Event {
    fn json(&self) -> String {
        format!(
            r#"{{"event_type":"{}","amount":{}}}"#,
            self.kind, self.amount
        )
    }
}

/// Events on `partitions` partitions, each partition with its own event types: mostly in
/// order, some out of order within the delay, and some later than the watermark.
fn events(partitions: i32, per_partition: i64) -> Vec<Event> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let base = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS;
        for i in 0..per_partition {
            let step = i * 1_700;
            let ts = match i % 11 {
                // Out of order, within the delay.
                3 => base + step - 20_000,
                // Late: far behind the watermark.
                7 if i > 60 => base + step - 90_000,
                _ => base + step,
            };
            out.push(Event {
                partition: p,
                kind: format!("type-{p}-{}", i % 3),
                amount: (i * 7 + i64::from(p)) % 50,
                ts,
            });
        }
    }
    out
}

/// The window aggregates the contract gives, per (key, window start): (count, sum); the
/// late events; and the final watermark of each partition.
struct Reference {
    windows: BTreeMap<(String, i64), (u64, f64)>,
    late: usize,
    watermarks: BTreeMap<i32, i64>,
}

fn reference(events: &[Event]) -> Reference {
    let mut windows = BTreeMap::new();
    let mut late = 0;
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    for e in events {
        let watermark = highest.get(&e.partition).map(|h| h - DELAY_MS);
        if watermark.is_some_and(|w| e.ts < w) {
            late += 1;
        } else {
            let start = e.ts.div_euclid(WINDOW_MS) * WINDOW_MS;
            let w = windows
                .entry((e.kind.clone(), start))
                .or_insert((0u64, 0f64));
            w.0 += 1;
            w.1 += e.amount as f64;
        }
        let h = highest.entry(e.partition).or_insert(e.ts);
        *h = (*h).max(e.ts);
    }
    let watermarks = highest
        .into_iter()
        .map(|(p, h)| (p, h - DELAY_MS))
        .collect();
    Reference {
        windows,
        late,
        watermarks,
    }
}

/// An aggregate as the plugin writes it: (key, window start) -> (count, sum, avg), with the
/// record key and window end checked.
fn aggregate(key: &[u8], value: &[u8]) -> ((String, i64), (u64, f64, f64)) {
    let v: Value = serde_json::from_slice(value).expect("aggregate is JSON");
    let name = v["key"].as_str().expect("key").to_owned();
    let start = v["window_start"].as_i64().expect("window_start");
    assert_eq!(v["window_end"].as_i64(), Some(start + WINDOW_MS), "{v}");
    assert_eq!(
        key,
        format!("{name}|{start}").as_bytes(),
        "record key of {v}"
    );
    let count = v["count"].as_u64().expect("count");
    let sum = v["sum"].as_f64().expect("sum");
    let avg = v["avg"].as_f64().expect("avg");
    ((name, start), (count, sum, avg))
}

/// Runs `switchyard test-plugin --json` and returns its lines.
fn test_plugin(plugin: &str, input: &str, args: &[&str]) -> Vec<Value> {
    let dir = scratch_dir("stateful-sample");
    let input = write_file(&dir, "input.jsonl", input);
    let plugin = plugin_path(plugin).display().to_string();
    let input = input.display().to_string();
    let mut all = vec!["test-plugin", &plugin, "--input", &input, "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_switchyard(&all).expect("switchyard runs");
    assert_eq!(code, Some(0), "test-plugin failed:\n{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn sample_line(value: &str, ts: i64, topic: Option<&str>) -> String {
    let topic = topic.map_or(String::new(), |t| format!(r#","topic":"{t}""#));
    format!(r#"{{"value":{value},"timestamp_ms":{ts}{topic}}}"#)
}

/// Every output of a test-plugin run, in order (records' outputs, then the end of input's).
fn outputs(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .flat_map(|l| l["outputs"].as_array().into_iter().flatten())
        .collect()
}

/// Update mode: each window's last output equals the reference, every earlier output of it
/// is a smaller state (its count never goes down), and late events are dead-lettered.
#[test]
fn window_updates_end_at_the_reference() {
    let evs = events(1, 300);
    let input: String = evs
        .iter()
        .map(|e| sample_line(&e.json(), e.ts, None) + "\n")
        .collect();
    let delay = DELAY_MS.to_string();
    let lines = test_plugin("window", &input, &["--watermark-delay-ms", &delay]);
    let want = reference(&evs);
    let mut last: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for o in outputs(&lines) {
        let key = o["key"].as_str().expect("key");
        let value = o["value"].as_str().expect("value");
        let (window, now) = aggregate(key.as_bytes(), value.as_bytes());
        if let Some(before) = last.get(&window) {
            assert!(
                now.0 == before.0 + 1,
                "{window:?}: count {} after {}",
                now.0,
                before.0
            );
        }
        last.insert(window, now);
    }
    let got: BTreeMap<_, _> = last.iter().map(|(k, v)| (k.clone(), (v.0, v.1))).collect();
    assert_eq!(got, want.windows);
    for (count, sum, avg) in last.values() {
        assert_eq!(*avg, sum / *count as f64);
    }
    let late: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["dead_letter"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("late: "))
        })
        .collect();
    assert_eq!(late.len(), want.late);
    assert!(want.late > 10, "the input has late events: {}", want.late);
}

/// Final mode: one output per window once the watermark passes its end; what is still open
/// at the end of the input comes out when the pending timers fire.
#[test]
fn window_final_outputs_equal_the_reference() {
    let evs = events(1, 200);
    let input: String = evs
        .iter()
        .map(|e| sample_line(&e.json(), e.ts, None) + "\n")
        .collect();
    let delay = DELAY_MS.to_string();
    let lines = test_plugin(
        "window",
        &input,
        &["--watermark-delay-ms", &delay, "--config", "mode=final"],
    );
    let want = reference(&evs);
    let mut got = BTreeMap::new();
    for o in outputs(&lines) {
        let key = o["key"].as_str().expect("key");
        let (window, (count, sum, _)) =
            aggregate(key.as_bytes(), o["value"].as_str().expect("v").as_bytes());
        assert!(
            got.insert(window.clone(), (count, sum)).is_none(),
            "{window:?} twice"
        );
    }
    assert_eq!(got, want.windows);
    // Before the end of input, only windows the watermark had passed came out.
    let end = lines.last().expect("end line");
    assert_eq!(end["end_of_input"], true);
    let watermark = want.watermarks[&0];
    for o in end["outputs"].as_array().expect("outputs") {
        let (window, _) = aggregate(
            o["key"].as_str().expect("key").as_bytes(),
            o["value"].as_str().expect("v").as_bytes(),
        );
        assert!(
            window.1 + WINDOW_MS > watermark,
            "{window:?} was due before the end"
        );
    }
}

/// Bad input is dead-lettered with a reason naming the problem.
#[test]
fn window_bad_input_names_the_problem() {
    let input = [
        r#"{"value":{"event_type":"a","amount":1}}"#.to_owned(),
        sample_line(r#"{"event_type":"a","amount":1}"#, -5, None),
        sample_line(r#"{"amount":1}"#, 1_000, None),
        sample_line(r#"{"event_type":"a","amount":"x"}"#, 1_000, None),
        sample_line(r#""text""#, 1_000, None),
    ]
    .join("\n");
    let lines = test_plugin("window", &input, &[]);
    let reasons: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["dead_letter"]["reason"].as_str())
        .collect();
    // A record without a timestamp gets the sample's default (now), so it is aggregated.
    assert_eq!(
        reasons,
        [
            "negative timestamp",
            "missing field event_type",
            "field amount is not a number",
            "not a JSON object"
        ]
    );
}

/// The join: payments before and after their order, a duplicate payment, matches at
/// exactly the bound, one past it, and an unmatched order.
#[test]
fn join_results_equal_the_reference() {
    const HOUR: i64 = 3_600_000;
    let t0 = 1_700_000_000_000;
    let order = |id: &str, ts: i64| {
        sample_line(
            &format!(r#"{{"order_id":"{id}","total":5}}"#),
            ts,
            Some("orders"),
        )
    };
    let payment = |id: &str, n: u32, ts: i64| {
        sample_line(
            &format!(r#"{{"order_id":"{id}","paid":{n}}}"#),
            ts,
            Some("payments"),
        )
    };
    let input = [
        payment("early", 1, t0 + 10),
        order("early", t0),
        order("a", t0 + 100),
        payment("a", 1, t0 + 200),
        payment("a", 1, t0 + 200),
        order("bound", t0 + 1_000),
        payment("bound", 1, t0 + 1_000 + HOUR),
        payment("bound", 2, t0 + 1_000 + HOUR + 1),
        order("before", t0 + 5_000),
        payment("before", 1, t0 + 4_999),
        order("lonely", t0 + 2_000),
    ]
    .join("\n");
    let lines = test_plugin(
        "join",
        &input,
        &[
            "--config",
            "left_topic=orders",
            "--config",
            "right_topic=payments",
            "--config",
            "unmatched_route=unmatched",
            "--route",
            "unmatched",
            // The payment of `early` comes first: within the delay, its order is not late.
            "--watermark-delay-ms",
            "60000",
        ],
    );
    let mut matched = Vec::new();
    let mut unmatched = Vec::new();
    for o in outputs(&lines) {
        let v: Value = serde_json::from_str(o["value"].as_str().expect("value")).expect("JSON");
        let id = v["order"]["order_id"]
            .as_str()
            .expect("order id")
            .to_owned();
        match o["route"].as_str() {
            Some("unmatched") => {
                assert_eq!(v["payment"], Value::Null);
                unmatched.push(id);
            }
            _ => matched.push((id, v["payment"]["paid"].as_u64().expect("paid"))),
        }
    }
    matched.sort();
    unmatched.sort();
    assert_eq!(
        matched,
        [
            ("a".to_owned(), 1),
            ("a".to_owned(), 1),
            ("bound".to_owned(), 1),
            ("early".to_owned(), 1)
        ]
    );
    assert_eq!(unmatched, ["before", "lonely"]);
}

/// End to end on the broker: four partitions, each its own task; final-mode aggregates
/// written to the route equal the reference for every window the watermark closed, and
/// every late event is in the dead-letter topic.
#[test]
fn window_aggregates_on_the_broker_equal_the_reference() {
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[("events", 4), ("aggregates", 2), ("events-dlq", 2)])
        .expect("topics");
    let evs = events(4, 400);
    let want = reference(&evs);
    let closed: BTreeMap<(String, i64), (u64, f64)> = want
        .windows
        .iter()
        .filter(|((kind, start), _)| {
            let p: i32 = kind
                .split('-')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("partition");
            start + WINDOW_MS <= want.watermarks[&p]
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let pipeline = pipeline_toml(
        "windows",
        "events",
        &[("aggregates", "aggregates")],
        "events-dlq",
        &[(
            "window",
            "window",
            &[("mode", "final"), ("route", "aggregates")],
        )],
        &format!("watermark_delay_ms = {DELAY_MS}\nbatch_size = 64\ncreate_internal_topics = true"),
    );
    let dir = scratch_dir("stateful-windows");
    let config = write_file(
        &dir,
        "switchyard.toml",
        &format!("{}\n{pipeline}", kafka_toml(broker.bootstrap())),
    );
    let running = start(&config).expect("router starts");
    broker
        .produce(
            "events",
            evs.iter().map(|e| TestRecord {
                key: Some(e.kind.clone().into_bytes()),
                value: Some(e.json().into_bytes()),
                timestamp_ms: Some(e.ts),
                partition: Some(e.partition),
                ..Default::default()
            }),
        )
        .expect("produced");
    let read = broker
        .consume_all(
            &["aggregates", "events-dlq"],
            closed.len() + want.late,
            Duration::from_secs(3),
            Duration::from_secs(120),
        )
        .expect("consumed");
    // What the admin API shows: four tasks with their watermarks, and a state that holds
    // only the windows still open (closed ones were evicted).
    let view = switchyard::admin::views::PipelineView::of(&running.handles[0]);
    let state = view.stateful.expect("a stateful pipeline shows its state");
    assert_eq!(state.changelog_topic, "switchyard-windows-changelog");
    let tasks: Vec<i32> = state.tasks.iter().map(|t| t.task).collect();
    assert_eq!(tasks, [0, 1, 2, 3]);
    for t in &state.tasks {
        assert!(!t.restoring);
        assert_eq!(
            t.watermark_ms,
            Some(want.watermarks[&t.task]),
            "task {}",
            t.task
        );
        assert!(t.watermark_lag_ms.is_some_and(|lag| lag > 0));
    }
    assert_eq!(state.late_records, want.late as u64);
    let open = want.windows.len() - closed.len();
    let window = &state.stages[0];
    assert_eq!(window.stage, "window");
    assert_eq!(window.keys as usize, open, "only open windows are kept");
    assert!(window.timers as usize <= open && window.timers > 0);
    assert_eq!(window.state_full, 0);
    running.stop().expect("clean stop");
    let mut got = BTreeMap::new();
    let mut late = 0;
    for r in &read {
        if r.topic == "events-dlq" {
            let reason = r
                .headers
                .iter()
                .find(|(k, _)| k == "switchyard-dlq-reason")
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            assert!(
                reason.starts_with("late: "),
                "unexpected dead letter: {reason}"
            );
            late += 1;
            continue;
        }
        let (window, (count, sum, _)) = aggregate(
            r.key.as_deref().expect("key"),
            r.value.as_deref().expect("value"),
        );
        assert!(
            got.insert(window.clone(), (count, sum)).is_none(),
            "{window:?} twice"
        );
    }
    assert_eq!(late, want.late);
    assert_eq!(got, closed);
}

/// The value of header `key`, as text.
fn header(r: &switchyard_tests::kafka::Consumed, key: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Routers running one window pipeline (final mode), as processes.
struct Routers {
    config: String,
    running: Vec<switchyard_tests::router_process::RouterProcess>,
    logs: String,
}

impl Routers {
    fn start(&mut self) {
        let router = switchyard_tests::router_process::RouterProcess::start(&[
            "run",
            "--config",
            &self.config,
        ])
        .expect("router starts");
        // Signals reach it only once it runs; and a router that owns nothing yet proves
        // nothing about moving tasks.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let owns = |log: String| {
            log.lines()
                .any(|l| l.contains("Partitions assigned") && !l.contains("partitions=[]"))
        };
        while !owns(router.log()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the router was given no partitions; log:\n{}",
                router.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.running.push(router);
    }

    fn sigkill(&mut self, i: usize) {
        let mut router = self.running.remove(i);
        router.sigkill().expect("killed");
        router.wait(Duration::from_secs(10)).expect("dead");
        self.logs.push_str(&router.log());
    }

    fn stop(&mut self, i: usize) {
        let mut router = self.running.remove(i);
        router.stop_cleanly();
        self.logs.push_str(&router.log());
    }
}

/// Runs the window pipeline (final mode, 4 partitions) over `events(4, per_partition)`,
/// produced in ten chunks with `between(k, routers)` after chunk k, then checks what the
/// routers wrote against the reference: every closed window exactly once with the
/// reference's count and sum (a second copy only byte-identical), every late event
/// dead-lettered. Returns the number of aggregates written more than once.
fn windows_through(
    broker: &Broker,
    name: &str,
    per_partition: i64,
    mut between: impl FnMut(usize, &mut Routers),
) -> usize {
    const PARTITIONS: i32 = 4;
    // The changelog topic is made here (the mock cluster cannot create topics through the
    // admin API); the broker tests without faults have the router create theirs.
    broker
        .create_topics(&[("events", PARTITIONS), ("aggregates", 2), ("events-dlq", 2)])
        .expect("topics");
    broker
        .create_compacted_topics(&[("switchyard-windows-changelog", PARTITIONS)])
        .expect("changelog topic");
    let evs = events(PARTITIONS, per_partition);
    let want = reference(&evs);
    let closed: BTreeMap<(String, i64), (u64, f64)> = want
        .windows
        .iter()
        .filter(|((kind, start), _)| {
            let p: i32 = kind
                .split('-')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("partition");
            start + WINDOW_MS <= want.watermarks[&p]
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let pipeline = pipeline_toml(
        "windows",
        "events",
        &[("aggregates", "aggregates")],
        "events-dlq",
        &[(
            "window",
            "window",
            &[("mode", "final"), ("route", "aggregates")],
        )],
        &format!("watermark_delay_ms = {DELAY_MS}\nmax_in_flight = 4000\ndrain_timeout_ms = 5000"),
    );
    let dir = scratch_dir(name);
    let config = write_file(
        &dir,
        "switchyard.toml",
        &format!(
            "{}\n{}\n{pipeline}",
            kafka_toml(broker.bootstrap()),
            switchyard_tests::pipelines::ADMIN_EPHEMERAL
        ),
    );
    let mut routers = Routers {
        config: config.to_str().expect("UTF-8 path").to_owned(),
        running: Vec::new(),
        logs: String::new(),
    };
    routers.start();
    let mut by_partition: Vec<Vec<&Event>> = vec![Vec::new(); PARTITIONS as usize];
    for e in &evs {
        by_partition[e.partition as usize].push(e);
    }
    let chunk = (per_partition / 10) as usize;
    for k in 0..10 {
        let records: Vec<TestRecord> = by_partition
            .iter()
            .flat_map(|p| p[k * chunk..(k + 1) * chunk].iter())
            .map(|e| TestRecord {
                key: Some(e.kind.clone().into_bytes()),
                value: Some(e.json().into_bytes()),
                timestamp_ms: Some(e.ts),
                partition: Some(e.partition),
                ..Default::default()
            })
            .collect();
        broker.produce("events", records).expect("produced");
        between(k, &mut routers);
    }
    let read = broker
        .consume_all(
            &["aggregates", "events-dlq"],
            closed.len() + want.late,
            Duration::from_secs(5),
            Duration::from_secs(300),
        )
        .expect("consumed");
    while !routers.running.is_empty() {
        routers.stop(0);
    }
    let logs = routers.logs;

    let mut got: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    let mut bytes: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut copies = 0;
    let mut conflicts = Vec::new();
    let mut late = std::collections::BTreeSet::new();
    for r in &read {
        if r.topic == "events-dlq" {
            let reason = header(r, "switchyard-dlq-reason").unwrap_or_default();
            assert!(
                reason.starts_with("late: "),
                "unexpected dead letter: {reason}"
            );
            late.insert((
                header(r, "switchyard-dlq-source-partition"),
                header(r, "switchyard-dlq-source-offset"),
            ));
            continue;
        }
        let key = r.key.clone().expect("key");
        let value = r.value.clone().expect("value");
        if let Some(before) = bytes.get(&key) {
            if before != &value {
                conflicts.push((
                    String::from_utf8_lossy(before).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ));
            }
            copies += 1;
            continue;
        }
        bytes.insert(key.clone(), value.clone());
        let (window, (count, sum, _)) = aggregate(&key, &value);
        got.insert(window, (count, sum));
    }
    let wrong: Vec<_> = closed
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
        .take(10)
        .collect();
    let log_excerpt = || {
        logs.lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("restored")
                    || l.contains("assigned")
            })
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        conflicts.is_empty(),
        "different aggregates for one window (first, then later): {:?}\nrouter logs:\n{}",
        conflicts.iter().take(5).collect::<Vec<_>>(),
        log_excerpt()
    );
    assert!(
        wrong.is_empty() && got.len() == closed.len(),
        "aggregates differ from the reference ({} got, {} expected): {wrong:?}\nrouter logs:\n{}",
        got.len(),
        closed.len(),
        log_excerpt()
    );
    assert_eq!(late.len(), want.late);
    eprintln!(
        "{name}: {} windows, {copies} aggregates written twice, {} late events",
        got.len(),
        late.len()
    );
    copies
}

/// SIGKILL the router three times while 100,000 events flow, restarting it each time: the
/// final aggregates equal the reference exactly (the state restored from the changelog is
/// the state of the committed input, so nothing is counted twice or missed). An aggregate
/// may be written more than once (outputs are at least once), and then only as a
/// byte-identical copy; every late event is dead-lettered, some perhaps twice.
#[test]
fn window_aggregates_survive_sigkills() {
    let broker = Broker::tansu().expect("tansu starts");
    let mut kills = 0;
    windows_through(&broker, "stateful-sigkill", 25_000, |k, routers| {
        if matches!(k, 2 | 5 | 8) {
            std::thread::sleep(Duration::from_millis(300 + 400 * k as u64 % 900));
            routers.sigkill(0);
            kills += 1;
            routers.start();
        }
    });
    assert_eq!(kills, 3);
}

/// Two routers share the group: the second joins mid-stream (tasks move to it with their
/// state), the first stops cleanly (its tasks move back), it comes back, and then one is
/// SIGKILLed (the survivor takes its tasks after the session timeout). The aggregates equal
/// the reference.
///
/// On librdkafka's mock cluster: tansu 0.6 does not hand a killed member's partitions to
/// the survivor.
#[test]
fn window_tasks_move_with_their_state_on_rebalances() {
    let broker = Broker::mock(1).expect("mock cluster");
    windows_through(&broker, "stateful-rebalance", 5_000, |k, routers| match k {
        1 => routers.start(),
        3 => routers.stop(0),
        5 => routers.start(),
        7 => {
            std::thread::sleep(Duration::from_millis(500));
            routers.sigkill(0);
        }
        _ => {}
    });
}

/// The join end to end: `orders` and `payments` (3 partitions each, keyed by order id) are
/// one task per partition number; every pair within the bound is joined once, whichever
/// side came first, and nothing else.
#[test]
fn join_on_the_broker_equals_the_reference() {
    const HOUR: i64 = 3_600_000;
    const ORDERS: u64 = 3_000;
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[
            ("orders", 3),
            ("payments", 3),
            ("joined", 2),
            ("join-dlq", 2),
        ])
        .expect("topics");
    let t0 = 1_700_000_000_000i64;
    // Order i at t0 + 10 s * i; its payments: none (every 7th), one 20 minutes later, one
    // before it (every 5th: no match), one past the bound (every 11th: no match), and a
    // second identical payment every 13th.
    let mut orders = Vec::new();
    let mut payments = Vec::new();
    let mut want = Vec::new();
    for i in 0..ORDERS {
        let ts = t0 + 10_000 * i as i64;
        let id = format!("o-{i:05}");
        let partition = (i % 3) as i32;
        let order = format!(r#"{{"order_id":"{id}","total":{}}}"#, i % 97);
        orders.push((id.clone(), partition, ts, order.clone()));
        if i % 7 == 0 {
            continue;
        }
        let paid = |n: u64, at: i64| {
            (
                id.clone(),
                partition,
                at,
                format!(r#"{{"order_id":"{id}","paid":{n}}}"#),
            )
        };
        let p = paid(1, ts + 20 * 60_000);
        want.push(format!(r#"{{"order":{order},"payment":{}}}"#, p.3));
        payments.push(p.clone());
        if i % 13 == 0 {
            want.push(format!(r#"{{"order":{order},"payment":{}}}"#, p.3));
            payments.push(p);
        }
        if i % 5 == 0 {
            payments.push(paid(2, ts - 1));
        }
        if i % 11 == 0 {
            payments.push(paid(3, ts + HOUR + 1));
        }
    }
    payments.sort_by_key(|p| (p.2, p.3.clone()));
    let pipeline = format!(
        "[[pipeline]]\nname = \"join\"\ntopics = [\"orders\", \"payments\"]\ndefault_route = \"joined\"\ndead_letter_topic = \"join-dlq\"\nwatermark_delay_ms = 600000\ncreate_internal_topics = true\n[pipeline.routes]\njoined = \"joined\"\n[[pipeline.stage]]\nname = \"join\"\nplugin = \"{}\"\n[pipeline.stage.config]\nleft_topic = \"orders\"\nright_topic = \"payments\"\n",
        plugin_path("join").display()
    );
    let dir = scratch_dir("stateful-join");
    let config = write_file(
        &dir,
        "switchyard.toml",
        &format!("{}\n{pipeline}", kafka_toml(broker.bootstrap())),
    );
    let running = start(&config).expect("router starts");
    let record = |(id, partition, ts, value): &(String, i32, i64, String)| TestRecord {
        key: Some(id.clone().into_bytes()),
        value: Some(value.clone().into_bytes()),
        timestamp_ms: Some(*ts),
        partition: Some(*partition),
        ..Default::default()
    };
    broker
        .produce("orders", orders.iter().map(record))
        .expect("orders");
    broker
        .produce("payments", payments.iter().map(record))
        .expect("payments");
    let read = running.stop_after_reading(
        &broker,
        &["joined", "join-dlq"],
        want.len(),
        Duration::from_secs(3),
    );
    let dead: Vec<String> = read
        .iter()
        .filter(|r| r.topic == "join-dlq")
        .map(|r| header(r, "switchyard-dlq-reason").unwrap_or_default())
        .collect();
    assert!(
        dead.is_empty(),
        "dead letters: {:?}",
        &dead[..dead.len().min(5)]
    );
    let mut got: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().expect("value")).into_owned())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "joined pairs differ from the reference");
}

/// A new version of a stateful stage reads what the old one wrote; a reload with
/// `reset_state` starts it empty.
#[test]
fn a_reload_keeps_the_state_and_reset_state_empties_it() {
    use switchyard::control::Reloader;
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[("events", 1), ("aggregates", 1), ("events-dlq", 1)])
        .expect("topics");
    let pipeline = pipeline_toml(
        "windows",
        "events",
        &[("aggregates", "aggregates")],
        "events-dlq",
        &[("window", "window", &[("window_ms", "3600000")])],
        "create_internal_topics = true",
    );
    let dir = scratch_dir("stateful-reload");
    let config = write_file(
        &dir,
        "switchyard.toml",
        &format!("{}\n{pipeline}", kafka_toml(broker.bootstrap())),
    );
    let running = start(&config).expect("router starts");
    let p = running.handles[0].clone();
    let reloader = Reloader::new(running.metrics.clone(), Duration::from_secs(60));
    let t0 = 1_700_000_000_000i64 - 1_700_000_000_000i64 % 3_600_000;
    let send = |from: i64, n: i64| {
        broker
            .produce(
                "events",
                (from..from + n).map(|i| TestRecord {
                    key: Some(b"a".to_vec()),
                    value: Some(br#"{"event_type":"a","amount":1}"#.to_vec()),
                    timestamp_ms: Some(t0 + i),
                    ..Default::default()
                }),
            )
            .expect("produced");
    };
    // The count the last aggregate written says, once `n` aggregates are there.
    let last_count = |n: usize| -> u64 {
        let read = broker
            .consume_all(
                &["aggregates"],
                n,
                Duration::from_millis(500),
                Duration::from_secs(60),
            )
            .expect("consumed");
        assert_eq!(read.len(), n);
        let last = read.iter().max_by_key(|r| r.offset).expect("one");
        let v: Value = serde_json::from_slice(last.value.as_deref().expect("value")).expect("JSON");
        v["count"].as_u64().expect("count")
    };
    send(0, 50);
    assert_eq!(last_count(50), 50);

    // Another version (the same code with a custom section: another sha256).
    let mut bytes = switchyard_tests::plugin_bytes("window");
    bytes.extend_from_slice(&[0, 5, 4, b't', b'e', b's', b't']);
    {
        let mut history = p.stages[0].blocking_lock();
        reloader
            .upload(&p, 0, &mut history, &bytes, None, "test")
            .expect("upload");
    }
    send(50, 1);
    assert_eq!(
        last_count(51),
        51,
        "the new version counts on from the old one's state"
    );

    bytes.extend_from_slice(&[0, 5, 4, b'm', b'o', b'r', b'e']);
    {
        let mut history = p.stages[0].blocking_lock();
        reloader
            .upload_with(&p, 0, &mut history, &bytes, None, "test", true)
            .expect("upload with reset_state");
    }
    send(51, 1);
    assert_eq!(last_count(52), 1, "reset_state starts the state empty");
    let view = switchyard::admin::views::PipelineView::of(&p);
    assert_eq!(view.stateful.expect("stateful").stages[0].keys, 1);
    running.stop().expect("clean stop");
}

/// A stateful pipeline does not start without its changelog topic (unless allowed to
/// create it), nor with a changelog topic that is not compacted, nor over source topics
/// with different partition counts; each error names the topics and what to do.
#[test]
fn a_stateful_pipeline_needs_its_changelog_and_equal_partitions() {
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[
            ("orders", 3),
            ("payments", 2),
            ("events", 2),
            ("out", 1),
            ("dlq", 1),
        ])
        .expect("topics");
    let config = |name: &str, topics: &str, stage: &str| {
        let text = format!(
            "{}\n[[pipeline]]\nname = \"{name}\"\ntopics = [{topics}]\ndefault_route = \"out\"\ndead_letter_topic = \"dlq\"\n[pipeline.routes]\nout = \"out\"\n{stage}",
            kafka_toml(broker.bootstrap())
        );
        write_file(&scratch_dir(name), "switchyard.toml", &text)
    };
    let window = format!(
        "[[pipeline.stage]]\nname = \"window\"\nplugin = \"{}\"\n",
        plugin_path("window").display()
    );
    let join = format!(
        "[[pipeline.stage]]\nname = \"join\"\nplugin = \"{}\"\n[pipeline.stage.config]\nleft_topic = \"orders\"\nright_topic = \"payments\"\n",
        plugin_path("join").display()
    );
    let e = format!(
        "{:#}",
        start(&config("agg", "\"events\"", &window))
            .err()
            .expect("refused")
    );
    assert!(
        e.contains("switchyard-agg-changelog")
            && e.contains("does not exist")
            && e.contains("--partitions 2 --config cleanup.policy=compact")
            && e.contains("create_internal_topics"),
        "{e}"
    );
    // Not compacted: neither by default (the broker's default is deletion) nor when it says
    // so.
    broker
        .create_topics(&[("switchyard-agg-changelog", 2)])
        .expect("topic");
    broker
        .create_topics_with(
            &[("switchyard-del-changelog", 2)],
            &[("cleanup.policy", "delete")],
        )
        .expect("topic");
    for (name, policy) in [("agg", "not set"), ("del", "= delete")] {
        let e = format!(
            "{:#}",
            start(&config(name, "\"events\"", &window))
                .err()
                .expect("refused")
        );
        let topic = format!("switchyard-{name}-changelog");
        assert!(
            e.contains(&format!("the changelog topic {topic} is not compacted (cleanup.policy {policy}"))
                && e.contains(&format!("--alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact")),
            "{e}"
        );
    }
    // Compacted: it starts.
    broker
        .create_compacted_topics(&[("switchyard-ok-changelog", 2)])
        .expect("topic");
    start(&config("ok", "\"events\"", &window))
        .expect("starts with a compacted changelog")
        .stop()
        .expect("clean stop");
    let e = format!(
        "{:#}",
        start(&config("pay", "\"orders\", \"payments\"", &join))
            .err()
            .expect("refused")
    );
    assert!(
        e.contains("orders (3 partitions)") && e.contains("payments (2 partitions)"),
        "{e}"
    );
}

/// Wall-clock timers fire from the host's clock while no record arrives, and a timer set
/// before a crash fires once after the restart: timers are restored from the changelog.
#[test]
fn wall_clock_timers_fire_without_records_and_survive_a_crash() {
    use switchyard_tests::router_process::RouterProcess;
    const AFTER_MS: i64 = 2_000;
    let broker = Broker::tansu().expect("tansu starts");
    broker
        .create_topics(&[("events", 1), ("fired", 1), ("events-dlq", 1)])
        .expect("topics");
    let after = AFTER_MS.to_string();
    let pipeline = pipeline_toml(
        "timers",
        "events",
        &[("fired", "fired")],
        "events-dlq",
        &[("clock", "statebench", &[("wall_timer_ms", &after)])],
        "create_internal_topics = true",
    );
    let dir = scratch_dir("stateful-wall-clock");
    let config = write_file(
        &dir,
        "switchyard.toml",
        &format!(
            "{}\n{}\n{pipeline}",
            kafka_toml(broker.bootstrap()),
            switchyard_tests::pipelines::ADMIN_EPHEMERAL
        ),
    );
    let config = config.to_str().expect("UTF-8 path");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
    };
    let send = |ts: i64| {
        broker
            .produce(
                "events",
                [TestRecord {
                    key: Some(b"k".to_vec()),
                    value: Some(b"{}".to_vec()),
                    timestamp_ms: Some(ts),
                    ..Default::default()
                }],
            )
            .expect("produced");
    };
    // What the timers wrote ("fired <offset>"), the passed records left out, once at least
    // `n` records are on the topic and no more came for half a second.
    let fired = |n: usize, log: &dyn Fn() -> String| -> Vec<String> {
        let read = broker
            .consume_all(
                &["fired"],
                n,
                Duration::from_millis(500),
                Duration::from_secs(60),
            )
            .expect("consumed");
        assert!(
            read.len() >= n,
            "{} records on `fired`, expected {n}: {read:?}; router log:\n{}",
            read.len(),
            log()
        );
        read.iter()
            .map(|r| r.value_str().to_owned())
            .filter(|v| v.starts_with("fired"))
            .collect()
    };
    let mut router = RouterProcess::start(&["run", "--config", config]).expect("router starts");

    // One record, then nothing: its timer fires from the clock.
    send(now());
    assert_eq!(
        fired(2, &|| router.log()),
        ["fired 0"],
        "the record passed and its timer fired; log:\n{}",
        router.log()
    );

    // A record whose timer is due well after the crash below.
    send(now() + 13_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while broker
        .committed("switchyard-timers", "events")
        .ok()
        .and_then(|c| c.get(&0).copied())
        != Some(2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "offset 2 never committed; log:\n{}",
            router.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        fired(3, &|| router.log()),
        ["fired 0"],
        "the second timer is not due yet"
    );
    router.sigkill().expect("killed");
    router.wait(Duration::from_secs(10)).expect("dead");

    // No record arrives after the restart: the timer comes back from the changelog and fires
    // once, and the timer that fired before the crash does not fire again.
    let mut router = RouterProcess::start(&["run", "--config", config]).expect("router restarts");
    let seen = fired(4, &|| router.log());
    assert_eq!(
        seen,
        ["fired 0", "fired 1"],
        "each timer fired once; log:\n{}",
        router.log()
    );
    router.stop_cleanly();
}
