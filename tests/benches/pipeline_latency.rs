//! End-to-end latency and maximum throughput of the `switchyard` binary on a real
//! Kafka-protocol broker (tansu, in memory), against baselines measured in the same run on the
//! same broker. Not a test: it prints a markdown table and writes it, with the raw figures, to
//! `<target dir>/pipeline_latency.md` and `pipeline_latency.json`.
//!
//! ```sh
//! cargo bench -p switchyard-tests --bench pipeline_latency
//! RATE=10000 WARMUP_S=3 SECS=20 PRELOAD=200000 cargo bench -p switchyard-tests --bench pipeline_latency
//! ```
//!
//! # Phases (one broker, separate topics of 4 partitions each)
//!
//! 1. **one hop**: generator -> `hop` -> checker. The broker's own floor.
//! 2. **passthrough**: generator -> `pt-in` -> a plain Rust consume -> produce loop -> `pt-out`
//!    -> checker. The loop is this executable re-run as a child with `PASSTHROUGH_MODE=1`, with
//!    Switchyard's client defaults (consumer `fetch.wait.max.ms=10`; producer idempotent,
//!    `acks=all`, `linger.ms=1`, `murmur2_random`), committing its positions asynchronously
//!    every 200 ms like the router. The floor for any router, without WebAssembly.
//! 3. **native route**: the same loop, but each record goes where the `route` plugin's logic
//!    (compiled natively, no WebAssembly) sends it: `nr-standard`, `nr-urgent`, `nr-errors`
//!    (or `nr-dlq`). The same fan-out to 16 output partitions as switchyard, so the broker
//!    does the same work; the difference to switchyard is switchyard's own cost.
//! 4. **switchyard**: generator -> `sy-in` -> the `switchyard` binary with the `route` plugin
//!    (routes `standard`, `urgent`, `errors` and a dead-letter topic) -> checker on all four.
//! 5. **throughput**: `PRELOAD` records are written to `tp-pt-in`, `tp-nr-in` and `tp-sy-in`
//!    first; then each path in turn starts on its topic and the checker counts records/s from
//!    the first output to the last, and from the child's start to the last.
//!
//! # Latency
//!
//! Every event is [`switchyard_tests::event`] with a `"sent_us"` field: its creation time in
//! µs since the epoch (CLOCK_REALTIME: everything runs on this machine). Latency is the time the
//! checker's `poll` returns the record minus that. Before the load starts, the generator sends a
//! probe every 100 ms until one comes out of the path, so the group join and the producers'
//! start-up are behind us; then it produces at `RATE` records/s (paced every 200 µs) for
//! `WARMUP_S` seconds, discarded, and `SECS` seconds measured. The checker reads every output
//! partition from the beginning with no consumer group (`fetch.wait.max.ms=10`), and the run
//! waits until every measured record has arrived (or `DRAIN_S` passes: those count as lost).
//!
//! # Knobs (environment)
//!
//! | variable        | default   | meaning |
//! |-----------------|-----------|---------|
//! | `RATE`          | 10000     | records/s in the latency phases |
//! | `WARMUP_S`      | 3         | seconds of load discarded before measuring |
//! | `SECS`          | 20        | seconds measured |
//! | `PRELOAD`       | 200000    | records preloaded for the throughput phase (0: skip it) |
//! | `MAX_IN_FLIGHT` | 1000000   | switchyard's `max_in_flight` |
//! | `DRAIN_S`       | 30        | longest wait for the last records of a phase |
//! | `SKIP`          | (none)    | comma-separated phases to skip: latency `hop`, `pt`, `nr`, `sy`; throughput `tp` (all) or `tp-pt`, `tp-nr`, `tp-sy` |
//!
//! `MAX_IN_FLIGHT` is far above the default (20000) on purpose: tansu 0.6 answers a fetch that
//! starts inside a record batch with nothing, so a consumer that pauses and resumes mid-batch
//! stalls for good. With the limit above `PRELOAD` the router never pauses. Switchyard's ring
//! allocates its queues up front from this limit, which shows in its peak RSS.
//!
//! Every child (tansu, the passthrough, switchyard) runs with `RUST_LOG=warn`, dies with this
//! process (`PR_SET_PDEATHSIG`), is killed on drop, and is stopped with SIGTERM at the end of
//! its phase.

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::event;
use switchyard_tests::kafka::Broker;
use switchyard_tests::pipelines::{pipeline_toml, scratch_dir, write_file};
use switchyard_tests::router_process::switchyard_binary;

/// The same allocator as the `switchyard` binary, so the passthrough child costs what a Rust
/// router built the same way would.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 4;
/// Event indices from here on are readiness probes, never measured.
const PROBE_BASE: u64 = 1 << 40;
const ROUTES: [&str; 3] = ["standard", "urgent", "errors"];

