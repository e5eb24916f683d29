//! The `switchyard` binary: thin on purpose. Parses the command line, sets up logging, and
//! hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchyard::admin;
use switchyard::client::{self, Client};
use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::pipeline;
use switchyard::plugin::{EngineConfig, PluginEngine};
use switchyard::versions::VersionStore;

/// mimalloc rather than the system allocator: the hot path allocates and frees every record's
/// bytes, and in a profile glibc's heap trimming turned that into page faults. The plugin
/// benchmark (tests/benches/plugin_throughput.rs) uses the same allocator.
///
/// Its `override` feature also makes it the C `malloc` of the whole process, librdkafka
/// included: librdkafka allocates each message and header on a worker thread and frees it on
/// the delivery-report thread, the pattern glibc serves worst (a profile of a backlog drain had
/// a fifth of the router's time in glibc's `_int_malloc`/`_int_free`; with the override, CPU
/// per record fell about 10%: BENCHMARKS.md, "session 6 re-run").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kafka-to-Kafka stream router that runs WebAssembly plugins on every record.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of a config file until SIGTERM or SIGINT, then drain in-flight
    /// records, commit, and exit 0. A second signal exits at once (in-flight records are
    /// then delivered again after a restart), and so does a stop still unfinished after
    /// 2 × drain_timeout_ms + 35 s (exit 1).
    Run {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: parse it, load and type-check every plugin and call its init.
    /// Exits non-zero with the reason if anything is wrong. Does not connect to Kafka.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Compile and type-check a plugin component against the switchyard:plugin world, and
    /// print its version (sha256). Exits non-zero with the reason if it cannot be used.
    Inspect {
        /// Path to the component (.wasm).
        plugin: PathBuf,
    },
    /// Route a generated live stream through the example pipeline (validate -> enrich ->
    /// transform -> route) on an embedded broker, show progress, and prove every event is
    /// accounted for. The admin API stays up meanwhile, for hot reloads.
    Demo {
        /// Use this Kafka cluster (bootstrap servers) instead of the embedded broker.
        #[arg(long)]
        brokers: Option<String>,
        /// Events per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// How long to generate, in seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Directory holding the example plugins (validate.wasm, enrich.wasm, transform.wasm,
        /// route.wasm).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Admin API address.
        #[arg(long, default_value = switchyard::config::DEFAULT_ADMIN_LISTEN)]
        admin_listen: String,
        /// Keep the config, table and state here (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Run a plugin over sample records locally, with no Kafka, and print each record's
    /// verdict and outputs (JSON lines; a table on a terminal).
    TestPlugin {
        /// The component (.wasm).
        plugin: PathBuf,
        /// Sample records, one JSON object per line: `{"key", "value", "headers"}` or a bare
        /// event (used as the value).
        #[arg(long, short)]
        input: PathBuf,
        /// A config entry for `init` (repeat for each key).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A lookup table from a JSON Lines file, keyed by a top-level field (default `id`).
        #[arg(long = "table", value_name = "NAME=FILE[:KEY_FIELD]")]
        table: Vec<String>,
        /// A route the plugin may name, besides `default` (repeat for each).
        #[arg(long = "route", value_name = "NAME")]
        route: Vec<String>,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Manage a running router's plugins through its admin API.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Show a running router's pipelines (state, stages and versions, counters, lag).
    Pipelines {
        /// One pipeline; all if omitted.
        name: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Where a running router's admin API is.
#[derive(clap::Args)]
struct ApiArgs {
    /// The admin API's address.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = client::DEFAULT_ADMIN_URL)]
    admin: String,
    /// Bearer token for changes.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> Client {
        Client::new(&self.admin, self.token.clone())
    }
}

#[derive(Subcommand)]
enum PluginAction {
    /// Upload a new version of a stage's plugin; prints its version once every worker runs it.
    Push {
        /// The pipeline.
        #[arg(long, short)]
        pipeline: String,
        /// The stage.
        #[arg(long, short)]
        stage: String,
        /// The component (.wasm).
        plugin: PathBuf,
        /// Replace the stage's config map (repeat for each key); without it the config is kept.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Go back to the stage's previous version.
    Rollback {
        /// The pipeline.
        #[arg(long, short)]
        pipeline: String,
        /// The stage.
        #[arg(long, short)]
        stage: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The stage's active version, rollback stack and history.
    Versions {
        /// The pipeline.
        #[arg(long, short)]
        pipeline: String,
        /// The stage.
        #[arg(long, short)]
        stage: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws its own progress on the terminal: only warnings unless RUST_LOG says.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Compiles (start-up, uploads) yield the CPU to the workers.
    switchyard::plugin::engine::lower_compile_priority();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect { plugin } => {
            let engine = PluginEngine::new(&EngineConfig::default())
                .context("cannot start the plugin engine")?;
            let module = engine.load_file(&plugin)?;
            println!("{}: ok", plugin.display());
            println!("version (sha256): {}", module.version);
            println!("size: {} bytes", module.size);
            Ok(())
        }
        Command::Check { config } => {
            let parsed = Config::load(&config)?;
            let engine = PluginEngine::new(&EngineConfig::default())
                .context("cannot start the plugin engine")?;
            let metrics = Metrics::new();
            for p in pipeline::load(&parsed, engine, &metrics, &VersionStore::memory())? {
                let stages: Vec<String> = p
                    .spec()
                    .stages()
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.module.version.short()))
                    .collect();
                println!("pipeline {}: ok: {}", p.name(), stages.join(" -> "));
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Run { config } => run(&config),
        Command::Plugin { action } => plugin_command(action),
        Command::TestPlugin {
            plugin,
            input,
            config,
            table,
            route,
            json,
        } => {
            use switchyard::test_plugin::{TestPluginOptions, parse_table, run};
            let options = TestPluginOptions {
                plugin,
                input,
                config: client::parse_pairs(&config, "--config")?
                    .into_iter()
                    .collect(),
                tables: table
                    .iter()
                    .map(|t| parse_table(t))
                    .collect::<anyhow::Result<_>>()?,
                routes: route,
                json,
            };
            run(&options, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Demo {
            brokers,
            rate,
            duration,
            plugins,
            admin_listen,
            work_dir,
            summary_json,
        } => {
            let summary = switchyard::demo::run(&switchyard::demo::DemoOptions {
                brokers,
                rate,
                duration: Duration::from_secs(duration),
                plugins: plugins.unwrap_or_else(switchyard::demo::default_plugins_dir),
                admin_listen,
                work_dir,
                summary_json,
            })?;
            anyhow::ensure!(
                summary.all_accounted,
                "not every generated event was accounted for"
            );
            Ok(())
        }
        Command::Pipelines { name, api } => {
            let path = match name {
                Some(name) => format!("/api/v1/pipelines/{name}"),
                None => "/api/v1/pipelines".into(),
            };
            print_json(&api.client().get(&path)?)
        }
    }
}

fn plugin_command(action: PluginAction) -> anyhow::Result<()> {
    match action {
        PluginAction::Push {
            pipeline,
            stage,
            plugin,
            config,
            api,
        } => {
            let config = if config.is_empty() {
                None
            } else {
                Some(client::parse_pairs(&config, "--config")?)
            };
            let answer = api
                .client()
                .push(&pipeline, &stage, &plugin, config.as_ref())?;
            print_json(&answer)
        }
        PluginAction::Rollback {
            pipeline,
            stage,
            api,
        } => print_json(&api.client().post(&format!(
            "/api/v1/pipelines/{pipeline}/stages/{stage}/rollback"
        ))?),
        PluginAction::Versions {
            pipeline,
            stage,
            api,
        } => print_json(&api.client().get(&format!(
            "/api/v1/pipelines/{pipeline}/stages/{stage}/versions"
        ))?),
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs the pipelines on their own threads; this thread waits for a signal.
fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine =
        PluginEngine::new(&EngineConfig::default()).context("cannot start the plugin engine")?;
    let metrics = Arc::new(Metrics::new());
    let store = match &config.admin.state_dir {
        Some(dir) => VersionStore::at(dir.clone()).context("admin.state_dir")?,
        None => VersionStore::memory(),
    };
    let pipelines = pipeline::load(&config, engine, &metrics, &store)?;
    let handles: Vec<_> = pipelines.iter().map(pipeline::Pipeline::handle).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("admin")
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    // Bound before any record is read: a taken port fails the start, naming the key.
    let serving = if config.admin.enabled {
        let serving = admin::start(&runtime, &config.admin, handles, metrics.clone())?;
        tracing::info!(address = %serving.address, state_dir = ?store.dir(), "Admin API listening.");
        Some(serving)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("pipelines".into())
            .spawn(move || pipeline::run_all(pipelines, stop))?
    };
    let stop_limit = stop_deadline(&config);
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut signalled = false;
        // When the stop began: on a signal, or when a failing pipeline stopped the others.
        let mut stopping_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if runner.is_finished() {
                        break;
                    }
                    if stop.load(Ordering::Acquire) {
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > stop_limit {
                            tracing::error!(
                                limit_s = stop_limit.as_secs(),
                                "The stop did not finish in time; exiting now. Records after the last commit will be delivered again."
                            );
                            std::process::exit(1);
                        }
                    }
                    continue;
                }
            }
            if signalled {
                tracing::warn!(
                    "Second signal: exiting now; in-flight records will be delivered again."
                );
                std::process::exit(130);
            }
            signalled = true;
            stopping_since.get_or_insert_with(Instant::now);
            tracing::info!("Signal received: draining and committing.");
            stop.store(true, Ordering::Release);
        }
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Release);
    let result = runner
        .join()
        .map_err(|_| anyhow::anyhow!("the pipelines thread panicked"))?;
    if let Some(serving) = &serving {
        serving.stop();
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// How long a stop may take before the process exits regardless: every phase has a deadline
/// of its own (the drain, the final commit, leaving the group, the producer's flush), and this
/// one, their sum plus slack, catches whatever does not keep to them.
fn stop_deadline(config: &Config) -> Duration {
    let drain = config
        .pipelines
        .iter()
        .map(|p| Duration::from_millis(p.drain_timeout_ms))
        .max()
        .unwrap_or_default();
    // The drain, then the producer's flush (each up to the drain timeout), the commit and the
    // close.
    2 * drain
        + switchyard::source::COMMIT_TIMEOUT
        + switchyard::source::CLOSE_TIMEOUT
        + Duration::from_secs(10)
}
