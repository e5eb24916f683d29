//! The `switchyard` binary: thin on purpose. Parses the command line, sets up logging, and
//! hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    /// Compile and type-check a plugin component against the switchyard:plugin world, and
    /// print its version (sha256). Exits non-zero with the reason if it cannot be used.
    Inspect {
        /// Path to the component (.wasm).
        plugin: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Inspect { plugin } => {
            let engine = PluginEngine::new(&EngineConfig::default())
                .context("cannot start the plugin engine")?;
            let module = engine.load_file(&plugin)?;
            println!("{}: ok", plugin.display());
            println!("version (sha256): {}", module.version);
            println!("size: {} bytes", module.size);
            Ok(())
        }
    }
}
