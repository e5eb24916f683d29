//! Stateful plugins: what keyed state and timers cost, each against a baseline measured in the
//! same run (a harness, not criterion: it reports medians of rounds and percentiles).
//!
//! 1. **Throughput** (`throughput`): records/s on one thread at batch 256 through
//!    `ChainRunner::process` (no Kafka) of `window` (update and final mode) and `join`, next to
//!    the stateless `route` plugin on the same events; also `noop` and `statebench` with no
//!    call (the boundary of each contract alone). The events are ~200-byte JSON objects with
//!    `event_type` (100 values, also the record key) and `amount`, timestamps 1 ms apart; the
//!    window is the plugin's default 1 minute, the watermark 1 s behind. The join reads
//!    `orders` and `payments` as two topics of one task, one batch of 256 orders then one of
//!    their 256 payments (each 1 ms after its order), `bound_ms` 60,000 (`JOIN_BOUND_MS`; an
//!    order every 2 ms of event time, so it holds about 30,000). Each stateful batch is also
//!    turned into its changelog records (`take_changes` + `changelog::encode`, what the worker
//!    does before producing them), timed apart. The cases take turns within each round
//!    (`ROUNDS`, default 5, of `BATCHES`, default 1,000, batches each) so that the machine's
//!    drift hits them alike.
//! 2. **State calls** (`calls`): the `statebench` plugin making `CALLS` (default 16) gets or
//!    sets per record (10,000 keys, 64-byte values), next to the same plugin making none: the
//!    extra time of a batch divided by its calls is the cost of one call, including the
//!    host's bookkeeping of the writes; its p50 and p99 over batches. Then each call timed on
//!    the guest's own clock (with `timed = true`): p50, p99 and p999 of single calls, and the
//!    cost of the clock reads themselves.
//! 3. **Restore** (`restore`): `RESTORE_KEYS` (default 1,000,000) state entries of 100-byte
//!    values written to a one-partition changelog topic on a fresh tansu, as the router writes
//!    them (`changelog::encode`, 1,000 entries and a marker per batch, the `switchyard-batch`
//!    header, the router's producer settings), then `changelog::restore` of the partition: its
//!    time, records/s, and the resident memory it added (VmRSS before and after, the restored
//!    state kept alive; the peak reset just before it).
//! 4. **End to end** (`e2e`): on a fresh tansu per run (`E2E_RUNS`, default 3), two
//!    `switchyard` processes read the same 4-partition input at the same time, written at
//!    `RATE` (default 10,000) events/s keyed by `event_type`: one with the stateless `route`
//!    plugin, one with `window` in update mode (its changelog on). Latency is each output's
//!    arrival at one checker minus its Kafka timestamp, which the generator sets to the
//!    event's creation time in ms and both routers keep (the ms truncation adds 0-1 ms to
//!    both); p50/p99/p999 over the `SECS` (default 30) after `WARMUP_S` (default 5), and the
//!    same for the input topic itself (the one hop: the broker's own floor).
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench stateful
//! PARTS=throughput,calls ROUNDS=9 cargo bench -p switchyard-tests --bench stateful
//! PARTS=restore RESTORE_KEYS=200000 cargo bench -p switchyard-tests --bench stateful
//! PARTS=e2e E2E_RUNS=5 RATE=10000 cargo bench -p switchyard-tests --bench stateful
//! ```
//!
//! It prints Markdown tables for BENCHMARKS.md, with the load average before and after each
//! part.

use rdkafka::producer::Producer as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::changelog::{self, LogRecord, Marker};
use switchyard::config::KafkaConfig;
use switchyard::plugin::time::EventTime;
use switchyard::plugin::{
    ChainRunner, ChainSpec, Delivery, Destination, HostServices, InputRecord, StageSpec,
};
use switchyard_tests::e2e::env_u64;
use switchyard_tests::kafka::{Broker, Counting};
use switchyard_tests::router_process::RouterProcess;
use switchyard_tests::status_kib;
use switchyard_tests::{engine, stage};

/// The same allocator as the `switchyard` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records per batch.
const BATCH: usize = 256;
/// Timestamp of the first event.
const BASE_MS: i64 = 1_700_000_000_000;
/// How far the watermark trails the records.
const WATERMARK_DELAY_MS: i64 = 1_000;
/// The join's `bound_ms` unless `JOIN_BOUND_MS` says otherwise.
const JOIN_BOUND_MS: u64 = 60_000;
/// Keys `statebench` goes round, and the size of what it sets.
const STATE_KEYS: &str = "10000";
const VALUE_BYTES: &str = "64";

