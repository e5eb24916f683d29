//! The admin API's answers, as types: the server serializes them and the command line's client
//! ([`crate::cli::client`]) deserializes them, so the two cannot drift apart unnoticed.
//!
//! Field names and shapes are the API's contract: a field that is sometimes absent is
//! skipped when serializing, never sent as `null`, unless the API sends `null` for it.
//! Each table's description is owned by the tables ([`crate::plugin::Tables::describe`]) and
//! passes through as JSON.

use crate::control::versions::{HistoryEntry, VersionRecord};
use crate::control::{StageHistory, Switched};
use crate::pipeline::PipelineHandle;
use crate::source::tracker::PartitionStatus;
use crate::status::CountersSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// `GET /api/v1/pipelines`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelinesView {
    /// Every pipeline, in config order.
    pub pipelines: Vec<PipelineView>,
}

/// `GET /api/v1/pipelines/{p}`: a pipeline's config, state, chain, counters and partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineView {
    /// Pipeline name.
    pub name: String,
    /// `running`, `paused`, `degraded` or `stopped`.
    pub state: String,
    /// Why it cannot make progress, if it cannot.
    pub problem: Option<String>,
    /// Dead-letter writes fail.
    pub dead_letter_failing: bool,
    /// Consumer group.
    pub group: String,
    /// Source topics.
    pub topics: Vec<String>,
    /// Source topics as a pattern.
    pub topic_pattern: Option<String>,
    /// Route name -> topic.
    pub routes: BTreeMap<String, String>,
    /// Route of records no stage routed.
    pub default_route: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Generation of the live chain (increases with every change).
    pub chain_generation: u64,
    /// Workers running.
    pub workers: usize,
    /// The chain, in order.
    pub stages: Vec<StageView>,
    /// Record counters.
    pub counters: CountersView,
    /// Records taken and not finished.
    pub in_flight: usize,
    /// Assigned partitions.
    pub partitions: Vec<PartitionView>,
    /// Stateful pipelines: the state per stage and the tasks of this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<StateView>,
}

/// What a stateful pipeline keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    /// The changelog topic.
    pub changelog_topic: String,
    /// Per stateful stage: keys, bytes and timers held by this process, and the records
    /// dead-lettered as `state-full`.
    pub stages: Vec<StageStateView>,
    /// The tasks this process runs or restores.
    pub tasks: Vec<TaskView>,
    /// Records that reached the plugins flagged late.
    pub late_records: u64,
}

/// One stateful stage's state in this process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStateView {
    /// Stage name.
    pub stage: String,
    /// Keys stored.
    pub keys: u64,
    /// Bytes of keys and values stored.
    pub bytes: u64,
    /// Timers pending.
    pub timers: u64,
    /// Records dead-lettered because a write would have passed `limits.max_state_bytes` or
    /// `limits.max_keys`.
    pub state_full: u64,
}

/// One task (partition N of every source topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Its partition number.
    pub task: i32,
    /// Being restored from the changelog: no record of it is read until this is done.
    pub restoring: bool,
    /// Changelog records read so far (while restoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_records: Option<i64>,
    /// Changelog records to read (while restoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_total: Option<i64>,
    /// Its watermark (ms since the epoch), as of its last batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// Wall clock minus the watermark, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_lag_ms: Option<i64>,
}

impl StateView {
    /// The state of a stateful pipeline; `None` for a stateless one.
    pub fn of(p: &PipelineHandle) -> Option<Self> {
        if !p.control.current().spec.is_stateful() {
            return None;
        }
        let stages = p
            .services
            .states
            .snapshot()
            .into_iter()
            .filter(|(pipeline, _, _)| pipeline == p.name())
            .map(|(_, stage, s)| StageStateView {
                stage,
                keys: s.keys(),
                bytes: s.bytes(),
                timers: s.timers(),
                state_full: s.refused.load(Ordering::Relaxed),
            })
            .collect();
        let registry = p
            .restoring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = crate::kafka::now_ms();
        let mut tasks: Vec<TaskView> = Vec::new();
        let mut late_records = 0;
        if let Some(registry) = registry {
            late_records = registry.late();
            for (task, read, total) in registry.restoring() {
                tasks.push(TaskView {
                    task,
                    restoring: true,
                    restored_records: Some(read),
                    restore_total: Some(total),
                    watermark_ms: None,
                    watermark_lag_ms: None,
                });
            }
            for (task, watermark) in registry.watermarks() {
                if tasks.iter().any(|t| t.task == task) {
                    continue;
                }
                tasks.push(TaskView {
                    task,
                    restoring: false,
                    restored_records: None,
                    restore_total: None,
                    watermark_ms: watermark,
                    watermark_lag_ms: watermark.map(|w| now.saturating_sub(w)),
                });
            }
        }
        tasks.sort_by_key(|t| t.task);
        Some(StateView {
            changelog_topic: crate::changelog::topic_name(&p.config.group()),
            stages,
            tasks,
            late_records,
        })
    }
}

