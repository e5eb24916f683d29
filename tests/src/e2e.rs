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
use std::collections::HashMap;
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
    stamped_at(i, now_us())
}

/// `event(i)` created at `sent_us` (µs since the epoch).
pub fn stamped_at(i: u64, sent_us: i64) -> String {
    let e = event(i);
    format!("{},\"sent_us\":{sent_us}}}", &e[..e.len() - 1])
}

/// The `i` of an `event(i)` (its `event_id`).
pub fn event_number(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let at = text.find("\"event_id\":\"evt-")? + "\"event_id\":\"evt-".len();
    text.get(at..at + 12)?.parse().ok()
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

/// Produces stamped events to `topic` at `rate`/s for `secs` seconds: (sent, of which created
/// at or after `from`, µs since the epoch).
fn generate(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    secs: u64,
    from: &std::sync::atomic::AtomicI64,
) -> (u64, u64) {
    let p = producer(bootstrap);
    let start = Instant::now();
    let (mut sent, mut created) = (0u64, 0u64);
    let end = Duration::from_secs(secs);
    while start.elapsed() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        // Behind schedule (the broker cannot take the rate): send what is due, but stop on time.
        while sent < due && start.elapsed() < end {
            let at = now_us();
            if at >= from.load(Ordering::Acquire) {
                created += 1;
            }
            let key = format!("user-{:05}", sent % 10_000);
            send(&p, topic, key.as_bytes(), stamped_at(sent, at).as_bytes());
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = p.flush(Duration::from_secs(30));
    (sent, created)
}

/// The checker's consumer: every partition of `topics` from the beginning (the bench's topics
/// are new, so nothing written after the start is missed).
fn checker_on<'a>(bootstrap: &str, topics: impl IntoIterator<Item = &'a str>) -> BaseConsumer {
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
    consumer
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
    let consumer = checker_on(bootstrap, topics.iter().copied());
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

/// The shared state of a checker thread: set `ready` once it reads; stop when `stop` is set;
/// measure the records created at or after `from` (µs since the epoch).
struct CheckerSignals {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    from: Arc<std::sync::atomic::AtomicI64>,
}

/// What [`drive`] measured besides the checker's result.
struct Driven<T> {
    checked: T,
    /// Records sent, and of those created in the measured window.
    sent: u64,
    created: u64,
    /// CPU seconds of each pid over the window, and the window's length in seconds.
    cpu_seconds: Vec<f64>,
    window_s: f64,
}

/// The load of a latency run: the generator writes `rate` events a second for `warmup + secs`
/// seconds, and the events created in the first `warmup` seconds are not measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Events a second.
    pub rate: u64,
    /// Seconds of warm-up, not measured.
    pub warmup: u64,
    /// Seconds measured.
    pub secs: u64,
}

/// One latency run: starts `checker` and waits until it reads, then the generator on `input`
/// with `load`. After the generator, `tail` for the last records to arrive, then the checker
/// is stopped. The CPU time of `pids` is taken over the measured window.
fn drive<T: Send + 'static>(
    bootstrap: &str,
    input: &str,
    Load { rate, warmup, secs }: Load,
    tail: Duration,
    pids: &[u32],
    checker: impl FnOnce(CheckerSignals) -> T + Send + 'static,
) -> Driven<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let from = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let checker = {
        let signals = CheckerSignals {
            stop: stop.clone(),
            ready: ready.clone(),
            from: from.clone(),
        };
        std::thread::spawn(move || checker(signals))
    };
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let generator = {
        let (b, input, from) = (bootstrap.to_owned(), input.to_owned(), from.clone());
        std::thread::spawn(move || generate(&b, &input, rate, warmup + secs, &from))
    };
    std::thread::sleep(Duration::from_secs(warmup));
    let cpu_at = |pids: &[u32]| pids.iter().map(|&p| cpu_seconds(p)).collect::<Vec<f64>>();
    let window_start = (Instant::now(), cpu_at(pids));
    from.store(now_us(), Ordering::Release);
    let (sent, created) = generator.join().expect("generator");
    let window_s = window_start.0.elapsed().as_secs_f64();
    let cpu_seconds = cpu_at(pids)
        .iter()
        .zip(&window_start.1)
        .map(|(end, start)| end - start)
        .collect();
    std::thread::sleep(tail);
    stop.store(true, Ordering::Release);
    Driven {
        checked: checker.join().expect("checker"),
        sent,
        created,
        cpu_seconds,
        window_s,
    }
}

