//! Changing a stage's plugin while records flow: upload and rollback.
//!
//! ```text
//! upload:   compile + type-check -> trial init (throwaway instance) -> publish -> wait for
//!           every worker -> (a worker failed or timed out: put the old chain back) -> persist
//! rollback: previous version's module (kept, or read back from the state directory)
//!           -> the same trial init, publish, wait, put back -> persist
//! ```
//!
//! [`Reloader`] owns that sequence and its bookkeeping: every attempt, whoever drives it, gets
//! an audit line (target `switchyard::audit`), a `switchyard_plugin_reloads` sample, and, when
//! refused, a `rejected` entry in the stage's history. It answers with a typed
//! [`ReloadError`]; turning that into an HTTP answer is the admin API's business, not this
//! module's. Calls block (compiles, waits for workers): async callers run them on a blocking
//! thread.

use crate::config::StageCode;
use crate::control::{StageHistory, SwitchError};
use crate::metrics::{Metrics, ReloadLabels};
use crate::pipeline::PipelineHandle;
use crate::plugin::{ChainRunner, ChainSpec, LoadError, PluginModule, PluginVersion, StageSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a change was refused. Except for [`ReloadError::Persist`], the stage still runs the
/// version it ran before.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The stage is a built-in one (the JSON Schema validator): it takes no plugin.
    #[error(
        "stage {stage} of pipeline {pipeline} is the built-in json-schema validator \
         (schema file {}); it takes no plugin: change the schema file and restart",
        schema.display()
    )]
    BuiltinStage {
        /// Pipeline name.
        pipeline: String,
        /// Stage name.
        stage: String,
        /// The schema file the config names.
        schema: PathBuf,
    },
    /// No stage at this index.
    #[error("no such stage")]
    NoSuchStage,
    /// The upload is not a component at all: not WebAssembly, or a core module.
    #[error("{0}")]
    NotAComponent(LoadError),
    /// A component, but it does not compile or does not fit the plugin world.
    #[error("{0}")]
    BadComponent(LoadError),
    /// The new version's `init` failed or crashed on the trial instance.
    #[error("{0}")]
    Init(LoadError),
    /// The chain with the new version is not valid (its stages or routes).
    #[error(transparent)]
    Chain(#[from] crate::plugin::SpecError),
    /// The chain's routes do not all have a topic.
    #[error(transparent)]
    Routes(#[from] crate::router::RouteError),
    /// Not every worker switched; the previous version was published again.
    #[error(
        "not every worker switched ({error}); the previous version was put back{}",
        match restore { None => String::new(), Some(e) => format!(" (and that did not finish either: {e})") }
    )]
    Switch {
        /// Why the new version did not reach every worker.
        error: SwitchError,
        /// `None`: every worker runs the previous version again; `Some`: putting it back did
        /// not finish either.
        restore: Option<SwitchError>,
    },
    /// A rollback with no earlier version.
    #[error("no earlier version to roll back to")]
    NothingToRollBack,
    /// The earlier version's component cannot be had (not kept, unreadable, no longer loads),
    /// or its config cannot be expanded.
    #[error("{0}")]
    RollbackUnavailable(String),
    /// The config map cannot be expanded (names the key and the variable).
    #[error("{0}")]
    Config(String),
    /// An output topic of the pipeline no longer exists (deleted since the start): the
    /// new version would find it out one record at a time.
    #[error(
        "these output topics do not exist: {}; create them, then try again (Switchyard never creates topics)",
        .0.join(", ")
    )]
    MissingTopics(Vec<String>),
    /// The change runs on every worker but could not be written to the state directory: a
    /// restart would not bring it back.
    #[error("the change runs but cannot be persisted: {0}")]
    Persist(String),
}

impl From<LoadError> for ReloadError {
    /// Bytes that are not a component are the caller's mistake in kind; a component that
    /// does not compile or fit is one in content.
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotWasm | LoadError::CoreModule => ReloadError::NotAComponent(e),
            _ => ReloadError::BadComponent(e),
        }
    }
}