const EVENT_TYPES: [&str; 4] = ["page_view", "click", "purchase", "signup"];

/// Event `i`: ~200 bytes, `event_type` one of 100 values (every 100th `error`), an `amount`.
fn event(i: u64) -> (String, String) {
    let event_type = if i % 100 == 99 {
        "error".to_owned()
    } else {
        format!("{}_{:02}", EVENT_TYPES[(i % 4) as usize], i % 25)
    };
    let priority = if i.is_multiple_of(10) {
        "high"
    } else {
        "normal"
    };
    let value = format!(
        concat!(
            r#"{{"event_id":"evt-{:012}","user_id":"user-{:05}","event_type":"{}","#,
            r#""priority":"{}","session":"s-{:08x}","page":"/products/{}","#,
            r#""email":"user{}@example.com","amount":{}.{:02}}}"#
        ),
        i,
        i % 10_000,
        event_type,
        priority,
        i.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        i % 500,
        i % 10_000,
        i % 1000,
        i % 100
    );
    (event_type, value)
}

/// Order `n` and its payment, ~200 bytes each.
fn order(n: u64, ts: i64) -> String {
    format!(
        concat!(
            r#"{{"order_id":"ord-{:012}","customer_id":"cust-{:06}","event_type":"order_placed","#,
            r#""amount":{}.{:02},"currency":"EUR","items":{},"channel":"web","#,
            r#""shipping":"standard","created_at":{}}}"#
        ),
        n,
        n % 100_000,
        n % 1000,
        n % 100,
        n % 7 + 1,
        ts
    )
}

fn payment(n: u64, ts: i64) -> String {
    format!(
        concat!(
            r#"{{"order_id":"ord-{:012}","payment_id":"pay-{:012}","event_type":"payment_captured","#,
            r#""amount":{}.{:02},"currency":"EUR","method":"card","provider":"acme-pay","#,
            r#""captured_at":{}}}"#
        ),
        n,
        n.wrapping_mul(2_654_435_761),
        n % 1000,
        n % 100,
        ts
    )
}

fn record(offset: u64, ts: i64, key: String, value: String) -> InputRecord {
    InputRecord {
        offset: offset as i64,
        timestamp_ms: Some(ts),
        key: Some(key.into_bytes()),
        value: Some(value.into_bytes()),
        headers: Vec::new(),
    }
}

/// What a case reads.
enum Input {
    /// `events` partition 0, one event per ms.
    Events,
    /// `orders` then `payments` partition 0, a batch of each in turn.
    OrdersAndPayments,
}

/// One runner and the input it is fed, continued from batch to batch.
struct Case {
    name: &'static str,
    runner: ChainRunner,
    input: Input,
    stateful: bool,
    /// Batches made so far.
    batches: u64,
    changelog_batches: u64,
}

impl Case {
    fn new(name: &'static str, stages: Vec<StageSpec>, input: Input) -> Self {
        let topics = match input {
            Input::Events => vec!["events".to_owned()],
            Input::OrdersAndPayments => vec!["orders".to_owned(), "payments".to_owned()],
        };
        let spec = ChainSpec::new(
            "bench",
            vec!["standard".into(), "urgent".into(), "errors".into()],
            "standard",
            stages,
        )
        .expect("valid chain")
        .with_event_time(EventTime {
            topics,
            watermark_delay_ms: WATERMARK_DELAY_MS,
            ..EventTime::default()
        });
        let stateful = spec.is_stateful();
        let runner = ChainRunner::new(engine(), Arc::new(spec), HostServices::default())
            .expect("instantiates");
        Case {
            name,
            runner,
            input,
            stateful,
            batches: 0,
            changelog_batches: 0,
        }
    }

