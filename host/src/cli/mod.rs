//! The command line: `switchyard run | check | inspect | test-plugin | demo | plugin | pipelines
//! | dlq`.
//!
//! - [`run`]: `switchyard run`, a router until a signal.
//! - [`test_plugin`]: a plugin over sample records, no Kafka.
//! - [`scaffold`]: `plugin new` and `plugin build`, a plugin project outside this repository.
//! - [`demo`]: a live stream on an embedded broker.
//! - [`client`]: the admin API's client (`plugin push|rollback|versions`, `pipelines`).
//! - [`dlq`]: `switchyard dlq replay`, a pipeline's dead letters through its chain again.

pub mod client;
pub mod demo;
pub mod dlq;
pub mod run;
pub mod scaffold;
pub mod test_plugin;

use crate::admin::views::{PipelineView, PipelinesView, SwitchedView, VersionsView};
use crate::config::Config;
use crate::control::VersionStore;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::{EngineConfig, PluginEngine};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use client::Client;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Kafka-to-Kafka stream router that runs WebAssembly plugins on every record.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log level when `RUST_LOG` is not set: the demo draws its own progress on the
    /// terminal, so only warnings there.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Demo { .. } => "warn",
            _ => "info",
        }
    }
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
        admin_listen: String,
        /// Keep the config, table and state here (default: a temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// `routing` (the default), or `windows`: also a stateful pipeline over the same
        /// events, 10-second windows per user (count, sum and average of `amount`) written
        /// to `demo-aggregates` each time they change.
        #[arg(long, default_value = "routing", value_parser = ["routing", "windows"])]
        scenario: String,
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
        /// Stateful plugins: after the input, move the watermark to this instant (ms since
        /// the epoch) and fire the event-time timers due then; without it every pending
        /// timer fires.
        #[arg(long, value_name = "MS")]
        advance_to: Option<i64>,
        /// Stateful plugins: the pipeline's `watermark_delay_ms` (default 0).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        watermark_delay_ms: u64,
        /// The stage's `limits.time_per_record_ms` (default: a stage's default, 50): raise
        /// it to check a plugin's logic on a loaded machine without records timing out.
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
        time_per_record_ms: Option<u64>,
        /// Compare the results with this file (the JSON lines `--json` prints, one per line,
        /// compared as JSON) instead of printing them: prints the lines that differ and
        /// exits non-zero if any does.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
    },
    /// Make and build plugin projects (`new`, `build`), and manage a running router's
    /// plugins through its admin API (`push`, `rollback`, `versions`).
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
    /// Work with a pipeline's dead-letter topic (replay).
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqAction,
    },
}

/// Where a running router's admin API is, and its token.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// The admin API's address.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = client::DEFAULT_ADMIN_URL)]
    admin: String,
    /// Bearer token. Without it (and without --token-file), a router on this machine run by
    /// this user is asked with the token it generated, found by itself.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (mode 0600), e.g. a router's
    /// `<state_dir>/admin-token`.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let token =
            client::find_token(&self.admin, self.token.clone(), self.token_file.as_deref())?;
        Ok(Client::new(&self.admin, token))
    }
}

