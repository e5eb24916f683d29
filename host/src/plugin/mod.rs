//! The plugin runtime: loads WebAssembly components that implement the
//! `switchyard:plugin/plugin` world and runs them, sandboxed and bounded, over batches.
//!
//! - [`engine`]: the one wasmtime engine (component model, pooling allocator, epoch
//!   interruption) and loading: bytes -> compiled, type-checked [`PluginModule`].
//! - `instance`: one warm instance in its own store; calls with a time budget; classifies
//!   failures.
//! - `lift`: a call's verdicts read out of guest memory with the output limits checked
//!   before anything is copied.
//! - [`module`]: what a stage runs once loaded ([`PluginModule`]): a component or the
//!   built-in JSON Schema stage, with its version.
//! - [`spec`]: a pipeline's chain as configured and checked: routes, default route, stages.
//! - [`chain`]: a pipeline's stages run in order over a batch; failed calls are isolated
//!   record by record so only the offending records are dead-lettered.
//! - [`limits`]: per-stage limits and their defaults.
//! - [`host_api`]: what the plugin imports (log, lookup, counters) and its empty WASI context.
//! - [`schema`]: the built-in JSON Schema stage.
//! - [`sample`]: sample records run through a chain and explained (dry run, `test-plugin`).
//!
//! It does not know about Kafka: records come in as [`InputRecord`]s and leave as
//! [`Delivery`]s.

pub mod bindings;
pub mod chain;
pub mod engine;
pub mod error;
pub mod host_api;
mod instance;
mod lift;
pub mod limits;
pub mod module;
pub mod sample;
pub mod schema;
pub mod spec;
pub mod state;
pub mod time;

pub use bindings::{Header, InputRecord, OutputRecord, RecordBatch, Verdict};
pub use chain::{
    CallObserver, ChainRunner, DeadLetter, Delivery, Destination, StageLoadError, StageStats,
    StageTrace, TraceOutcome,
};
pub use engine::{EngineConfig, PluginEngine};
pub use error::{ErrorKind, LoadError, RecordError};
pub use host_api::{HostServices, MemoryTables, PluginCounters, Tables};
pub use limits::StageLimits;
pub use module::{PluginModule, PluginVersion};
pub use schema::JsonSchemaStage;
pub use spec::{ChainSpec, RouteId, SpecError, StageSpec};
