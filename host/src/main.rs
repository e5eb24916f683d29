//! The `switchyard` binary: thin on purpose. Picks the allocator, parses the command line,
//! sets up logging, and hands over to [`switchyard::cli`].

use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::Cli;

/// mimalloc rather than the system allocator: the hot path allocates and frees every record's
/// bytes, and in a profile glibc's heap trimming turned that into page faults. The plugin
/// benchmark (tests/benches/plugin_throughput.rs) uses the same allocator.
///
/// Its `override` feature also makes it the C `malloc` of the whole process, librdkafka
/// included: librdkafka allocates each message and header on a worker thread and frees it on
/// the delivery-report thread, the pattern glibc serves worst (a profile of a backlog drain had
/// a fifth of the router's time in glibc's `_int_malloc`/`_int_free`; with the override, CPU
/// per record fell about 10%: BENCHMARKS.md, "Maximum throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_level())),
        )
        .with_writer(std::io::stderr)
        .init();
    // Compiles (start-up, uploads) yield the CPU to the workers.
    switchyard::plugin::engine::lower_compile_priority();
    match switchyard::cli::dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
