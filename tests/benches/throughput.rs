//! Maximum sustained throughput: how fast each path drains a backlog, on a real
//! Kafka-protocol broker (tansu), against a native passthrough measured in the same run.
//!
//! For each round and path, on a fresh broker: `RECORDS` events are written to a 4-partition
//! input topic first (nothing else running), then the path starts from the earliest offset and the bench
//! follows the output topics' high watermarks (a metadata request every 50 ms; no consumer
//! competes for the CPU). The rate is taken between 10% and 90% of the records written
//! out, which leaves out start-up (group join, plugin load) and the tail. CPU is the path's
//! own user + system time over the same span, per record: a figure the shared machine's
//! noise moves much less than the rate.
//!
//! Paths:
//! - **passthrough**: a plain Rust consume -> produce loop (Switchyard's client settings, no
//!   WebAssembly, no commit tracking), the floor for any router;
//! - **passthrough + headers** (`pth`): the same, adding Switchyard-sized provenance headers;
//! - **passthrough + route plugin** (`ptw`): the same loop, with every record run through the
//!   `route` plugin in batches of up to 256 as Switchyard's workers do, all outputs to one
//!   topic: the ceiling for any router that makes one WebAssembly call per record;
//! - **passthrough on librdkafka's batch APIs** (`ptb`): the plain loop's work with the
//!   cheapest record APIs librdkafka has (batch consume, a topic handle made once);
//! - **passthrough routed natively** (`pt3`): the `route` plugin's code compiled for the host
//!   choosing among the three route topics, one record at a time: the floor for `sy`;
//!   `pt3h` the same adding Switchyard-sized provenance headers (as `pth` does);
//! - **switchyard** (`sy`): the release binary with the `route` plugin, three route topics
//!   and a dead-letter topic, as in `e2e_latency`; `sy1` with every route to one topic; `syn`
//!   and `sy1n` the same with `provenance_headers = false`;
//! - **the Python routers** a team would write instead (`bench/python/`, their pinned venv
//!   made by `bench/python/install.sh` on first use): `py`, a plain loop on confluent-kafka
//!   (per poll batch: produce, flush, commit synchronously), and `quix`, a Quix Streams app
//!   (its defaults: at-least-once, a checkpoint every 5 s). Both apply the `route` plugin's
//!   rule to the same four topics as `sy`, with Switchyard's client settings, writing each
//!   key and value unchanged (`sy` adds its two provenance headers). With `sy` and either in
//!   `PATHS`, the report compares them round by round: records/s and router CPU per record.
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench throughput
//! RECORDS=1000000 ROUNDS=3 PATHS=pt,sy,sy1 cargo bench -p switchyard-tests --bench throughput
//! # SY_EXTRA adds lines to the routers' pipeline table (`\n` separates lines):
//! SY_EXTRA='workers = 1' PATHS=sy cargo bench -p switchyard-tests --bench throughput
//! # Against the Python routers (the slow paths: about 10k-25k records/s here):
//! RECORDS=1000000 ROUNDS=5 PATHS=pt,sy,py,quix cargo bench -p switchyard-tests --bench throughput
//! # The Python routers with librdkafka's (and Quix Streams') own client settings but for the
//! # idempotent producer with acks=all, instead of Switchyard's:
//! PY_CLIENT=defaults PATHS=py,quix cargo bench -p switchyard-tests --bench throughput
//! # Two builds in the same run: a router path with `-b` runs the binary at BASELINE_BIN.
//! BASELINE_BIN=/tmp/switchyard-before PATHS=sy-b,sy cargo bench -p switchyard-tests --bench throughput
//! ```

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use std::time::{Duration, Instant};
use switchyard_tests::e2e::{
    PARTITIONS, Passthrough, PythonRouter, bench_python, cpu_seconds, env_u64, peak_rss_mib,
    producer, run_as_passthrough, send, stamped, start_passthrough_with, start_python_router,
    start_switchyard_binary,
};
use switchyard_tests::kafka::Broker;
use switchyard_tests::router_process::{RouterProcess, switchyard_binary};

/// The passthrough runs in this executable: it gets the allocator the `switchyard` binary
/// has (mimalloc, also as the C `malloc` librdkafka uses; see host/src/main.rs), so the two
/// are compared as routers, not as allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes `n` events to `topic` as fast as the broker takes them.
fn preload(bootstrap: &str, topic: &str, n: u64) -> Duration {
    let started = Instant::now();
    let p = producer(bootstrap);
    for i in 0..n {
        let key = format!("user-{:05}", i % 10_000);
        send(&p, topic, key.as_bytes(), stamped(i).as_bytes());
    }
    p.flush(Duration::from_secs(120)).expect("preload flushed");
    started.elapsed()
}

