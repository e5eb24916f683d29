//! What the host hands in: [`Batch`], [`Record`], [`Header`], and the errors of reading a
//! record's value as text or JSON.
//!
//! The field sets of [`Batch`], [`Record`] and [`Header`] mirror the WIT records
//! `record-batch`, `input-record` and `header` of the stateful contract (0.2.0) exactly: on
//! wasm32 the generated glue of a stateful plugin builds these structs directly from the
//! component's memory, so renaming or adding a field breaks the build there. A 0.1.0 plugin's
//! batch, which has no watermark and no late flags, is moved into them field by field (no
//! byte is copied).

use std::fmt;

use crate::json::{self, Field, ScanError};

/// Records of one source partition, in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) watermark_ms: Option<i64>,
    pub(crate) records: Vec<Record>,
}

impl Batch {
    /// A batch of `records` from `topic`/`partition`, without a watermark (for tests; the
    /// host builds real ones).
    pub fn new(topic: impl Into<String>, partition: i32, records: Vec<Record>) -> Self {
        Self {
            topic: topic.into(),
            partition,
            watermark_ms: None,
            records,
        }
    }

    /// Sets the watermark; `None` is no watermark yet.
    pub fn with_watermark(mut self, watermark_ms: Option<i64>) -> Self {
        self.watermark_ms = watermark_ms;
        self
    }

    /// Source topic of every record in the batch.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Source partition of every record in the batch.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The task's watermark before the first record of the batch, milliseconds since the Unix
    /// epoch (stateful plugins only; always `None` for a 0.1.0 [`Plugin`](crate::Plugin)).
    ///
    /// `None` until every source partition of the task has shown a record with a timestamp,
    /// or stayed idle past the pipeline's `idle_timeout_ms`. Event-time timers at or before the
    /// watermark may have fired already; see [`Record::late`].
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// The records, in offset order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// One Kafka record header. Kafka allows a header without a value (`None`) and the same key
/// more than once; order is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value; `None` is a null value, distinct from an empty one.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record as a stage receives it.
///
/// `offset` and `timestamp_ms` are those of the source Kafka record, also for records a
/// previous stage rewrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<Header>,
    pub(crate) late: bool,
}

impl Record {
    /// An empty record at offset 0: no timestamp, null key, null value, no headers, not late.
    /// Use the `with_*` builders to fill it in tests.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the offset.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the timestamp, milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Appends a header with a value.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Appends a header without a value.
    pub fn with_null_header(mut self, key: impl Into<String>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: None,
        });
        self
    }

    /// Sets the late flag (see [`Record::late`]).
    pub fn with_late(mut self, late: bool) -> Self {
        self.late = late;
        self
    }

    /// Offset of the source record in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Timestamp of the source record (its event time), milliseconds since the Unix epoch, if
    /// it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// Whether the record's timestamp was behind the task's watermark when the host read it
    /// (stateful plugins only; always `false` for a 0.1.0 [`Plugin`](crate::Plugin)).
    ///
    /// Event-time timers at or before that watermark may have fired already, so a window or
    /// join the record belongs to may be gone. The plugin decides what to do with it; the
    /// examples dead-letter it with a reason starting `late: `.
    pub fn late(&self) -> bool {
        self.late
    }

    /// The key; `None` is a null key, distinct from an empty one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value; `None` is a null value (a tombstone), distinct from an empty one.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The value of the first header named `name`; `None` when there is none, or when that
    /// header has no value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&str, ValueError> {
        let bytes = self.value.as_deref().ok_or(ValueError::Null)?;
        std::str::from_utf8(bytes).map_err(|e| ValueError::NotUtf8 {
            at: e.valid_up_to(),
        })
    }

    /// The value parsed as a JSON document, as a tree. Prefer [`Record::field`] when a few
    /// top-level fields are all a plugin reads.
    pub fn json(&self) -> Result<serde_json::Value, JsonError> {
        let text = self.value_str()?;
        serde_json::from_str(text).map_err(|e| JsonError::from_serde(text.as_bytes(), &e))
    }

    /// The value parsed as a JSON object, as a map; [`JsonError::NotObject`] for any other
    /// JSON value.
    pub fn json_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, JsonError> {
        match self.json()? {
            serde_json::Value::Object(map) => Ok(map),
            _ => Err(JsonError::NotObject),
        }
    }

    /// The top-level field `name` of the value, which must be a JSON object: found without
    /// building a tree and without allocating. See [`json::field`] for what is checked.
    pub fn field(&self, name: &str) -> Result<Option<Field<'_>>, ScanError> {
        json::field(self.value.as_deref().ok_or(ScanError::NULL_VALUE)?, name)
    }

    /// Several top-level fields in one pass over the value; see [`json::fields`].
    pub fn fields<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<Field<'_>>; N], ScanError> {
        json::fields(self.value.as_deref().ok_or(ScanError::NULL_VALUE)?, names)
    }

    /// Several top-level fields in one pass over a value that must be one valid JSON object
    /// as a whole (what serde_json accepts); see [`json::fields_checked`].
    pub fn fields_checked<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<Field<'_>>; N], ScanError> {
        json::fields_checked(self.value.as_deref().ok_or(ScanError::NULL_VALUE)?, names)
    }
}

/// Why a record's value is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// The value is null (a tombstone). Displays as `null value`.
    Null,
    /// The value is not UTF-8; `at` is the 0-based offset of the first invalid byte.
    /// Displays as `not UTF-8: invalid byte at 3`.
    NotUtf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        at: usize,
    },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null value"),
            Self::NotUtf8 { at } => write!(f, "not UTF-8: invalid byte at {at}"),
        }
    }
}

impl std::error::Error for ValueError {}

