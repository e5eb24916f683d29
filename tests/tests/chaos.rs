//! The chaos run: records through a 3-stage chain (`misbehave` -> `validate` -> `route`, 1% of
//! records trapping in the first stage) while routers are SIGKILLed and restarted, a second
//! router joins and leaves the group (rebalances), plugins are uploaded (half of them bad) and
//! the broker (tansu on SQLite, durable) is killed and restarted. At the end every output is
//! read back and the run reports what was lost (must be none), duplicated (bounded by what was
//! in flight at each fault), reordered per key outside the duplicated spans (must be none),
//! and whether the dead letters are exactly the trapping records.
//!
//! The short form runs in the test suite: 100,000 records over about two minutes, one SIGKILL,
//! one join and leave, four uploads, one broker restart. `SOAK=1` runs the long form (its
//! figures are in BENCHMARKS.md): 1,000,000 records over at least ten minutes, three SIGKILLs,
//! ten rebalances, twenty uploads, two broker restarts. `RECORDS`, `RATE` override the count
//! and the input rate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_tests::e2e::env_u64;
use switchyard_tests::kafka::{Broker, Consumed, Storage, TestRecord, send};
use switchyard_tests::pipelines::{
    ROUTING_OUTPUTS, StageDef, call, create_event_topics, kafka_toml, routing_pipeline_with,
    scratch_dir, write_file,
};
use switchyard_tests::router_process::RouterProcess;

const TOKEN: &str = "chaos-run-admin-token-0123456789";
const KEYS: u64 = 1_000;
/// Unfinished records at which a router pauses; with the commit interval, what a SIGKILL can
/// make the next owner read again.
const MAX_IN_FLIGHT: u64 = 2_000;
const COMMIT_INTERVAL_MS: u64 = 200;

/// Whether event `i` traps in the first stage (1% of them).
fn traps(i: u64) -> bool {
    i % 100 == 37
}

