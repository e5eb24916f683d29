//! The pieces of the end-to-end benchmarks (tests/benches/e2e_latency.rs,
//! tests/benches/reload_latency.rs): a load generator that stamps each event with its
//! creation time, a checker that takes receive time minus creation time, percentiles, and
//! a process's peak RSS.

use crate::event;
use crate::pipelines::{ADMIN_EPHEMERAL, pipeline_toml, scratch_dir, write_file};
use crate::router_process::RouterProcess;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Partitions of every bench topic.
pub const PARTITIONS: i32 = 4;

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall-clock time in µs since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `event(i)` with its creation time.
pub fn stamped(i: u64) -> String {
    let e = event(i);
    format!("{},\"sent_us\":{}}}", &e[..e.len() - 1], now_us())
}

/// The creation stamp of a `stamped` event.
pub fn sent_us(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let at = text.rfind("\"sent_us\":")? + "\"sent_us\":".len();
    text[at..].trim_end_matches('}').parse().ok()
}

/// Switchyard's producer settings (host/src/kafka.rs).
pub fn producer(bootstrap: &str) -> ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("partitioner", "murmur2_random")
        .set("log_level", "3")
        .create()
        .expect("producer")
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(
    p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) {
    send_record(p, BaseRecord::to(topic).key(key).payload(value));
}

/// Sends a record, waiting while the producer's queue is full.
pub fn send_record(
    p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) {
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// Produces stamped events at `rate`/s for `secs` seconds.
pub fn generate(bootstrap: &str, topic: &str, rate: u64, secs: u64) -> u64 {
    let p = producer(bootstrap);
    let start = Instant::now();
    let mut sent = 0u64;
    let end = Duration::from_secs(secs);
    while start.elapsed() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        // Behind schedule (the broker cannot take the rate): send what is due, but stop on time.
        while sent < due && start.elapsed() < end {
            let key = format!("user-{:05}", sent % 10_000);
            send(&p, topic, key.as_bytes(), stamped(sent).as_bytes());
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = p.flush(Duration::from_secs(30));
    sent
}

/// Reads `topics` from their end (records written from now on) until `stop`; returns the
/// latency (µs) of each record created after `measure_from_us`, and the time of each arrival.
pub fn check(
    bootstrap: &str,
    topics: &[&str],
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    measure_from_us: Arc<std::sync::atomic::AtomicI64>,
) -> (Vec<i64>, Vec<Instant>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-checker")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("log_level", "3")
        .create()
        .expect("checker");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(t, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    ready.store(true, Ordering::Release);
    let mut latencies = Vec::new();
    let mut arrivals = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let now = now_us();
            arrivals.push(Instant::now());
            if let Some(sent) = m.payload().and_then(sent_us)
                && sent >= measure_from_us.load(Ordering::Acquire)
            {
                latencies.push(now - sent);
            }
        }
    }
    (latencies, arrivals)
}

pub struct Run {
    /// Latency of each measured record, µs.
    pub latencies: Vec<i64>,
    /// When each record arrived.
    pub arrivals: Vec<Instant>,
    /// Records the generator sent.
    pub sent: u64,
}

/// Checker on `outputs`, generator on `input`: one latency run.
pub fn latency_run(
    bootstrap: &str,
    input: &str,
    outputs: &[&str],
    rate: u64,
    warmup: u64,
    secs: u64,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let from = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let checker = {
        let (b, stop, ready, from) = (
            bootstrap.to_owned(),
            stop.clone(),
            ready.clone(),
            from.clone(),
        );
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
            check(&b, &refs, stop, ready, from)
        })
    };
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let generator = {
        let (b, input) = (bootstrap.to_owned(), input.to_owned());
        std::thread::spawn(move || generate(&b, &input, rate, warmup + secs))
    };
    std::thread::sleep(Duration::from_secs(warmup));
    from.store(now_us(), Ordering::Release);
    let sent = generator.join().expect("generator");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    let (latencies, arrivals) = checker.join().expect("checker");
    Run {
        latencies,
        arrivals,
        sent,
    }
}

