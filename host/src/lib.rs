//! Switchyard: a Kafka-to-Kafka stream router that runs WebAssembly plugins on every record.
//!
//! # Layout
//!
//! The folders follow a record's path:
//!
//! ```text
//! Kafka -> source (consumer) -> ring -> pipeline workers (plugin chain -> router) -> sink (producer) -> Kafka
//!            ^   offsets committed once every output is acknowledged               |   \-> dead-letter topic
//!            +---------------------- source::tracker <-----------------------------+
//! control (versions, switching) and admin (HTTP) beside it; cli on top; app starts it all
//! ```
//!
//! 1. [`source`]: the rdkafka consumer ([`source::consumer`]: poll, back-pressure, commit,
//!    drain), its rebalance callbacks, and the tracker of in-flight records that decides what
//!    may be committed.
//! 2. [`ring`]: the bounded per-worker queues; a partition always goes to the same worker.
//! 3. [`pipeline`]: one pipeline wired together, and its worker threads.
//! 4. [`plugin`]: the sandboxed WebAssembly runtime: engine, limits, instances, the stage
//!    chain and its failure isolation, the built-in JSON Schema stage.
//! 5. [`router`]: pure: a chain's deliveries -> outgoing records (topic, provenance and
//!    dead-letter headers, or the JSON dead-letter envelope).
//! 6. [`sink`]: the idempotent producer, acknowledgements, retries, and dead-lettering of
//!    writes the broker refuses.
//!
//! Beside the record path:
//!
//! - [`config`]: the typed, strict configuration file.
//! - [`kafka`]: client settings and their defaults, shared conversions.
//! - [`status`]: what a running pipeline shares with whoever watches it (tracker, health,
//!   counters) and the stop request.
//! - [`metrics`]: the Prometheus metrics.
//! - [`tables`]: enrichment tables from files and topics, kept up to date.
//! - [`control`]: the live chain version, switching workers to a new one, each stage's
//!   version history and its persistence.
//! - [`admin`]: the admin HTTP API (hot reload, rollback, dry-run, pause, health, metrics).
//! - [`private`]: files only this user may change (the compiled-code cache, the admin token).
//! - [`app`]: [`start`]: config -> engine -> pipelines -> admin API -> [`Running`].
//! - [`replay`]: a pipeline's dead letters sent through its chain again (`switchyard dlq
//!   replay`), with the router's and the sink's path and guarantees.
//! - [`cli`]: the `switchyard` command line (run, check, inspect, test-plugin, demo, and the
//!   admin API's client).
//!
//! The host runs on Linux: it lowers the priority of plugin-compiling threads with Linux's
//! per-thread `setpriority(gettid())`.

pub mod admin;
pub mod app;
pub mod changelog;
pub mod cli;
pub mod config;
pub mod control;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod private;
pub mod replay;
pub mod ring;
pub mod router;
pub mod sink;
pub mod source;
pub mod status;
pub mod tables;

pub use app::{AdminListen, Running, StartOptions, start};