/// `switchyard plugin ...`.
#[derive(Subcommand)]
pub enum PluginAction {
    /// Make a plugin project in Rust, Python or JavaScript that builds on its own.
    ///
    /// The project holds the source with a working example rule, the contract (WIT) it
    /// builds against, sample records, the results expected for them, and a README with the
    /// commands to build, test and push it. It needs nothing from Switchyard's repository.
    New {
        /// The plugin's name: lowercase letters, digits, `-` and `_`, starting with a letter.
        /// Names the directory, the package and the component (NAME.wasm).
        name: String,
        /// The language.
        #[arg(long, short)]
        lang: scaffold::Language,
        /// Where to write the project (default: ./NAME). It must not exist or be empty: a
        /// non-empty directory is refused and nothing in it is touched.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a plugin project into DIR/NAME.wasm and check it against the contract.
    ///
    /// The language is found from Cargo.toml, pyproject.toml or package.json; the component
    /// is checked as `inspect` does, and its version (sha256) printed. Toolchains: cargo with the
    /// wasm32-wasip2 target (CARGO, RUSTC or the PATH); componentize-py
    /// (SWITCHYARD_COMPONENTIZE_PY or the PATH); componentize-js (SWITCHYARD_COMPONENTIZE_JS,
    /// the project's node_modules/.bin, or the PATH).
    Build {
        /// The project's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
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
        /// A stateful stage starts the new version with empty state (its state is deleted in
        /// every task and from the changelog).
        #[arg(long)]
        reset_state: bool,
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

/// Runs a subcommand.
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect { plugin } => inspect(&plugin, &mut std::io::stdout().lock()),
        Command::Check { config } => {
            let parsed = Config::load(&config)?;
            let engine = PluginEngine::new(&EngineConfig::default())
                .context("cannot start the plugin engine")?;
            let metrics = Metrics::new();
            let shared = pipeline::Shared::start(&parsed)?;
            let store = VersionStore::memory();
            for p in pipeline::load(&parsed, engine, &metrics, &store, &shared)? {
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
        Command::Run { config } => run::run(&config),
        Command::Plugin { action } => plugin_command(action),
        Command::Dlq { action } => dlq::dispatch(action),
        Command::TestPlugin {
            plugin,
            input,
            config,
            table,
            route,
            json,
            advance_to,
            watermark_delay_ms,
            time_per_record_ms,
            expect,
        } => {
            use test_plugin::{TestPluginOptions, parse_table, run};
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
                json: json || expect.is_some(),
                advance_to,
                watermark_delay_ms,
                time_per_record_ms,
            };
            let mut stdout = std::io::stdout().lock();
            match expect {
                None => run(&options, &mut stdout).map(drop),
                Some(expected) => {
                    let mut results = Vec::new();
                    run(&options, &mut results)?;
                    test_plugin::compare(&results, &expected, &options.input, &mut stdout)
                }
            }
        }
        Command::Demo {
            brokers,
            rate,
            duration,
            plugins,
            admin_listen,
            work_dir,
            summary_json,
            scenario,
        } => {
            let summary = demo::run(&demo::DemoOptions {
                brokers,
                rate,
                duration: Duration::from_secs(duration),
                plugins: plugins.unwrap_or_else(demo::default_plugins_dir),
                admin_listen,
                work_dir,
                summary_json,
                windows: scenario == "windows",
            })?;
            anyhow::ensure!(
                summary.all_accounted,
                "not every generated event was accounted for"
            );
            Ok(())
        }
        Command::Pipelines { name, api } => match name {
            Some(name) => print_json(
                &api.client()?
                    .get::<PipelineView>(&format!("/api/v1/pipelines/{name}"))?,
            ),
            None => print_json(&api.client()?.get::<PipelinesView>("/api/v1/pipelines")?),
        },
    }
}

/// Loads a component as the router would (compile, type-check against the contract) and
/// prints its path, version (sha256) and size.
fn inspect(plugin: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let engine =
        PluginEngine::new(&EngineConfig::default()).context("cannot start the plugin engine")?;
    let module = engine.load_file(plugin)?;
    writeln!(out, "{}: ok", plugin.display())?;
    writeln!(out, "version (sha256): {}", module.version)?;
    writeln!(out, "size: {} bytes", module.size)?;
    Ok(())
}

fn plugin_command(action: PluginAction) -> anyhow::Result<()> {
    match action {
        PluginAction::New { name, lang, dir } => {
            scaffold::new_project(&name, lang, dir.as_deref(), &mut std::io::stdout().lock())
                .map(drop)
        }
        PluginAction::Build { dir } => {
            scaffold::build(&dir, &mut std::io::stdout().lock()).map(drop)
        }
        PluginAction::Push {
            pipeline,
            stage,
            plugin,
            config,
            reset_state,
            api,
        } => {
            let config = if config.is_empty() {
                None
            } else {
                Some(client::parse_pairs(&config, "--config")?)
            };
            let answer =
                api.client()?
                    .push(&pipeline, &stage, &plugin, config.as_ref(), reset_state)?;
            print_json(&answer)
        }
        PluginAction::Rollback {
            pipeline,
            stage,
            api,
        } => print_json(&api.client()?.post::<SwitchedView>(&format!(
            "/api/v1/pipelines/{pipeline}/stages/{stage}/rollback"
        ))?),
        PluginAction::Versions {
            pipeline,
            stage,
            api,
        } => print_json(&api.client()?.get::<VersionsView>(&format!(
            "/api/v1/pipelines/{pipeline}/stages/{stage}/versions"
        ))?),
    }
}

/// Prints an answer as pretty JSON with sorted keys (as the API's JSON reads).
fn print_json(answer: &impl serde::Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(answer)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