// ---------------------------------------------------------------------------------------------
// Knobs, clock, events

struct Knobs {
    rate: u64,
    warmup: Duration,
    secs: Duration,
    preload: u64,
    max_in_flight: u64,
    drain: Duration,
    skip: Vec<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            rate: env_u64("RATE", 10_000).max(1),
            warmup: Duration::from_secs(env_u64("WARMUP_S", 3)),
            secs: Duration::from_secs(env_u64("SECS", 20).max(1)),
            preload: env_u64("PRELOAD", 200_000),
            max_in_flight: env_u64("MAX_IN_FLIGHT", 1_000_000),
            drain: Duration::from_secs(env_u64("DRAIN_S", 30)),
            skip: std::env::var("SKIP")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
    }
}

/// Microseconds since the Unix epoch (CLOCK_REALTIME).
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `event(i)` (id `evt-<i, 12 digits>`) with `"sent_us":<now>` appended; and its key.
fn stamped_event(i: u64) -> (String, String) {
    let mut e = event(i % PROBE_BASE);
    if i >= PROBE_BASE {
        // A probe: the same shape, with an id no load record has.
        e = e.replacen("\"evt-", "\"prb-", 1);
    }
    e.pop(); // the closing brace
    let _ = write!(e, ",\"sent_us\":{}}}", now_us());
    (format!("user-{:05}", (i % PROBE_BASE) % 10_000), e)
}

/// (index, probe?, sent_us) of a stamped event.
fn parse_event(value: &[u8]) -> Option<(u64, bool, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix("{\"event_id\":\"")?;
    let probe = rest.starts_with("prb-");
    let index: u64 = rest.get(4..16)?.parse().ok()?;
    let at = text.rfind("\"sent_us\":")? + "\"sent_us\":".len();
    let sent: i64 = text[at..].trim_end_matches('}').parse().ok()?;
    Some((index, probe, sent))
}

// ---------------------------------------------------------------------------------------------
// Clients

type Plain = ThreadedProducer<DefaultProducerContext>;

/// Switchyard's producer defaults (host/src/kafka.rs).
fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> anyhow::Result<Plain> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("partitioner", "murmur2_random")
        .set("log_level", "3");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().context("cannot create a producer")
}

/// Queues a record, waiting while the producer's queue is full.
fn send(p: &Plain, topic: &str, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    send_record(p, BaseRecord::to(topic).key(key).payload(value))
}

fn send_record(p: &Plain, mut record: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(e).context("produce failed"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The passthrough (this executable as a child)

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATE.store(true, Ordering::Release);
}

/// Where the passthrough writes.
enum Outputs {
    /// Every record to this topic.
    One(String),
    /// Routed by the `route` plugin's logic compiled natively, to `<prefix>-<route>` and
    /// `<prefix>-dlq`, as switchyard with `route` does.
    Routed {
        plugin: route::Route,
        prefix: String,
    },
}

impl Outputs {
    /// The topic for a record's value.
    fn topic(&mut self, value: Option<&[u8]>) -> Option<String> {
        use switchyard_plugin_sdk::{Plugin, Record, Verdict};
        match self {
            Outputs::One(topic) => Some(topic.clone()),
            Outputs::Routed { plugin, prefix } => {
                let mut record = Record::new();
                if let Some(v) = value {
                    record = record.with_value(v);
                }
                match plugin.process(&record) {
                    Verdict::Pass => Some(format!("{prefix}-{}", ROUTES[0])),
                    Verdict::Route(r) if ROUTES.contains(&r.as_str()) => {
                        Some(format!("{prefix}-{r}"))
                    }
                    Verdict::Drop => None,
                    _ => Some(format!("{prefix}-dlq")),
                }
            }
        }
    }
}

/// Copies `PT_INPUT` to `PT_OUTPUT`, or routes it to `PT_ROUTE_PREFIX-*` (key, value, headers;
/// partition by key), until SIGTERM.
fn passthrough() -> anyhow::Result<()> {
    use switchyard_plugin_sdk::{Config, Plugin};
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let (bootstrap, input, group) = (var("PT_BOOTSTRAP")?, var("PT_INPUT")?, var("PT_GROUP")?);
    let mut outputs = match std::env::var("PT_ROUTE_PREFIX") {
        Ok(prefix) => Outputs::Routed {
            plugin: route::Route::init(&Config::from_pairs(std::iter::empty::<(&str, &str)>()))
                .map_err(anyhow::Error::msg)?,
            prefix,
        },
        Err(_) => Outputs::One(var("PT_OUTPUT")?),
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "10000")
        .set("log_level", "3")
        .create()
        .context("cannot create the consumer")?;
    consumer.subscribe(&[&input])?;
    let p = producer(&bootstrap, &[])?;
    let mut last_commit = Instant::now();
    while !TERMINATE.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                let Some(topic) = outputs.topic(m.payload()) else {
                    continue;
                };
                let mut record = BaseRecord::<[u8], [u8]>::to(&topic);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(v) = m.payload() {
                    record = record.payload(v);
                }
                if let Some(h) = m.headers() {
                    record = record.headers(h.detach());
                }
                send_record(&p, record)?;
            }
            Some(Err(e)) => eprintln!("passthrough: consumer error: {e}"),
            None => {}
        }
        if last_commit.elapsed() >= Duration::from_millis(200) {
            // Nothing consumed yet is not an error worth stopping for.
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    p.flush(Duration::from_secs(10))
        .context("passthrough: outputs not acknowledged within 10 s")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process, killed on drop.
struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl ChildProcess {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<ChildProcess> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        // SAFETY: prctl in the forked child before exec only sets a flag of that child: it
        // dies with this process, even when this one is killed.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log,
            started,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with its log if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then up to `timeout` to exit (SIGKILL after that).
    fn stop(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not stop within {timeout:?} of SIGTERM; killed. Log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident set (VmHWM) of a live process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU time (user + system) a live process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// The pid of this process's child running `name` (the broker), if any.
fn child_pid_named(name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return Some(pid);
            }
        }
    }
    None
}