/// Why a record's value is not a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// The value is null (a tombstone). Displays as `null value`.
    Null,
    /// The value is not UTF-8. Displays as `not UTF-8: invalid byte at 3`.
    NotUtf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        at: usize,
    },
    /// The value is not valid JSON. Displays as `invalid JSON at byte 17: trailing comma`.
    Syntax {
        /// 0-based byte offset where the parser stopped: the offending byte, or the length of
        /// the value when it ends too early.
        at: usize,
        /// serde_json's message, without its `at line L column C` suffix.
        message: String,
    },
    /// The value is JSON, but not an object (from [`Record::json_object`]). Displays as
    /// `not a JSON object`.
    NotObject,
}

impl JsonError {
    /// The error for `input` failing to parse with `error`, with serde_json's line and column
    /// turned into a byte offset. For plugins that run serde_json themselves.
    pub fn from_serde(input: &[u8], error: &serde_json::Error) -> Self {
        let mut message = error.to_string();
        if let Some(suffix) = message.rfind(" at line ") {
            message.truncate(suffix);
        }
        let at = if error.line() == 0 {
            0
        } else {
            // serde_json counts lines from 1 and reports the column of the byte it stopped at,
            // counting from 1; at the end of input that column is one past the last byte.
            let line_start = line_start(input, error.line());
            let column = if error.is_eof() {
                error.column()
            } else {
                error.column().saturating_sub(1)
            };
            (line_start + column).min(input.len())
        };
        Self::Syntax { at, message }
    }
}

/// Offset of the first byte of 1-based line `line`.
fn line_start(input: &[u8], line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    input
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(line - 2)
        .map_or(input.len(), |(i, _)| i + 1)
}

impl From<ValueError> for JsonError {
    fn from(error: ValueError) -> Self {
        match error {
            ValueError::Null => Self::Null,
            ValueError::NotUtf8 { at } => Self::NotUtf8 { at },
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null value"),
            Self::NotUtf8 { at } => write!(f, "not UTF-8: invalid byte at {at}"),
            Self::Syntax { at, message } => write!(f, "invalid JSON at byte {at}: {message}"),
            Self::NotObject => f.write_str("not a JSON object"),
        }
    }
}

impl std::error::Error for JsonError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(value: &str) -> String {
        Record::new()
            .with_value(value)
            .json()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn builders_and_accessors() {
        let record = Record::new()
            .with_offset(42)
            .with_timestamp(1_700_000_000_000)
            .with_key("k")
            .with_value("v")
            .with_null_header("n")
            .with_header("h", "1")
            .with_header("h", "2");
        assert_eq!(record.offset(), 42);
        assert_eq!(record.timestamp_ms(), Some(1_700_000_000_000));
        assert_eq!(record.key(), Some(&b"k"[..]));
        assert_eq!(record.value(), Some(&b"v"[..]));
        assert_eq!(record.headers().len(), 3);
        assert_eq!(record.header("h"), Some(&b"1"[..]));
        assert_eq!(record.header("n"), None);
        assert_eq!(record.header("x"), None);
        assert_eq!(Record::new().key(), None);
        assert!(!record.late());
        assert!(record.clone().with_late(true).late());

        let batch = Batch::new("t", 3, vec![record.clone()]);
        assert_eq!((batch.topic(), batch.partition(), batch.len()), ("t", 3, 1));
        assert_eq!(batch.records()[0], record);
        assert_eq!(batch.watermark_ms(), None);
        assert_eq!(batch.with_watermark(Some(7)).watermark_ms(), Some(7));
    }

    #[test]
    fn value_str_errors() {
        assert_eq!(Record::new().value_str(), Err(ValueError::Null));
        let record = Record::new().with_value(b"abc\xffdef".to_vec());
        assert_eq!(
            record.value_str().unwrap_err().to_string(),
            "not UTF-8: invalid byte at 3"
        );
        assert_eq!(Record::new().with_value("é").value_str(), Ok("é"));
    }

    #[test]
    fn json_errors_are_distinct_and_positioned() {
        assert_eq!(Record::new().json(), Err(JsonError::Null));
        assert_eq!(Record::new().json().unwrap_err().to_string(), "null value");
        assert_eq!(
            Record::new()
                .with_value(b"{\"a\":\"\xc3\x28\"}".to_vec())
                .json(),
            Err(JsonError::NotUtf8 { at: 6 })
        );
        assert_eq!(
            syntax(r#"{"a":1,}"#),
            "invalid JSON at byte 7: trailing comma"
        );
        assert_eq!(
            syntax(r#"{"a":x}"#),
            "invalid JSON at byte 5: expected value"
        );
        assert_eq!(
            syntax("{\n  \"a\": 1\n  \"b\": 2}"),
            "invalid JSON at byte 13: expected `,` or `}`"
        );
        assert_eq!(
            syntax(r#"{"a":"#),
            "invalid JSON at byte 5: EOF while parsing a value"
        );
        assert_eq!(
            syntax(""),
            "invalid JSON at byte 0: EOF while parsing a value"
        );
        assert_eq!(
            syntax("{} x"),
            "invalid JSON at byte 3: trailing characters"
        );
    }

    #[test]
    fn json_object_rejects_other_values() {
        assert_eq!(
            Record::new().with_value("[1]").json_object(),
            Err(JsonError::NotObject)
        );
        assert_eq!(JsonError::NotObject.to_string(), "not a JSON object");
        let map = Record::new()
            .with_value(r#"{"a":1}"#)
            .json_object()
            .unwrap();
        assert_eq!(map["a"], 1);
    }

    #[test]
    fn json_parses() {
        let value = Record::new().with_value(r#"{"a":[1,2]}"#).json().unwrap();
        assert_eq!(value["a"][1], 2);
    }
}
