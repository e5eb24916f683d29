//! Enrichment tables: memory for a million rows, and the cost of one lookup, from the host and
//! from inside a plugin (a harness, not criterion: it reports percentiles of single lookups).
//!
//! 1. Writes a JSON Lines file of `ROWS` rows (default 1,000,000) with ~100-byte values, loads
//!    it as a table, and reports load time, the resident memory the table added (VmRSS before
//!    and after, with the file's text gone) and the peak during the load.
//! 2. Host side: `LOOKUPS` single lookups through the `Tables` trait, each timed.
//! 3. Plugin side: the `misbehave` plugin's `lookup-timing` command times `LOOKUPS` lookups
//!    one by one on the guest's monotonic clock, across the component boundary, and times
//!    the clock alone (two reads with nothing between) for the timing's own cost.
//!
//! Run: `cargo bench -p switchyard-tests --bench tables` (env `ROWS`, `LOOKUPS`).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;
use switchyard::config::TableConfig;
use switchyard::plugin::{
    ChainRunner, ChainSpec, Destination, HostServices, InputRecord, PluginCounters, Tables,
};
use switchyard::tables::TableSet;
use switchyard_tests::e2e::env_u64;
use switchyard_tests::status_kib;
use switchyard_tests::{engine, stage};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn main() {
    let rows = env_u64("ROWS", 1_000_000);
    let lookups = env_u64("LOOKUPS", 1_000_000);
    let dir = switchyard_tests::pipelines::scratch_dir("table-bench");
    let path = dir.join("users.jsonl");
    let mut value_bytes = 0u64;
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        for i in 0..rows {
            let segment = if i % 2 == 0 { "gold" } else { "basic" };
            let line = format!(
                "{{\"user_id\":\"user-{i:05}\",\"name\":\"User number {i}\",\"segment\":\"{segment}\",\"country\":\"NL\",\"since\":2021}}\n"
            );
            value_bytes += line.len() as u64 - 1;
            file.write_all(line.as_bytes()).expect("write");
        }
    }
    let file_mib = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    println!(
        "table file: {rows} rows, average value {:.0} bytes, {file_mib:.0} MiB",
        value_bytes as f64 / rows as f64
    );

    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let tables = TableSet::start(None, &[TableConfig::file("users", path.clone(), "user_id")])
        .expect("table loads");
    let load_s = started.elapsed().as_secs_f64();
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let described = tables.describe();
    println!(
        "load: {load_s:.2} s; rows {}; key+value bytes {:.0} MiB; RSS added {:.0} MiB (before {:.0}, after {:.0}, peak {:.0} MiB)",
        described[0]["rows"],
        described[0]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        mib(after - before),
        mib(before),
        mib(after),
        mib(peak)
    );

    // Host side.
    let mut times = Vec::with_capacity(lookups as usize);
    let mut found = 0u64;
    let mut key = String::new();
    for i in 0..lookups {
        key.clear();
        key.push_str(&format!("user-{:05}", (i * 7919) % rows));
        let started = Instant::now();
        let value = tables.lookup("users", key.as_bytes());
        times.push(started.elapsed().as_nanos() as u64);
        found += u64::from(std::hint::black_box(value).is_some());
    }
    times.sort_unstable();
    let at = |v: &[u64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "host lookup ({lookups}, {found} found): p50 {} ns, p99 {} ns, p999 {} ns, max {} ns",
        at(&times, 0.5),
        at(&times, 0.99),
        at(&times, 0.999),
        times.last().copied().unwrap_or(0)
    );

    // Plugin side.
    let services = HostServices {
        tables: Arc::new(tables),
        counters: Arc::new(PluginCounters::default()),
        states: Default::default(),
    };
    let mut limits_stage = stage("lookup", "misbehave", &[]);
    limits_stage.limits.time_per_record_ms = 60_000;
    let spec = ChainSpec::new("bench", vec!["out".into()], "out", vec![limits_stage])
        .expect("valid chain");
    let mut runner =
        ChainRunner::new(engine(), Arc::new(spec), services).expect("chain instantiates");
    let command = format!(
        r#"{{"do":"lookup-timing","table":"users","prefix":"user-","keys":{rows},"n":{lookups}}}"#
    );
    for round in 0..2 {
        let record = InputRecord {
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: Some(command.clone().into_bytes()),
            headers: Vec::new(),
        };
        let out = runner
            .process("bench", 0, vec![record])
            .expect("chain runs");
        let Some(Destination::Route { record, .. }) = out.into_iter().next().map(|d| d.destination)
        else {
            panic!("no output from the timing plugin");
        };
        let report: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default()).expect("JSON");
        println!(
            "plugin lookup, round {} ({} lookups, {} found): p50 {} ns, p99 {} ns, p999 {} ns, max {} ns; the clock alone: p50 {} ns, p99 {} ns",
            round + 1,
            report["n"],
            report["found"],
            report["ns"]["p50"],
            report["ns"]["p99"],
            report["ns"]["p999"],
            report["ns"]["max"],
            report["clock_ns"]["p50"],
            report["clock_ns"]["p99"]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