/// The sum of the high watermarks of `topics`.
fn written(consumer: &BaseConsumer, topics: &[String]) -> i64 {
    let mut total = 0;
    for t in topics {
        for p in 0..PARTITIONS {
            if let Ok((_, high)) = consumer.fetch_watermarks(t, p, Duration::from_secs(5)) {
                total += high;
            }
        }
    }
    total
}

struct Drain {
    /// Records per second between 10% and 90%.
    rate: f64,
    /// CPU µs per record over the same span.
    cpu_us: f64,
    /// The broker's CPU µs per record over the same span.
    broker_cpu_us: f64,
    /// Records written out in the end (every one, or the run timed out).
    out: i64,
    peak_rss_mib: f64,
}

/// Follows `outputs` until `n` records are out (or `timeout`), measuring `pid`.
fn follow(
    consumer: &BaseConsumer,
    outputs: &[String],
    n: u64,
    pid: u32,
    broker_pid: u32,
    timeout: Duration,
) -> Drain {
    let (lo, hi) = ((n / 10) as i64, (n * 9 / 10) as i64);
    let deadline = Instant::now() + timeout;
    let mut start: Option<(Instant, i64, f64, f64)> = None;
    let mut end: Option<(Instant, i64, f64, f64)> = None;
    let mut out = 0;
    // tansu's high watermark can stay a little short of the records written (it seems to
    // leave out part of the last batch), so a path is also done once its output stops
    // growing for 3 s past the 90% mark.
    let mut last_change = (Instant::now(), 0);
    while Instant::now() < deadline {
        out = written(consumer, outputs);
        let now = Instant::now();
        if out != last_change.1 {
            last_change = (now, out);
        } else if end.is_some() && now.duration_since(last_change.0) >= Duration::from_secs(3) {
            break;
        }
        if start.is_none() && out >= lo {
            start = Some((now, out, cpu_seconds(pid), cpu_seconds(broker_pid)));
        }
        if end.is_none() && out >= hi {
            end = Some((now, out, cpu_seconds(pid), cpu_seconds(broker_pid)));
        }
        if out >= n as i64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak_rss_mib = peak_rss_mib(pid);
    let (rate, cpu_us, broker_cpu_us) = match (start, end) {
        (Some((t0, n0, c0, b0)), Some((t1, n1, c1, b1))) if n1 > n0 => {
            let records = (n1 - n0) as f64;
            (
                records / t1.duration_since(t0).as_secs_f64(),
                (c1 - c0) * 1e6 / records,
                (b1 - b0) * 1e6 / records,
            )
        }
        _ => (f64::NAN, f64::NAN, f64::NAN),
    };
    Drain {
        rate,
        cpu_us,
        broker_cpu_us,
        out,
        peak_rss_mib,
    }
}

/// Marks the rows of the build at `BASELINE_BIN`.
fn baseline_note(path: &str) -> &'static str {
    if path.ends_with("-b") {
        " (baseline build)"
    } else {
        ""
    }
}