/// Busy CPU time of the whole machine so far (all cores), in seconds.
fn system_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy / hz)
}

/// CPU use over an interval, in % of one core.
#[derive(Default, Clone, Copy)]
struct CpuUse {
    /// The router under test.
    router: Option<f64>,
    /// tansu.
    broker: Option<f64>,
    /// This process: the generator and the checker.
    bench: Option<f64>,
    /// Everything else on the machine (should be near 0: nothing else may run).
    other: Option<f64>,
}

/// Measures CPU use of the router, the broker, this process and the rest of the machine.
struct CpuMeter {
    pids: [Option<u32>; 3],
    start: [Option<f64>; 3],
    system: Option<f64>,
    at: Instant,
}

impl CpuMeter {
    fn start(router: Option<u32>) -> CpuMeter {
        let pids = [router, child_pid_named("tansu"), Some(std::process::id())];
        CpuMeter {
            pids,
            start: pids.map(|p| p.and_then(cpu_seconds)),
            system: system_busy_seconds(),
            at: Instant::now(),
        }
    }

    fn finish(&self) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64();
        let used: Vec<Option<f64>> = self
            .pids
            .iter()
            .zip(&self.start)
            .map(|(pid, start)| Some(pid.and_then(cpu_seconds)? - (*start)?))
            .collect();
        let system = system_busy_seconds().zip(self.system).map(|(b, a)| b - a);
        let ours: f64 = used.iter().flatten().sum();
        let pct = |v: Option<f64>| v.map(|v| 100.0 * v / wall);
        CpuUse {
            router: pct(used[0]),
            broker: pct(used[1]),
            bench: pct(used[2]),
            other: pct(system.map(|s| (s - ours).max(0.0))),
        }
    }
}

struct Target {
    dir: PathBuf,
}

impl Target {
    /// `$CARGO_TARGET_DIR`, else the directory above `<profile>/deps/` holding this executable.
    fn locate() -> Target {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.parent()?.to_path_buf())
            })
            .unwrap_or_else(|| PathBuf::from("target"));
        Target { dir }
    }
}

/// The passthrough on `input`: to `output`, or routed natively to `<prefix>-*` when `output`
/// is `Route(prefix)`.
fn start_passthrough(
    bootstrap: &str,
    input: &str,
    output: Dest<'_>,
    dir: &Path,
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env("PASSTHROUGH_MODE", "1")
        .env("PT_BOOTSTRAP", bootstrap)
        .env("PT_INPUT", input)
        .env("PT_GROUP", format!("passthrough-{input}"));
    match output {
        Dest::Topic(t) => command.env("PT_OUTPUT", t),
        Dest::Route(prefix) => command.env("PT_ROUTE_PREFIX", prefix),
    };
    ChildProcess::spawn(
        "passthrough",
        command,
        dir.join(format!("passthrough-{input}.log")),
    )
}

