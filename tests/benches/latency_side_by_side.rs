//! End-to-end latency of Switchyard and of the passthrough measured **at the same time, on the
//! same records**: every router reads one input topic (each in its own consumer group) and
//! one checker reads every output, so a stall of the broker hits every path alike instead of
//! whichever ran during it. `e2e_latency` runs the paths one after the other; on tansu their
//! p99s then move by more than 100 ms from run to run.
//!
//! Paths (`PATHS`, default `pt,sy1`; the one hop is always measured):
//! - **one hop**: the checker reads the input topic itself: the broker's own floor;
//! - `pt` **passthrough**: a plain Rust consume -> produce loop, no WebAssembly (the floor
//!   for any router), writing one topic;
//! - `sy1` **switchyard, 1 output topic**: the `route` plugin, every route to one topic (the
//!   like-for-like comparison);
//! - `sy` **switchyard, 3 route topics**: the same plugin writing standard / urgent / errors.
//!
//! Every router added is load on the same broker and the same two cores: with all three the
//! broker carries four times the input rate in writes.
//!
//! For each path: p50 / p99 / p999 over the events created in the window and the router's
//! CPU over it; for each Switchyard path, the same quantiles of its per-event difference to
//! the passthrough (the same event, created at the same instant, read by the same checker).
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench latency_side_by_side
//! RATE=10000 SECS=30 WARMUP_S=5 PATHS=pt,sy1,sy BROKER=mock cargo bench -p switchyard-tests --bench latency_side_by_side
//! # BROKER: tansu (default) or mock (librdkafka's mock cluster, in this process)
//! ```

use std::collections::HashMap;
use std::time::Duration;
use switchyard_tests::e2e::{
    PARTITIONS, env_u64, peak_rss_mib, percentiles, run_as_passthrough, side_by_side_run,
    start_passthrough, start_switchyard,
};
use switchyard_tests::kafka::Broker;
use switchyard_tests::router_process::RouterProcess;

/// The passthrough runs in this executable: it gets the allocator the `switchyard` binary has
/// (mimalloc, also as librdkafka's `malloc`), as in the other benches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quantiles (p50, p99, p999) in ms of `path` minus `base`, over the events both delivered.
fn paired(path: &HashMap<u64, i64>, base: &HashMap<u64, i64>) -> (f64, f64, f64, usize) {
    let diffs: Vec<i64> = path
        .iter()
        .filter_map(|(id, l)| base.get(id).map(|b| l - b))
        .collect();
    let n = diffs.len();
    let (p50, p99, p999) = percentiles(diffs);
    (p50, p99, p999, n)
}

/// A running path.
enum Running {
    Passthrough(std::process::Child),
    Switchyard(RouterProcess),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Passthrough(c) => c.id(),
            Running::Switchyard(r) => r.pid(),
        }
    }

    fn stop(self) {
        match self {
            Running::Passthrough(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::Switchyard(mut r) => {
                let _ = r.sigterm();
                let _ = r.wait(Duration::from_secs(30));
            }
        }
    }
}