fn record(i: u64) -> TestRecord {
    let mut value = switchyard_tests::event(i);
    if traps(i) {
        value.pop();
        value.push_str(r#","do":"panic","message":"chaos"}"#);
    }
    TestRecord::new(&format!("user-{:05}", i % KEYS), value.as_bytes())
}

/// A router's config in a directory of its own (its state directory too), admin API on a
/// fixed port so a restart keeps its URL.
struct RouterSetup {
    config: PathBuf,
    url: String,
}

fn router_setup(broker: &Broker, name: &str) -> RouterSetup {
    let dir = scratch_dir(name);
    let port = switchyard_tests::kafka::free_port().expect("a free port");
    let stages: &[StageDef<'_>] = &[
        ("misbehave", "misbehave", &[]),
        (
            "validate",
            "validate",
            &[(
                "required",
                "event_id:string,user_id:string,event_type:string,timestamp:number",
            )],
        ),
        ("route", "route", &[]),
    ];
    let text = format!(
        "{}\"max.poll.interval.ms\" = \"10000\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntokens = {{ ops = \"{TOKEN}\" }}\nmax_upload_bytes = 50000000\n{}",
        kafka_toml(broker.bootstrap()),
        routing_pipeline_with(
            stages,
            &format!(
                "max_in_flight = {MAX_IN_FLIGHT}\ncommit_interval_ms = {COMMIT_INTERVAL_MS}\ndrain_timeout_ms = 5000"
            ),
        )
    );
    RouterSetup {
        config: write_file(&dir, "switchyard.toml", &text),
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Starts a router and waits (at most 60 s) until its admin API answers.
fn start(setup: &RouterSetup) -> RouterProcess {
    let path = setup.config.to_str().expect("UTF-8 path");
    let mut router = RouterProcess::start(&["run", "--config", path]).expect("router starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !listening(&setup.url)
        || call("GET", &format!("{}/healthz", setup.url), None, None).0 != 200
    {
        if router.wait(Duration::ZERO).is_ok() || Instant::now() >= deadline {
            panic!("router never answered; log:\n{}", router.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    router
}

/// Records taken and not yet committed by a router, from its admin API (what a SIGKILL now
/// would make the next owner read again); 0 when it does not answer.
fn uncommitted(url: &str) -> u64 {
    if !listening(url) {
        return 0;
    }
    let (status, body) = call("GET", &format!("{url}/api/v1/pipelines/events"), None, None);
    if status != 200 {
        return 0;
    }
    body["partitions"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    let position = p["position"].as_i64().unwrap_or(0);
                    let committed = p["committed"].as_i64().unwrap_or(0);
                    u64::try_from(position - committed).unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Whether something listens at the URL's address.
fn listening(url: &str) -> bool {
    let address = url.trim_start_matches("http://");
    std::net::TcpStream::connect(address).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Join,
    Leave,
    GoodUpload,
    BadUpload,
    BrokerRestart,
}

/// The faults in the order they happen, spread evenly over the input.
fn schedule(soak: bool) -> Vec<Fault> {
    use Fault::*;
    if soak {
        // 3 kills, 5 joins + 5 leaves (10 rebalances), 10 good + 10 bad uploads, 2 broker
        // restarts.
        let mut faults = Vec::new();
        for round in 0..5 {
            faults.extend([GoodUpload, Join, BadUpload, GoodUpload, Leave, BadUpload]);
            if round < 3 {
                faults.push(Kill);
            }
            if round == 1 || round == 3 {
                faults.push(BrokerRestart);
            }
        }
        faults
    } else {
        vec![
            GoodUpload,
            BadUpload,
            Join,
            Kill,
            Leave,
            BrokerRestart,
            GoodUpload,
            BadUpload,
        ]
    }
}

struct Report {
    records: u64,
    outputs: usize,
    lost: Vec<u64>,
    duplicates: u64,
    duplicate_bound: u64,
    order_violations: Vec<String>,
    dlq_not_trapping: Vec<u64>,
    trapping_not_in_dlq: Vec<u64>,
    trapping_routed: Vec<u64>,
    elapsed: Duration,
    faults: BTreeMap<String, usize>,
    router_exits: usize,
}

/// Ignored: it cannot pass on the brokers available here. On tansu 0.6 (memory and SQLite
/// alike) a SIGKILLed member of a two-router group is never evicted, and from then on the
/// group coordinator, metadata and produce requests time out for minutes (tests/README.md,
/// "The brokers"); librdkafka's mock cluster evicts dead members but keeps only the last few
/// MB of each partition, so the outputs cannot be read back at the end. Run it with
/// `cargo test -p switchyard-tests --test chaos -- --ignored --nocapture` against a broker
/// that can take it.
#[test]
#[ignore = "tansu 0.6 never evicts a SIGKILLed group member: tests/README.md, The brokers"]
fn a_million_records_through_kills_rebalances_reloads_and_broker_restarts() {
    let soak = std::env::var_os("SOAK").is_some_and(|v| v == "1");
    let n = env_u64("RECORDS", if soak { 1_000_000 } else { 100_000 });
    // Records per second: ten minutes for the long form, about two for the short.
    let rate = env_u64("RATE", if soak { 1_600 } else { 1_000 });
    let db = scratch_dir("chaos-broker").join("tansu.db");
    let broker = Broker::tansu_on(Storage::Sqlite(db)).expect("tansu on SQLite starts");
    create_event_topics(&broker, &ROUTING_OUTPUTS);

    let main = router_setup(&broker, "chaos-main");
    let second = router_setup(&broker, "chaos-second");
    let mut primary = start(&main);
    let mut joiner: Option<RouterProcess> = None;

    let produced = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producer_thread = {
        let producer = broker.producer().expect("producer");
        let produced = produced.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                // Paced: record i goes out at i / rate seconds.
                let due = started + Duration::from_micros(i * 1_000_000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                send(&producer, "events", &record(i)).expect("queued");
                produced.store(i + 1, Ordering::Release);
            }
            use rdkafka::producer::Producer as _;
            producer
                .flush(Duration::from_secs(600))
                .expect("every input acknowledged");
            done.store(true, Ordering::Release);
        })
    };

    let faults = schedule(soak);
    let route = switchyard_tests::plugin_bytes("route");
    let mut uploads = 0;
    let mut duplicate_bound = 0;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut router_exits = 0;
    for (k, fault) in faults.iter().enumerate() {
        // Fault k happens when (k + 1) / (faults + 1) of the input is produced.
        let at = n * (k as u64 + 1) / (faults.len() as u64 + 1);
        while produced.load(Ordering::Acquire) < at {
            // A router that exited by itself is restarted, as a supervisor would (counted).
            if primary.wait(Duration::ZERO).is_ok() {
                router_exits += 1;
                eprintln!("router exited by itself:\n{}", tail(&primary.log()));
                primary = start(&main);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{:>6.1} s: {fault:?} at {at} records",
            started.elapsed().as_secs_f64()
        );
        *counts.entry(format!("{fault:?}")).or_default() += 1;
        match fault {
            Fault::Kill => {
                // What the next owner reads again: taken and not committed, plus what is
                // finished within a commit interval.
                duplicate_bound += uncommitted(&main.url) + rate * COMMIT_INTERVAL_MS / 1000;
                primary.sigkill().expect("killed");
                primary.wait(Duration::from_secs(10)).expect("dead");
                primary = start(&main);
            }
            Fault::Join => {
                joiner = Some(start(&second));
            }
            Fault::Leave => {
                if let Some(mut router) = joiner.take() {
                    router.stop_cleanly();
                }
            }
            Fault::GoodUpload | Fault::BadUpload => {
                uploads += 1;
                let bytes = if *fault == Fault::GoodUpload {
                    switchyard_tests::with_custom_section(&route, &format!("chaos-{uploads}"))
                } else {
                    b"not a component".to_vec()
                };
                // A router still starting answers 503: ask again.
                let deadline = Instant::now() + Duration::from_secs(60);
                let (status, body) = loop {
                    let (status, body) = call(
                        "PUT",
                        &format!("{}/api/v1/pipelines/events/stages/route/plugin", main.url),
                        Some(TOKEN),
                        Some(&bytes),
                    );
                    if status != 503 || Instant::now() >= deadline {
                        break (status, body);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                };
                if *fault == Fault::GoodUpload {
                    assert_eq!(status, 200, "good upload refused: {body}");
                } else {
                    assert!((400..500).contains(&status), "bad upload: {status} {body}");
                }
            }
            Fault::BrokerRestart => {
                // Records acknowledged by the broker survive (SQLite); the routers reconnect.
                // In flight at the restart: what each router may write again.
                duplicate_bound += uncommitted(&main.url)
                    + joiner.as_ref().map_or(0, |_| uncommitted(&second.url))
                    + rate * COMMIT_INTERVAL_MS / 1000;
                broker.restart().expect("tansu restarts");
            }
        }
    }
    producer_thread.join().expect("producer thread");
    assert!(done.load(Ordering::Acquire));
    if let Some(mut router) = joiner.take() {
        router.stop_cleanly();
    }

    // Every record, written once or more: the route topics and the dead-letter topic.
    let out = broker
        .consume_all(
            &ROUTING_OUTPUTS,
            n as usize,
            Duration::from_secs(5),
            Duration::from_secs(600),
        )
        .expect("outputs read");
    let elapsed = started.elapsed();
    if primary.wait(Duration::ZERO).is_ok() {
        router_exits += 1;
    } else {
        primary.stop_cleanly();
    }
    let report = check(n, &out, duplicate_bound, elapsed, counts, router_exits);
    eprintln!("{}", report.text());
    assert!(report.lost.is_empty(), "lost: {}", report.text());
    assert!(
        report.order_violations.is_empty(),
        "order: {}",
        report.text()
    );
    assert!(
        report.dlq_not_trapping.is_empty()
            && report.trapping_not_in_dlq.is_empty()
            && report.trapping_routed.is_empty(),
        "dead letters: {}",
        report.text()
    );
    assert!(
        report.duplicates <= report.duplicate_bound,
        "duplicates beyond what was in flight at the faults: {}",
        report.text()
    );
    assert_eq!(report.router_exits, 0, "{}", report.text());
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn check(
    n: u64,
    out: &[Consumed],
    duplicate_bound: u64,
    elapsed: Duration,
    faults: BTreeMap<String, usize>,
    router_exits: usize,
) -> Report {
    let dlq = ROUTING_OUTPUTS[3];
    let mut times: HashMap<u64, usize> = HashMap::new();
    let mut dead: HashSet<u64> = HashSet::new();
    let mut routed: HashSet<u64> = HashSet::new();
    for c in out {
        let i = c.event_number();
        *times.entry(i).or_default() += 1;
        if c.topic == dlq {
            assert_eq!(c.header("switchyard-dlq-kind"), Some("trap"), "{c:?}");
            dead.insert(i);
        } else {
            routed.insert(i);
        }
    }
    let lost: Vec<u64> = (0..n).filter(|i| !times.contains_key(i)).collect();
    let duplicates: u64 = times.values().map(|t| (*t as u64).saturating_sub(1)).sum();
    // Per output partition and key, in offset order: an event written after a later event of
    // its key is a violation unless it was written more than once (a span read again after a
    // fault).
    let mut sorted: Vec<&Consumed> = out.iter().collect();
    sorted
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let mut highest: HashMap<(&str, i32, Option<&[u8]>), u64> = HashMap::new();
    let mut order_violations = Vec::new();
    for c in sorted {
        let i = c.event_number();
        let key = (c.topic.as_str(), c.partition, c.key.as_deref());
        let top = highest.entry(key).or_insert(i);
        if i < *top && times.get(&i).copied().unwrap_or(0) < 2 {
            order_violations.push(format!(
                "{}[{}]@{}: event {i} after event {top}",
                c.topic, c.partition, c.offset
            ));
        }
        *top = (*top).max(i);
    }
    let trapping: HashSet<u64> = (0..n).filter(|i| traps(*i)).collect();
    let mut dlq_not_trapping: Vec<u64> = dead.difference(&trapping).copied().collect();
    let mut trapping_not_in_dlq: Vec<u64> = trapping.difference(&dead).copied().collect();
    let mut trapping_routed: Vec<u64> = trapping.intersection(&routed).copied().collect();
    for v in [
        &mut dlq_not_trapping,
        &mut trapping_not_in_dlq,
        &mut trapping_routed,
    ] {
        v.sort_unstable();
    }
    Report {
        records: n,
        outputs: out.len(),
        lost,
        duplicates,
        duplicate_bound,
        order_violations,
        dlq_not_trapping,
        trapping_not_in_dlq,
        trapping_routed,
        elapsed,
        faults,
        router_exits,
    }
}

impl Report {
    fn text(&self) -> String {
        let first = |v: &[u64]| format!("{} {:?}", v.len(), &v[..v.len().min(10)]);
        format!(
            "chaos run: {} records, {} outputs read, {:.0} s; faults {:?}; lost {}; duplicates {} (bound from what was in flight at the faults: {}); per-key order violations outside duplicated spans {} {:?}; dead letters not trapping {}, trapping records not dead-lettered {}, trapping records routed {}; routers that exited by themselves {}",
            self.records,
            self.outputs,
            self.elapsed.as_secs_f64(),
            self.faults,
            first(&self.lost),
            self.duplicates,
            self.duplicate_bound,
            self.order_violations.len(),
            &self.order_violations[..self.order_violations.len().min(5)],
            first(&self.dlq_not_trapping),
            first(&self.trapping_not_in_dlq),
            first(&self.trapping_routed),
            self.router_exits,
        )
    }
}