impl ReloadError {
    /// Whether the previous version still runs on every worker.
    pub fn previous_runs(&self) -> bool {
        match self {
            ReloadError::Switch { restore, .. } => restore.is_none(),
            ReloadError::Persist(_) => false,
            _ => true,
        }
    }

    /// The reason kept in the stage's history (which the admin API shows): internal details
    /// of a persistence failure stay in the log.
    fn history_reason(&self) -> String {
        match self {
            ReloadError::Persist(_) => {
                "the change runs but cannot be persisted (see the log)".into()
            }
            other => other.to_string(),
        }
    }
}

/// A change every worker has taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// The version now running.
    pub version: String,
    /// The version it replaced.
    pub previous: String,
    /// Workers running it.
    pub workers: usize,
    /// From the start of the change (the stage's lock held) to every worker running it.
    pub took: Duration,
}

/// Uploads and rollbacks of plugin stages, with their audit line, metric and history entry.
pub struct Reloader {
    metrics: Arc<Metrics>,
    switch_timeout: Duration,
}

impl Reloader {
    /// Changes record to `metrics`; each waits at most `switch_timeout` for every worker.
    pub fn new(metrics: Arc<Metrics>, switch_timeout: Duration) -> Self {
        Reloader {
            metrics,
            switch_timeout,
        }
    }

    /// Refuses stages that take no plugin (built-in ones) and indexes out of range; callers
    /// check this before reading an upload.
    pub fn check_stage(p: &PipelineHandle, index: usize) -> Result<(), ReloadError> {
        let stage = p.config.stages.get(index).ok_or(ReloadError::NoSuchStage)?;
        match &stage.code {
            StageCode::JsonSchema(schema) => Err(ReloadError::BuiltinStage {
                pipeline: p.name().to_owned(),
                stage: stage.name.clone(),
                schema: schema.clone(),
            }),
            StageCode::Plugin(_) => Ok(()),
        }
    }

    /// Makes `bytes` the plugin of stage `index`, with `config` as its config map (`None`:
    /// keep the current one). An uploaded config is literal: no `${NAME}` in it is expanded
    /// (an upload cannot read the router's environment). `history` is the stage's, locked by
    /// the caller (which serializes changes to a stage).
    pub fn upload(
        &self,
        p: &PipelineHandle,
        index: usize,
        history: &mut StageHistory,
        bytes: &[u8],
        config: Option<BTreeMap<String, String>>,
        who: &str,
    ) -> Result<Switched, ReloadError> {
        self.upload_with(p, index, history, bytes, config, who, false)
    }

    /// [`Reloader::upload`]; with `reset_state`, a stateful stage starts the new version
    /// with empty state in every task (the old state is deleted from the changelog too),
    /// and the audit line says so (`upload+reset-state`).
    #[allow(clippy::too_many_arguments)]
    pub fn upload_with(
        &self,
        p: &PipelineHandle,
        index: usize,
        history: &mut StageHistory,
        bytes: &[u8],
        config: Option<BTreeMap<String, String>>,
        who: &str,
        reset_state: bool,
    ) -> Result<Switched, ReloadError> {
        let started = Instant::now();
        let version = PluginVersion::of(bytes).0;
        let result = (|| {
            Self::check_stage(p, index)?;
            let module = p.engine.load(bytes)?;
            let config = match config {
                Some(literal) => literal
                    .into_iter()
                    .map(|(key, value)| (key, crate::config::escape(&value)))
                    .collect(),
                None => history.active.config.clone(),
            };
            let values = history.init_config(&config).map_err(ReloadError::Config)?;
            self.switch_stage(p, index, module.clone(), values, reset_state)?;
            let previous = history.active.version.clone();
            if let Err(e) = history.activated(module, Some(bytes), config, who) {
                // Every worker runs it: the answer is still a success.
                tracing::warn!(
                    pipeline = %p.name(), stage = %history.stage(), error = %format!("{e:#}"),
                    "The new version runs but could not be persisted."
                );
            }
            Ok(previous)
        })();
        let action = if reset_state {
            "upload+reset-state"
        } else {
            "upload"
        };
        self.record(history, who, action, &version, &result);
        result.map(|previous| switched(p, history, version, previous, started))
    }

