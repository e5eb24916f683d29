//! `switchyard demo`: a live stream routed end to end on an embedded broker, in one command.
//!
//! ```text
//! generator --> demo-events --> [validate -> enrich (users table) -> transform -> route] --> demo-standard
//!  (rate/s)                                                                 |                 demo-urgent
//!                                                                           |                 demo-errors
//!                                                                           \--> demo-dlq (invalid records)
//!                         checker <-- every output topic: counts, latency, accounting
//! ```
//!
//! The broker is librdkafka's own mock cluster (its test broker, in this process, listening on
//! a loopback port so kcat and other clients can connect), or a real cluster with
//! `--brokers`. The generator knows where each event must end up; the checker reads every
//! output topic and at the end proves each generated event landed in exactly that topic.
//! The admin API stays up the whole time, so a plugin can be hot-reloaded mid-run.

use crate::config::Config;
use crate::kafka::now_ms;
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo's input topic.
pub const INPUT: &str = "demo-events";
/// Route -> topic.
pub const ROUTES: [(&str, &str); 3] = [
    ("standard", "demo-standard"),
    ("urgent", "demo-urgent"),
    ("errors", "demo-errors"),
];
/// The dead-letter topic.
pub const DEAD_LETTER: &str = "demo-dlq";
/// The header carrying each generated event's number (for the accounting).
const ID_HEADER: &str = "demo-event-id";
/// Partitions of every demo topic.
const PARTITIONS: i32 = 4;
/// Users in the reference table (ids user-0000 .. user-0199); events also come from a few
/// unknown users, which the left join keeps with nulls.
const USERS: u64 = 200;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A real cluster's bootstrap servers; `None` starts the embedded mock broker.
    pub brokers: Option<String>,
    /// Events per second.
    pub rate: u64,
    /// How long to generate.
    pub duration: Duration,
    /// Where the example plugins (`validate.wasm`, ...) are.
    pub plugins: PathBuf,
    /// Admin API address.
    pub admin_listen: String,
    /// Working directory (config, users table, state); a temporary one if `None`.
    pub work_dir: Option<PathBuf>,
    /// Write the summary as JSON here too.
    pub summary_json: Option<PathBuf>,
}

/// How the run ended, as counted by the checker.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Events generated.
    pub generated: u64,
    /// Seconds spent generating.
    pub seconds: f64,
    /// Distinct events read per topic.
    pub per_topic: BTreeMap<String, u64>,
    /// Dead letters by reason (the `switchyard-dlq-reason` header).
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Generated events found in no topic.
    pub missing: u64,
    /// Generated events read from more than one topic (must be 0).
    pub split: u64,
    /// Events in another topic than the stock plugins send them to (0 unless a plugin was
    /// hot-reloaded during the run).
    pub rerouted: u64,
    /// Records read more than once (at-least-once redelivery).
    pub duplicates: u64,
    /// End-to-end latency percentiles in ms: event timestamp -> read from its output topic.
    pub latency_ms: BTreeMap<String, f64>,
    /// Every generated event is in exactly one output or the dead-letter topic.
    pub all_accounted: bool,
}

/// One generated event: its bytes and the topic it must end up in.
struct Event {
    key: String,
    value: Vec<u8>,
    expected_topic: &'static str,
}