#[derive(Clone, Copy)]
enum Dest<'a> {
    Topic(&'a str),
    Route(&'a str),
}

/// Output topics of a routed path named `prefix`: the three routes and the DLQ.
fn routed_outputs(prefix: &str) -> Vec<String> {
    ROUTES
        .iter()
        .map(|r| format!("{prefix}-{r}"))
        .chain([format!("{prefix}-dlq")])
        .collect()
}

fn start_switchyard(
    bootstrap: &str,
    input: &str,
    prefix: &str,
    max_in_flight: u64,
    dir: &Path,
) -> anyhow::Result<ChildProcess> {
    let routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.to_string(), format!("{prefix}-{r}")))
        .collect();
    let routes: Vec<(&str, &str)> = routes
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    // Only Switchyard's defaults, except `max_in_flight` (see the module docs).
    let text = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\n\n{}",
        pipeline_toml(
            prefix,
            input,
            &routes,
            &format!("{prefix}-dlq"),
            &[("route", "route", &[])],
            &format!("max_in_flight = {max_in_flight}"),
        )
    );
    let config = write_file(dir, &format!("{prefix}.toml"), &text);
    let mut command = Command::new(switchyard_binary()?);
    command.arg("run").arg("--config").arg(&config);
    ChildProcess::spawn("switchyard", command, dir.join(format!("{prefix}.log")))
}

// ---------------------------------------------------------------------------------------------
// Checker and generator

/// What the checker saw. `received[i]` is the receive time (µs) of load record `i`, 0 if it
/// never came.
#[derive(Default)]
struct Seen {
    received: Vec<i64>,
    duplicates: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

struct Checker {
    stop: Arc<AtomicBool>,
    /// Distinct load records received.
    unique: Arc<AtomicU64>,
    /// Probes received.
    probes: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<Seen>>,
}

impl Checker {
    /// Reads every partition of `topics` from the beginning, with no consumer group.
    fn start(bootstrap: &str, topics: &[String], capacity: u64) -> anyhow::Result<Checker> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "pipeline-latency-checker")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("log_level", "3")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            for p in 0..PARTITIONS {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let unique = Arc::new(AtomicU64::new(0));
        let probes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, unique, probes) = (stop.clone(), unique.clone(), probes.clone());
            std::thread::Builder::new()
                .name("checker".into())
                .spawn(move || {
                    let mut seen = Seen {
                        received: vec![0; capacity as usize],
                        ..Seen::default()
                    };
                    while !stop.load(Ordering::Acquire) {
                        let Some(m) = consumer.poll(Duration::from_millis(10)) else {
                            continue;
                        };
                        let m = m.context("checker: consume failed")?;
                        let now = now_us();
                        let Some((index, probe, _)) = m.payload().and_then(parse_event) else {
                            bail!("checker: unexpected record on {}", m.topic());
                        };
                        if probe {
                            probes.fetch_add(1, Ordering::Release);
                            continue;
                        }
                        let at = Instant::now();
                        seen.first.get_or_insert(at);
                        seen.last = Some(at);
                        let i = index as usize;
                        if i >= seen.received.len() {
                            seen.received.resize(i + 1, 0);
                        }
                        if seen.received[i] == 0 {
                            seen.received[i] = now;
                            unique.fetch_add(1, Ordering::Release);
                        } else {
                            seen.duplicates += 1;
                        }
                    }
                    Ok(seen)
                })?
        };
        Ok(Checker {
            stop,
            unique,
            probes,
            thread,
        })
    }

    /// Waits until `n` distinct load records arrived or `timeout` passed; whether they did.
    fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.unique.load(Ordering::Acquire) < n {
            if Instant::now() >= deadline || self.thread.is_finished() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn finish(self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("checker panicked"))?
    }
}

struct Generator {
    /// Set by the caller once the path delivers: switches from probes to the load.
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<Vec<i64>>>,
}

impl Generator {
    /// Sends a probe every 100 ms until `go`, then stamped events at `rate`/s until `stop`;
    /// returns each load record's creation time (µs), by index.
    fn start(bootstrap: &str, topic: &str, rate: u64) -> anyhow::Result<Generator> {
        let p = producer(bootstrap, &[])?;
        let go = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (go, stop, sent) = (go.clone(), stop.clone(), sent.clone());
            let topic = topic.to_owned();
            std::thread::Builder::new()
                .name("generator".into())
                .spawn(move || {
                    let mut probe = PROBE_BASE;
                    while !go.load(Ordering::Acquire) {
                        if stop.load(Ordering::Acquire) {
                            return Ok(Vec::new());
                        }
                        let (key, value) = stamped_event(probe);
                        send(&p, &topic, key.as_bytes(), value.as_bytes())?;
                        probe += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let mut created = Vec::with_capacity(rate as usize * 30);
                    let start = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                        while (created.len() as u64) < due {
                            let i = created.len() as u64;
                            let (key, value) = stamped_event(i);
                            let (_, _, at) = parse_event(value.as_bytes()).expect("own event");
                            send(&p, &topic, key.as_bytes(), value.as_bytes())?;
                            created.push(at);
                            sent.store(i + 1, Ordering::Release);
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    p.flush(Duration::from_secs(30))
                        .context("generator: records not acknowledged within 30 s")?;
                    Ok(created)
                })?
        };
        Ok(Generator {
            go,
            stop,
            sent,
            thread,
        })
    }

    fn finish(self) -> anyhow::Result<Vec<i64>> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))?
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

