//! Switchyard: a Kafka-to-Kafka stream router that runs WebAssembly plugins on every record.
//!
//! # Layout
//!
//! ```text
//! Kafka -> source (consumer) -> ring -> workers (plugin chain, router) -> sink (producer) -> Kafka
//!                 ^  offsets committed once every output is acknowledged  |   \-> dead-letter topic
//!                 +-------------------- tracker <--------------------------+
//! ```
//!
//! - [`config`]: the typed, strict configuration file.
//! - [`pipeline`]: one pipeline wired together, its states (running, draining), its workers.
//! - [`source`]: the rdkafka consumer's rebalance handling (drain, commit), and the tracker of
//!   in-flight records that decides what may be committed.
//! - [`ring`]: the bounded per-worker queues; a partition always goes to the same worker.
//! - [`plugin`]: the sandboxed WebAssembly runtime: engine, limits, instances, the stage
//!   chain and its failure isolation.
//! - [`router`]: pure: a chain's deliveries -> outgoing records (topic, provenance and
//!   dead-letter headers, or the JSON dead-letter envelope).
//! - [`sink`]: the idempotent producer, acknowledgements, retries, and dead-lettering of
//!   writes the broker refuses.
//! - [`kafka`]: client settings and their defaults, shared conversions.
//! - [`metrics`]: a pipeline's counters and health, and the Prometheus metrics.
//! - [`control`]: the live chain version and switching every worker to a new one.
//! - [`versions`]: each stage's plugin versions, rollback stack, history, persistence.
//! - [`admin`]: the admin HTTP API (hot reload, rollback, dry-run, pause, health, metrics).
//! - [`client`]: the CLI's client of that API.
//! - [`sample`]: sample records run through a chain and explained (dry run, test-plugin).
//! - [`tables`]: enrichment tables from files and topics, kept up to date.
//! - [`test_plugin`]: `switchyard test-plugin`, a plugin over sample records, no Kafka.
//! - [`demo`]: `switchyard demo`, a live stream on an embedded broker.

pub mod admin;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod ring;
pub mod router;
pub mod sample;
pub mod sink;
pub mod source;
pub mod tables;
pub mod test_plugin;
pub mod versions;
