//! Enrichment tables: the rows plugins read with `host::lookup(table, key)`.
//!
//! A table comes from a file or from a Kafka topic (config `[[table]]`):
//!
//! - **File** (JSON Lines or CSV), keyed by a named field. JSON Lines: the value a plugin
//!   sees is the line; CSV: the row as a JSON object of strings, in column order. A duplicate
//!   key keeps the last row. The file is read again when it changes (polled every
//!   `watch_interval_ms`; a change is read once the file has stopped changing for one
//!   interval) or on `POST /api/v1/tables/{name}/reload`. A reload builds the new rows aside
//!   and swaps them in whole; if the file is unreadable or a line is bad, the table keeps its
//!   rows and reports the error (with the line number).
//! - **Topic**, materialized like a compacted topic: the latest value per record key; a
//!   record with a null value (a tombstone) deletes its key; records without a key are
//!   ignored. Read from the beginning at start-up with no consumer group (nothing is
//!   committed), then followed for as long as the process runs. The table is *caught up*
//!   once every partition reached the end it had at start-up; pipelines start consuming and
//!   `/readyz` turns ready only when every table is caught up.
//!
//! Rows live in one open-addressing hash table per table; each row is a single allocation
//! holding the key and the value, so a million rows of ~100-byte values take about 160 MB.
//! A lookup takes a read lock and copies the value out (the component model copies it into
//! the plugin anyway).
//!
//! This module owns the [`TableSet`] (start-up, lookup, what the admin API and readiness
//! see) and each [`Table`] (its rows behind a lock, its status). How rows are stored is in
//! `rows`, how a file is read and watched in `file`, how a topic is followed in `topic`.

mod file;
mod rows;
mod topic;

pub use rows::Rows;

use crate::config::{KafkaConfig, TableConfig, TableSource};
use crate::plugin::Tables;
use anyhow::Context as _;
use file::FileSignature;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use topic::TopicFollower;

/// Every configured table.
pub struct TableSet {
    tables: BTreeMap<String, Arc<Table>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for TableSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSet")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for TableSet {
    fn drop(&mut self) {
        // Watchers and topic followers end at their next tick.
        self.stop.store(true, Ordering::Release);
    }
}

impl TableSet {
    /// Loads every file table and starts following every topic table. A file that cannot be
    /// read, a bad line, a missing topic: an error naming the table.
    pub fn start(kafka: Option<&KafkaConfig>, configs: &[TableConfig]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tables = BTreeMap::new();
        for config in configs {
            let table = Arc::new(Table::new(config.clone()));
            match &config.source {
                TableSource::File { .. } => {
                    table
                        .reload_file()
                        .map_err(|e| anyhow::anyhow!("table {}: {e}", config.name))?;
                    if config.watch_interval_ms > 0 {
                        file::spawn_watcher(table.clone(), stop.clone())?;
                    }
                }
                TableSource::Topic { topic } => {
                    let kafka = kafka.ok_or_else(|| {
                        anyhow::anyhow!(
                            "table {}: a topic table needs Kafka; here only file tables work",
                            config.name
                        )
                    })?;
                    let follower = TopicFollower::connect(kafka, &config.name, topic)
                        .with_context(|| format!("table {}", config.name))?;
                    follower.spawn(table.clone(), stop.clone())?;
                }
            }
            tables.insert(config.name.clone(), table);
        }
        Ok(TableSet { tables, stop })
    }

    /// The named table.
    pub fn get(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }
}

impl Tables for TableSet {
    fn lookup(&self, table: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(table)?.get(key)
    }
}

/// What operators do with the tables (the admin API, readiness); plugins only look up.
impl TableSet {
    /// Every table's size, source, last update and last error.
    pub fn describe(&self) -> Vec<Value> {
        self.tables.values().map(|t| t.describe()).collect()
    }

    /// Reads a file table again; `None` when there is no such table. On an error the old
    /// rows stay.
    pub fn reload(&self, name: &str) -> Option<Result<Value, String>> {
        let table = self.tables.get(name)?;
        Some(match &table.config.source {
            TableSource::File { .. } => table.reload_file().map(|()| table.describe()),
            TableSource::Topic { .. } => Err(format!(
                "table {name} follows a topic and is always up to date; only file tables reload"
            )),
        })
    }

    /// The names of the tables not yet loaded or caught up with their topic.
    pub fn pending(&self) -> Vec<String> {
        self.tables
            .values()
            .filter(|t| !t.ready.load(Ordering::Acquire))
            .map(|t| t.config.name.clone())
            .collect()
    }
}

/// One table: its rows and what happened to it.
pub struct Table {
    config: TableConfig,
    rows: RwLock<Rows>,
    status: Mutex<Status>,
    /// Caught up (topic) or loaded (file).
    ready: AtomicBool,
    /// One file reload at a time.
    reloading: Mutex<()>,
}

#[derive(Default)]
struct Status {
    last_update_ms: Option<i64>,
    last_error: Option<String>,
    loads: u64,
    /// File tables: the file as last read (modified time, length).
    loaded: Option<FileSignature>,
    /// Topic tables: records applied, tombstones, records without a key.
    applied: u64,
    deleted: u64,
    keyless: u64,
}

impl Table {
    fn new(config: TableConfig) -> Self {
        Table {
            config,
            rows: RwLock::new(Rows::default()),
            status: Mutex::new(Status::default()),
            ready: AtomicBool::new(false),
            reloading: Mutex::new(()),
        }
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
        rows.get(key).map(<[u8]>::to_vec)
    }

    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.rows.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is loaded (file) or caught up (topic).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Size, source, last update and error, as the admin API shows it.
    pub fn describe(&self) -> Value {
        let (rows, bytes) = {
            let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
            (rows.len(), rows.bytes)
        };
        let status = self.status();
        let mut out = json!({
            "name": self.config.name,
            "rows": rows,
            "bytes": bytes,
            "ready": self.is_ready(),
            "last_update_ms": status.last_update_ms,
            "last_error": status.last_error,
        });
        match &self.config.source {
            TableSource::File {
                path,
                format,
                key_field,
            } => {
                out["source"] = json!({
                    "file": path, "format": format.as_str(), "key_field": key_field,
                    "watch_interval_ms": self.config.watch_interval_ms,
                });
                out["loads"] = json!(status.loads);
            }
            TableSource::Topic { topic } => {
                out["source"] = json!({ "topic": topic });
                out["records_applied"] = json!(status.applied);
                out["tombstones"] = json!(status.deleted);
                out["records_without_key"] = json!(status.keyless);
            }
        }
        out
    }
}
