//! What a hot reload costs, on tansu: end-to-end latency while plugins are uploaded every
//! `RELOAD_EVERY_MS` against a steady-state run of the same router in the same session, and
//! the time from upload to every worker switched.
//!
//! Two `switchyard` processes with the `route` plugin, each on its own topics, one after the
//! other at `RATE` records/s: the first is left alone; the second gets, from the end of the
//! warm-up to the end of the run, an upload every `RELOAD_EVERY_MS` alternating the `noop`
//! and `route` plugins through the admin API. Latency as in `e2e_latency` (producer stamp to
//! checker receipt, over every output topic).
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench reload_latency
//! RATE=10000 SECS=20 WARMUP_S=3 RELOAD_EVERY_MS=2000 cargo bench -p switchyard-tests --bench reload_latency
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchyard_tests::e2e::{Load, PARTITIONS, env_u64, latency_run, percentiles};
use switchyard_tests::kafka::Broker;
use switchyard_tests::pipelines::{pipeline_toml, scratch_dir, write_file};
use switchyard_tests::plugin_bytes;
use switchyard_tests::router_process::RouterProcess;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn outputs(prefix: &str) -> Vec<String> {
    ["standard", "urgent", "errors", "dlq"]
        .iter()
        .map(|s| format!("{prefix}-{s}"))
        .collect()
}

/// The admin token the benchmark's routers take.
const TOKEN: &str = "reload-latency-bench-token";

/// A router on `{prefix}-in` with its admin API on `port`.
fn start(bootstrap: &str, prefix: &str, port: u16) -> RouterProcess {
    let dir = scratch_dir(prefix);
    let o = outputs(prefix);
    let text = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntokens = {{ bench = \"{TOKEN}\" }}\n{}",
        pipeline_toml(
            prefix,
            &format!("{prefix}-in"),
            &[("standard", &o[0]), ("urgent", &o[1]), ("errors", &o[2])],
            &o[3],
            &[("route", "route", &[])],
            // tansu cannot resume a fetch inside a batch: never pause (see e2e_latency).
            "max_in_flight = 100000",
        )
    );
    let config = write_file(&dir, "switchyard.toml", &text);
    let path = config.to_str().expect("path").to_owned();
    RouterProcess::start(&["run", "--config", &path]).expect("switchyard starts")
}

struct Reload {
    /// When the upload was sent.
    started: Instant,
    /// Upload sent -> answer received (every worker switched), ms.
    client_ms: f64,
    /// The router's own figure for the same.
    switched_ms: f64,
}

/// Uploads alternately `noop` and `route` every `every` after `warmup`, until `stop`.
fn reloader(port: u16, warmup: Duration, every: Duration, stop: Arc<AtomicBool>) -> Vec<Reload> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let plugins = [plugin_bytes("noop"), plugin_bytes("route")];
    let url = format!("http://127.0.0.1:{port}/api/v1/pipelines/rl/stages/route/plugin");
    std::thread::sleep(warmup);
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        let started = Instant::now();
        let mut response = agent
            .put(&url)
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/wasm")
            .send(&plugins[out.len() % 2][..])
            .expect("upload");
        let client_ms = started.elapsed().as_secs_f64() * 1000.0;
        let text = response.body_mut().read_to_string().expect("answer");
        assert_eq!(response.status().as_u16(), 200, "{text}");
        let answer: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        out.push(Reload {
            started,
            client_ms,
            switched_ms: answer["switched_in_ms"].as_f64().unwrap_or(f64::NAN),
        });
    }
    out
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.get(v.len() / 2), v.last()) {
        (Some(m), Some(x)) => (*m, *x),
        _ => (f64::NAN, f64::NAN),
    }
}

