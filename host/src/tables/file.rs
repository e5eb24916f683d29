//! File tables: reading a JSON Lines or CSV file into [`Rows`], reloading a [`Table`] from
//! its file, and the watcher thread that reloads it when the file changes. Not the rows'
//! storage (`rows`) nor the table set (the parent module).

use super::{Rows, Table};
use crate::config::{TableFormat, TableSource};
use anyhow::Context as _;
use serde_json::Value;
use std::io::BufRead as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A file as last read: its modified time and length.
pub(super) type FileSignature = (SystemTime, u64);

impl Table {
    /// Reads the file again and swaps the rows in whole; on any error the old rows stay.
    pub(super) fn reload_file(&self) -> Result<(), String> {
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
pub(super) fn spawn_watcher(table: Arc<Table>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