    /// The next batch and its topic.
    fn next_batch(&mut self) -> (&'static str, Vec<InputRecord>) {
        let k = self.batches;
        self.batches += 1;
        match self.input {
            Input::Events => {
                let records = (k * BATCH as u64..(k + 1) * BATCH as u64)
                    .map(|i| {
                        let (key, value) = event(i);
                        record(i, BASE_MS + i as i64, key, value)
                    })
                    .collect();
                ("events", records)
            }
            Input::OrdersAndPayments => {
                let (pair, orders) = (k / 2, k.is_multiple_of(2));
                let records = (0..BATCH as u64)
                    .map(|j| {
                        let n = pair * BATCH as u64 + j;
                        let order_ts = BASE_MS + 2 * n as i64;
                        let key = format!("ord-{n:012}");
                        if orders {
                            record(n, order_ts, key, order(n, order_ts))
                        } else {
                            record(n, order_ts + 1, key, payment(n, order_ts + 1))
                        }
                    })
                    .collect();
                (if orders { "orders" } else { "payments" }, records)
            }
        }
    }

    /// Runs one batch: the time of `process`, and of making its changelog records.
    fn run_batch(&mut self) -> (Duration, Duration) {
        let (topic, batch) = self.next_batch();
        let started = Instant::now();
        let deliveries = self.runner.process(topic, 0, batch).expect("runs");
        drop(std::hint::black_box(deliveries));
        let processed = started.elapsed();
        if !self.stateful {
            return (processed, Duration::ZERO);
        }
        let started = Instant::now();
        let changes = self.runner.take_changes(0);
        let marker = Marker {
            batch: format!("bench-{}", self.changelog_batches),
            positions: vec![(topic.to_owned(), 0, self.batches as i64 * BATCH as i64)],
            watermark: self.runner.watermark(0),
        };
        self.changelog_batches += 1;
        let records = changelog::encode(&changes, &marker);
        drop(std::hint::black_box(records));
        (processed, started.elapsed())
    }

