//! Records per second on one core through the plugin runtime, at batch sizes 1, 16 and 256,
//! on realistic ~220-byte JSON events, next to the same plugin logic compiled natively with
//! no WebAssembly (the floor), all in the same run:
//!
//! - `noop/wasm`: a plugin that passes everything: the cost of the boundary alone, for
//!   records with a key and a value and no headers; `noop_unkeyed/wasm`: the same without keys.
//! - `route/wasm` vs `route/native`, `validate/wasm` vs `validate/native`.
//! - `validate/json-schema`: the built-in JSON Schema stage checking the same fields.
//! - `route/python`, `route/javascript`, `validate/python`, `validate/javascript`: the same
//!   plugins written in those languages, at batch 256; `javascript` is compiled ahead of time
//!   (weval), `javascript-interpreted` is the same source without it.
//!
//! - `route/<label>`, `validate/<label>`: any other components of `route` or `validate` given
//!   as `PLUGIN_BENCH_EXTRA=route:<label>=<path>,validate:<label>=<path>,...` (another build
//!   or version of a plugin, timed in the same run as the examples), at batch 256.
//!
//! Run: `cargo bench -p switchyard-tests --bench plugin_throughput`, then
//! `python3 tests/bench_report.py` to print the table for BENCHMARKS.md.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use switchyard::plugin::{
    ChainRunner, ChainSpec, HostServices, InputRecord, PluginModule, StageLimits, StageSpec,
};
use switchyard_plugin_sdk::{Batch, Config, Plugin, Record};
use switchyard_tests::{engine, event, stage};

/// The same allocator as the `switchyard` binary, so the host side costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const REQUIRED: &str = "event_id:string,user_id:string,event_type:string,timestamp:number";

fn wasm_runner(plugin: &str, config: &[(&str, &str)]) -> ChainRunner {
    one_stage_runner(stage(plugin, plugin, config))
}

/// A chain of one stage, with the routes the example plugins use.
fn one_stage_runner(stage: StageSpec) -> ChainRunner {
    let spec = ChainSpec::new(
        "bench",
        vec!["standard".into(), "urgent".into(), "errors".into()],
        "standard",
        vec![stage],
    )
    .expect("valid chain");
    ChainRunner::new(engine(), Arc::new(spec), HostServices::default()).expect("instantiates")
}

/// Times `runner` over a batch of `n` records (with keys if `keyed`), as `group/id/n`.
fn bench_runner(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    n: usize,
    keyed: bool,
    runner: &mut ChainRunner,
) {
    g.throughput(Throughput::Elements(n as u64));
    let records = host_records(n, keyed);
    g.bench_with_input(BenchmarkId::new(id, n), &n, |b, _| {
        b.iter_batched(
            || records.clone(),
            // The deliveries are dropped inside the timed region, as the router frees them once
            // produced: keeping them alive across iterations would time page faults of
            // ever-fresh memory instead of the runtime.
            |batch| drop(black_box(runner.process("events", 0, batch).expect("runs"))),
            BatchSize::SmallInput,
        )
    });
}

fn host_records(n: usize, keyed: bool) -> Vec<InputRecord> {
    (0..n)
        .map(|i| InputRecord {
            offset: i as i64,
            timestamp_ms: Some(1_700_000_000_000),
            key: keyed.then(|| format!("user-{:05}", i % 10_000).into_bytes()),
            value: Some(event(i as u64).into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

fn sdk_batch(n: usize) -> Batch {
    let records = (0..n)
        .map(|i| {
            Record::new()
                .with_offset(i as i64)
                .with_timestamp(1_700_000_000_000)
                .with_key(format!("user-{:05}", i % 10_000))
                .with_value(event(i as u64))
        })
        .collect();
    Batch::new("events", 0, records)
}

/// `keyed`: records carry a key as well as a value (the realistic case); without one, each
/// record crosses the boundary with one list, and so one guest allocation, fewer.
fn bench_wasm(c: &mut Criterion, group: &str, plugin: &str, config: &[(&str, &str)], keyed: bool) {
    let mut g = c.benchmark_group(group);
    let mut runner = wasm_runner(plugin, config);
    for n in BATCH_SIZES {
        bench_runner(&mut g, "wasm", n, keyed, &mut runner);
    }
    g.finish();
}

fn bench_native<P: Plugin>(c: &mut Criterion, group: &str, config: &[(&str, &str)]) {
    let mut g = c.benchmark_group(group);
    let mut plugin = P::init(&Config::from_pairs(config.iter().copied())).expect("init");
    for n in BATCH_SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let batch = sdk_batch(n);
        g.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| black_box(plugin.process_batch(black_box(&batch))))
        });
    }
    g.finish();
}

