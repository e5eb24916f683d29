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

use crate::config::{KafkaConfig, TableConfig, TableFormat, TableSource};
use crate::plugin::Tables;
use anyhow::Context as _;
use hashbrown::HashTable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io::BufRead as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

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
                        spawn_watcher(table.clone(), stop.clone())?;
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

type FileSignature = (SystemTime, u64);

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

    /// Reads the file again and swaps the rows in whole; on any error the old rows stay.
    fn reload_file(&self) -> Result<(), String> {
        let TableSource::File {
            path,
            format,
            key_field,
        } = &self.config.source
        else {
            return Err("not a file table".into());
        };
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let signature = file_signature(path);
        let started = Instant::now();
        match read_file(path, *format, key_field) {
            Ok(rows) => {
                let count = rows.len();
                let old = std::mem::replace(
                    &mut *self.rows.write().unwrap_or_else(|p| p.into_inner()),
                    rows,
                );
                drop(old);
                let mut status = self.status();
                status.loads += 1;
                status.last_update_ms = Some(crate::kafka::now_ms());
                status.last_error = None;
                status.loaded = signature;
                drop(status);
                self.ready.store(true, Ordering::Release);
                tracing::info!(
                    table = %self.config.name, rows = count, file = %path.display(),
                    ms = started.elapsed().as_millis() as u64, "Table loaded."
                );
                Ok(())
            }
            Err(e) => {
                let mut status = self.status();
                status.last_error = Some(e.clone());
                // Not read again until it changes again.
                status.loaded = signature;
                Err(e)
            }
        }
    }
}

fn file_signature(path: &Path) -> Option<FileSignature> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls a file table's file; reads it again once a change has settled for one interval.
fn spawn_watcher(table: Arc<Table>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let TableSource::File { path, .. } = &table.config.source else {
        return Ok(());
    };
    let path = path.to_path_buf();
    let interval = Duration::from_millis(table.config.watch_interval_ms);
    std::thread::Builder::new()
        .name(format!("table-{}", table.config.name))
        .spawn(move || {
            let mut seen = table.status().loaded;
            while sleep_unless_stopped(&stop, interval) {
                let now = file_signature(&path);
                let loaded = table.status().loaded;
                if now.is_some()
                    && now != loaded
                    && now == seen
                    && let Err(e) = table.reload_file()
                {
                    tracing::error!(
                        table = %table.config.name, error = %e,
                        "The table file changed but cannot be loaded; the table keeps its rows."
                    );
                }
                seen = now;
            }
        })
        .context("cannot start a table watcher thread")?;
    Ok(())
}

/// Sleeps `total` in short steps; false once `stop` is set.
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let step = Duration::from_millis(50);
    let deadline = Instant::now() + total;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}

/// Reads a whole table file. Errors name the file and the line.
fn read_file(path: &Path, format: TableFormat, key_field: &str) -> Result<Rows, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rows = Rows::default();
    match format {
        TableFormat::Jsonl => {
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            for (i, line) in reader.lines().enumerate() {
                let at = || format!("{} line {}", path.display(), i + 1);
                let line = line.map_err(|e| format!("{}: {e}", at()))?;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let key = jsonl_key(line, key_field).map_err(|e| format!("{}: {e}", at()))?;
                rows.insert(key.as_bytes(), line.as_bytes());
            }
        }
        TableFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(file);
            let headers = reader
                .headers()
                .map_err(|e| format!("{}: cannot read the header row: {e}", path.display()))?
                .clone();
            let column = headers.iter().position(|h| h == key_field).ok_or_else(|| {
                format!(
                    "{}: key_field {key_field:?} is not a column (columns: {})",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })?;
            let names: Vec<String> = headers
                .iter()
                .map(|h| Value::String(h.to_owned()).to_string())
                .collect();
            let mut value = String::new();
            for record in reader.records() {
                let record = record.map_err(|e| format!("{}: {e}", path.display()))?;
                let line = record.position().map_or(0, csv::Position::line);
                let key = record.get(column).ok_or_else(|| {
                    format!("{} line {line}: no {key_field} column", path.display())
                })?;
                value.clear();
                value.push('{');
                for (i, (name, field)) in names.iter().zip(record.iter()).enumerate() {
                    if i > 0 {
                        value.push(',');
                    }
                    value.push_str(name);
                    value.push(':');
                    value.push_str(&Value::String(field.to_owned()).to_string());
                }
                value.push('}');
                rows.insert(key.as_bytes(), value.as_bytes());
            }
        }
    }
    Ok(rows)
}