/// One stage of a live chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageView {
    /// Stage name.
    pub name: String,
    /// sha256 of the component (or of the schema file).
    pub version: String,
    /// Component size.
    pub size_bytes: usize,
    /// The kind of a built-in stage (`json-schema`); absent for plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// The active version's record; absent while a change to the stage is in progress.
    #[serde(flatten)]
    pub active: Option<StageActiveView>,
    /// Present (true) while a change to the stage is in progress.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub change_in_progress: bool,
}

/// How a stage's active version came to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageActiveView {
    /// When it became active (ms since the Unix epoch).
    pub loaded_at_ms: i64,
    /// Who made it active.
    pub loaded_by: String,
    /// `config`, `upload`, `rollback` or `restart`.
    pub origin: String,
    /// Its config map.
    pub config: BTreeMap<String, String>,
    /// The version a rollback returns to.
    pub rollback_to: Option<String>,
}

/// A pipeline's record counters, as the status keeps them.
pub type CountersView = CountersSnapshot;

/// One assigned partition, as the tracker reports it.
pub type PartitionView = PartitionStatus;

/// The answer to an upload or a rollback: every worker runs `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchedView {
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
    /// How long the change took.
    pub switched_in_ms: u64,
}

/// `GET .../stages/{s}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionsView {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// The version running.
    pub active: VersionRecord,
    /// Versions a rollback returns to, the most recent last.
    pub rollback_stack: Vec<VersionRecord>,
    /// Every change, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// The answer to pause and resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStateView {
    /// Pipeline name.
    pub pipeline: String,
    /// Its state now.
    pub state: String,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyView {
    /// Every table is loaded, every pipeline consumes, dead-letter writes work.
    pub ready: bool,
    /// What is not ready; absent when ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `GET /api/v1/tables`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablesView {
    /// Each table's rows, bytes, source, last update, last error and readiness.
    pub tables: Vec<serde_json::Value>,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// What went wrong, in a sentence.
    pub error: String,
}

impl PipelineView {
    /// The pipeline as it is now. A stage whose version lock is held (a change in progress)
    /// is shown without its version record rather than waited for.
    pub fn of(p: &PipelineHandle) -> Self {
        let active = p.control.current();
        let stages = active
            .spec
            .stages()
            .iter()
            .zip(&p.stages)
            .map(|(stage, history)| {
                let active = history.try_lock().ok().map(|h| StageActiveView::of(&h));
                StageView {
                    name: stage.name.clone(),
                    version: stage.module.version.0.clone(),
                    size_bytes: stage.module.size,
                    builtin: stage.module.builtin().map(str::to_owned),
                    change_in_progress: active.is_none(),
                    active,
                }
            })
            .collect();
        PipelineView {
            name: p.name().to_owned(),
            state: p.state().to_owned(),
            problem: p.status.health.fatal(),
            dead_letter_failing: p.status.health.dead_letter_failing.load(Ordering::Acquire),
            group: p.config.group(),
            topics: p.config.topics().to_vec(),
            topic_pattern: p.config.topic_pattern().map(str::to_owned),
            routes: p.config.routes.clone(),
            default_route: p.config.default_route.clone(),
            dead_letter_topic: p.config.dead_letter_topic.clone(),
            chain_generation: active.generation,
            workers: p.control.live_workers(),
            stages,
            counters: p.status.counters.snapshot(),
            in_flight: p.status.tracker.in_flight(),
            partitions: p.status.tracker.partitions(),
            stateful: StateView::of(p),
        }
    }
}

impl StageActiveView {
    fn of(h: &StageHistory) -> Self {
        StageActiveView {
            loaded_at_ms: h.active.loaded_at_ms,
            loaded_by: h.active.by.clone(),
            origin: h.active.origin.clone(),
            config: h.active.config.clone(),
            rollback_to: h.previous.last().map(|r| r.version.clone()),
        }
    }
}

impl From<Switched> for SwitchedView {
    fn from(s: Switched) -> Self {
        SwitchedView {
            pipeline: s.pipeline,
            stage: s.stage,
            version: s.version,
            previous: s.previous,
            workers: s.workers,
            switched_in_ms: u64::try_from(s.took.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl VersionsView {
    /// A stage's versions.
    pub fn of(h: &StageHistory) -> Self {
        VersionsView {
            pipeline: h.pipeline().to_owned(),
            stage: h.stage().to_owned(),
            active: h.active.clone(),
            rollback_stack: h.previous.clone(),
            history: h.history.clone(),
        }
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