/// Checker on `outputs`, generator on `input`: one latency run.
pub fn latency_run(bootstrap: &str, input: &str, outputs: &[&str], load: Load) -> Run {
    let b = bootstrap.to_owned();
    let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
    let tail = Duration::from_secs(3);
    let run = drive(bootstrap, input, load, tail, &[], move |signals| {
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        check(&b, &refs, signals.stop, signals.ready, signals.from)
    });
    let (latencies, arrivals) = run.checked;
    Run {
        latencies,
        arrivals,
        sent: run.sent,
    }
}

/// What a side-by-side run measured.
pub struct SideBySide {
    /// Per path (in the order given), each measured event's latency in µs by its number;
    /// the first arrival counts if an event arrives twice.
    pub latencies: Vec<HashMap<u64, i64>>,
    /// Events the generator created in the measured window.
    pub created: u64,
    /// CPU seconds each of the `pids` given used while the window's events were created.
    pub cpu_seconds: Vec<f64>,
    /// How long that was, in seconds.
    pub window_s: f64,
}

/// Every path at once: the generator writes `input` with `load`, and one checker reads every
/// path's topics (new topics, read from the beginning). A path is a name and the topics its
/// outputs land in (a topic in no path is not read). The CPU time of `pids` is taken over the
/// measured window.
pub fn side_by_side_run(
    bootstrap: &str,
    input: &str,
    paths: &[(&str, Vec<&str>)],
    pids: &[u32],
    load: Load,
) -> SideBySide {
    let path_of: HashMap<String, usize> = paths
        .iter()
        .enumerate()
        .flat_map(|(i, (_, topics))| topics.iter().map(move |t| (t.to_string(), i)))
        .collect();
    let (b, n) = (bootstrap.to_owned(), paths.len());
    // The slowest path's tail (p999 on tansu reaches a few hundred ms) still arrives.
    let tail = Duration::from_secs(5);
    let run = drive(bootstrap, input, load, tail, pids, move |signals| {
        check_paths(&b, &path_of, n, &signals)
    });
    SideBySide {
        latencies: run.checked,
        created: run.created,
        cpu_seconds: run.cpu_seconds,
        window_s: run.window_s,
    }
}

/// The checker of [`side_by_side_run`]: one consumer on every path's topics.
fn check_paths(
    bootstrap: &str,
    path_of: &HashMap<String, usize>,
    paths: usize,
    signals: &CheckerSignals,
) -> Vec<HashMap<u64, i64>> {
    let CheckerSignals { stop, ready, from } = signals;
    let consumer = checker_on(bootstrap, path_of.keys().map(String::as_str));
    ready.store(true, Ordering::Release);
    let mut latencies: Vec<HashMap<u64, i64>> = vec![HashMap::new(); paths];
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let now = now_us();
            let (Some(&path), Some(value)) = (path_of.get(m.topic()), m.payload()) else {
                continue;
            };
            if let (Some(sent), Some(id)) = (sent_us(value), event_number(value))
                && sent >= from.load(Ordering::Acquire)
            {
                latencies[path].entry(id).or_insert(now - sent);
            }
        }
    }
    latencies
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

/// User + system CPU time of a process so far, in seconds (NaN if it cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(f64::NAN)
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
    /// The plain loop on librdkafka's batch and handle APIs, without rdkafka's per-message
    /// wrappers: partitions assigned (no group) and forwarded to a queue of their own, up to
    /// [`PASSTHROUGH_BATCH`] records per `rd_kafka_consume_batch_queue`, each written with `rd_kafka_producev` to a topic
    /// handle made once (rdkafka's `send` makes a C string of the topic name and librdkafka
    /// looks the topic up, for every record). What Kafka I/O alone can cost through
    /// librdkafka on this machine.
    Batch,
    /// Routes every record with the `route` plugin's own code compiled for the host (no
    /// WebAssembly) to `<output>-standard`, `-urgent` or `-errors` (`-dlq` for what it
    /// dead-letters), one record at a time: the floor for a router that writes Switchyard's
    /// three route topics.
    Routed,
    /// [`Passthrough::Routed`] adding Switchyard-sized provenance headers to every output.
    RoutedHeaders,
}

impl Passthrough {
    fn as_str(self) -> &'static str {
        match self {
            Passthrough::Plain => "plain",
            Passthrough::Headers => "headers",
            Passthrough::Wasm => "wasm",
            Passthrough::Batch => "batch",
            Passthrough::Routed => "routed",
            Passthrough::RoutedHeaders => "routed-headers",
        }
    }
}

