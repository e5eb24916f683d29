//! The `switchyard` binary: thin on purpose. Parses the command line, sets up logging, and
//! hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard::config::Config;
use switchyard::pipeline;
use switchyard::plugin::{EngineConfig, PluginEngine};

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
            for p in pipeline::load(&parsed, engine)? {
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
    }
}

/// Runs the pipelines on their own threads; this thread waits for a signal.
fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine =
        PluginEngine::new(&EngineConfig::default()).context("cannot start the plugin engine")?;
    let pipelines = pipeline::load(&config, engine)?;
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("pipelines".into())
            .spawn(move || pipeline::run_all(pipelines, stop))?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
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
    runner
        .join()
        .map_err(|_| anyhow::anyhow!("the pipelines thread panicked"))?
}