/// A realistic event stream: page views, clicks, purchases, sign-ups from known and unknown
/// users; about 1 in 12 high priority, 1 in 15 an error event, 1 in 40 invalid.
fn generate_event(i: u64) -> Event {
    const TYPES: [&str; 4] = ["page_view", "click", "purchase", "signup"];
    // A cheap deterministic scramble so the patterns do not line up.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let user = if h.is_multiple_of(50) {
        format!("user-9{:03}", h % 1000) // not in the table: enriched with nulls
    } else {
        format!("user-{:04}", h % USERS)
    };
    let event_type = if h % 15 == 1 {
        "error"
    } else {
        TYPES[(h % 4) as usize]
    };
    let priority = if h % 12 == 2 { "high" } else { "normal" };
    let amount = (h % 50_000) as f64 / 100.0;
    let now = now_ms();
    let (value, expected_topic) = match h % 40 {
        // Not JSON at all.
        7 => (
            format!("{{\"event_id\": \"evt-{i}\", \"user_id\": \"{user}\", oops").into_bytes(),
            DEAD_LETTER,
        ),
        // A required field is missing.
        17 => (
            format!(r#"{{"event_id":"evt-{i}","event_type":"{event_type}","priority":"{priority}","amount":{amount},"ts":{now}}}"#)
                .into_bytes(),
            DEAD_LETTER,
        ),
        // A field of the wrong type.
        27 => (
            format!(r#"{{"event_id":"evt-{i}","user_id":"{user}","event_type":"{event_type}","priority":"{priority}","amount":"{amount}","ts":{now}}}"#)
                .into_bytes(),
            DEAD_LETTER,
        ),
        _ => {
            let topic = if priority == "high" {
                "demo-urgent"
            } else if event_type == "error" {
                "demo-errors"
            } else {
                "demo-standard"
            };
            (
                format!(r#"{{"event_id":"evt-{i}","user_id":"{user}","event_type":"{event_type}","priority":"{priority}","amount":{amount},"email":"{user}@example.com","ts":{now}}}"#)
                    .into_bytes(),
                topic,
            )
        }
    };
    Event {
        key: user,
        value,
        expected_topic,
    }
}

/// The users table (JSON Lines).
fn users_table() -> String {
    const SEGMENTS: [&str; 3] = ["enterprise", "smb", "consumer"];
    (0..USERS)
        .map(|u| {
            format!(
                "{{\"id\":\"user-{u:04}\",\"name\":\"User {u}\",\"segment\":\"{}\"}}\n",
                SEGMENTS[(u % 3) as usize]
            )
        })
        .collect()
}

/// The pipeline config the demo runs (written to the work directory for the reader to see).
fn config_text(brokers: &str, plugins: &Path, admin_listen: &str) -> String {
    let plugin = |name: &str| plugins.join(format!("{name}.wasm")).display().to_string();
    let routes: String = ROUTES
        .iter()
        .map(|(r, t)| format!("{r} = \"{t}\"\n"))
        .collect();
    format!(
        r#"# Written by `switchyard demo`.
[kafka]
brokers = "{brokers}"

[admin]
listen = "{admin_listen}"
state_dir = "state"

[[table]]
name = "users"
path = "users.jsonl"
key_field = "id"

[[pipeline]]
name = "demo"
topics = ["{INPUT}"]
default_route = "standard"
dead_letter_topic = "{DEAD_LETTER}"
[pipeline.routes]
{routes}
[[pipeline.stage]]
name = "validate"
plugin = "{validate}"
[pipeline.stage.config]
required = "event_id:string,user_id:string,event_type:string,priority:string,amount:number"

[[pipeline.stage]]
name = "enrich"
plugin = "{enrich}"
[pipeline.stage.config]
table = "users"
key_field = "user_id"
fields = "name:user_name,segment:user_segment"

[[pipeline.stage]]
name = "transform"
plugin = "{transform}"
[pipeline.stage.config]
remove = "email"

[[pipeline.stage]]
name = "route"
plugin = "{route}"
"#,
        validate = plugin("validate"),
        enrich = plugin("enrich"),
        transform = plugin("transform"),
        route = plugin("route"),
    )
}

/// Where the example plugins are by default: `$SWITCHYARD_PLUGINS_TARGET_DIR` or
/// `plugins/target`, under `wasm32-wasip2/release`.
pub fn default_plugins_dir() -> PathBuf {
    let target = std::env::var_os("SWITCHYARD_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("plugins/target"));
    target.join("wasm32-wasip2").join("release")
}

fn check_plugins(dir: &Path) -> anyhow::Result<()> {
    for name in ["validate", "enrich", "transform", "route"] {
        let path = dir.join(format!("{name}.wasm"));
        anyhow::ensure!(
            path.is_file(),
            "cannot find the example plugin {} (build them with `(cd plugins && cargo build --release --target wasm32-wasip2)`, or pass --plugins DIR)",
            path.display()
        );
    }
    Ok(())
}

/// What the checker saw, shared with the progress display.
#[derive(Default)]
struct Seen {
    /// Event number -> the topics it was read from (with repeats).
    events: HashMap<u64, Vec<&'static str>>,
    per_topic: HashMap<&'static str, u64>,
    reasons: BTreeMap<String, u64>,
    /// Latencies of records created after the warm-up.
    latencies_ms: Vec<i64>,
    records: u64,
    /// Records created before this time (ms since the epoch) are not in the latency figures:
    /// the router's producer starts up during the first second of any run.
    measure_from_ms: i64,
}

/// The start of a run whose latency is not reported (producer start-up).
const WARM_UP: Duration = Duration::from_secs(1);

fn topic_name(topic: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|(_, t)| *t)
        .chain([DEAD_LETTER])
        .find(|t| *t == topic)
        .unwrap_or("other")
}

/// Reads every output topic from its current end until `stop`.
fn checker(
    client: ClientConfig,
    seen: Arc<Mutex<Seen>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "switchyard-demo-checker")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create the checker's consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in ROUTES.iter().map(|(_, t)| *t).chain([DEAD_LETTER]) {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::End)?;
        }
    }
    consumer.assign(&tpl)?;
    // An assignment at End resolves on the first fetch: poll until every partition has a
    // position, so nothing produced from now on is missed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = consumer.poll(Duration::from_millis(50));
        let positioned = consumer.position().map(|p| {
            p.elements()
                .iter()
                .all(|e| matches!(e.offset(), Offset::Offset(_)))
        });
        if positioned.unwrap_or(false) || Instant::now() > deadline {
            break;
        }
    }
    ready.store(true, Ordering::Release);
    while !stop.load(Ordering::Acquire) {
        let Some(result) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = match result {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "Demo checker: read error.");
                continue;
            }
        };
        let now = now_ms();
        let topic = topic_name(message.topic());
        let mut id = None;
        let mut reason = None;
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
                match h.key {
                    ID_HEADER => id = text.and_then(|t| t.parse::<u64>().ok()),
                    "switchyard-dlq-reason" => reason = text.map(str::to_owned),
                    _ => {}
                }
            }
        }
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.records += 1;
        *s.per_topic.entry(topic).or_default() += 1;
        if let Some(ts) = message.timestamp().to_millis()
            && ts >= s.measure_from_ms
        {
            s.latencies_ms.push(now - ts);
        }
        if let Some(reason) = reason {
            *s.reasons.entry(reason).or_default() += 1;
        }
        if let Some(id) = id {
            s.events.entry(id).or_default().push(topic);
        }
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[(((n - 1) as f64) * p).round() as usize] as f64,
    }
}