/// Most records the WASM passthrough gives the plugin at once (Switchyard's default
/// `batch_size`).
pub const PASSTHROUGH_BATCH: usize = 256;

/// The passthrough: a plain consume -> produce loop with Switchyard's client settings and no
/// WebAssembly, the floor for any router, doing what `kind` adds. Runs forever.
fn passthrough(bootstrap: &str, input: &str, output: &str, kind: Passthrough) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // A group of its own per output: several passthroughs may read one input.
        .set("group.id", format!("passthrough-{input}-{output}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", "10000")
        .set("log_level", "3")
        .create()
        .expect("consumer");
    let p = producer(bootstrap);
    if kind == Passthrough::Batch {
        return batch_passthrough(&consumer, &p, input, output);
    }
    consumer.subscribe(&[input]).expect("subscribe");
    if kind == Passthrough::Wasm {
        return wasm_passthrough(&consumer, &p, output);
    }
    if matches!(kind, Passthrough::Routed | Passthrough::RoutedHeaders) {
        let headers = (kind == Passthrough::RoutedHeaders).then_some(input);
        return routed_passthrough(&consumer, &p, output, headers);
    }
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let mut record = BaseRecord::<[u8], [u8]>::to(output)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            if kind == Passthrough::Headers {
                record = record.headers(provenance_like(input));
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

/// Two headers the size of Switchyard's provenance headers for a pipeline named `pipeline`
/// with one stage (`switchyard-pipeline`, and `switchyard-versions` with a sha256 in hex).
fn provenance_like(pipeline: &str) -> rdkafka::message::OwnedHeaders {
    let versions = format!("route={}", "0".repeat(64));
    rdkafka::message::OwnedHeaders::new_with_capacity(2)
        .insert(rdkafka::message::Header {
            key: "switchyard-pipeline",
            value: Some(pipeline),
        })
        .insert(rdkafka::message::Header {
            key: "switchyard-versions",
            value: Some(&versions),
        })
}

/// [`Passthrough::Routed`]: the `route` plugin's decision, natively, per record; with
/// `headers`, provenance-sized headers for that pipeline name on every output.
fn routed_passthrough(
    consumer: &BaseConsumer,
    p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    prefix: &str,
    headers: Option<&str>,
) {
    use switchyard_plugin_sdk::{Config, Plugin, Record, Verdict};
    let mut route =
        route::Route::init(&Config::from_pairs(std::iter::empty::<(&str, &str)>())).expect("init");
    let topics = ["standard", "urgent", "errors", "dlq"].map(|t| format!("{prefix}-{t}"));
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let mut record = Record::new();
            if let Some(value) = m.payload() {
                record = record.with_value(value.to_vec());
            }
            let topic = match route.process(&record) {
                Verdict::Route(r) if r == "urgent" => &topics[1],
                Verdict::Route(r) if r == "errors" => &topics[2],
                Verdict::DeadLetter(_) => &topics[3],
                _ => &topics[0],
            };
            let mut out = BaseRecord::to(topic)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            if let Some(pipeline) = headers {
                out = out.headers(provenance_like(pipeline));
            }
            send_record(p, out);
        }
    }
}