/// The key of a JSON Lines row: the key field's string, or a number's JSON text.
fn jsonl_key(line: &str, key_field: &str) -> Result<String, String> {
    let row: serde_json::Map<String, Value> = serde_json::from_str(line).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            "not a JSON object".to_owned()
        } else {
            format!("not JSON: {e}")
        }
    })?;
    match row.get(key_field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!(
            "no string or number field `{key_field}` to key the row by"
        )),
    }
}

/// Follows a topic from its beginning.
struct TopicFollower {
    consumer: BaseConsumer,
    topic: String,
    /// Per partition, the end offset at start-up: caught up once every partition reached it.
    targets: HashMap<i32, i64>,
}

/// Longest wait for the broker's answer about a table topic at start-up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl TopicFollower {
    fn connect(kafka: &KafkaConfig, name: &str, topic: &str) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("fetch.wait.max.ms", "50")
            .set("client.id", format!("switchyard-table-{name}"));
        for (key, value) in &kafka.consumer {
            config.set(key, value);
        }
        // Partitions are assigned by hand: no group is joined and nothing is committed (the
        // group id is only there because some librdkafka versions want one).
        let consumer: BaseConsumer = config
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", format!("switchyard-table-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create the table consumer")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            anyhow::bail!(
                "topic {topic} does not exist (create it, compacted, with the table's rows)"
            );
        }
        let mut targets = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .with_context(|| format!("cannot read the end offsets of {topic}/{partition}"))?;
            if high > low {
                targets.insert(partition, high);
            }
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .context("cannot assign the table topic")?;
        }
        consumer
            .assign(&assignment)
            .context("cannot assign the table topic")?;
        Ok(TopicFollower {
            consumer,
            topic: topic.to_owned(),
            targets,
        })
    }

    fn spawn(self, table: Arc<Table>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        if self.targets.is_empty() {
            table.ready.store(true, Ordering::Release);
        }
        std::thread::Builder::new()
            .name(format!("table-{}", table.config.name))
            .spawn(move || self.run(&table, &stop))
            .context("cannot start a table consumer thread")?;
        Ok(())
    }

    fn run(mut self, table: &Table, stop: &AtomicBool) {
        let name = &table.config.name;
        let started = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            match result {
                Ok(message) => {
                    let partition = message.partition();
                    let next = message.offset() + 1;
                    self.apply(table, message.key(), message.payload());
                    if self.targets.get(&partition).is_some_and(|end| next >= *end) {
                        self.targets.remove(&partition);
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.targets.remove(&partition);
                }
                Err(e) => {
                    table.status().last_error = Some(format!("{e}"));
                    if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(table = %name, topic = %self.topic, error = %e, "Table consumer error.");
                        last_error_log = Some(Instant::now());
                    }
                    continue;
                }
            }
            if self.targets.is_empty() && !table.is_ready() {
                table.ready.store(true, Ordering::Release);
                tracing::info!(
                    table = %name, topic = %self.topic, rows = table.len(),
                    ms = started.elapsed().as_millis() as u64, "Table caught up."
                );
            }
        }
    }

    fn apply(&self, table: &Table, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key else {
            table.status().keyless += 1;
            return;
        };
        {
            let mut rows = table.rows.write().unwrap_or_else(|p| p.into_inner());
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(key),
            }
        }
        let mut status = table.status();
        status.applied += 1;
        if value.is_none() {
            status.deleted += 1;
        }
        status.last_update_ms = Some(crate::kafka::now_ms());
        status.last_error = None;
    }
}

/// Rows keyed by bytes. Each row is one allocation: the key's length (4 bytes), the key,
/// the value.
#[derive(Default)]
pub struct Rows {
    table: HashTable<Box<[u8]>>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of keys and values held.
    bytes: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("rows", &self.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn split(row: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = row.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    rest.split_at(len)
}

impl Rows {
    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |row| split(row).0 == key)
            .map(|row| split(row).1)
    }

