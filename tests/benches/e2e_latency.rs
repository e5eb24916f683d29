//! End-to-end latency and throughput of Switchyard on a real Kafka-protocol broker (tansu),
//! against baselines measured in the same run on the same broker:
//!
//! - **one hop**: producer -> topic -> consumer, no router: the broker's own floor;
//! - **passthrough**: a plain Rust consume -> produce loop with Switchyard's client settings
//!   and no WebAssembly (this bench re-run as a child process): the floor for a router;
//! - **switchyard**: the `switchyard` binary with the `route` plugin.
//!
//! Latency: a load generator stamps each event with its creation time (µs since the epoch)
//! and produces at a fixed rate; a checker consumes the output and takes receive time minus
//! creation time. The first `WARMUP_S` seconds are discarded. Throughput: the same at an
//! offered rate of `MAX_RATE`/s; the delivered rate is what arrived from records created
//! in the measured window, divided by its length.
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench e2e_latency
//! RATE=10000 SECS=20 WARMUP_S=3 MAX_RATE=40000 cargo bench -p switchyard-tests --bench e2e_latency
//! # MAX_RATE (default 0: off) adds the saturation phase
//! ```

use std::time::Duration;
use switchyard_tests::e2e::{
    Load, PARTITIONS, Run, env_u64, latency_run, peak_rss_mib, percentiles, run_as_passthrough,
    start_passthrough, start_switchyard,
};
use switchyard_tests::kafka::Broker;