#[derive(Default, Clone)]
struct LatencyResult {
    name: String,
    /// Latencies (µs) of the measured records that arrived, sorted.
    sorted_us: Vec<i64>,
    measured: u64,
    lost: u64,
    duplicates: u64,
    /// Records created in the measured window / its length.
    offered_rate: f64,
    /// Measured records delivered / the window's length.
    delivered_rate: f64,
    /// The largest latency (ms) in each second of the measured window.
    worst_per_second_ms: Vec<f64>,
    /// The median latency (ms) in each second of the measured window.
    median_per_second_ms: Vec<f64>,
    rss_mib: Option<f64>,
    cpu: CpuUse,
    ready_after_s: f64,
}

impl LatencyResult {
    fn pct(&self, p: f64) -> f64 {
        percentile_ms(&self.sorted_us, p)
    }
}

/// Nearest-rank percentile of sorted µs values, in ms.
fn percentile_ms(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// One latency phase: checker on `outputs`, then probes into `input` until the path delivers,
/// then the load. `child` is the router under test (none for one hop).
fn latency_phase(
    name: &str,
    bootstrap: &str,
    input: &str,
    outputs: &[String],
    mut child: Option<ChildProcess>,
    knobs: &Knobs,
) -> anyhow::Result<LatencyResult> {
    let capacity = knobs.rate * (knobs.warmup + knobs.secs + Duration::from_secs(5)).as_secs();
    let checker = Checker::start(bootstrap, outputs, capacity)?;
    let generator = Generator::start(bootstrap, input, knobs.rate)?;
    let began = Instant::now();
    while checker.probes.load(Ordering::Acquire) == 0 {
        if let Some(c) = child.as_mut() {
            c.check_alive()?;
        }
        if began.elapsed() > Duration::from_secs(90) {
            let log = child
                .as_ref()
                .map(ChildProcess::log_tail)
                .unwrap_or_default();
            bail!("{name}: no probe came through within 90 s. Log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready_after_s = child
        .as_ref()
        .map_or(began, |c| c.started)
        .elapsed()
        .as_secs_f64();
    generator.go.store(true, Ordering::Release);
    std::thread::sleep(knobs.warmup);
    let meter = CpuMeter::start(child.as_ref().map(ChildProcess::pid));
    let from_us = now_us();
    std::thread::sleep(knobs.secs);
    let until_us = now_us();
    let cpu = meter.finish();
    let sent = generator.sent.load(Ordering::Acquire);
    let created = generator.finish()?;
    let drained = checker.wait_for(sent, knobs.drain);
    if let Some(c) = child.as_mut() {
        c.check_alive()?;
    }
    let rss_mib = child.as_ref().and_then(|c| peak_rss_mib(c.pid()));
    if let Some(c) = child.take() {
        let status = c.stop(Duration::from_secs(30))?;
        if !status.success() {
            eprintln!("  {name}: the router exited with {status}");
        }
    }
    let seen = checker.finish()?;
    if !drained {
        eprintln!(
            "  {name}: not every record arrived within {:?} of the end",
            knobs.drain
        );
    }

    let window_s = (until_us - from_us) as f64 / 1e6;
    let mut result = LatencyResult {
        name: name.to_owned(),
        duplicates: seen.duplicates,
        rss_mib,
        cpu,
        ready_after_s,
        ..LatencyResult::default()
    };
    let seconds = ((until_us - from_us) / 1_000_000 + 1) as usize;
    let mut per_second: Vec<Vec<i64>> = vec![Vec::new(); seconds];
    for (i, &at) in created.iter().enumerate() {
        if at < from_us || at >= until_us {
            continue;
        }
        result.measured += 1;
        match seen.received.get(i).copied().unwrap_or(0) {
            0 => result.lost += 1,
            got => {
                let latency = got - at;
                result.sorted_us.push(latency);
                let s = ((at - from_us) / 1_000_000) as usize;
                per_second[s].push(latency);
            }
        }
    }
    result.sorted_us.sort_unstable();
    result.offered_rate = result.measured as f64 / window_s;
    result.delivered_rate = result.sorted_us.len() as f64 / window_s;
    for second in &mut per_second {
        second.sort_unstable();
        result.worst_per_second_ms.push(percentile_ms(second, 1.0));
        result.median_per_second_ms.push(percentile_ms(second, 0.5));
    }
    eprintln!(
        "  {name}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} measured, {} lost, {} duplicates; {:.0}/s",
        result.pct(0.5),
        result.pct(0.99),
        result.pct(0.999),
        result.pct(1.0),
        result.measured,
        result.lost,
        result.duplicates,
        result.delivered_rate
    );
    Ok(result)
}

#[derive(Default, Clone)]
struct ThroughputResult {
    name: String,
    records: u64,
    delivered: u64,
    duplicates: u64,
    /// Records/s from the first output to the last.
    first_to_last: f64,
    /// Records/s from starting the child to the last output.
    start_to_last: f64,
    /// Seconds from starting the child to its first output.
    first_output_s: f64,
    rss_mib: Option<f64>,
    cpu: CpuUse,
}

fn preload(bootstrap: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    let p = producer(bootstrap, &[("linger.ms", "5")])?;
    for i in 0..n {
        let (key, value) = stamped_event(i);
        send(&p, topic, key.as_bytes(), value.as_bytes())?;
    }
    p.flush(Duration::from_secs(120))
        .context("preloaded records not acknowledged within 120 s")
}

/// Starts the checker on `outputs`, then the router; waits for `n` outputs.
fn throughput_phase(
    name: &str,
    bootstrap: &str,
    outputs: &[String],
    n: u64,
    start: impl FnOnce() -> anyhow::Result<ChildProcess>,
    knobs: &Knobs,
) -> anyhow::Result<ThroughputResult> {
    let checker = Checker::start(bootstrap, outputs, n)?;
    let mut child = start()?;
    let meter = CpuMeter::start(Some(child.pid()));
    let began = child.started;
    let deadline = Duration::from_secs(120) + knobs.drain;
    let mut done = false;
    while began.elapsed() < deadline {
        if checker.wait_for(n, Duration::from_millis(200)) {
            done = true;
            break;
        }
        child.check_alive()?;
    }
    let cpu = meter.finish();
    let rss_mib = peak_rss_mib(child.pid());
    let status = child.stop(Duration::from_secs(30))?;
    if !status.success() {
        eprintln!("  {name}: the router exited with {status}");
    }
    // Duplicates, if any, arrive after the last distinct record; give them a moment.
    std::thread::sleep(Duration::from_millis(500));
    let seen = checker.finish()?;
    let delivered = seen.received.iter().filter(|&&t| t != 0).count() as u64;
    if !done {
        eprintln!("  {name}: only {delivered} of {n} records arrived within {deadline:?}");
    }
    let (first, last) = match (seen.first, seen.last) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("{name}: no output at all"),
    };
    let span = last.duration_since(first).as_secs_f64();
    let result = ThroughputResult {
        name: name.to_owned(),
        records: n,
        delivered,
        duplicates: seen.duplicates,
        first_to_last: if span > 0.0 {
            (delivered.saturating_sub(1)) as f64 / span
        } else {
            f64::NAN
        },
        start_to_last: delivered as f64 / last.duration_since(began).as_secs_f64(),
        first_output_s: first.duration_since(began).as_secs_f64(),
        rss_mib,
        cpu,
    };
    eprintln!(
        "  {name}: {:.0} records/s first to last, {:.0} from start (first output after {:.2} s); {delivered}/{n}, {} duplicates",
        result.first_to_last, result.start_to_last, result.first_output_s, result.duplicates
    );
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Report

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn report(
    knobs: &Knobs,
    latency: &[LatencyResult],
    throughput: &[ThroughputResult],
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tansu 0.6 in memory, {PARTITIONS} partitions per topic, {} CPUs; load {} records/s, {} s warm-up + {} s measured; {} records preloaded; switchyard `max_in_flight = {}`; run took {:.0} s\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        knobs.rate,
        knobs.warmup.as_secs(),
        knobs.secs.as_secs(),
        knobs.preload,
        knobs.max_in_flight,
        elapsed.as_secs_f64()
    );
    let disturbed: Vec<String> = latency
        .iter()
        .map(|r| (format!("latency/{}", r.name), r.cpu.other))
        .chain(
            throughput
                .iter()
                .map(|r| (format!("throughput/{}", r.name), r.cpu.other)),
        )
        .filter_map(|(name, other)| {
            other
                .filter(|&o| o > 15.0)
                .map(|o| format!("{name} ({o:.0}%)"))
        })
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "**Other processes used the CPU during:** {}. Those figures are disturbed.\n",
            disturbed.join(", ")
        );
    }
    if !latency.is_empty() {
        out.push_str(
            "| path | p50 ms | p99 ms | p99.9 ms | max ms | rate/s | measured | lost | dup | peak RSS MiB | CPU % router | CPU % broker | CPU % gen+check | CPU % other |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in latency {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.pct(0.5),
                r.pct(0.99),
                r.pct(0.999),
                r.pct(1.0),
                r.delivered_rate,
                r.measured,
                r.lost,
                r.duplicates,
                opt(r.rss_mib, 0),
                opt(r.cpu.router, 0),
                opt(r.cpu.broker, 0),
                opt(r.cpu.bench, 0),
                opt(r.cpu.other, 0),
            );
        }
        let find = |n: &str| latency.iter().find(|r| r.name == n);
        if let Some(sy) = find("switchyard") {
            for base in ["passthrough", "native route"] {
                let Some(base_r) = find(base) else { continue };
                let d99 = sy.pct(0.99) - base_r.pct(0.99);
                let verdict = if base != "passthrough" {
                    String::new()
                } else if d99 <= 2.0 {
                    "; target p99 <= passthrough + 2 ms: **met**".to_owned()
                } else {
                    "; target p99 <= passthrough + 2 ms: **missed**".to_owned()
                };
                let _ = writeln!(
                    out,
                    "\nswitchyard - {base}: p50 {:+.2} ms ({:.2}x), p99 {d99:+.2} ms ({:.2}x), p99.9 {:+.2} ms{verdict}",
                    sy.pct(0.5) - base_r.pct(0.5),
                    sy.pct(0.5) / base_r.pct(0.5),
                    sy.pct(0.99) / base_r.pct(0.99),
                    sy.pct(0.999) - base_r.pct(0.999),
                );
            }
        }
        out.push('\n');
    }
    if !throughput.is_empty() {
        out.push_str(
            "| throughput | records/s first->last output | records/s from start | first output after s | delivered | dup | peak RSS MiB | CPU % router | CPU % broker | CPU % checker | CPU % other |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in throughput {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.2} | {}/{} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.first_to_last,
                r.start_to_last,
                r.first_output_s,
                r.delivered,
                r.records,
                r.duplicates,
                opt(r.rss_mib, 0),
                opt(r.cpu.router, 0),
                opt(r.cpu.broker, 0),
                opt(r.cpu.bench, 0),
                opt(r.cpu.other, 0),
            );
        }
        let find = |n: &str| throughput.iter().find(|r| r.name == n);
        if let Some(sy) = find("switchyard") {
            for base in ["passthrough", "native route"] {
                let Some(base_r) = find(base) else { continue };
                let ratio = sy.first_to_last / base_r.first_to_last;
                let verdict = match (base, ratio >= 0.9) {
                    ("passthrough", true) => "; target >= 90%: **met**",
                    ("passthrough", false) => "; target >= 90%: **missed**",
                    _ => "",
                };
                let _ = writeln!(
                    out,
                    "\nswitchyard / {base}: {:.0}% first->last, {:.0}% from start{verdict}",
                    100.0 * ratio,
                    100.0 * sy.start_to_last / base_r.start_to_last,
                );
            }
        }
    }
    out
}

