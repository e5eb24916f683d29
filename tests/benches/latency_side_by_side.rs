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
//! - `sy` **switchyard, 3 route topics**: the same plugin writing standard / urgent / errors;
//! - `pt3` **passthrough, routed natively**: the `route` plugin's code compiled for the host
//!   (no WebAssembly) choosing among the same three topics, one record at a time: the floor
//!   for `sy` (compared with it when both run).
//! - `sy1-b` **another build of switchyard** (the binary at `BASELINE_BIN`) configured as
//!   `sy1`: two builds compared on the same records at the same time.
//! - `py` **a plain Python loop on confluent-kafka** and `quix` **a Quix Streams app**
//!   (`bench/python/`, their pinned venv made by `bench/python/install.sh` on first use): what
//!   a team would write instead, applying the `route` plugin's rule to the same three route
//!   topics (and a dead-letter topic), at least once (the loop flushes and commits per poll
//!   batch; Quix Streams checkpoints every 5 s, its default), with Switchyard's client
//!   settings, writing each key and value unchanged.
//!
//! Every router added is load on the same broker and the same two cores: with all three the
//! broker carries four times the input rate in writes.
//!
//! Per run (a fresh broker each): p50 / p99 / p999 of each path over the events created in the
//! window and the router's CPU over it; for each Switchyard path, its p99 minus the
//! passthrough's and the quantiles of its per-event difference to the passthrough (the same
//! event, created at the same instant, read by the same checker); for every router, the
//! quantiles of what it adds per event to the one hop (its latency minus the same event's one
//! hop, which includes the second trip through the broker), and, with `sy` and `py` or
//! `quix`, what Switchyard adds as a share of what each Python router adds (the target: at
//! most a tenth of the Python loop's). Quantiles are over the events a path delivered before
//! the run ended: a router that falls behind shows fewer events measured than created.
//!
//! With `RUNS` > 1, the runs' events are also pooled (histograms of 0.1 ms bins): the pooled
//! p99 of each path, the pooled p99 difference to the passthrough, and a 95% interval for that
//! difference from resampling whole runs (a broker stall is one run's, so runs, not events,
//! are the independent samples).
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench latency_side_by_side
//! RUNS=20 cargo bench -p switchyard-tests --bench latency_side_by_side
//! RATE=10000 SECS=30 WARMUP_S=5 PATHS=pt,sy1,sy BROKER=mock cargo bench -p switchyard-tests --bench latency_side_by_side
//! # BROKER: tansu (default) or mock (librdkafka's mock cluster, in this process)
//! # SY_EXTRA adds lines to the routers' pipeline table (`\n` separates lines):
//! SY_EXTRA='workers = 1' cargo bench -p switchyard-tests --bench latency_side_by_side
//! # Two builds side by side:
//! BASELINE_BIN=/tmp/switchyard-before PATHS=pt,sy1-b,sy1 cargo bench -p switchyard-tests --bench latency_side_by_side
//! # Against the Python routers:
//! RATE=5000 RUNS=3 PATHS=pt3,sy,py,quix cargo bench -p switchyard-tests --bench latency_side_by_side
//! ```

use std::collections::HashMap;
use std::time::Duration;
use switchyard_tests::e2e::{
    Load, PARTITIONS, Passthrough, PythonRouter, bench_python, env_u64, peak_rss_mib, percentiles,
    run_as_passthrough, side_by_side_run, start_passthrough, start_passthrough_with,
    start_python_router, start_switchyard, start_switchyard_binary,
};
use switchyard_tests::kafka::Broker;
use switchyard_tests::router_process::RouterProcess;

/// The passthrough runs in this executable: it gets the allocator the `switchyard` binary has
/// (mimalloc, also as librdkafka's `malloc`), as in the other benches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Width of a pooled histogram's bin, µs.
const BIN_US: i64 = 100;
/// Bins of a pooled histogram: up to 30 s, so that a router falling seconds behind (the
/// Python ones can) still shows its quantiles (later arrivals count in the last bin, which
/// moves no quantile below them).
const BINS: usize = 300_000;

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