/// The same checks as `validate` with `REQUIRED`, as a JSON Schema for the built-in stage.
const EVENT_SCHEMA: &str = r#"{
    "type": "object",
    "required": ["event_id", "user_id", "event_type", "timestamp"],
    "properties": {
        "event_id": {"type": "string"},
        "user_id": {"type": "string"},
        "event_type": {"type": "string"},
        "timestamp": {"type": "number"}
    }
}"#;

/// The built-in `json-schema` stage (no WebAssembly) over the same events.
fn bench_schema(c: &mut Criterion) {
    let dir = switchyard_tests::pipelines::scratch_dir("schema-bench");
    let path = switchyard_tests::pipelines::write_file(&dir, "event.schema.json", EVENT_SCHEMA);
    let stage = StageSpec {
        name: "schema".into(),
        module: PluginModule::json_schema_file(&path).expect("schema compiles"),
        config: Vec::new(),
        limits: StageLimits::default(),
    };
    let mut runner = one_stage_runner(stage);
    let mut g = c.benchmark_group("validate");
    for n in BATCH_SIZES {
        bench_runner(&mut g, "json-schema", n, true, &mut runner);
    }
    g.finish();
}

/// `route` and `validate` written in Python and JavaScript, at batch 256 (their components are
/// built by `examples/plugins/<language>/build.sh` when missing), JavaScript with and without
/// ahead-of-time compilation; then the components of `PLUGIN_BENCH_EXTRA`.
fn bench_polyglot(c: &mut Criterion) {
    let extra = std::env::var("PLUGIN_BENCH_EXTRA").unwrap_or_default();
    for (plugin, config) in [
        ("route", &[][..]),
        ("validate", &[("required", REQUIRED)][..]),
    ] {
        let mut g = c.benchmark_group(plugin);
        let examples = ["python", "javascript", "javascript-interpreted"].map(|language| {
            (
                language,
                switchyard_tests::polyglot_plugin(language, plugin),
            )
        });
        let given = extra.split(',').filter_map(|item| {
            let (label, path) = item
                .strip_prefix(plugin)?
                .strip_prefix(':')?
                .split_once('=')?;
            Some((label, std::path::PathBuf::from(path)))
        });
        for (language, path) in examples.into_iter().chain(given) {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("component {}: {e}", path.display()));
            let stage = StageSpec {
                name: plugin.into(),
                module: engine().load(&bytes).expect("loads"),
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                limits: StageLimits::default(),
            };
            bench_runner(&mut g, language, 256, true, &mut one_stage_runner(stage));
        }
        g.finish();
    }
}

fn plugins(c: &mut Criterion) {
    let size = event(1).len();
    eprintln!("event size: {size} bytes, e.g. {}", event(1));
    bench_wasm(c, "noop", "noop", &[], true);
    bench_wasm(c, "noop_unkeyed", "noop", &[], false);
    bench_wasm(c, "route", "route", &[], true);
    bench_native::<route::Route>(c, "route", &[]);
    bench_wasm(c, "validate", "validate", &[("required", REQUIRED)], true);
    bench_native::<validate::Validate>(c, "validate", &[("required", REQUIRED)]);
    bench_schema(c);
    bench_polyglot(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = plugins
}
criterion_main!(benches);