    /// Returns stage `index` to its previous version (and that version's config).
    pub fn rollback(
        &self,
        p: &PipelineHandle,
        index: usize,
        history: &mut StageHistory,
        who: &str,
    ) -> Result<Switched, ReloadError> {
        let started = Instant::now();
        let current = history.active.version.clone();
        let result = (|| {
            Self::check_stage(p, index)?;
            if history.previous.is_empty() {
                return Err(ReloadError::NothingToRollBack);
            }
            let (target, module) = history
                .rollback_target(&p.engine)
                .map_err(|e| ReloadError::RollbackUnavailable(format!("{e:#}")))?;
            let values = history
                .init_config(&target.config)
                .map_err(ReloadError::RollbackUnavailable)?;
            self.switch_stage(p, index, module.clone(), values, false)?;
            history
                .rolled_back(module, who)
                .map_err(|e| ReloadError::Persist(format!("{e:#}")))?;
            Ok(target.version)
        })();
        let version = result.as_ref().map_or(String::new(), Clone::clone);
        self.record(history, who, "rollback", &version, &result);
        result.map(|version| switched(p, history, version, current, started))
    }

    /// The audit line, the reload metric and, for a refusal, the history entry.
    fn record(
        &self,
        history: &mut StageHistory,
        who: &str,
        action: &str,
        version: &str,
        result: &Result<String, ReloadError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                history.rejected(who, action, version, &e.history_reason());
                format!("rejected: {e}")
            }
        };
        audit(
            who,
            action,
            history.pipeline(),
            history.stage(),
            version,
            &outcome,
        );
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                pipeline: history.pipeline().to_owned(),
                stage: history.stage().to_owned(),
                result: if result.is_ok() { "ok" } else { "rejected" }.into(),
            })
            .inc();
    }

    /// Runs the stage's `init` with the new module and config on a throwaway instance, then
    /// publishes the new chain and waits for every worker; puts the old chain back if a
    /// worker cannot switch.
    fn switch_stage(
        &self,
        p: &PipelineHandle,
        index: usize,
        module: Arc<PluginModule>,
        config: Vec<(String, String)>,
        reset_state: bool,
    ) -> Result<(), ReloadError> {
        check_output_topics(p)?;
        // Another stage's change would otherwise build on the same chain and undo this one
        // (or this one's put-back undo it).
        let _change = p.control.change();
        let current = p.control.current();
        let mut stages: Vec<StageSpec> = current.spec.stages().to_vec();
        let stage = stages.get_mut(index).ok_or(ReloadError::NoSuchStage)?;
        stage.module = module;
        stage.config = config;
        let reset = reset_state.then(|| stage.name.clone());
        let chain = |stages: Vec<StageSpec>| {
            ChainSpec::new(
                p.name(),
                current.spec.routes().to_vec(),
                current.spec.route_name(current.spec.default_route()),
                stages,
            )
            .map(|c| c.with_event_time(current.spec.event_time().clone()))
            .map_err(ReloadError::Chain)
        };
        let trial = chain(vec![stage.clone()])?;
        ChainRunner::new(p.engine.clone(), Arc::new(trial), p.services.clone())
            .map_err(|e| ReloadError::Init(e.error))?;
        let spec = Arc::new(chain(stages)?.with_reset(reset));
        let router = p.router_for(&spec)?;
        let generation = p.control.publish(spec, router);
        if let Err(error) = p.control.wait_for(generation, self.switch_timeout) {
            let back = p
                .control
                .publish(current.spec.clone(), current.router.clone());
            let restore = p.control.wait_for(back, self.switch_timeout).err();
            return Err(ReloadError::Switch { error, restore });
        }
        Ok(())
    }
}