/// A histogram of latencies, for pooling runs.
#[derive(Clone)]
struct Histogram(Vec<u32>);

impl Histogram {
    fn of(latencies: &HashMap<u64, i64>) -> Histogram {
        let mut bins = vec![0u32; BINS];
        for &us in latencies.values() {
            let bin = usize::try_from(us.max(0) / BIN_US).unwrap_or(BINS - 1);
            bins[bin.min(BINS - 1)] += 1;
        }
        Histogram(bins)
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The `q` quantile in ms (the middle of its bin).
    fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64 - 1.0) * q).round() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen > rank {
                return (i as f64 + 0.5) * BIN_US as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// A running path.
enum Running {
    Passthrough(std::process::Child),
    /// Switchyard or a Python router: stopped with SIGTERM.
    Router(RouterProcess),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Passthrough(c) => c.id(),
            Running::Router(r) => r.pid(),
        }
    }

    fn stop(self) {
        match self {
            Running::Passthrough(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::Router(mut r) => {
                let _ = r.sigterm();
                let _ = r.wait(Duration::from_secs(30));
            }
        }
    }
}

/// The bench's settings.
struct Settings {
    rate: u64,
    secs: u64,
    warmup: u64,
    broker: String,
    chosen: Vec<String>,
    sy_extra: String,
}

/// The name and the output topics of a path.
fn path_of(path: &str) -> (&'static str, Vec<&'static str>) {
    match path {
        "pt" => ("passthrough (two hops, no WASM)", vec!["pt-out"]),
        "sy1" => (
            "switchyard + route plugin (two hops, 1 output topic)",
            vec!["sy1-standard", "sy1-dlq"],
        ),
        "sy" => (
            "switchyard + route plugin (two hops, 3 route topics)",
            vec!["sy-standard", "sy-urgent", "sy-errors", "sy-dlq"],
        ),
        "pt3" => (
            "passthrough, routed natively to 3 topics (two hops, no WASM)",
            vec!["pt3-standard", "pt3-urgent", "pt3-errors", "pt3-dlq"],
        ),
        "sy1-b" => (
            "switchyard at BASELINE_BIN + route plugin (two hops, 1 output topic)",
            vec!["sy1b-standard", "sy1b-dlq"],
        ),
        "py" => (
            "Python loop on confluent-kafka (two hops, 3 route topics)",
            vec!["py-standard", "py-urgent", "py-errors", "py-dlq"],
        ),
        "quix" => (
            "Quix Streams app (two hops, 3 route topics)",
            vec!["quix-standard", "quix-urgent", "quix-errors", "quix-dlq"],
        ),
        other => panic!("PATHS takes pt, pt3, sy1, sy, sy1-b, py, quix; not {other:?}"),
    }
}

/// The floor each path is compared with: the routed passthrough for the paths writing three
/// route topics (`sy`, `py`, `quix`) when it runs, else the plain one; `None` for the floors
/// themselves (and without a floor).
fn base_of(chosen: &[String], path: &str) -> Option<usize> {
    let index = |name: &str| chosen.iter().position(|p| p == name).map(|i| i + 1);
    match path {
        "pt" | "pt3" => None,
        "sy" | "py" | "quix" => index("pt3").or_else(|| index("pt")),
        _ => index("pt"),
    }
}

/// What one run measured, per path (index 0 is the one hop).
struct RunResult {
    rows: Vec<String>,
    pairs: Vec<String>,
    histograms: Vec<Histogram>,
    /// Per path: its p99 minus its floor's ([`base_of`]), ms (None for the one hop and the
    /// floors).
    p99_minus_base: Vec<Option<f64>>,
    /// Per path: what it added to each event's one hop, µs (empty for the one hop itself).
    added: Vec<Vec<i64>>,
    header: String,
}

