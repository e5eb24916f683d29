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
//!
//! This module owns the options, the broker and router set-up, the run itself and the
//! printed summary. What is generated (events, users table, config) is in `events`; what is
//! read back and how it is accounted for is in `checker`.

mod checker;
mod events;

use crate::config::Config;
use anyhow::Context as _;
use checker::Checker;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
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
    /// Also run the stateful windows pipeline (`--scenario windows`).
    pub windows: bool,
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
    /// `--scenario windows`: what the windows pipeline wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsSummary>,
}

/// What the stateful windows pipeline of `--scenario windows` wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WindowsSummary {
    /// Aggregates written (one each time a window changed).
    pub aggregates: u64,
    /// Distinct (user, window) pairs.
    pub windows: u64,
    /// The last aggregate of the five busiest windows.
    pub busiest: Vec<serde_json::Value>,
}

/// The windows pipeline's output topic.
pub const AGGREGATES: &str = "demo-aggregates";
/// The windows pipeline's dead-letter topic (its own: the routing pipeline's is accounted).
pub const WINDOWS_DEAD_LETTER: &str = "demo-windows-dlq";
/// The windows pipeline's changelog topic.
pub const WINDOWS_CHANGELOG: &str = "switchyard-demo-windows-changelog";

/// Where the example plugins are by default: `$SWITCHYARD_PLUGINS_TARGET_DIR` or
/// `plugins/target`, under `wasm32-wasip2/release`.
pub fn default_plugins_dir() -> PathBuf {
    let target = std::env::var_os("SWITCHYARD_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("plugins/target"));
    target.join("wasm32-wasip2").join("release")
}

fn check_plugins(dir: &Path, windows: bool) -> anyhow::Result<()> {
    let stateful = windows.then_some("window");
    for name in ["validate", "enrich", "transform", "route"]
        .into_iter()
        .chain(stateful)
    {
        let path = dir.join(format!("{name}.wasm"));
        anyhow::ensure!(
            path.is_file(),
            "cannot find the example plugin {} (build them with `(cd plugins && cargo build --release --target wasm32-wasip2)`, or pass --plugins DIR)",
            path.display()
        );
    }
    Ok(())
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
    fn start(brokers: Option<&str>, windows: bool) -> anyhow::Result<Broker> {
        let stateful: &[&str] = if windows {
            &[AGGREGATES, WINDOWS_DEAD_LETTER, WINDOWS_CHANGELOG]
        } else {
            &[]
        };
        let topics: Vec<&str> = std::iter::once(INPUT)
            .chain(ROUTES.iter().map(|(_, t)| *t))
            .chain([DEAD_LETTER])
            .chain(stateful.iter().copied())
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
    windows: bool,
) -> anyhow::Result<(crate::app::Running, PathBuf)> {
    std::fs::write(work.join("users.jsonl"), events::users_table())?;
    let config_path = work.join("switchyard.toml");
    let mut text = events::config_text(brokers, plugins, admin_listen);
    if windows {
        text.push_str(&events::windows_config_text(plugins));
    }
    std::fs::write(&config_path, text)?;
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

/// Runs the demo; prints live progress to stderr and the summary to stdout.
pub fn run(options: &DemoOptions) -> anyhow::Result<Summary> {
    check_plugins(&options.plugins, options.windows)?;
    anyhow::ensure!(options.rate > 0, "--rate must be above 0");
    let work = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let plugins = std::fs::canonicalize(&options.plugins)
        .with_context(|| format!("cannot resolve {}", options.plugins.display()))?;

    let broker = Broker::start(options.brokers.as_deref(), options.windows)?;
    let (running, config_path) = start_router(
        &work,
        &broker.bootstrap,
        &plugins,
        &options.admin_listen,
        options.windows,
    )?;
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
    let generated = events::generate(&client, options, &checker, terminal)?;
    checker::wait_for_outputs(&checker, generated.expected.len() as u64, started, terminal);
    running.stop();
    let seen = checker.seen.clone();
    let checked = checker.stop();
    let ran = running.wait();
    checked?;
    ran?;

    let mut summary = checker::summarize(
        &seen.lock().unwrap_or_else(|p| p.into_inner()),
        &generated.expected,
        generated.seconds,
    );
    if options.windows {
        summary.windows = Some(checker::read_aggregates(&client)?);
    }
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
        .map(|t| {
            let topic = NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1));
            // A changelog topic must be compacted.
            if *t == WINDOWS_CHANGELOG {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
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
    if let Some(w) = &s.windows {
        println!(
            "\nwindows (stateful pipeline demo-windows, 10 s windows per user): {} aggregates for {} windows in {AGGREGATES}; the busiest:",
            w.aggregates, w.windows
        );
        for a in &w.busiest {
            println!("  {a}");
        }
    }
    if s.rerouted > 0 {
        println!(
            "       {} events went elsewhere than the stock plugins send them (a plugin was changed during the run)",
            s.rerouted
        );
    }
}