/// [`Passthrough::Batch`].
fn batch_passthrough(
    consumer: &BaseConsumer,
    p: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    input: &str,
    output: &str,
) {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr;
    let topic = std::ffi::CString::new(output).expect("topic name");
    let name = std::ffi::CString::new(input).expect("topic name");
    // SAFETY: both clients outlive the loop (it never returns); the queue and the topic handle
    // are never destroyed (the process is killed); each message is destroyed once, after its
    // key and payload were copied by librdkafka (RD_KAFKA_MSG_F_COPY).
    unsafe {
        // Each partition's fetched records go to a queue of their own (rdkafka's own event
        // set-up puts other operations on the consumer queue, which the batch consume
        // cannot take).
        let crk = consumer.client().native_ptr();
        let queue = rd::rd_kafka_queue_new(crk);
        for partition in 0..PARTITIONS {
            let partition_queue = rd::rd_kafka_queue_get_partition(crk, name.as_ptr(), partition);
            rd::rd_kafka_queue_forward(partition_queue, queue);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        // No subscription, a fixed assignment: no rebalance event ever reaches the batch
        // consume. Assigned after the forwarding, so every fetched record takes it.
        let mut tpl = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            tpl.add_partition_offset(input, partition, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let rk = p.client().native_ptr();
        let rkt = rd::rd_kafka_topic_new(rk, topic.as_ptr(), std::ptr::null_mut());
        let mut messages = vec![std::ptr::null_mut::<rd::rd_kafka_message_t>(); PASSTHROUGH_BATCH];
        loop {
            let n = rd::rd_kafka_consume_batch_queue(
                queue,
                20,
                messages.as_mut_ptr(),
                PASSTHROUGH_BATCH,
            );
            for &m in messages.iter().take(n.max(0) as usize) {
                if (*m).err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    loop {
                        let err = rd::rd_kafka_producev(
                            rk,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT,
                            rkt,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
                            -1i32,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
                            rd::RD_KAFKA_MSG_F_COPY,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
                            (*m).payload,
                            (*m).len,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY,
                            (*m).key,
                            (*m).key_len,
                            rd::rd_kafka_vtype_t::RD_KAFKA_VTYPE_END,
                        );
                        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__QUEUE_FULL {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                rd::rd_kafka_message_destroy(m);
            }
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
        Some("batch") => Passthrough::Batch,
        Some("routed") => Passthrough::Routed,
        Some("routed-headers") => Passthrough::RoutedHeaders,
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

/// A router in Python (`bench/python/`): what a team would write instead of Switchyard to
/// consume, route by a field and produce. Both apply the `route` plugin's rule to the same
/// four topics as [`start_switchyard`] (`{prefix}-standard`, `-urgent`, `-errors`, `-dlq`),
/// at least once, writing each input's key and value unchanged (no provenance headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonRouter {
    /// `bench/python/route_loop.py`: a plain loop on confluent-kafka; per poll batch it
    /// produces, flushes, then commits synchronously.
    Loop,
    /// `bench/python/route_quix.py`: a Quix Streams app with its defaults (at-least-once,
    /// a checkpoint every 5 s).
    Quix,
}

impl PythonRouter {
    /// The path's name in the benches' `PATHS`.
    pub fn of_path(path: &str) -> Option<PythonRouter> {
        match path {
            "py" => Some(PythonRouter::Loop),
            "quix" => Some(PythonRouter::Quix),
            _ => None,
        }
    }

    fn script(self) -> &'static str {
        match self {
            PythonRouter::Loop => "route_loop.py",
            PythonRouter::Quix => "route_quix.py",
        }
    }
}

/// The Python with the routers' pinned packages: `bench/python/install.sh` makes its venv
/// under `$SWITCHYARD_TOOLS` the first time (or when the pins change; pip's output shows on
/// stderr) and prints its path. Run once per process.
pub fn bench_python() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    static PYTHON: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = crate::repo_root().join("bench/python/install.sh");
            let install = || -> anyhow::Result<std::path::PathBuf> {
                let output = Command::new("bash")
                    .arg(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .with_context(|| format!("cannot run bash {}", script.display()))?;
                anyhow::ensure!(
                    output.status.success(),
                    "{} failed ({}); it needs python3 (3.9 or later, with venv) and, the first \
                     time, PyPI",
                    script.display(),
                    output.status
                );
                let python = std::path::PathBuf::from(
                    String::from_utf8_lossy(&output.stdout).trim().to_owned(),
                );
                anyhow::ensure!(
                    python.is_file(),
                    "{} printed {:?}, which is not a file",
                    script.display(),
                    python.display()
                );
                Ok(python)
            };
            install().map_err(|e| format!("the Python routers' venv: {e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Starts `router` reading `input` as the consumer group `{prefix}-router`, writing
/// `{prefix}-standard`, `-urgent`, `-errors` and `-dlq`; its output goes to a log file, and
/// it dies with the bench.
pub fn start_python_router(
    router: PythonRouter,
    bootstrap: &str,
    input: &str,
    prefix: &str,
) -> anyhow::Result<RouterProcess> {
    let python = bench_python()?;
    let script = crate::repo_root()
        .join("bench/python")
        .join(router.script());
    let script = script
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the script's path is not UTF-8: {}", script.display()))?;
    let topics = ["standard", "urgent", "errors", "dlq"].map(|t| format!("{prefix}-{t}"));
    let group = format!("{prefix}-router");
    let mut args = vec![script, bootstrap, input, &group];
    args.extend(topics.iter().map(String::as_str));
    RouterProcess::start_binary(&python, &args)
}