/// The broker the demo runs on: the embedded mock cluster, or a real one.
struct Broker {
    /// Kept alive for the whole run; dropped last.
    _mock:
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    bootstrap: String,
}

impl Broker {
    /// Starts the embedded broker (or connects to `brokers`) and creates the demo's topics.
    fn start(brokers: Option<&str>) -> anyhow::Result<Broker> {
        let topics: Vec<&str> = std::iter::once(INPUT)
            .chain(ROUTES.iter().map(|(_, t)| *t))
            .chain([DEAD_LETTER])
            .collect();
        match brokers {
            Some(bootstrap) => {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a runtime for the topic set-up")?
                    .block_on(create_topics(bootstrap, &topics))?;
                Ok(Broker {
                    _mock: None,
                    bootstrap: bootstrap.to_owned(),
                })
            }
            None => {
                let mock = rdkafka::mocking::MockCluster::new(1)
                    .context("cannot start the embedded broker (librdkafka's mock cluster)")?;
                for t in &topics {
                    mock.create_topic(t, PARTITIONS, 1)
                        .with_context(|| format!("cannot create topic {t}"))?;
                }
                Ok(Broker {
                    bootstrap: mock.bootstrap_servers(),
                    _mock: Some(mock),
                })
            }
        }
    }
}

/// The router, configured as a user would: the config and users table written to `work`.
fn start_router(
    work: &Path,
    brokers: &str,
    plugins: &Path,
    admin_listen: &str,
) -> anyhow::Result<(crate::app::Running, PathBuf)> {
    std::fs::write(work.join("users.jsonl"), users_table())?;
    let config_path = work.join("switchyard.toml");
    std::fs::write(&config_path, config_text(brokers, plugins, admin_listen))?;
    let config = Config::load(&config_path)?;
    let running = crate::app::start(config, crate::app::StartOptions::default())?;
    Ok((running, config_path))
}

/// Waits until the router owns its partitions (at most 20 s), so that the first events do
/// not wait for the group join (it would show as latency).
fn wait_until_assigned(running: &crate::app::Running) {
    let joined = Instant::now();
    while running
        .pipelines()
        .first()
        .is_some_and(|p| p.status.tracker.partitions().is_empty())
        && joined.elapsed() < Duration::from_secs(20)
        && !running.is_finished()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The checker on its own thread, reading every output topic from its current end.
struct Checker {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Checker {
    /// Starts reading and returns once every output partition has a position.
    fn start(client: &ClientConfig) -> anyhow::Result<Checker> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, seen, ready, stop) =
                (client.clone(), seen.clone(), ready.clone(), stop.clone());
            std::thread::Builder::new()
                .name("demo-checker".into())
                .spawn(move || checker(client, seen, ready, stop))?
        };
        while !ready.load(Ordering::Acquire) && !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Checker { seen, stop, thread })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the checker panicked"))?
    }
}