/// `sy` against the Python routers round by round, when `sy` and `py` or `quix` ran: the
/// targets are `sy` at least 20 times `py`'s rate and 50 times `quix`'s in every round, and at
/// most a tenth of `py`'s router CPU per record.
fn against_python(results: &[(String, Vec<Drain>)]) -> String {
    let of = |name: &str| results.iter().find(|(p, _)| p == name).map(|(_, d)| d);
    let Some(sy) = of("sy") else {
        return String::new();
    };
    let (py, quix) = (of("py"), of("quix"));
    if py.is_none() && quix.is_none() {
        return String::new();
    }
    let figure = |d: Option<&Vec<Drain>>, i: usize, f: fn(&Drain) -> f64| {
        d.and_then(|d| d.get(i)).map_or(f64::NAN, f)
    };
    let mut rows = Vec::new();
    // Rounds meeting each target, of the rounds that measured it.
    let mut met = [(0, 0); 3];
    let mut tally = |k: usize, ratio: f64, ok: bool| {
        if ratio.is_finite() {
            met[k].1 += 1;
            met[k].0 += usize::from(ok);
        }
    };
    for (i, s) in sy.iter().enumerate() {
        let (py_rate, quix_rate) = (figure(py, i, |d| d.rate), figure(quix, i, |d| d.rate));
        let (py_cpu, quix_cpu) = (figure(py, i, |d| d.cpu_us), figure(quix, i, |d| d.cpu_us));
        let (over_py, over_quix, cpu_share) =
            (s.rate / py_rate, s.rate / quix_rate, s.cpu_us / py_cpu);
        tally(0, over_py, over_py >= 20.0);
        tally(1, over_quix, over_quix >= 50.0);
        tally(2, cpu_share, cpu_share <= 0.1);
        rows.push(format!(
            "| {} | {:.0} | {py_rate:.0} | {quix_rate:.0} | **{over_py:.1}x** | **{over_quix:.1}x** \
             | {:.2} / {py_cpu:.2} / {quix_cpu:.2} | **{:.1}%** / {:.1}% |",
            i + 1,
            s.rate,
            s.cpu_us,
            100.0 * cpu_share,
            100.0 * s.cpu_us / quix_cpu,
        ));
    }
    let verdict = |(ok, of): (usize, usize)| format!("met in {ok} of {of} rounds");
    format!(
        "switchyard (`sy`) against the Python routers, round by round:\n\n\
         | round | sy records/s | py records/s | quix records/s | sy / py | sy / quix \
         | router CPU µs/record sy / py / quix | sy's CPU per record of py's / of quix's |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n{}\n\n\
         targets: sy at least 20x py's rate: {}; at least 50x quix's: {}; router CPU per \
         record at most 10% of py's: {}\n\n",
        rows.join("\n"),
        verdict(met[0]),
        verdict(met[1]),
        verdict(met[2]),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if run_as_passthrough() {
        return;
    }
    let n = env_u64("RECORDS", 1_000_000);
    let rounds = env_u64("ROUNDS", 3);
    let timeout = Duration::from_secs(env_u64("TIMEOUT_S", 300));
    // Extra pipeline settings for the routers, for experiments (e.g. `workers = 1`).
    let sy_extra = format!(
        "start = \"earliest\"\n{}",
        std::env::var("SY_EXTRA")
            .unwrap_or_default()
            .replace("\\n", "\n")
    );

    let paths: Vec<String> = std::env::var("PATHS")
        .unwrap_or_else(|_| "pt,sy,sy1".into())
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect();
    if paths.iter().any(|p| PythonRouter::of_path(p).is_some()) {
        // Before any round: a missing Python or venv stops the bench here, not mid-run.
        if let Err(e) = bench_python() {
            panic!("{e:#}");
        }
    }
    // Per path: (round, drain) for every round.
    let mut results: Vec<(String, Vec<Drain>)> =
        paths.iter().map(|p| (p.clone(), Vec::new())).collect();
    for round in 1..=rounds {
        for (path, drains) in results.iter_mut() {
            let prefix = format!("{path}r{round}");
            let input = format!("{prefix}-in");
            let outputs: Vec<String> = if path.starts_with("pt") && !path.starts_with("pt3") {
                vec![format!("{prefix}-standard")]
            } else {
                ["standard", "urgent", "errors", "dlq"]
                    .iter()
                    .map(|s| format!("{prefix}-{s}"))
                    .collect()
            };
            // A fresh broker for every run: tansu's in-memory storage gets slower as it fills
            // (its CPU per record doubled from one run to the next on a shared broker), which
            // would favour whichever path runs first.
            let broker = Broker::tansu().expect("tansu starts");
            let b = broker.bootstrap().to_owned();
            let watcher: BaseConsumer = broker.client_config().create().expect("watcher");
            let broker_pid = broker.pid().expect("tansu's pid");
            let mut topics = vec![input.clone()];
            topics.extend(outputs.iter().cloned());
            let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
            broker.create_topics(&specs).expect("topics");

            eprintln!("round {round}, {path}: preloading {n} records ...");
            let took = preload(&b, &input, n);
            eprintln!(
                "  {:.0} records/s; draining ...",
                n as f64 / took.as_secs_f64()
            );
            // A router process: its drain, then a clean stop; its log when it fell short.
            let drain_router = |name: &str, mut router: RouterProcess| {
                let drain = follow(&watcher, &outputs, n, router.pid(), broker_pid, timeout);
                let _ = router.sigterm();
                let _ = router.wait(Duration::from_secs(30));
                if drain.out < n as i64 * 99 / 100 {
                    eprintln!("{name} log:\n{}", router.log());
                }
                drain
            };
            let drain = match path.as_str() {
                "pt" | "pth" | "ptw" | "ptb" | "pt3" | "pt3h" => {
                    let (kind, output) = match path.as_str() {
                        "pth" => (Passthrough::Headers, &outputs[0]),
                        "ptw" => (Passthrough::Wasm, &outputs[0]),
                        "ptb" => (Passthrough::Batch, &outputs[0]),
                        // Writes `{prefix}-standard`, `-urgent`, `-errors`, `-dlq`.
                        "pt3" => (Passthrough::Routed, &prefix),
                        "pt3h" => (Passthrough::RoutedHeaders, &prefix),
                        _ => (Passthrough::Plain, &outputs[0]),
                    };
                    let mut pt = start_passthrough_with(&b, &input, output, kind);
                    let drain = follow(&watcher, &outputs, n, pt.id(), broker_pid, timeout);
                    let _ = pt.kill();
                    let _ = pt.wait();
                    drain
                }
                sy if matches!(sy.trim_end_matches("-b"), "sy" | "sy1" | "syn" | "sy1n") => {
                    let baseline = sy.ends_with("-b");
                    let sy = sy.trim_end_matches("-b");
                    let binary = if baseline {
                        std::path::PathBuf::from(
                            std::env::var("BASELINE_BIN").expect("a -b path needs BASELINE_BIN"),
                        )
                    } else {
                        switchyard_binary().expect("switchyard builds")
                    };
                    let extra = if sy.ends_with('n') {
                        format!("{sy_extra}\nprovenance_headers = false")
                    } else {
                        sy_extra.clone()
                    };
                    let router = start_switchyard_binary(
                        &binary,
                        &b,
                        &input,
                        &prefix,
                        sy.starts_with("sy1"),
                        &extra,
                    );
                    drain_router("switchyard", router)
                }
                other => {
                    let Some(kind) = PythonRouter::of_path(other) else {
                        panic!(
                            "unknown path {other:?}: PATHS takes pt, pth, ptw, ptb, pt3, pt3h, sy, \
                             syn, sy1, sy1n, py, quix (a router path with -b runs the build at \
                             BASELINE_BIN)"
                        )
                    };
                    let router = start_python_router(kind, &b, &input, &prefix)
                        .unwrap_or_else(|e| panic!("{other}: {e:#}"));
                    drain_router(other, router)
                }
            };
            eprintln!(
                "  {:.0} records/s, CPU µs/record: {:.2} (broker {:.2})",
                drain.rate, drain.cpu_us, drain.broker_cpu_us
            );
            drains.push(drain);
        }
    }
    let names = |p: &str| match p.trim_end_matches("-b") {
        "pt" => "passthrough (no WASM)",
        "pth" => "passthrough + 2 provenance headers",
        "ptw" => "passthrough + route plugin (WASM), 1 output topic",
        "ptb" => "passthrough on librdkafka's batch consume and topic handles",
        "pt3" => "passthrough routed natively (no WASM) to 3 route topics",
        "pt3h" => "passthrough routed natively to 3 route topics + 2 provenance headers",
        "sy" => "switchyard + route, 3 route topics",
        "syn" => "switchyard + route, 3 route topics, provenance_headers = false",
        "sy1n" => "switchyard + route, 1 output topic, provenance_headers = false",
        "py" => "Python loop on confluent-kafka, 3 route topics",
        "quix" => "Quix Streams app, 3 route topics",
        _ => "switchyard + route, 1 output topic",
    };
    let passthrough: Option<&Vec<Drain>> = results.iter().find(|(p, _)| p == "pt").map(|(_, d)| d);
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for (path, drains) in &results {
        let mut ratios = Vec::new();
        for (i, d) in drains.iter().enumerate() {
            let ratio = passthrough
                .and_then(|pt| pt.get(i))
                .map(|pt| d.rate / pt.rate);
            if let Some(r) = ratio {
                ratios.push(r);
            }
            rows.push(format!(
                "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {} | {:.0} |",
                i + 1,
                names(path),
                d.rate,
                ratio.map_or("-".into(), |r| format!("{:.0}%", 100.0 * r)),
                d.cpu_us,
                d.broker_cpu_us,
                d.out,
                d.peak_rss_mib
            ));
        }
        summary.push(format!(
            "| {}{} | {:.0} | {} | {:.2} | {:.2} |",
            names(path),
            baseline_note(path),
            median(drains.iter().map(|d| d.rate).collect()),
            if ratios.is_empty() {
                "-".into()
            } else {
                format!("**{:.0}%**", 100.0 * median(ratios))
            },
            median(drains.iter().map(|d| d.cpu_us).collect()),
            median(drains.iter().map(|d| d.broker_cpu_us).collect()),
        ));
    }
    let report = format!(
        "{}drain of {n} records per path and round, {PARTITIONS} partitions, tansu in memory\n\n\
         | round | path | records/s | of the passthrough | CPU µs/record | broker CPU µs/record | records out | peak RSS MiB |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n{}\n\n\
         medians:\n\n\
         | path | records/s | of the passthrough | CPU µs/record | broker CPU µs/record |\n|---|---:|---:|---:|---:|\n{}\n\n\
         target: switchyard at least 90% of the passthrough\n",
        against_python(&results),
        rows.join("\n"),
        summary.join("\n"),
    );
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/throughput.md"), &report);
}