    /// Sets `key` to `value`. A key longer than 4 GiB is not stored.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let Ok(len) = u32::try_from(key.len()) else {
            return;
        };
        let mut row = Vec::with_capacity(4 + key.len() + value.len());
        row.extend_from_slice(&len.to_le_bytes());
        row.extend_from_slice(key);
        row.extend_from_slice(value);
        let row = row.into_boxed_slice();
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        self.bytes += key.len() + value.len();
        match self.table.entry(
            hash,
            |old| split(old).0 == key,
            |old| hasher.hash_one(split(old).0),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                let old = std::mem::replace(entry.get_mut(), row);
                self.bytes -= old.len() - 4;
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(row);
            }
        }
    }

    /// Deletes `key`.
    pub fn remove(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.table.find_entry(hash, |row| split(row).0 == key) {
            let (row, _) = entry.remove();
            self.bytes -= row.len() - 4;
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_insert_replace_remove() {
        let mut rows = Rows::default();
        rows.insert(b"a", b"1");
        rows.insert(b"b", b"22");
        rows.insert(b"", b"empty key");
        assert_eq!(rows.get(b"a"), Some(&b"1"[..]));
        assert_eq!(rows.get(b""), Some(&b"empty key"[..]));
        assert_eq!(rows.get(b"c"), None);
        rows.insert(b"a", b"333");
        assert_eq!(rows.get(b"a"), Some(&b"333"[..]));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.bytes, 1 + 3 + 1 + 2 + 9);
        rows.remove(b"a");
        rows.remove(b"nope");
        assert_eq!(rows.get(b"a"), None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.bytes, 1 + 2 + 9);
        // A key that is a prefix of another is a different key.
        rows.insert(b"bb", b"x");
        assert_eq!(rows.get(b"b"), Some(&b"22"[..]));
    }

    fn file_table(dir: &Path, file: &str, text: &str, key_field: &str) -> Result<Rows, String> {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let format = TableFormat::from_path(&path).unwrap();
        read_file(&path, format, key_field)
    }

    #[test]
    fn jsonl_and_csv_files() {
        let dir = tempdir();
        let rows = file_table(
            &dir,
            "u.jsonl",
            "{\"id\":\"u1\",\"name\":\"Ann\"}\n\n{\"id\":7,\"name\":\"Bo\"}\n{\"id\":\"u1\",\"name\":\"Ann 2\"}\n",
            "id",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.get(b"u1"), Some(&br#"{"id":"u1","name":"Ann 2"}"#[..]));
        assert_eq!(rows.get(b"7"), Some(&br#"{"id":7,"name":"Bo"}"#[..]));

        let rows = file_table(
            &dir,
            "u.csv",
            "id,name,segment\nu1,\"Ann, A\",gold\nu2,Bo,\n",
            "id",
        )
        .unwrap();
        assert_eq!(
            rows.get(b"u1"),
            Some(&br#"{"id":"u1","name":"Ann, A","segment":"gold"}"#[..])
        );
        assert_eq!(
            rows.get(b"u2"),
            Some(&br#"{"id":"u2","name":"Bo","segment":""}"#[..])
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = tempdir();
        let err = file_table(&dir, "a.jsonl", "{\"id\":\"u1\"}\n{broken\n", "id").unwrap_err();
        assert!(
            err.ends_with("a.jsonl line 2: not JSON: key must be a string at line 1 column 2"),
            "{err}"
        );
        let err = file_table(&dir, "b.jsonl", "{\"id\":\"u1\"}\n[1]\n", "id").unwrap_err();
        assert!(err.ends_with("b.jsonl line 2: not a JSON object"), "{err}");
        let err = file_table(&dir, "c.jsonl", "{\"id\":null}\n", "id").unwrap_err();
        assert!(
            err.ends_with("c.jsonl line 1: no string or number field `id` to key the row by"),
            "{err}"
        );
        let err = file_table(&dir, "d.csv", "user,name\nu1,Ann\n", "id").unwrap_err();
        assert!(
            err.ends_with("d.csv: key_field \"id\" is not a column (columns: user, name)"),
            "{err}"
        );
        let err = file_table(&dir, "e.csv", "id,name\nu1,Ann\nu2\n", "id").unwrap_err();
        assert!(
            err.contains(
                "e.csv: CSV error: record 2 (line: 3, byte: 15): found record with 1 fields"
            ),
            "{err}"
        );
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-tables-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
