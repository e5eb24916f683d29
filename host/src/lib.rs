//! Switchyard: a Kafka-to-Kafka stream router that runs WebAssembly plugins on every record.
//!
//! # Layout
//!
//! ```text
//! Kafka -> source -> ring -> workers (plugin chain) -> router -> sink -> Kafka
//!                                                                  \-> dead-letter topic
//! ```
//!
//! - [`config`]: the typed, strict configuration file.
//! - [`plugin`]: the sandboxed WebAssembly runtime: engine, limits, instances, the stage
//!   chain and its failure isolation.
//! - [`router`]: pure: a chain's deliveries -> outgoing records (topic, provenance and
//!   dead-letter headers, or the JSON dead-letter envelope).
//! - [`source`]: reading from Kafka; so far the offset tracker that decides what may be
//!   committed.

pub mod config;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod ring;
pub mod router;
pub mod sink;
pub mod source;
