//! What running a chain reports: where each record went ([`Delivery`], [`Destination`],
//! [`DeadLetter`]), per-stage counts ([`StageStats`]) and, for dry runs, what each stage
//! decided for each record ([`StageTrace`]). The types only; the runner fills them in.

use crate::plugin::bindings::InputRecord;
use crate::plugin::error::{ErrorKind, RecordError};
use crate::plugin::module::PluginVersion;
use crate::plugin::spec::RouteId;
use std::collections::HashMap;

/// Where one record went.
#[derive(Debug, PartialEq)]
pub enum Destination {
    /// To a route. The record carries the source record's offset and timestamp, and the key,
    /// value and headers the chain left it with.
    Route {
        /// The route.
        route: RouteId,
        /// The record.
        record: InputRecord,
    },
    /// To the dead-letter topic.
    DeadLetter(DeadLetter),
}

/// A record a stage refused or could not process.
#[derive(Debug, PartialEq)]
pub struct DeadLetter {
    /// Index of the failing stage.
    pub stage: usize,
    /// Name of the failing stage.
    pub stage_name: String,
    /// Version of the failing stage's plugin.
    pub version: PluginVersion,
    /// Kind and reason.
    pub error: RecordError,
    /// The record as the failing stage received it.
    pub record: InputRecord,
}

/// One result of a batch: which input record it descends from, and where it goes.
#[derive(Debug, PartialEq)]
pub struct Delivery {
    /// Index of the source record in the batch given to
    /// [`ChainRunner::process`](super::ChainRunner::process).
    pub source: usize,
    /// Where it goes.
    pub destination: Destination,
}

/// What happened in one stage, cumulatively since the runner was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Records given to the stage.
    pub records_in: u64,
    /// Records the stage passed on (after fan-out).
    pub records_out: u64,
    /// Records the stage dropped.
    pub dropped: u64,
    /// Records dead-lettered, by kind.
    pub dead_lettered: HashMap<ErrorKind, u64>,
    /// Batch calls that failed and were re-run record by record.
    pub isolations: u64,
    /// Fresh instances made after a failure.
    pub restarts: u64,
}

/// What one stage did with one record (recorded only when tracing, for dry runs).
#[derive(Clone, Debug, PartialEq)]
pub struct StageTrace {
    /// Index of the stage.
    pub stage: usize,
    /// Index of the source record in the batch.
    pub source: usize,
    /// What the stage decided.
    pub outcome: TraceOutcome,
}

/// A stage's decision for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceOutcome {
    /// Passed on unchanged.
    Pass,
    /// Passed on, to this route.
    Route(String),
    /// Replaced by this many records (each with its route, if it named one).
    Emit(Vec<Option<String>>),
    /// Dropped.
    Drop,
    /// Dead-lettered.
    DeadLetter {
        /// Error kind.
        kind: ErrorKind,
        /// Reason.
        reason: String,
    },
}