/// The passthrough runs in this executable: it gets the allocator the `switchyard` binary has
/// (mimalloc, also as librdkafka's `malloc`), as in the throughput bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if run_as_passthrough() {
        return;
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rate = env_u64("RATE", 10_000);
    let secs = env_u64("SECS", 20);
    let warmup = env_u64("WARMUP_S", 3);
    let max_rate = env_u64("MAX_RATE", 0);
    let load = Load { rate, warmup, secs };

    let broker = Broker::tansu().expect("tansu starts");
    let b = broker.bootstrap().to_owned();
    let mut topics: Vec<String> = vec![
        "hop".into(),
        "pt-in".into(),
        "pt-out".into(),
        // The saturation phase's (pt3, sy3). A topic missing here makes tansu time every
        // produce out: that, not tansu, is what hung this phase before.
        "pt3-in".into(),
        "pt3-out".into(),
        "sy-in".into(),
        "sy3-in".into(),
        "sy1-in".into(),
    ];
    for prefix in ["sy", "sy3", "sy1"] {
        for suffix in ["standard", "urgent", "errors", "dlq"] {
            topics.push(format!("{prefix}-{suffix}"));
        }
    }
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
    broker.create_topics(&specs).expect("topics");
    let sy_out = ["sy-standard", "sy-urgent", "sy-errors", "sy-dlq"];
    let sy3_out = ["sy3-standard", "sy3-urgent", "sy3-errors", "sy3-dlq"];

    eprintln!("one hop at {rate}/s ...");
    let hop = latency_run(&b, "hop", &["hop"], load);
    eprintln!(
        "  p50/p99/p999 ms: {:?}",
        percentiles(hop.latencies.clone())
    );

    eprintln!("passthrough at {rate}/s ...");
    let mut pt = start_passthrough(&b, "pt-in", "pt-out");
    std::thread::sleep(Duration::from_secs(2));
    let pt_run = latency_run(&b, "pt-in", &["pt-out"], load);
    let pt_rss = peak_rss_mib(pt.id());
    eprintln!(
        "  p50/p99/p999 ms: {:?}",
        percentiles(pt_run.latencies.clone())
    );
    let _ = pt.kill();
    let _ = pt.wait();

    eprintln!("switchyard at {rate}/s ...");
    let mut sy = start_switchyard(&b, "sy-in", "sy", false, "");
    std::thread::sleep(Duration::from_secs(2));
    let sy_run = latency_run(&b, "sy-in", &sy_out, load);
    let sy_rss = peak_rss_mib(sy.pid());
    eprintln!(
        "  p50/p99/p999 ms: {:?}",
        percentiles(sy_run.latencies.clone())
    );
    let _ = sy.sigterm();
    let _ = sy.wait(Duration::from_secs(30));

    // The same router writing one output topic: separates the cost of fanning out to more
    // topics (more, smaller produce batches; more partitions to fetch) from Switchyard's own.
    eprintln!("switchyard, one output topic, at {rate}/s ...");
    let mut sy1 = start_switchyard(&b, "sy1-in", "sy1", true, "");
    std::thread::sleep(Duration::from_secs(2));
    let sy1_run = latency_run(&b, "sy1-in", &["sy1-standard", "sy1-dlq"], load);
    let sy1_rss = peak_rss_mib(sy1.pid());
    eprintln!(
        "  p50/p99/p999 ms: {:?}",
        percentiles(sy1_run.latencies.clone())
    );
    let _ = sy1.sigterm();
    let _ = sy1.wait(Duration::from_secs(30));

    // Saturation (MAX_RATE > 0): the same at a higher offered rate.
    let saturation = (max_rate > 0).then(|| {
        eprintln!("saturation: offered {max_rate}/s ...");
        let max_load = Load {
            rate: max_rate,
            ..load
        };
        let mut pt3 = start_passthrough(&b, "pt3-in", "pt3-out");
        std::thread::sleep(Duration::from_secs(2));
        let pt_max = latency_run(&b, "pt3-in", &["pt3-out"], max_load);
        let _ = pt3.kill();
        let _ = pt3.wait();
        let mut sy3 = start_switchyard(&b, "sy3-in", "sy3", false, "");
        std::thread::sleep(Duration::from_secs(2));
        let sy_max = latency_run(&b, "sy3-in", &sy3_out, max_load);
        let sy3_rss = peak_rss_mib(sy3.pid());
        let _ = sy3.sigterm();
        let _ = sy3.wait(Duration::from_secs(30));
        // What the generator managed: if it is below the offered rate, it is the limit.
        let pt_gen = pt_max.sent as f64 / (warmup + secs) as f64;
        let sy_gen = sy_max.sent as f64 / (warmup + secs) as f64;
        let pt_tput = pt_max.latencies.len() as f64 / secs as f64;
        let sy_tput = sy_max.latencies.len() as f64 / secs as f64;
        let (pt50, pt99, _) = percentiles(pt_max.latencies);
        let (sy50, sy99, _) = percentiles(sy_max.latencies);
        format!(
            "saturation: offered {max_rate}/s for {secs} s\n\n\
             | path | generated records/s | delivered records/s | p50 ms | p99 ms | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|\n\
             | passthrough | {pt_gen:.0} | {pt_tput:.0} | {pt50:.1} | {pt99:.1} | - |\n\
             | switchyard | {sy_gen:.0} | {sy_tput:.0} | {sy50:.1} | {sy99:.1} | {sy3_rss:.0} |\n\n\
             switchyard / passthrough delivered: {:.0}% (target: at least 90%)\n",
            100.0 * sy_tput / pt_tput
        )
    });

    let row = |name: &str, run: &Run, rss: f64| {
        let measured = run.latencies.len();
        let (p50, p99, p999) = percentiles(run.latencies.clone());
        format!(
            "| {name} | {p50:.1} | {p99:.1} | {p999:.1} | {measured} | {} | {} |",
            run.sent,
            if rss.is_nan() {
                "-".to_string()
            } else {
                format!("{rss:.0}")
            }
        )
    };
    let (pt50, pt99, _) = percentiles(pt_run.latencies.clone());
    let (sy50, sy99, _) = percentiles(sy_run.latencies.clone());
    let (sy1_50, sy1_99, _) = percentiles(sy1_run.latencies.clone());
    let _ = &hop.arrivals;
    let _ = &pt_run.arrivals;
    let report = format!(
        "rate {rate}/s, {secs} s measured after {warmup} s warm-up, {PARTITIONS} partitions, tansu in memory\n\n\
         | path | p50 ms | p99 ms | p999 ms | records measured | records sent | peak RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n{}\n{}\n{}\n{}\n\n\
         switchyard p99 - passthrough p99: {:+.1} ms (target: at most +2 ms); with one output topic: {:+.1} ms; p50: {:+.1} ms and {:+.1} ms\n\n\
         {}",
        row("one hop (producer -> consumer)", &hop, f64::NAN),
        row("passthrough (two hops, no WASM)", &pt_run, pt_rss),
        row(
            "switchyard + route plugin (two hops, 3 route topics)",
            &sy_run,
            sy_rss
        ),
        row(
            "switchyard + route plugin (two hops, 1 output topic)",
            &sy1_run,
            sy1_rss
        ),
        sy99 - pt99,
        sy1_99 - pt99,
        sy50 - pt50,
        sy1_50 - pt50,
        saturation.unwrap_or_default(),
    );
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{target}/e2e_latency.md"), &report);
    drop(broker);
}