/// What the generator wrote: the topic each event must end up in, by event number.
struct Generated {
    expected: Vec<&'static str>,
    seconds: f64,
}

/// Writes `rate` events per second for `duration`, showing progress; returns once the broker
/// has acknowledged every one.
fn generate(
    client: &ClientConfig,
    options: &DemoOptions,
    checker: &Checker,
    terminal: bool,
) -> anyhow::Result<Generated> {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("cannot create the demo's producer")?;
    let mut expected = Vec::new();
    let started = Instant::now();
    checker.seen().measure_from_ms = now_ms() + WARM_UP.as_millis() as i64;
    let mut last_progress = Instant::now();
    let progress_every = Duration::from_millis(if terminal { 500 } else { 2000 });
    while started.elapsed() < options.duration {
        let due = ((started.elapsed().as_secs_f64() * options.rate as f64) as u64).max(1);
        while (expected.len() as u64) < due && started.elapsed() < options.duration {
            let i = expected.len() as u64;
            let event = generate_event(i);
            send(&producer, i, &event)?;
            expected.push(event.expected_topic);
        }
        if last_progress.elapsed() >= progress_every {
            progress(&checker.seen, started.elapsed(), terminal);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(30))
        .context("the broker did not acknowledge every generated event")?;
    Ok(Generated { expected, seconds })
}

/// Sends one event, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    i: u64,
    event: &Event,
) -> anyhow::Result<()> {
    let id = i.to_string();
    let mut record = BaseRecord::<str, [u8]>::to(INPUT)
        .key(event.key.as_str())
        .payload(&event.value)
        .headers(OwnedHeaders::new().insert(Header {
            key: ID_HEADER,
            value: Some(id.as_str()),
        }));
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => anyhow::bail!("cannot produce to {INPUT}: {e}"),
        }
    }
}

/// Waits until every generated event was read from some topic, or 30 s pass with nothing new.
fn wait_for_outputs(checker: &Checker, total: u64, started: Instant, terminal: bool) {
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let (accounted, records) = {
            let s = checker.seen();
            (s.events.len() as u64, s.records)
        };
        if accounted >= total || last_change.elapsed() > Duration::from_secs(30) {
            break;
        }
        if records != last_count {
            last_count = records;
            last_change = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            progress(&checker.seen, started.elapsed(), terminal);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(&checker.seen, started.elapsed(), terminal);
    if terminal {
        eprintln!();
    }
}

/// Runs the demo; prints live progress to stderr and the summary to stdout.
pub fn run(options: &DemoOptions) -> anyhow::Result<Summary> {
    check_plugins(&options.plugins)?;
    anyhow::ensure!(options.rate > 0, "--rate must be above 0");
    let work = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let plugins = std::fs::canonicalize(&options.plugins)
        .with_context(|| format!("cannot resolve {}", options.plugins.display()))?;

    let broker = Broker::start(options.brokers.as_deref())?;
    let (running, config_path) =
        start_router(&work, &broker.bootstrap, &plugins, &options.admin_listen)?;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &broker.bootstrap)
        .set("log_level", "3");
    let checker = Checker::start(&client)?;
    wait_until_assigned(&running);
    let admin = running
        .admin_addr()
        .context("the demo needs the admin API")?;
    print_intro(&broker.bootstrap, admin, &config_path, &plugins, options);

    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let generated = generate(&client, options, &checker, terminal)?;
    wait_for_outputs(&checker, generated.expected.len() as u64, started, terminal);
    running.stop();
    let seen = checker.seen.clone();
    let checked = checker.stop();
    let ran = running.wait();
    checked?;
    ran?;

    let summary = summarize(
        &seen.lock().unwrap_or_else(|p| p.into_inner()),
        &generated.expected,
        generated.seconds,
    );
    print_summary(&summary);
    if let Some(path) = &options.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The broker last, so no client reports it going away.
    drop(broker);
    Ok(summary)
}