fn main() {
    let rate = env_u64("RATE", 10_000);
    let secs = env_u64("SECS", 20);
    let warmup = env_u64("WARMUP_S", 3);
    let every = Duration::from_millis(env_u64("RELOAD_EVERY_MS", 2_000));
    let load = Load { rate, warmup, secs };

    let broker = Broker::tansu().expect("tansu starts");
    let b = broker.bootstrap().to_owned();
    let mut topics = Vec::new();
    for prefix in ["st", "rl"] {
        topics.push(format!("{prefix}-in"));
        topics.extend(outputs(prefix));
    }
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
    broker.create_topics(&specs).expect("topics");

    eprintln!("steady state at {rate}/s ...");
    let port = free_port();
    let mut router = start(&b, "st", port);
    std::thread::sleep(Duration::from_secs(2));
    let o = outputs("st");
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    let steady = latency_run(&b, "st-in", &refs, load);
    let _ = router.sigterm();
    let _ = router.wait(Duration::from_secs(30));

    eprintln!("reloading every {every:?} at {rate}/s ...");
    let port = free_port();
    let mut router = start(&b, "rl", port);
    std::thread::sleep(Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let reloads = {
        let stop = stop.clone();
        let warmup = Duration::from_secs(warmup);
        std::thread::spawn(move || reloader(port, warmup, every, stop))
    };
    let o = outputs("rl");
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    let during = {
        // Stop uploading when the generator stops.
        let stop = stop.clone();
        let run = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_secs(warmup + secs));
                stop.store(true, Ordering::Release);
            });
            latency_run(&b, "rl-in", &refs, load)
        });
        stop.store(true, Ordering::Release);
        run
    };
    let reloads = reloads.join().expect("reloader");
    let _ = router.sigterm();
    let _ = router.wait(Duration::from_secs(30));

    let (s50, s99, s999) = percentiles(steady.latencies.clone());
    let (d50, d99, d999) = percentiles(during.latencies.clone());
    // Within the reloading run: records created while an upload was in progress or in the
    // second after it, against the rest of the same run (same broker, same minute, so the
    // broker's own swings cancel out).
    let window = Duration::from_millis(1_000);
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for (latency, arrived) in during.latencies.iter().zip(&during.arrivals) {
        let created = arrived
            .checked_sub(Duration::from_micros((*latency).max(0) as u64))
            .unwrap_or(*arrived);
        let in_window = reloads.iter().any(|r| {
            created >= r.started
                && created <= r.started + Duration::from_secs_f64(r.client_ms / 1000.0) + window
        });
        if in_window {
            near.push(*latency);
        } else {
            far.push(*latency);
        }
    }
    let (near_count, far_count) = (near.len(), far.len());
    let (n50, n99, n999) = percentiles(near);
    let (f50, f99, f999) = percentiles(far);
    let (client_med, client_max) = median_max(reloads.iter().map(|r| r.client_ms).collect());
    let (switch_med, switch_max) = median_max(reloads.iter().map(|r| r.switched_ms).collect());
    let report = format!(
        "rate {rate}/s, {secs} s measured after {warmup} s warm-up, {PARTITIONS} partitions, tansu in memory, \
         {} reloads (one every {} ms, alternating noop and route)\n\n\
         | run | p50 ms | p99 ms | p999 ms | records measured | records sent |\n|---|---:|---:|---:|---:|---:|\n\
         | steady state (separate router) | {s50:.1} | {s99:.1} | {s999:.1} | {} | {} |\n\
         | reloading, whole run | {d50:.1} | {d99:.1} | {d999:.1} | {} | {} |\n\
         | reloading run: created during an upload or the second after | {n50:.1} | {n99:.1} | {n999:.1} | {near_count} | - |\n\
         | reloading run: the rest | {f50:.1} | {f99:.1} | {f999:.1} | {far_count} | - |\n\n\
         p99 near reloads - p99 of the rest, same run: {:+.1} ms (target: under +50 ms); \
         whole reloading run - steady run: {:+.1} ms\n\n\
         upload -> every worker switched: median {client_med:.1} ms, max {client_max:.1} ms as the client saw it \
         (the router's own figure: median {switch_med:.1} ms, max {switch_max:.1} ms)\n",
        reloads.len(),
        every.as_millis(),
        steady.latencies.len(),
        steady.sent,
        during.latencies.len(),
        during.sent,
        n99 - f99,
        d99 - s99,
    );
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/reload_latency.md"), &report);
    drop(broker);
}
