//! The `switchyard` binary: thin on purpose. Parses the command line, sets up logging, and
//! hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard::admin::{self, AdminState};
use switchyard::client::{self, Client};
use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::pipeline;
use switchyard::plugin::{EngineConfig, PluginEngine};
use switchyard::versions::VersionStore;

/// mimalloc rather than the system allocator: the hot path allocates and frees every record's
/// bytes, and in a profile glibc's heap trimming turned that into page faults. The plugin
/// benchmark (tests/benches/plugin_throughput.rs) uses the same allocator.
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
    /// then delivered again after a restart).
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(Cli::parse().command) {
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
    let listener = if config.admin.enabled {
        let address = config.admin.address()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .with_context(|| format!("admin.listen: cannot listen on {address}"))?;
        let bound = listener.local_addr().unwrap_or(address);
        tracing::info!(address = %bound, state_dir = ?store.dir(), "Admin API listening.");
        Some(listener)
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
    let admin_stop = Arc::new(tokio::sync::Notify::new());
    if let Some(listener) = listener {
        let state = Arc::new(AdminState {
            pipelines: handles,
            metrics: metrics.clone(),
            tokens: config.admin.tokens.clone(),
            max_upload_bytes: config.admin.max_upload_bytes,
            switch_timeout: Duration::from_millis(config.admin.switch_timeout_ms),
        });
        let admin_stop = admin_stop.clone();
        runtime.spawn(async move {
            let shutdown = async move { admin_stop.notified().await };
            if let Err(e) = admin::serve(listener, state, shutdown).await {
                tracing::error!(error = %format!("{e:#}"), "The admin API stopped.");
            }
        });
    }
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut signalled = false;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if runner.is_finished() {
                        break;
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
            tracing::info!("Signal received: draining and committing.");
            stop.store(true, Ordering::Release);
        }
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Release);
    let result = runner
        .join()
        .map_err(|_| anyhow::anyhow!("the pipelines thread panicked"))?;
    admin_stop.notify_one();
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}