fn json(knobs: &Knobs, latency: &[LatencyResult], throughput: &[ThroughputResult]) -> String {
    let lat: Vec<serde_json::Value> = latency
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99), "p999_ms": r.pct(0.999),
                "max_ms": r.pct(1.0),
                "rate": r.delivered_rate, "offered_rate": r.offered_rate,
                "measured": r.measured, "lost": r.lost, "duplicates": r.duplicates,
                "rss_mib": r.rss_mib, "cpu_router": r.cpu.router, "cpu_broker": r.cpu.broker,
                "cpu_bench": r.cpu.bench, "cpu_other": r.cpu.other,
                "ready_after_s": r.ready_after_s,
                "worst_per_second_ms": r.worst_per_second_ms,
                "median_per_second_ms": r.median_per_second_ms,
            })
        })
        .collect();
    let tp: Vec<serde_json::Value> = throughput
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name, "records": r.records, "delivered": r.delivered,
                "duplicates": r.duplicates, "first_to_last": r.first_to_last,
                "start_to_last": r.start_to_last, "first_output_s": r.first_output_s,
                "rss_mib": r.rss_mib, "cpu_router": r.cpu.router, "cpu_broker": r.cpu.broker,
                "cpu_bench": r.cpu.bench, "cpu_other": r.cpu.other,
            })
        })
        .collect();
    serde_json::json!({
        "rate": knobs.rate, "warmup_s": knobs.warmup.as_secs(), "secs": knobs.secs.as_secs(),
        "preload": knobs.preload, "max_in_flight": knobs.max_in_flight,
        "latency": lat, "throughput": tp,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------

/// A path under test: the phase's name in `SKIP`, its name in the report, how it starts.
#[derive(Clone, Copy)]
enum Path3 {
    Passthrough,
    NativeRoute,
    Switchyard,
}

impl Path3 {
    const ALL: [Path3; 3] = [Path3::Passthrough, Path3::NativeRoute, Path3::Switchyard];

    fn key(self) -> &'static str {
        match self {
            Path3::Passthrough => "pt",
            Path3::NativeRoute => "nr",
            Path3::Switchyard => "sy",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Path3::Passthrough => "passthrough",
            Path3::NativeRoute => "native route",
            Path3::Switchyard => "switchyard",
        }
    }

    /// Output topics when reading `<prefix>-in`.
    fn outputs(self, prefix: &str) -> Vec<String> {
        match self {
            Path3::Passthrough => vec![format!("{prefix}-out")],
            Path3::NativeRoute | Path3::Switchyard => routed_outputs(prefix),
        }
    }

    fn start(
        self,
        bootstrap: &str,
        prefix: &str,
        knobs: &Knobs,
        dir: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let input = format!("{prefix}-in");
        match self {
            Path3::Passthrough => start_passthrough(
                bootstrap,
                &input,
                Dest::Topic(&format!("{prefix}-out")),
                dir,
            ),
            Path3::NativeRoute => start_passthrough(bootstrap, &input, Dest::Route(prefix), dir),
            Path3::Switchyard => {
                start_switchyard(bootstrap, &input, prefix, knobs.max_in_flight, dir)
            }
        }
    }
}

fn bench() -> anyhow::Result<()> {
    let knobs = Knobs::from_env();
    let began = Instant::now();
    // Build what the phases need before the clock matters.
    switchyard_binary()?;
    let _ = switchyard_tests::plugin_path("route");
    let dir = scratch_dir("pipeline-latency");

    let broker = Broker::tansu()?;
    let b = broker.bootstrap().to_owned();
    let mut topics = vec!["hop".to_owned()];
    for path in Path3::ALL {
        for prefix in [path.key().to_owned(), format!("tp-{}", path.key())] {
            topics.push(format!("{prefix}-in"));
            topics.extend(path.outputs(&prefix));
        }
    }
    let specs: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
    broker.create_topics(&specs)?;

    let mut latency = Vec::new();
    if knobs.runs("hop") {
        eprintln!("one hop at {}/s ...", knobs.rate);
        latency.push(latency_phase(
            "one hop (no router)",
            &b,
            "hop",
            &["hop".to_owned()],
            None,
            &knobs,
        )?);
    }
    for path in Path3::ALL.into_iter().filter(|p| knobs.runs(p.key())) {
        eprintln!("{} at {}/s ...", path.name(), knobs.rate);
        let prefix = path.key();
        let child = path.start(&b, prefix, &knobs, &dir)?;
        latency.push(latency_phase(
            path.name(),
            &b,
            &format!("{prefix}-in"),
            &path.outputs(prefix),
            Some(child),
            &knobs,
        )?);
    }

    let mut throughput = Vec::new();
    if knobs.runs("tp") && knobs.preload > 0 {
        let n = knobs.preload;
        let paths: Vec<Path3> = Path3::ALL
            .into_iter()
            .filter(|p| knobs.runs(&format!("tp-{}", p.key())))
            .collect();
        eprintln!("throughput: preloading {n} records into each input ...");
        let t = Instant::now();
        for path in &paths {
            preload(&b, &format!("tp-{}-in", path.key()), n)?;
        }
        eprintln!("  preloaded in {:.1} s", t.elapsed().as_secs_f64());
        for path in paths {
            eprintln!("throughput: {} ...", path.name());
            let prefix = format!("tp-{}", path.key());
            throughput.push(throughput_phase(
                path.name(),
                &b,
                &path.outputs(&prefix),
                n,
                || path.start(&b, &prefix, &knobs, &dir),
                &knobs,
            )?);
        }
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);

    let text = report(&knobs, &latency, &throughput, began.elapsed());
    println!("\n{text}");
    let target = Target::locate();
    let md = target.dir.join("pipeline_latency.md");
    std::fs::write(&md, &text).with_context(|| format!("cannot write {}", md.display()))?;
    let js = target.dir.join("pipeline_latency.json");
    std::fs::write(&js, json(&knobs, &latency, &throughput))
        .with_context(|| format!("cannot write {}", js.display()))?;
    eprintln!("written to {} and {}", md.display(), js.display());
    Ok(())
}

fn main() {
    let result = if std::env::var_os("PASSTHROUGH_MODE").is_some() {
        passthrough()
    } else {
        // `cargo bench` passes `--bench` (and any filter); there is nothing to select.
        bench()
    };
    if let Err(e) = result {
        eprintln!("pipeline_latency: {e:#}");
        std::process::exit(1);
    }
}