/// The `p` quantile of sorted µs values, in ms.
pub fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// (p50, p99, p999) in ms.
pub fn percentiles(mut v: Vec<i64>) -> (f64, f64, f64) {
    v.sort_unstable();
    (
        percentile(&v, 0.50),
        percentile(&v, 0.99),
        percentile(&v, 0.999),
    )
}

/// A process's peak resident memory (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The environment variable that makes a bench executable run the passthrough instead.
const PASSTHROUGH_ENV: &str = "E2E_PASSTHROUGH";

/// The passthrough: a plain consume -> produce loop with Switchyard's client settings and no
/// WebAssembly, the floor for any router. With `headers`, every output also carries two
/// headers the size of Switchyard's provenance headers. Runs forever.
/// What the passthrough does besides consuming and producing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Nothing: the floor for any router.
    Plain,
    /// Adds Switchyard-sized provenance headers to every output.
    Headers,
    /// Runs every record through the `route` plugin (WebAssembly, batches of up to
    /// [`PASSTHROUGH_BATCH`] records, as Switchyard's workers do) and writes whatever comes out
    /// to the one output topic: the bare loop's Kafka work plus exactly one plugin call per
    /// record, on one thread, with no hand-off, tracking or headers.
    Wasm,
}

impl Passthrough {
    fn as_str(self) -> &'static str {
        match self {
            Passthrough::Plain => "plain",
            Passthrough::Headers => "headers",
            Passthrough::Wasm => "wasm",
        }
    }
}

/// Most records the WASM passthrough gives the plugin at once (Switchyard's default
/// `batch_size`).
pub const PASSTHROUGH_BATCH: usize = 256;

fn passthrough(bootstrap: &str, input: &str, output: &str, kind: Passthrough) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("passthrough-{input}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", "10000")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let p = producer(bootstrap);
    if kind == Passthrough::Wasm {
        return wasm_passthrough(&consumer, &p, output);
    }
    let versions = format!("route={}", "0".repeat(64));
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let mut record = BaseRecord::<[u8], [u8]>::to(output)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            if kind == Passthrough::Headers {
                record = record.headers(
                    rdkafka::message::OwnedHeaders::new_with_capacity(2)
                        .insert(rdkafka::message::Header {
                            key: "switchyard-pipeline",
                            value: Some(input),
                        })
                        .insert(rdkafka::message::Header {
                            key: "switchyard-versions",
                            value: Some(&versions),
                        }),
                );
            }
            send_record(&p, record);
        }
    }
}