    /// Runs the process call alone and returns the deliveries (for checks and timings).
    fn run_collect(&mut self) -> (Duration, Vec<Delivery>) {
        let (topic, batch) = self.next_batch();
        let started = Instant::now();
        let deliveries = self.runner.process(topic, 0, batch).expect("runs");
        let took = started.elapsed();
        if self.stateful {
            drop(self.runner.take_changes(0));
        }
        (took, deliveries)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn list(values: &[f64], format: impl Fn(f64) -> String) -> String {
    values
        .iter()
        .map(|v| format(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn throughput(rounds: u64, batches: u64) {
    println!(
        "\n## Throughput at batch {BATCH}, one thread (load average {})",
        load_average()
    );
    let statebench = |calls: &str| {
        stage(
            "statebench",
            "statebench",
            &[("op", "none"), ("calls", calls)],
        )
    };
    let join_bound = env_u64("JOIN_BOUND_MS", JOIN_BOUND_MS).to_string();
    let mut cases = vec![
        Case::new("route", vec![stage("route", "route", &[])], Input::Events),
        Case::new("noop", vec![stage("noop", "noop", &[])], Input::Events),
        Case::new("statebench-0", vec![statebench("0")], Input::Events),
        Case::new(
            "window-update",
            vec![stage("window", "window", &[("mode", "update")])],
            Input::Events,
        ),
        Case::new(
            "window-final",
            vec![stage("window", "window", &[("mode", "final")])],
            Input::Events,
        ),
        Case::new(
            "join",
            vec![stage(
                "join",
                "join",
                &[
                    ("left_topic", "orders"),
                    ("right_topic", "payments"),
                    ("bound_ms", &join_bound),
                ],
            )],
            Input::OrdersAndPayments,
        ),
    ];
    // `CASES` (names, comma-separated) keeps only those besides `route`, e.g. for a profile.
    if let Ok(only) = std::env::var("CASES") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        cases.retain(|c| c.name == "route" || only.contains(&c.name));
    }
    check_outputs(&mut cases);
    // Warm-up: instances made, caches and state at their steady size.
    for case in &mut cases {
        for _ in 0..batches / 4 {
            case.run_batch();
        }
    }
    // Per case: records/s of each round, for `process` and with the changelog records.
    let mut process: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut with_log: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, case) in cases.iter_mut().enumerate() {
            let mut total = Duration::ZERO;
            let mut log = Duration::ZERO;
            for _ in 0..batches {
                let (p, l) = case.run_batch();
                total += p;
                log += l;
            }
            let records = (batches * BATCH as u64) as f64;
            process[i].push(records / total.as_secs_f64());
            with_log[i].push(records / (total + log).as_secs_f64());
        }
    }
    let route = median(&process[0]);
    println!(
        "\n{rounds} rounds of {batches} batches of {BATCH} per case, taking turns; load average after: {}\n",
        load_average()
    );
    println!(
        "| plugin | records/s: median (rounds) | / route | with changelog records: records/s (median) | / route |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        let m = median(&process[i]);
        let (log, log_ratio) = if case.stateful {
            let l = median(&with_log[i]);
            (thousands(l), format!("{:.2}", l / route))
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {} | **{}** ({}) | {:.2} | {} | {} |",
            case.name,
            thousands(m),
            list(&process[i], thousands),
            m / route,
            log,
            log_ratio
        );
    }
    // Per round ratios, so a reader sees how stable the ratio is.
    for (i, case) in cases.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = process[i]
            .iter()
            .zip(&process[0])
            .map(|(c, r)| c / r)
            .collect();
        println!(
            "{} / route per round: {} (median {:.2})",
            case.name,
            list(&ratios, |r| format!("{r:.2}")),
            median(&ratios)
        );
    }
}

/// Checks that the cases do what they are meant to (so the figures time the real work): the
/// window emits aggregates or nothing, the join pairs every payment with its order.
fn check_outputs(cases: &mut [Case]) {
    for case in cases.iter_mut() {
        let mut routed = 0usize;
        let mut dead = Vec::new();
        let mut records = 0usize;
        for _ in 0..4 {
            let (_, deliveries) = case.run_collect();
            records += BATCH;
            for d in deliveries {
                match d.destination {
                    Destination::Route { .. } => routed += 1,
                    Destination::DeadLetter(d) => dead.push(d.error.message),
                }
            }
        }
        assert!(
            dead.is_empty(),
            "{}: dead letters {:?}",
            case.name,
            &dead[..1]
        );
        let expected = match case.name {
            "window-final" => 0,
            // Orders find nothing; each payment finds its order.
            "join" => records / 2,
            _ => records,
        };
        assert_eq!(
            routed, expected,
            "{}: outputs of {records} records",
            case.name
        );
    }
}

fn state_calls(rounds: u64, batches: u64, calls: u64) {
    println!(
        "\n## State calls from a plugin: {calls} per record, batch {BATCH}, {STATE_KEYS} keys, {VALUE_BYTES}-byte values (load average {})",
        load_average()
    );
    let calls_text = calls.to_string();
    let bench = |op: &str, calls: &str, timed: &str| {
        Case::new(
            "statebench",
            vec![stage(
                "statebench",
                "statebench",
                &[
                    ("op", op),
                    ("calls", calls),
                    ("keys", STATE_KEYS),
                    ("value_bytes", VALUE_BYTES),
                    ("timed", timed),
                ],
            )],
            Input::Events,
        )
    };
    let mut none = bench("none", "0", "false");
    let mut get = bench("get", &calls_text, "false");
    let mut set = bench("set", &calls_text, "false");
    for case in [&mut none, &mut get, &mut set] {
        for _ in 0..batches / 4 {
            case.run_collect();
        }
    }
    // Per round: each batch's time, per case.
    let per_call = |batch: Duration, base: f64| {
        (batch.as_nanos() as f64 - base) / (BATCH as u64 * calls) as f64
    };
    let mut summary = Vec::new();
    for _ in 0..rounds {
        let mut times: [Vec<Duration>; 3] = Default::default();
        for (t, case) in times.iter_mut().zip([&mut none, &mut get, &mut set]) {
            for _ in 0..batches {
                t.push(case.run_collect().0);
            }
        }
        let base: Vec<f64> = times[0].iter().map(|d| d.as_nanos() as f64).collect();
        let base = median(&base);
        let mut g: Vec<f64> = times[1].iter().map(|d| per_call(*d, base)).collect();
        let mut s: Vec<f64> = times[2].iter().map(|d| per_call(*d, base)).collect();
        g.sort_by(f64::total_cmp);
        s.sort_by(f64::total_cmp);
        summary.push((
            base / BATCH as f64,
            quantile(&g, 0.5),
            quantile(&g, 0.99),
            quantile(&s, 0.5),
            quantile(&s, 0.99),
        ));
    }
    println!(
        "\nFrom batch times ({rounds} rounds of {batches} batches per case, taking turns; load average after: {}):\n",
        load_average()
    );
    println!(
        "| call | ns per call, p50: median (rounds) | p99: median (rounds) | baseline: no call, ns per record (rounds) |"
    );
    println!("|---|---:|---:|---:|");
    let column =
        |f: fn(&(f64, f64, f64, f64, f64)) -> f64| -> Vec<f64> { summary.iter().map(f).collect() };
    let base = column(|s| s.0);
    let ns = |v: f64| format!("{v:.0}");
    for (name, p50, p99) in [
        ("get", column(|s| s.1), column(|s| s.2)),
        ("set", column(|s| s.3), column(|s| s.4)),
    ] {
        println!(
            "| `state::{name}` | **{:.0}** ({}) | **{:.0}** ({}) | {:.0} ({}) |",
            median(&p50),
            list(&p50, ns),
            median(&p99),
            list(&p99, ns),
            median(&base),
            list(&base, ns)
        );
    }

    // Each call timed inside the plugin.
    let mut timed_get = bench("get", &calls_text, "true");
    let mut timed_set = bench("set", &calls_text, "true");
    println!(
        "\nEach call timed on the guest's monotonic clock ({} calls each; load average {}):\n",
        rounds * batches * BATCH as u64 * calls,
        load_average()
    );
    println!("| call | p50 ns | p99 ns | p999 ns | max ns | the clock reads alone: p50 / p99 ns |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, case) in [("get", &mut timed_get), ("set", &mut timed_set)] {
        for _ in 0..batches / 4 {
            case.run_collect();
        }
        let mut call_ns = Vec::new();
        let mut clock_ns = Vec::new();
        for _ in 0..rounds * batches {
            for d in case.run_collect().1 {
                let Destination::Route { record, .. } = d.destination else {
                    panic!("a timed call was dead-lettered");
                };
                let text = String::from_utf8(record.value.unwrap_or_default()).expect("text");
                let mut times = text.split(' ').map(|t| t.parse::<f64>().expect("ns"));
                clock_ns.extend(times.next());
                call_ns.extend(times);
            }
        }
        call_ns.sort_by(f64::total_cmp);
        clock_ns.sort_by(f64::total_cmp);
        println!(
            "| `state::{name}` | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} |",
            quantile(&call_ns, 0.5),
            quantile(&call_ns, 0.99),
            quantile(&call_ns, 0.999),
            call_ns.last().copied().unwrap_or(f64::NAN),
            quantile(&clock_ns, 0.5),
            quantile(&clock_ns, 0.99)
        );
    }
}

/// The size of each restored value.
const VALUE_LEN: usize = 100;
/// State entries per changelog batch.
const PER_BATCH: u64 = 1_000;

/// The changelog of `keys` state entries as the router writes it: per batch of
/// [`PER_BATCH`] entries, its id and its records (the entries, then the marker).
fn changelog_batches(keys: u64) -> impl Iterator<Item = (String, Vec<LogRecord>)> {
    let value = vec![b'v'; VALUE_LEN];
    (0..keys.div_ceil(PER_BATCH)).map(move |b| {
        let entries = (b * PER_BATCH..((b + 1) * PER_BATCH).min(keys))
            .map(|i| (format!("key-{i:010}").into_bytes(), Some(value.clone())))
            .collect();
        let changes = vec![(
            "window".to_owned(),
            switchyard::plugin::state::Changes {
                entries,
                timers: Vec::new(),
            },
        )];
        let batch = format!("bench-{b}");
        let marker = Marker {
            batch: batch.clone(),
            positions: vec![("events".into(), 0, last_position(b))],
            watermark: Some(BASE_MS + b as i64),
        };
        let records = changelog::encode(&changes, &marker);
        (batch, records)
    })
}

/// The input offset the marker of batch `b` names.
fn last_position(b: u64) -> i64 {
    ((b + 1) * PER_BATCH) as i64
}

fn restore(keys: u64) {
    println!(
        "\n## Restore of {keys} keys from the changelog on tansu (load average {})",
        load_average()
    );
    let broker = Broker::tansu().expect("tansu starts");
    let topic = "bench-changelog";
    broker.create_topics(&[(topic, 1)]).expect("topic");
    let kafka = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        consumer: Default::default(),
        producer: Default::default(),
    };
    let started = Instant::now();
    let mut written = 0u64;
    {
        // The changelog writer's settings.
        let mut config = switchyard::kafka::producer_config(&kafka, "bench");
        config.set("queue.buffering.max.messages", "1000000");
        let producer: rdkafka::producer::ThreadedProducer<Counting> = config
            .create_with_context(Counting::default())
            .expect("producer");
        for (batch, records) in changelog_batches(keys) {
            for LogRecord { key, value } in records {
                let headers = rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(
                    rdkafka::message::Header {
                        key: changelog::BATCH_HEADER,
                        value: Some(batch.as_bytes()),
                    },
                );
                let mut out = rdkafka::producer::BaseRecord::<[u8], [u8]>::to(topic)
                    .partition(0)
                    .key(key.as_slice())
                    .headers(headers);
                if let Some(value) = &value {
                    out = out.payload(value.as_slice());
                }
                switchyard::kafka::send_waiting(&producer, out).expect("queued");
                written += 1;
            }
        }
        producer
            .flush(Duration::from_secs(1800))
            .expect("changelog written");
        let failed = producer
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failed, 0, "records refused");
    }
    let write_s = started.elapsed().as_secs_f64();
    println!(
        "written: {written} records in {write_s:.1} s ({} records/s)",
        thousands(written as f64 / write_s)
    );

    println!(
        "\n| restored from | keys | changelog records | s | records/s | key + value bytes MiB | RSS added MiB | 2 s later | peak |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Each restore runs in a fresh process: the memory this one used to write (librdkafka's
    // queue, freed but kept by the allocator) would otherwise be reused and hide what the
    // restore adds. `memory` feeds the same records to the restorer with no consumer: the
    // state's own size.
    for source in [broker.bootstrap(), "memory"] {
        let output = std::process::Command::new(std::env::current_exe().expect("this executable"))
            .env(RESTORE_CHILD, format!("{source} {topic} {keys}"))
            .output()
            .expect("the restore process runs");
        assert!(
            output.status.success(),
            "the restore failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    println!("load average after: {}", load_average());
}

/// The environment variable that makes this executable restore a changelog and print its
/// row (the second half of [`restore`]): `<bootstrap or "memory"> <topic> <keys>`.
const RESTORE_CHILD: &str = "SWITCHYARD_BENCH_RESTORE";

fn restore_child(args: &str) {
    let args: Vec<&str> = args.split(' ').collect();
    let [source, topic, keys] = args[..] else {
        panic!("{RESTORE_CHILD}: expected 3 fields, got {args:?}");
    };
    let keys: u64 = keys.parse().expect("keys");
    let batches = keys.div_ceil(PER_BATCH);
    // Resets VmHWM to the current RSS (Linux 4.0+), so the peak below is the restore's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let restored = if source == "memory" {
        let mut restorer = changelog::Restorer::default();
        for (batch, records) in changelog_batches(keys) {
            for record in records {
                restorer.read(Some(&batch), record);
            }
        }
        restorer.finish()
    } else {
        let kafka = KafkaConfig {
            brokers: source.to_owned(),
            consumer: Default::default(),
            producer: Default::default(),
        };
        // As the router does on assignment: the group's committed input offset, which the
        // last marker covers (tansu's reported end of a partition can lag its acknowledged
        // writes; restore reads on until the marker that covers it).
        let committed = [("events".to_owned(), 0, last_position(batches - 1))];
        let mut all = changelog::restore(&kafka, "bench", topic, &[0], &committed, &|_, _, _| {})
            .expect("restores");
        all.remove(&0).expect("task 0")
    };
    let took = started.elapsed().as_secs_f64();
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let restored_keys = restored.stages["window"].len();
    assert!(
        restored_keys as u64 == keys && restored.torn == 0,
        "restored {restored_keys} of {keys} keys from {} records ({} of batches without their marker)",
        restored.records,
        restored.torn
    );
    // Still resident a moment later (the allocator returns freed pages after a delay).
    std::thread::sleep(Duration::from_secs(2));
    let settled = status_kib("VmRSS:");
    let state_bytes = keys as usize * ("key-0000000000".len() + VALUE_LEN);
    let mib = |kib: f64| kib / 1024.0;
    println!(
        "| {} | {} | {} | {took:.2} | {} | {:.0} | **{:.0}** | {:.0} | {:.0} |",
        if source == "memory" {
            "memory (no consumer)"
        } else {
            "tansu"
        },
        thousands(keys as f64),
        thousands(restored.records as f64),
        thousands(restored.records as f64 / took),
        state_bytes as f64 / 1048576.0,
        mib(after - before),
        mib(settled - before),
        mib(peak - before),
    );
    drop(std::hint::black_box(restored));
}

/// A router process reading `in`: the stateless `route` plugin (`stateful` false) or the
/// `window` plugin in update mode, every output to `{prefix}-out`.
fn start_router(bootstrap: &str, prefix: &str, stateful: bool) -> RouterProcess {
    use switchyard_tests::pipelines::{ADMIN_EPHEMERAL, kafka_toml, pipeline_toml, scratch_dir};
    let out = format!("{prefix}-out");
    let routes = [
        ("standard", out.as_str()),
        ("urgent", out.as_str()),
        ("errors", out.as_str()),
    ];
    // tansu cannot resume a fetch inside a batch, so the router must never pause (as in
    // `e2e::start_switchyard`).
    let mut extra = "max_in_flight = 1000000\n".to_owned();
    let stage: (&str, &str, &[(&str, &str)]) = if stateful {
        extra.push_str(&format!(
            "watermark_delay_ms = {WATERMARK_DELAY_MS}\ncreate_internal_topics = true\n"
        ));
        ("window", "window", &[("mode", "update")])
    } else {
        ("route", "route", &[])
    };
    let text = format!(
        "{}\n{ADMIN_EPHEMERAL}\n{}",
        kafka_toml(bootstrap),
        pipeline_toml(
            prefix,
            "in",
            &routes,
            &format!("{prefix}-dlq"),
            &[stage],
            &extra
        )
    );
    let dir = scratch_dir(prefix);
    let config = switchyard_tests::pipelines::write_file(&dir, "switchyard.toml", &text);
    let path = config.to_str().expect("path").to_owned();
    RouterProcess::start(&["run", "--config", &path]).expect("switchyard starts")
}

/// End to end on tansu: the stateless and the stateful router read the same input at the
/// same time; latency is each output's arrival minus its Kafka timestamp (the source
/// record's, set by the generator to its creation time, in ms; an aggregate keeps it too).
fn end_to_end(runs: u64, rate: u64, warmup: u64, secs: u64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use switchyard_tests::e2e::{PARTITIONS, cpu_seconds, now_us, peak_rss_mib};
    println!(
        "\n## End to end on tansu at {rate} events/s: stateless `route` vs `window` (update mode), side by side (load average {})",
        load_average()
    );
    println!(
        "\n| run | path | p50 ms | p99 ms | p999 ms | outputs measured | router CPU | router peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut differences = Vec::new();
    let mut broker_cpu = Vec::new();
    for run in 1..=runs {
        let broker = Broker::tansu().expect("tansu starts");
        let b = broker.bootstrap().to_owned();
        let topics = ["in", "sl-out", "sl-dlq", "sf-out", "sf-dlq"];
        let specs: Vec<(&str, i32)> = topics.iter().map(|t| (*t, PARTITIONS)).collect();
        broker.create_topics(&specs).expect("topics");
        let routers = [start_router(&b, "sl", false), start_router(&b, "sf", true)];
        // Group joins, the (empty) restore and producer start-up before anything is written.
        std::thread::sleep(Duration::from_secs(5));

        let stop = Arc::new(AtomicBool::new(false));
        let from_ms = Arc::new(AtomicI64::new(i64::MAX));
        let checker = {
            let (stop, from_ms) = (stop.clone(), from_ms.clone());
            let consumer: BaseConsumer = broker
                .client_config()
                .set("group.id", "bench-checker")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .expect("checker");
            let mut tpl = rdkafka::TopicPartitionList::new();
            for t in ["sl-out", "sf-out", "in", "sl-dlq", "sf-dlq"] {
                for p in 0..PARTITIONS {
                    tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)
                        .expect("partition");
                }
            }
            consumer.assign(&tpl).expect("assign");
            std::thread::spawn(move || {
                // Per path: latencies in µs; dead letters.
                let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
                let mut dead = 0u64;
                while !stop.load(Ordering::Acquire) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                        let now = now_us();
                        if m.topic().ends_with("-dlq") {
                            dead += 1;
                            continue;
                        }
                        let Some(ts) = m.timestamp().to_millis() else {
                            continue;
                        };
                        if ts >= from_ms.load(Ordering::Acquire) {
                            let path = match m.topic() {
                                "sl-out" => 0,
                                "sf-out" => 1,
                                _ => 2,
                            };
                            latencies[path].push(now - ts * 1000);
                        }
                    }
                }
                (latencies, dead)
            })
        };
        std::thread::sleep(Duration::from_secs(1));
        let producer = switchyard_tests::e2e::producer(&b);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut window: Option<(Instant, Vec<f64>)> = None;
        let mut pids: Vec<u32> = routers.iter().map(RouterProcess::pid).collect();
        pids.extend(broker.pid());
        let total = Duration::from_secs(warmup + secs);
        while start.elapsed() < total {
            if window.is_none() && start.elapsed() >= Duration::from_secs(warmup) {
                from_ms.store(now_us() / 1000 + 1, Ordering::Release);
                window = Some((
                    Instant::now(),
                    pids.iter().map(|p| cpu_seconds(*p)).collect(),
                ));
            }
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let (key, value) = event(sent);
                let record = rdkafka::producer::BaseRecord::<[u8], [u8]>::to("in")
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .timestamp(now_us() / 1000);
                switchyard_tests::e2e::send_record(&producer, record);
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let (window_start, cpu_start) = window.expect("a measured window");
        let window_s = window_start.elapsed().as_secs_f64();
        let cpu: Vec<f64> = pids
            .iter()
            .zip(&cpu_start)
            .map(|(p, c)| (cpu_seconds(*p) - c) / window_s)
            .collect();
        let _ = producer.flush(Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Release);
        let (latencies, dead) = checker.join().expect("checker");
        let rss: Vec<f64> = pids.iter().map(|p| peak_rss_mib(*p)).collect();
        for mut router in routers {
            let _ = router.sigterm();
            let _ = router.wait(Duration::from_secs(30));
        }
        let mut p99 = [0.0; 3];
        for (i, name) in [
            "stateless `route`",
            "`window`, update mode",
            "one hop (the input itself)",
        ]
        .iter()
        .enumerate()
        {
            let mut ms: Vec<f64> = latencies[i].iter().map(|us| *us as f64 / 1000.0).collect();
            ms.sort_by(f64::total_cmp);
            p99[i] = quantile(&ms, 0.99);
            println!(
                "| {run} | {name} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                quantile(&ms, 0.5),
                p99[i],
                quantile(&ms, 0.999),
                ms.len(),
                if i < 2 {
                    format!("{:.0}%", cpu[i] * 100.0)
                } else {
                    "-".into()
                },
                rss.get(i)
                    .filter(|_| i < 2)
                    .map_or("-".into(), |r| format!("{r:.0}"))
            );
        }
        broker_cpu.extend(cpu.get(2).copied());
        assert_eq!(dead, 0, "dead letters in run {run}");
        differences.push(p99[1] - p99[0]);
    }
    println!(
        "\np99 of `window` minus p99 of `route`, per run: {} ms (median {:+.1} ms); tansu's CPU per run: {}; {warmup} s warm-up and {secs} s measured per run, a fresh broker each; load average after: {}",
        list(&differences, |d| format!("{d:+.1}")),
        median(&differences),
        list(&broker_cpu, |c| format!("{:.0}%", c * 100.0)),
        load_average(),
    );
}

fn main() {
    if let Ok(args) = std::env::var(RESTORE_CHILD) {
        restore_child(&args);
        return;
    }
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "throughput,calls,restore,e2e".into());
    let rounds = env_u64("ROUNDS", 5);
    let batches = env_u64("BATCHES", 1_000);
    println!(
        "stateful bench: {} cores, load average {}; event e.g. {} ({} bytes)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        event(1).1,
        event(1).1.len()
    );
    for part in parts.split(',') {
        match part.trim() {
            "throughput" => throughput(rounds, batches),
            "calls" => state_calls(rounds, batches, env_u64("CALLS", 16)),
            "restore" => restore(env_u64("RESTORE_KEYS", 1_000_000)),
            "e2e" => end_to_end(
                env_u64("E2E_RUNS", 3),
                env_u64("RATE", 10_000),
                env_u64("WARMUP_S", 5),
                env_u64("SECS", 30),
            ),
            other => panic!("unknown part {other} (throughput, calls, restore, e2e)"),
        }
    }
}
