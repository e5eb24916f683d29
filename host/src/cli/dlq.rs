//! `switchyard dlq ...`: working with a pipeline's dead-letter topic. `replay` is
//! [`crate::replay`]; this module only reads the command line and prints.

use crate::replay::{self, ReplayOptions, select::Selection};
use clap::Subcommand;
use std::path::PathBuf;

/// `switchyard dlq ...`.
#[derive(Subcommand)]
pub enum DlqAction {
    /// Send a pipeline's dead letters back through its chain, from the stage that failed
    /// each one, with the plugin versions a router would run now (uploads included). Reads
    /// the dead-letter topic up to its end as of the start, prints one JSON line per dead
    /// letter and a summary, and exits 0. Records that fail again are dead-lettered with
    /// `switchyard-dlq-replays`. Progress is committed in the replay's own consumer group,
    /// so no dead letter is replayed twice.
    Replay {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline whose dead letters are replayed.
        #[arg(long, short)]
        pipeline: String,
        /// Run every record from this stage on, instead of the stage that failed it.
        #[arg(long, short)]
        stage: Option<String>,
        /// Only dead letters written at or after this time (RFC 3339, or ms since the
        /// epoch).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only dead letters written before this time (RFC 3339, or ms since the epoch).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only dead letters of these kinds (repeat, or comma-separated): trap, timeout,
        /// memory, bad-output, rejected, state-full, undeliverable, bad-input. The others
        /// are passed over in this group.
        #[arg(long = "filter-kind", value_name = "KIND")]
        filter_kind: Vec<String>,
        /// The consumer group keeping the replay's progress [default: <pipeline group>-dlq-replay].
        #[arg(long)]
        group: Option<String>,
        /// Run the chain and print what would happen to each dead letter; write and commit
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `dlq` subcommand.
pub fn dispatch(action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::Replay {
            config,
            pipeline,
            stage,
            since,
            until,
            filter_kind,
            group,
            dry_run,
        } => {
            let options = ReplayOptions {
                config,
                pipeline,
                stage,
                selection: Selection::parse(&filter_kind, since.as_deref(), until.as_deref())?,
                group,
                dry_run,
            };
            replay::replay(&options, &mut std::io::stdout().lock())?;
            Ok(())
        }
    }
}
