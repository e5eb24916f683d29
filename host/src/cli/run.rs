//! `switchyard run`: a router until SIGTERM or SIGINT.
//!
//! ```text
//! running --(signal, or a pipeline fails)--> stopping --(every pipeline drained)--> exit 0 (or 1 on a pipeline error)
//!                                            stopping --(second signal)------------> exit 130
//!                                            stopping --(stop deadline passed)------> exit 1
//! ```
//!
//! Every phase of a stop has a deadline of its own (the drain, the final commit, leaving the
//! group, the producer's flush); the stop deadline, their sum plus slack, catches whatever
//! does not keep to them. Records after the last commit are delivered again after a restart.

use crate::app::{self, StartOptions};
use crate::config::Config;
use crate::source::{CLOSE_TIMEOUT, COMMIT_TIMEOUT};
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Runs the config's pipelines until a signal, then drains and returns how they ended.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let deadline = stop_deadline(&config);
    let running = app::start(config, StartOptions::default())?;
    running.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining and committing."),
            _ = int.recv() => tracing::info!("SIGINT: draining and committing."),
            // A pipeline failed and stopped the others, or every pipeline ended.
            () = running.stopping() => {}
            () = running.finished() => {}
        }
        running.stop();
        tokio::select! {
            () = running.finished() => {}
            _ = term.recv() => second_signal(),
            _ = int.recv() => second_signal(),
            () = tokio::time::sleep(deadline) => {
                tracing::error!(
                    limit_s = deadline.as_secs(),
                    "The stop did not finish in time; exiting now. Records after the last commit will be delivered again."
                );
                std::process::exit(1);
            }
        }
        anyhow::Ok(())
    })?;
    running.wait()
}

fn second_signal() {
    tracing::warn!("Second signal: exiting now; in-flight records will be delivered again.");
    std::process::exit(130);
}

/// How long a stop may take before the process exits regardless.
fn stop_deadline(config: &Config) -> Duration {
    let drain = config
        .pipelines
        .iter()
        .map(|p| Duration::from_millis(p.drain_timeout_ms))
        .max()
        .unwrap_or_default();
    // The drain, then the producer's flush (each up to the drain timeout), the commit and the
    // close.
    2 * drain + COMMIT_TIMEOUT + CLOSE_TIMEOUT + Duration::from_secs(10)
}