fn main() {
    if run_as_passthrough() {
        return;
    }
    let rate = env_u64("RATE", 10_000);
    let secs = env_u64("SECS", 30);
    let warmup = env_u64("WARMUP_S", 5);
    let broker_kind = std::env::var("BROKER").unwrap_or_else(|_| "tansu".into());
    let chosen: Vec<String> = std::env::var("PATHS")
        .unwrap_or_else(|_| "pt,sy1".into())
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect();
    let broker = match broker_kind.as_str() {
        "tansu" => Broker::tansu().expect("tansu starts"),
        "mock" => Broker::mock(1).expect("the mock cluster starts"),
        other => panic!("BROKER takes tansu or mock, not {other:?}"),
    };
    let b = broker.bootstrap().to_owned();
    let mut topics: Vec<String> = vec!["in".into(), "pt-out".into()];
    for prefix in ["sy", "sy1"] {
        for suffix in ["standard", "urgent", "errors", "dlq"] {
            topics.push(format!("{prefix}-{suffix}"));
        }
    }
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
    broker.create_topics(&specs).expect("topics");

    let mut paths: Vec<(&str, Vec<&str>)> = vec![("one hop (producer -> consumer)", vec!["in"])];
    let mut running = Vec::new();
    for path in &chosen {
        match path.as_str() {
            "pt" => {
                paths.push(("passthrough (two hops, no WASM)", vec!["pt-out"]));
                running.push(Running::Passthrough(start_passthrough(&b, "in", "pt-out")));
            }
            "sy1" => {
                paths.push((
                    "switchyard + route plugin (two hops, 1 output topic)",
                    vec!["sy1-standard", "sy1-dlq"],
                ));
                running.push(Running::Switchyard(start_switchyard(
                    &b, "in", "sy1", true, "",
                )));
            }
            "sy" => {
                paths.push((
                    "switchyard + route plugin (two hops, 3 route topics)",
                    vec!["sy-standard", "sy-urgent", "sy-errors", "sy-dlq"],
                ));
                running.push(Running::Switchyard(start_switchyard(
                    &b, "in", "sy", false, "",
                )));
            }
            other => panic!("PATHS takes pt, sy1, sy; not {other:?}"),
        }
    }
    // Group joins and producer start-up before anything is written; the warm-up then covers
    // the first records' one-time costs.
    std::thread::sleep(Duration::from_secs(3));

    let mut pids: Vec<u32> = running.iter().map(Running::pid).collect();
    pids.extend(broker.pid());
    eprintln!("{broker_kind}: {chosen:?} at once, {rate}/s, {warmup} s warm-up + {secs} s ...");
    let run = side_by_side_run(&b, "in", &paths, &pids, rate, warmup, secs);
    let rss: Vec<f64> = running.iter().map(|r| peak_rss_mib(r.pid())).collect();
    for r in running {
        r.stop();
    }

    let cpu = |i: usize| {
        run.cpu_seconds.get(i).map_or("-".to_string(), |s| {
            format!("{:.0}%", 100.0 * s / run.window_s)
        })
    };
    let mut rows = Vec::new();
    let mut quantiles = Vec::new();
    for (i, (name, _)) in paths.iter().enumerate() {
        let latencies: Vec<i64> = run.latencies[i].values().copied().collect();
        let measured = latencies.len();
        let (p50, p99, p999) = percentiles(latencies);
        quantiles.push((p50, p99));
        // Path 0 (one hop) is no process; path i > 0 is the (i - 1)th router.
        let (cpu, rss) = match i.checked_sub(1) {
            Some(r) => (cpu(r), format!("{:.0}", rss[r])),
            None => ("-".to_string(), "-".to_string()),
        };
        rows.push(format!(
            "| {name} | {p50:.1} | {p99:.1} | {p999:.1} | {measured} | {cpu} | {rss} |"
        ));
    }
    let base = chosen.iter().position(|p| p == "pt").map(|i| i + 1);
    let mut pairs = Vec::new();
    if let Some(base) = base {
        for (i, (name, _)) in paths.iter().enumerate().skip(1) {
            if i == base {
                continue;
            }
            let (d50, d99, d999, n) = paired(&run.latencies[i], &run.latencies[base]);
            pairs.push(format!(
                "| {name} | {:+.1} | {:+.1} | {d50:+.1} | {d99:+.1} | {d999:+.1} | {n} |",
                quantiles[i].0 - quantiles[base].0,
                quantiles[i].1 - quantiles[base].1,
            ));
        }
    }
    let broker_cpu = if broker.pid().is_some() {
        format!("; broker CPU {}", cpu(pids.len() - 1))
    } else {
        String::new()
    };
    let report = format!(
        "{broker_kind}: {} at once on the same input, {rate}/s, {secs} s measured after \
         {warmup} s, {PARTITIONS} partitions; {} events created in the window{broker_cpu}\n\n\
         | path | p50 ms | p99 ms | p999 ms | events measured | router CPU (of one core) | peak RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n{}\n\n\
         against the passthrough (target: p99 at most +2 ms), ms:\n\n\
         | path | p50 - passthrough p50 | p99 - passthrough p99 | per-event difference p50 | p99 | p999 | events in both |\n\
         |---|---:|---:|---:|---:|---:|---:|\n{}\n",
        chosen.join(", "),
        run.created,
        rows.join("\n"),
        pairs.join("\n"),
    );
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/latency_side_by_side.md"), &report);
    drop(broker);
}