fn one_run(s: &Settings, paths: &[(&str, Vec<&str>)]) -> RunResult {
    let broker = match s.broker.as_str() {
        "tansu" => Broker::tansu().expect("tansu starts"),
        "mock" => Broker::mock(1).expect("the mock cluster starts"),
        other => panic!("BROKER takes tansu or mock, not {other:?}"),
    };
    let b = broker.bootstrap().to_owned();
    let mut topics: Vec<String> = vec!["in".into(), "pt-out".into()];
    for prefix in ["sy", "sy1", "sy1b", "pt3", "py", "quix"] {
        for suffix in ["standard", "urgent", "errors", "dlq"] {
            topics.push(format!("{prefix}-{suffix}"));
        }
    }
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
    broker.create_topics(&specs).expect("topics");
    let python = |kind, prefix: &str| {
        Running::Router(
            start_python_router(kind, &b, "in", prefix)
                .unwrap_or_else(|e| panic!("{prefix}: {e:#}")),
        )
    };
    let running: Vec<Running> = s
        .chosen
        .iter()
        .map(|path| match path.as_str() {
            "pt" => Running::Passthrough(start_passthrough(&b, "in", "pt-out")),
            "pt3" => {
                Running::Passthrough(start_passthrough_with(&b, "in", "pt3", Passthrough::Routed))
            }
            "sy1" => Running::Router(start_switchyard(&b, "in", "sy1", true, &s.sy_extra)),
            "sy1-b" => Running::Router(start_switchyard_binary(
                std::path::Path::new(
                    &std::env::var("BASELINE_BIN").expect("sy1-b needs BASELINE_BIN"),
                ),
                &b,
                "in",
                "sy1b",
                true,
                &s.sy_extra,
            )),
            "py" => python(PythonRouter::Loop, "py"),
            "quix" => python(PythonRouter::Quix, "quix"),
            _ => Running::Router(start_switchyard(&b, "in", "sy", false, &s.sy_extra)),
        })
        .collect();
    // Group joins and producer start-up before anything is written; the warm-up then covers
    // the first records' one-time costs.
    std::thread::sleep(Duration::from_secs(3));

    let mut pids: Vec<u32> = running.iter().map(Running::pid).collect();
    pids.extend(broker.pid());
    let load = Load {
        rate: s.rate,
        warmup: s.warmup,
        secs: s.secs,
    };
    let run = side_by_side_run(&b, "in", paths, &pids, load);
    let rss: Vec<f64> = running.iter().map(|r| peak_rss_mib(r.pid())).collect();
    for r in running {
        r.stop();
    }

    let cpu = |i: usize| {
        run.cpu_seconds.get(i).map_or("-".to_string(), |c| {
            format!("{:.0}%", 100.0 * c / run.window_s)
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
    let mut pairs = Vec::new();
    let mut p99_minus_base = vec![None; paths.len()];
    for (i, path) in s.chosen.iter().enumerate().map(|(i, p)| (i + 1, p)) {
        let Some(base) = base_of(&s.chosen, path) else {
            continue;
        };
        let (d50, d99, d999, n) = paired(&run.latencies[i], &run.latencies[base]);
        let d = quantiles[i].1 - quantiles[base].1;
        p99_minus_base[i] = Some(d);
        pairs.push(format!(
            "| {} | {} | {:+.1} | {d:+.1} | {d50:+.1} | {d99:+.1} | {d999:+.1} | {n} |",
            paths[i].0,
            paths[base].0,
            quantiles[i].0 - quantiles[base].0,
        ));
    }
    let added = (0..paths.len())
        .map(|i| match i {
            0 => Vec::new(),
            _ => run.latencies[i]
                .iter()
                .filter_map(|(id, l)| run.latencies[0].get(id).map(|hop| l - hop))
                .collect(),
        })
        .collect();
    let broker_cpu = if broker.pid().is_some() {
        format!("; broker CPU {}", cpu(pids.len() - 1))
    } else {
        String::new()
    };
    RunResult {
        rows,
        pairs,
        histograms: run.latencies.iter().map(Histogram::of).collect(),
        p99_minus_base,
        added,
        header: format!("{} events created in the window{broker_cpu}", run.created),
    }
}

/// What each router adds to the one hop per event (`added`, µs, per path as in `paths`), and
/// with `sy` and a Python router, Switchyard's share of what that router adds (the target: at
/// most a tenth of the Python loop's).
fn added_tables(s: &Settings, paths: &[(&str, Vec<&str>)], added: &[Vec<i64>]) -> String {
    let quantiles: Vec<(f64, f64, f64)> = added.iter().map(|a| percentiles(a.clone())).collect();
    let rows: Vec<String> = (1..paths.len())
        .map(|i| {
            let (p50, p99, p999) = quantiles[i];
            format!(
                "| {} | {p50:+.1} | {p99:+.1} | {p999:+.1} | {} |",
                paths[i].0,
                added[i].len()
            )
        })
        .collect();
    let mut text = format!(
        "added to the one hop per event (the path's latency minus the same event's one hop), \
         ms:\n\n\
         | path | p50 | p99 | p999 | events in both |\n|---|---:|---:|---:|---:|\n{}\n\n",
        rows.join("\n")
    );
    let index = |name: &str| s.chosen.iter().position(|p| p == name).map(|i| i + 1);
    if let Some(sy) = index("sy") {
        let mut shares = Vec::new();
        for (name, target) in [("py", Some(0.1)), ("quix", None)] {
            let Some(other) = index(name) else { continue };
            let share = |q: fn(&(f64, f64, f64)) -> f64| {
                let (a, b) = (q(&quantiles[sy]), q(&quantiles[other]));
                let verdict = match target {
                    Some(t) if a <= t * b => " (met)",
                    Some(_) => " (not met)",
                    None => "",
                };
                format!("{:.0}%{verdict}", 100.0 * a / b)
            };
            shares.push(format!(
                "| {} | {} | {} | {} |",
                paths[other].0,
                share(|q| q.0),
                share(|q| q.1),
                share(|q| q.2),
            ));
        }
        if !shares.is_empty() {
            text.push_str(&format!(
                "what switchyard (`sy`) adds to the one hop, as a share of what each Python router \
                 adds (target: at most 10% of the Python loop's):\n\n\
                 | against | at p50 | at p99 | at p999 |\n|---|---:|---:|---:|\n{}\n\n",
                shares.join("\n")
            ));
        }
    }
    text
}

/// xorshift64*: a seeded generator for the resampling (no dependency for one loop).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The pooled p99 difference `path` - `base` over `runs` (indices into `results`), ms.
fn pooled_p99_difference(results: &[RunResult], runs: &[usize], path: usize, base: usize) -> f64 {
    let mut a = Histogram(vec![0; BINS]);
    let mut b = Histogram(vec![0; BINS]);
    for &r in runs {
        a.add(&results[r].histograms[path]);
        b.add(&results[r].histograms[base]);
    }
    a.quantile(0.99) - b.quantile(0.99)
}

fn main() {
    if run_as_passthrough() {
        return;
    }
    let s = Settings {
        rate: env_u64("RATE", 10_000),
        secs: env_u64("SECS", 30),
        warmup: env_u64("WARMUP_S", 5),
        broker: std::env::var("BROKER").unwrap_or_else(|_| "tansu".into()),
        chosen: std::env::var("PATHS")
            .unwrap_or_else(|_| "pt,sy1".into())
            .split(',')
            .map(|p| p.trim().to_owned())
            .collect(),
        // Extra lines for the routers' pipeline table, for experiments.
        sy_extra: std::env::var("SY_EXTRA")
            .unwrap_or_default()
            .replace("\\n", "\n"),
    };
    if s.chosen.iter().any(|p| PythonRouter::of_path(p).is_some()) {
        // Before any run: a missing Python or venv stops the bench here, not mid-run.
        if let Err(e) = bench_python() {
            panic!("{e:#}");
        }
    }
    let runs = env_u64("RUNS", 1).max(1) as usize;
    let mut paths: Vec<(&str, Vec<&str>)> = vec![("one hop (producer -> consumer)", vec!["in"])];
    paths.extend(s.chosen.iter().map(|p| path_of(p)));

    let mut results = Vec::with_capacity(runs);
    let mut report = String::new();
    for r in 1..=runs {
        eprintln!(
            "run {r} of {runs}, {}: {:?} at once, {}/s, {} s warm-up + {} s ...",
            s.broker, s.chosen, s.rate, s.warmup, s.secs
        );
        let result = one_run(&s, &paths);
        let text = format!(
            "run {r}: {}: {} at once on the same input, {}/s, {} s measured after {} s, \
             {PARTITIONS} partitions; {}\n\n\
             | path | p50 ms | p99 ms | p999 ms | events measured | router CPU (of one core) | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|\n{}\n\n\
             against the passthrough (target: p99 at most +2 ms), ms:\n\n\
             | path | against | p50 - its p50 | p99 - its p99 | per-event difference p50 | p99 | p999 | events in both |\n\
             |---|---|---:|---:|---:|---:|---:|---:|\n{}\n\n{}",
            s.broker,
            s.chosen.join(", "),
            s.rate,
            s.secs,
            s.warmup,
            result.header,
            result.rows.join("\n"),
            result.pairs.join("\n"),
            added_tables(&s, &paths, &result.added),
        );
        eprint!("{text}");
        report.push_str(&text);
        results.push(result);
    }

    if runs > 1 {
        let all: Vec<usize> = (0..runs).collect();
        let mut rows = Vec::new();
        for (i, (name, _)) in paths.iter().enumerate() {
            let mut pooled = Histogram(vec![0; BINS]);
            for r in &results {
                pooled.add(&r.histograms[i]);
            }
            rows.push(format!(
                "| {name} | {:.1} | {:.1} | {:.1} |",
                pooled.quantile(0.5),
                pooled.quantile(0.99),
                pooled.quantile(0.999)
            ));
        }
        let mut pairs = Vec::new();
        for (i, path) in s.chosen.iter().enumerate().map(|(i, p)| (i + 1, p)) {
            if let Some(base) = base_of(&s.chosen, path) {
                let name = paths[i].0;
                let per_run: Vec<f64> =
                    results.iter().filter_map(|r| r.p99_minus_base[i]).collect();
                let pooled = pooled_p99_difference(&results, &all, i, base);
                // Resample whole runs with replacement.
                let mut seed = 0x9e37_79b9_7f4a_7c15u64;
                let mut resampled: Vec<f64> = (0..1000)
                    .map(|_| {
                        let pick: Vec<usize> = (0..runs)
                            .map(|_| (next(&mut seed) % runs as u64) as usize)
                            .collect();
                        pooled_p99_difference(&results, &pick, i, base)
                    })
                    .collect();
                resampled.sort_by(f64::total_cmp);
                let at = |q: f64| resampled[((resampled.len() - 1) as f64 * q).round() as usize];
                let within = per_run.iter().filter(|&&d| d <= 2.0).count();
                pairs.push(format!(
                    "| {name} | {} | {pooled:+.1} | {:+.1} .. {:+.1} | {} | {within} of {} |",
                    paths[base].0,
                    at(0.025),
                    at(0.975),
                    per_run
                        .iter()
                        .map(|d| format!("{d:+.1}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    per_run.len(),
                ));
            }
        }
        let added: Vec<Vec<i64>> = (0..paths.len())
            .map(|i| {
                results
                    .iter()
                    .flat_map(|r| r.added[i].iter().copied())
                    .collect()
            })
            .collect();
        report.push_str(&format!(
            "pooled over {runs} runs:\n\n\
             | path | p50 ms | p99 ms | p999 ms |\n|---|---:|---:|---:|\n{}\n\n\
             | path | against | pooled p99 - its p99, ms | 95% interval (runs resampled) | per run | runs within +2 ms |\n\
             |---|---|---:|---:|---|---:|\n{}\n\n{}",
            rows.join("\n"),
            pairs.join("\n"),
            added_tables(&s, &paths, &added),
        ));
    }
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/latency_side_by_side.md"), &report);
}