/// Refuses a change while a route or dead-letter topic of the pipeline is missing; a
/// cluster that does not answer in time is not a refusal (the change goes on, logged).
fn check_output_topics(p: &PipelineHandle) -> Result<(), ReloadError> {
    match crate::kafka::missing_output_topics(&p.kafka, &[&p.config], TOPIC_CHECK_TIMEOUT) {
        Ok(missing) if missing.is_empty() => Ok(()),
        Ok(missing) => Err(ReloadError::MissingTopics(missing)),
        Err(e) => {
            tracing::warn!(
                pipeline = %p.name(), error = %e,
                "Cannot ask the cluster whether the output topics exist; changing anyway."
            );
            Ok(())
        }
    }
}

/// How long a change waits for the cluster to say whether the output topics exist.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn switched(
    p: &PipelineHandle,
    history: &StageHistory,
    version: String,
    previous: String,
    started: Instant,
) -> Switched {
    Switched {
        pipeline: p.name().to_owned(),
        stage: history.stage().to_owned(),
        version,
        previous,
        workers: p.control.live_workers(),
        took: started.elapsed(),
    }
}

/// Logs a change (or an attempt) on the audit target.
pub fn audit(who: &str, action: &str, pipeline: &str, stage: &str, version: &str, result: &str) {
    tracing::info!(
        target: "switchyard::audit",
        who, action, pipeline, stage, version, result, "Audit."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_no_component_are_told_apart_from_a_bad_component() {
        assert!(matches!(
            ReloadError::from(LoadError::NotWasm),
            ReloadError::NotAComponent(_)
        ));
        assert!(matches!(
            ReloadError::from(LoadError::CoreModule),
            ReloadError::NotAComponent(_)
        ));
        for e in [
            LoadError::Compile("truncated".into()),
            LoadError::World("missing export transform".into()),
            LoadError::Instantiate("start trapped".into()),
            LoadError::Init("no database".into()),
        ] {
            assert!(
                matches!(ReloadError::from(e), ReloadError::BadComponent(_)),
                "a component that does not load is a bad component"
            );
        }
    }

    #[test]
    fn the_message_is_the_load_errors_own() {
        let e = ReloadError::from(LoadError::NotWasm);
        assert_eq!(e.to_string(), LoadError::NotWasm.to_string());
        let e = ReloadError::Init(LoadError::Init("no database configured".into()));
        assert!(e.to_string().contains("no database configured"), "{e}");
    }

    #[test]
    fn a_failed_switch_says_whether_the_previous_version_was_put_back() {
        let timeout = || SwitchError::Timeout {
            pending: 1,
            waited: Duration::from_secs(5),
        };
        let put_back = ReloadError::Switch {
            error: SwitchError::Worker {
                worker: 1,
                error: "no memory".into(),
            },
            restore: None,
        };
        assert!(put_back.previous_runs());
        assert_eq!(
            put_back.to_string(),
            "not every worker switched (worker 1 could not start the new version: no memory); \
             the previous version was put back"
        );
        let stuck = ReloadError::Switch {
            error: timeout(),
            restore: Some(timeout()),
        };
        assert!(!stuck.previous_runs());
        assert!(
            stuck.to_string().ends_with(
                "(and that did not finish either: 1 worker(s) had not switched after 5s)"
            ),
            "{stuck}"
        );
    }

    #[test]
    fn persistence_details_stay_out_of_the_history() {
        let e = ReloadError::Persist("cannot write /var/lib/switchyard/x: disk full".into());
        assert!(!e.previous_runs());
        assert!(!e.history_reason().contains("/var/lib"));
        assert!(
            e.to_string().contains("disk full"),
            "the log gets the detail"
        );
        let e = ReloadError::NothingToRollBack;
        assert_eq!(e.history_reason(), "no earlier version to roll back to");
    }
}