async fn create_topics(brokers: &str, topics: &[&str]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create an admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .context("cannot create the demo topics")?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

fn print_intro(
    brokers: &str,
    admin: std::net::SocketAddr,
    config: &Path,
    plugins: &Path,
    options: &DemoOptions,
) {
    let broker_kind = if options.brokers.is_some() {
        "your cluster"
    } else {
        "embedded broker: librdkafka's mock cluster, an in-process test broker"
    };
    let urgent = plugins.join("route.wasm");
    eprintln!(
        "Switchyard demo: {rate} events/s for {secs} s, validate -> enrich (users table) -> transform -> route\n\
         \n  broker     {brokers} ({broker_kind})\n  config     {config}\n  admin API  http://{admin}\n\
         \nWhile it runs, in another terminal:\n\
         \n  # hot-reload the route stage (here: also treat `normal` priority as urgent)\n\
         \x20 switchyard plugin push --admin http://{admin} -p demo -s route {urgent} --config urgent_values=high,normal\n\
         \n  # watch it\n  curl -s http://{admin}/api/v1/pipelines/demo\n  curl -s http://{admin}/metrics | grep switchyard_records_out\n\
         \n  # read an output topic with any Kafka client, e.g. kcat\n  kcat -b {brokers} -C -t demo-urgent -o beginning -f '%k %s\\n'\n",
        rate = options.rate,
        secs = options.duration.as_secs(),
        config = config.display(),
        urgent = urgent.display(),
    );
}

fn progress(seen: &Mutex<Seen>, elapsed: Duration, terminal: bool) {
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut recent: Vec<i64> = s.latencies_ms.iter().rev().take(5_000).copied().collect();
    recent.sort_unstable();
    let count = |t: &str| s.per_topic.get(t).copied().unwrap_or(0);
    let line = format!(
        "{:6.1} s | out {:>7} ({:>6.0}/s) | standard {:>7} | urgent {:>6} | errors {:>6} | dead-letter {:>5} | p99 {:>5.0} ms",
        elapsed.as_secs_f64(),
        s.records,
        s.records as f64 / elapsed.as_secs_f64().max(0.001),
        count("demo-standard"),
        count("demo-urgent"),
        count("demo-errors"),
        count(DEAD_LETTER),
        percentile(&recent, 0.99),
    );
    if terminal {
        eprint!("\r{line}");
        let _ = std::io::stderr().flush();
    } else {
        eprintln!("{line}");
    }
}

fn summarize(seen: &Seen, expected: &[&'static str], seconds: f64) -> Summary {
    let mut summary = Summary {
        generated: expected.len() as u64,
        seconds,
        dead_letter_reasons: seen.reasons.clone(),
        ..Summary::default()
    };
    for (i, want) in expected.iter().enumerate() {
        match seen.events.get(&(i as u64)) {
            None => summary.missing += 1,
            Some(topics) => {
                let first = topics[0];
                if topics.iter().any(|t| *t != first) {
                    summary.split += 1;
                }
                if first != *want {
                    summary.rerouted += 1;
                }
                summary.duplicates += topics.len() as u64 - 1;
                *summary.per_topic.entry(first.to_owned()).or_default() += 1;
            }
        }
    }
    let mut latencies = seen.latencies_ms.clone();
    latencies.sort_unstable();
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)] {
        summary
            .latency_ms
            .insert(name.to_owned(), percentile(&latencies, p));
    }
    summary.all_accounted = summary.missing == 0 && summary.split == 0;
    summary
}

fn print_summary(s: &Summary) {
    println!(
        "\nSwitchyard demo: {} events in {:.1} s ({:.0}/s)\n",
        s.generated,
        s.seconds,
        s.generated as f64 / s.seconds.max(0.001)
    );
    println!("| topic | events |\n|---|---:|");
    for (topic, n) in &s.per_topic {
        println!("| {topic} | {n} |");
    }
    if !s.dead_letter_reasons.is_empty() {
        println!("\n| dead-letter reason | records |\n|---|---:|");
        for (reason, n) in &s.dead_letter_reasons {
            println!("| {reason} | {n} |");
        }
    }
    let l = |k: &str| s.latency_ms.get(k).copied().unwrap_or(f64::NAN);
    println!(
        "\nend-to-end latency (event timestamp -> read from its output topic, after the first second): p50 {:.0} ms, p99 {:.0} ms, p999 {:.0} ms, max {:.0} ms",
        l("p50"),
        l("p99"),
        l("p999"),
        l("max")
    );
    println!(
        "\ncheck: {} of {} generated events are in exactly one output or the dead-letter topic; missing {}, in two topics {}, read twice {}: {}",
        s.generated - s.missing - s.split,
        s.generated,
        s.missing,
        s.split,
        s.duplicates,
        if s.all_accounted { "OK" } else { "FAILED" }
    );
    if s.rerouted > 0 {
        println!(
            "       {} events went elsewhere than the stock plugins send them (a plugin was changed during the run)",
            s.rerouted
        );
    }
}