/// [`Passthrough::Wasm`]: takes what the consumer has ready (up to [`PASSTHROUGH_BATCH`]),
/// runs it through the `route` plugin, writes every output to `output`.
fn wasm_passthrough(
    consumer: &BaseConsumer,
    p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    output: &str,
) {
    use switchyard::plugin::{ChainRunner, ChainSpec, Destination, HostServices, InputRecord};
    let spec = ChainSpec::new(
        "passthrough",
        vec!["standard".into(), "urgent".into(), "errors".into()],
        "standard",
        vec![crate::stage("route", "route", &[])],
    )
    .expect("valid chain");
    let mut runner = ChainRunner::new(crate::engine(), Arc::new(spec), HostServices::default())
        .expect("the route plugin instantiates");
    let mut batch: Vec<InputRecord> = Vec::with_capacity(PASSTHROUGH_BATCH);
    let mut partition = 0;
    loop {
        let mut wait = Duration::from_millis(20);
        while batch.len() < PASSTHROUGH_BATCH {
            match consumer.poll(wait) {
                Some(Ok(m)) => {
                    partition = m.partition();
                    batch.push(InputRecord {
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: Vec::new(),
                    });
                    wait = Duration::ZERO;
                }
                _ => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let deliveries = runner
            .process("passthrough", partition, std::mem::take(&mut batch))
            .expect("the route plugin runs");
        for delivery in deliveries {
            let record = match delivery.destination {
                Destination::Route { record, .. } => record,
                Destination::DeadLetter(dead) => dead.record,
            };
            let mut out = BaseRecord::<[u8], [u8]>::to(output);
            if let Some(key) = &record.key {
                out = out.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                out = out.payload(value.as_slice());
            }
            send_record(p, out);
        }
    }
}

/// Call first in a bench's `main`: true if this process was started by [`start_passthrough`]
/// (it then ran the passthrough, and the bench must return).
pub fn run_as_passthrough() -> bool {
    let Ok(spec) = std::env::var(PASSTHROUGH_ENV) else {
        return false;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let kind = match parts.get(3).copied() {
        Some("headers") => Passthrough::Headers,
        Some("wasm") => Passthrough::Wasm,
        _ => Passthrough::Plain,
    };
    passthrough(parts[0], parts[1], parts[2], kind);
    true
}

/// The passthrough in its own process (this executable again), killed with its parent.
pub fn start_passthrough(bootstrap: &str, input: &str, output: &str) -> Child {
    start_passthrough_with(bootstrap, input, output, Passthrough::Plain)
}

/// [`start_passthrough`], of the given kind.
pub fn start_passthrough_with(
    bootstrap: &str,
    input: &str,
    output: &str,
    kind: Passthrough,
) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    // SAFETY: prctl in the forked child before exec only sets a flag of that child: the
    // passthrough dies with the bench.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .env(
            PASSTHROUGH_ENV,
            format!("{bootstrap},{input},{output},{}", kind.as_str()),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("passthrough starts")
}

/// A router with the route plugin reading `input` and writing `{prefix}-standard`,
/// `-urgent`, `-errors` and `-dlq`; with `one_topic`, every route writes to
/// `{prefix}-standard` (the same plugin work, but one output topic like the passthrough).
/// `extra` is added to the pipeline table.
pub fn start_switchyard(
    bootstrap: &str,
    input: &str,
    prefix: &str,
    one_topic: bool,
    extra: &str,
) -> RouterProcess {
    let binary = crate::router_process::switchyard_binary().expect("switchyard builds");
    start_switchyard_binary(&binary, bootstrap, input, prefix, one_topic, extra)
}

/// [`start_switchyard`] with another build of switchyard (`binary`).
pub fn start_switchyard_binary(
    binary: &std::path::Path,
    bootstrap: &str,
    input: &str,
    prefix: &str,
    one_topic: bool,
    extra: &str,
) -> RouterProcess {
    let dir = scratch_dir(prefix);
    let topic = |route: &str| {
        if one_topic {
            format!("{prefix}-standard")
        } else {
            format!("{prefix}-{route}")
        }
    };
    // Extra `[kafka]` lines for experiments, e.g. SY_KAFKA='[kafka.producer]\n"linger.ms" = "5"'.
    let kafka_extra = std::env::var("SY_KAFKA")
        .unwrap_or_default()
        .replace("\\n", "\n");
    let text = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\n{kafka_extra}\n{ADMIN_EPHEMERAL}\n{}",
        pipeline_toml(
            prefix,
            input,
            &[
                ("standard", &topic("standard")),
                ("urgent", &topic("urgent")),
                ("errors", &topic("errors")),
            ],
            &format!("{prefix}-dlq"),
            &[("route", "route", &[])],
            // tansu cannot resume a fetch inside a batch, so the router must never pause:
            // far fewer than this are ever in flight (the ring's lanes and librdkafka's
            // queue bound them first, and those block instead of pausing).
            &format!("max_in_flight = 1000000\n{extra}"),
        )
    );
    let config = write_file(&dir, "switchyard.toml", &text);
    let path = config.to_str().expect("path").to_owned();
    RouterProcess::start_binary(binary, &["run", "--config", &path]).expect("switchyard starts")
}
