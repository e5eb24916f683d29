//! Where each delivery of the plugin chain is written, and what it looks like there.
//!
//! Pure: a [`Delivery`](crate::plugin::Delivery) and the pipeline's route table in, an
//! [`Outgoing`] record out. No I/O, so every case is a row in a table test.
//!
//! - A routed record goes to its route's topic with its key, value, headers and the source
//!   record's timestamp, plus provenance headers: `switchyard-pipeline` and
//!   `switchyard-versions` (`stage=sha256,...`, the plugin version of every stage).
//! - A dead-lettered record goes to the dead-letter topic with its key and headers, gains
//!   `switchyard-dlq-*` headers and is stamped with the time it was dead-lettered. With
//!   [`DeadLetterFormat::Headers`] it keeps its value; with
//!   [`DeadLetterFormat::JsonEnvelope`] its value becomes a JSON object holding the original
//!   bytes exactly (see [`Router::dead_letter`]).

use crate::config::DeadLetterFormat;
use crate::plugin::{ChainSpec, DeadLetter, Destination, Header, InputRecord, RouteId};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Header naming the pipeline, on every record Switchyard writes.
pub const PIPELINE_HEADER: &str = "switchyard-pipeline";
/// Header listing `stage=plugin-sha256` for every stage, on every routed record.
pub const VERSIONS_HEADER: &str = "switchyard-versions";
/// Prefix of the dead-letter headers.
pub const DLQ_PREFIX: &str = "switchyard-dlq-";

/// A record ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Key (`None`: null key).
    pub key: Option<Vec<u8>>,
    /// Value (`None`: null value).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The source record's timestamp.
    pub timestamp_ms: Option<i64>,
    /// Whether this is a dead-letter record.
    pub dead_letter: bool,
}

/// Where a batch came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
}

/// One pipeline's route table.
#[derive(Debug, Clone)]
pub struct Router {
    pipeline: String,
    /// Topic of each route, indexed by [`RouteId`].
    topics: Vec<Arc<str>>,
    dead_letter_topic: Arc<str>,
    format: DeadLetterFormat,
    /// The provenance headers of every routed record (empty when turned off). The same for
    /// every record of a chain version, so they are built once, here.
    provenance: Vec<Header>,
}

/// Why a route table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The chain declares a route the pipeline gives no topic.
    #[error("route `{route}` has no topic")]
    NoTopic {
        /// The route.
        route: String,
    },
}

impl Router {
    /// Builds the table from plain data: the topic of each route in [`RouteId`] order, and
    /// `stage=version` for every stage of the chain (the provenance header).
    pub fn new(
        pipeline: &str,
        topics: &[&str],
        versions: &[(&str, &str)],
        dead_letter_topic: &str,
        format: DeadLetterFormat,
    ) -> Self {
        let versions = versions
            .iter()
            .map(|(stage, version)| format!("{stage}={version}"))
            .collect::<Vec<_>>()
            .join(",");
        Router {
            pipeline: pipeline.to_owned(),
            topics: topics.iter().map(|t| Arc::from(*t)).collect(),
            dead_letter_topic: Arc::from(dead_letter_topic),
            format,
            provenance: vec![
                header(PIPELINE_HEADER, pipeline.as_bytes()),
                header(VERSIONS_HEADER, versions.as_bytes()),
            ],
        }
    }

    /// The table of a chain: every route the chain declares must have a topic in
    /// `route_topics`.
    pub fn for_chain(
        spec: &ChainSpec,
        route_topics: &BTreeMap<String, String>,
        dead_letter_topic: &str,
        format: DeadLetterFormat,
    ) -> Result<Self, RouteError> {
        let topics = spec
            .routes()
            .iter()
            .map(|route| {
                route_topics
                    .get(route)
                    .map(String::as_str)
                    .ok_or_else(|| RouteError::NoTopic {
                        route: route.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let versions: Vec<(&str, &str)> = spec
            .stages()
            .iter()
            .map(|s| (s.name.as_str(), s.module.version.0.as_str()))
            .collect();
        Ok(Router::new(
            spec.pipeline(),
            &topics,
            &versions,
            dead_letter_topic,
            format,
        ))
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The same table, writing routed records without the provenance headers (the pipeline's
    /// `provenance_headers = false`). Dead letters keep theirs.
    pub fn without_provenance(mut self) -> Self {
        self.provenance.clear();
        self
    }

    /// The outgoing record for one delivery. `now_ms` stamps dead letters.
    pub fn route(&self, source: Source<'_>, destination: Destination, now_ms: i64) -> Outgoing {
        let (mut out, provenance) = self.route_apart(source, destination, now_ms);
        out.headers.extend_from_slice(provenance);
        out
    }

    /// [`Router::route`] with the provenance headers left out of the record and returned
    /// beside it, to be written after its headers ([`crate::sink::Sink::send`] does). They
    /// are the same for every routed record, so the hot path does not copy them into each.
    pub fn route_apart(
        &self,
        source: Source<'_>,
        destination: Destination,
        now_ms: i64,
    ) -> (Outgoing, &[Header]) {
        match destination {
            Destination::Route { route, record } => {
                (self.routed(route, record), self.provenance.as_slice())
            }
            Destination::DeadLetter(dead) => (self.dead_letter(source, dead, now_ms), &[]),
        }
    }

    fn topic(&self, route: RouteId) -> Arc<str> {
        // A RouteId comes from the same ChainSpec the table was built from, so it is always
        // in range; an out-of-range one would be a host bug, and goes to the dead-letter
        // topic rather than nowhere.
        self.topics
            .get(usize::from(route.0))
            .cloned()
            .unwrap_or_else(|| self.dead_letter_topic.clone())
    }

    /// A routed record, without the provenance headers.
    fn routed(&self, route: RouteId, record: InputRecord) -> Outgoing {
        let InputRecord {
            timestamp_ms,
            key,
            value,
            headers,
            ..
        } = record;
        Outgoing {
            topic: self.topic(route),
            key,
            value,
            headers,
            timestamp_ms,
            dead_letter: false,
        }
    }

    /// A dead-letter record.
    ///
    /// Both formats: the record's key and headers as the failing stage received them, plus
    /// `switchyard-pipeline` and `switchyard-dlq-` `reason` (at most 8 KiB), `kind`, `stage`,
    /// `plugin-version`, `source-topic`, `source-partition`, `source-offset`,
    /// `source-timestamp` (the record's own, when it has one) and `timestamp` (ms since the
    /// epoch, when it was dead-lettered; also the dead letter's Kafka timestamp).
    ///
    /// Headers format: the value as it was.
    ///
    /// JSON envelope format: the value is `{"value": V, "value_encoding": E, "dlq_reason",
    /// "dlq_kind", "dlq_stage", "dlq_plugin_version", "dlq_source_topic",
    /// "dlq_source_partition", "dlq_source_offset", "dlq_source_timestamp",
    /// "dlq_timestamp", "dlq_value_omitted", "dlq_record_omitted"}` where V is the original
    /// value byte for byte when it is exactly one JSON value (E = `json`), as a string when
    /// it is other UTF-8 (`string`), as base64 otherwise (`base64`), null for a null value
    /// (`null`) or one left out because the broker refused the dead letter as too large
    /// (`omitted`).
    pub fn dead_letter(&self, source: Source<'_>, dead: DeadLetter, now_ms: i64) -> Outgoing {
        self.dead_letter_again(source, dead, now_ms, None)
    }

    /// [`Router::dead_letter`] for a record that failed again when its dead letter was
    /// replayed: it also carries `switchyard-dlq-replays` (how many replays it has failed,
    /// `replays`), last of the dead-letter headers, and in the envelope `dlq_replays`.
    pub fn dead_letter_again(
        &self,
        source: Source<'_>,
        dead: DeadLetter,
        now_ms: i64,
        replays: Option<u32>,
    ) -> Outgoing {
        let DeadLetter {
            stage_name,
            version,
            error,
            record,
            ..
        } = dead;
        let InputRecord {
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        } = record;
        let why = Why {
            reason: error.message,
            kind: error.kind.as_str(),
            stage: Some((stage_name, version.0)),
            topic: source.topic,
            partition: source.partition,
            offset,
            now_ms,
            replays,
        };
        self.dead_letter_record(why, key, value, headers, timestamp_ms)
    }

    /// The dead-letter record for an output the broker would not take (too large, topic
    /// missing, not authorized): kind `undeliverable`, no stage. `out` is the record as it
    /// was to be written; its Switchyard headers are replaced. `at` is the source record.
    pub fn undeliverable(
        &self,
        at: SourceOffset<'_>,
        out: Outgoing,
        reason: String,
        now_ms: i64,
    ) -> Outgoing {
        let Outgoing {
            key,
            value,
            mut headers,
            timestamp_ms,
            ..
        } = out;
        headers.retain(|h| h.key != PIPELINE_HEADER && h.key != VERSIONS_HEADER);
        let why = Why {
            reason,
            kind: UNDELIVERABLE,
            stage: None,
            topic: at.topic,
            partition: at.partition,
            offset: at.offset,
            now_ms,
            replays: None,
        };
        self.dead_letter_record(why, key, value, headers, timestamp_ms)
    }

    /// The dead-letter record for a source record no plugin can be given (a header key that
    /// is not UTF-8): kind `bad-input`, no stage, the record as read.
    pub fn unreadable(
        &self,
        source: Source<'_>,
        record: InputRecord,
        reason: String,
        now_ms: i64,
    ) -> Outgoing {
        self.dead_record(source, record, reason, BAD_INPUT, None, now_ms)
    }

    /// A source record (as a stage received it) dead-lettered for `reason`.
    fn dead_record(
        &self,
        source: Source<'_>,
        record: InputRecord,
        reason: String,
        kind: &str,
        stage: Option<(String, String)>,
        now_ms: i64,
    ) -> Outgoing {
        let InputRecord {
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        } = record;
        let why = Why {
            reason,
            kind,
            stage,
            topic: source.topic,
            partition: source.partition,
            offset,
            now_ms,
            replays: None,
        };
        self.dead_letter_record(why, key, value, headers, timestamp_ms)
    }

    fn dead_letter_record(
        &self,
        why: Why<'_>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        mut headers: Vec<Header>,
        timestamp_ms: Option<i64>,
    ) -> Outgoing {
        headers.push(header(PIPELINE_HEADER, self.pipeline.as_bytes()));
        let mut fields: Vec<(&str, String)> = vec![
            ("reason", capped(why.reason)),
            ("kind", why.kind.to_owned()),
        ];
        if let Some((stage, version)) = why.stage {
            fields.push(("stage", stage));
            fields.push(("plugin-version", version));
        }
        fields.extend([
            ("source-topic", why.topic.to_owned()),
            ("source-partition", why.partition.to_string()),
            ("source-offset", why.offset.to_string()),
        ]);
        if let Some(ts) = timestamp_ms {
            fields.push(("source-timestamp", ts.to_string()));
        }
        fields.push(("timestamp", why.now_ms.to_string()));
        if let Some(replays) = why.replays {
            fields.push(("replays", replays.to_string()));
        }
        for (name, text) in fields {
            headers.push(header(&format!("{DLQ_PREFIX}{name}"), text.as_bytes()));
        }
        let value = match self.format {
            DeadLetterFormat::Headers => value,
            DeadLetterFormat::JsonEnvelope => Some(envelope(&headers, embed(value.as_deref()))),
        };
        Outgoing {
            topic: self.dead_letter_topic.clone(),
            key,
            value,
            headers,
            // Stamped now: the source's time may be older than the dead-letter topic's
            // retention or the broker's accepted timestamp range (it is in a header).
            timestamp_ms: Some(why.now_ms),
            dead_letter: true,
        }
    }

    /// A dead letter the broker refused as too large, made smaller: first without its value,
    /// then also without its key and the record's own headers (the `switchyard-dlq-*`
    /// headers, and the envelope's metadata, stay, so the source offset still points at the
    /// original). `None` when nothing is left to take away.
    pub fn shrink(&self, mut out: Outgoing) -> Option<Outgoing> {
        let has = |out: &Outgoing, name: &str| {
            let key = format!("{DLQ_PREFIX}{name}");
            out.headers.iter().any(|h| h.key == key)
        };
        let original_value = match self.format {
            DeadLetterFormat::Headers => out.value.is_some(),
            DeadLetterFormat::JsonEnvelope => !has(&out, "value-omitted"),
        };
        if original_value {
            let bytes = match self.format {
                DeadLetterFormat::Headers => out.value.as_ref().map_or(0, Vec::len),
                DeadLetterFormat::JsonEnvelope => out
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<EnvelopeSize>(v).ok())
                    .map_or(0, |e| e.value.get().len()),
            };
            let note = format!("value omitted ({bytes} bytes); the source record holds it");
            out.headers.push(header(
                &format!("{DLQ_PREFIX}value-omitted"),
                note.as_bytes(),
            ));
            out.value = match self.format {
                DeadLetterFormat::Headers => None,
                DeadLetterFormat::JsonEnvelope => {
                    Some(envelope(&out.headers, (Embedded::Null, OMITTED_ENCODING)))
                }
            };
            return Some(out);
        }
        let own = out
            .headers
            .iter()
            .filter(|h| !h.key.starts_with("switchyard-"))
            .count();
        if out.key.is_none() && own == 0 {
            return None;
        }
        let note = format!(
            "key ({} bytes) and {own} headers omitted; the source record holds them",
            out.key.as_ref().map_or(0, Vec::len)
        );
        out.key = None;
        out.headers.retain(|h| h.key.starts_with("switchyard-"));
        out.headers.push(header(
            &format!("{DLQ_PREFIX}record-omitted"),
            note.as_bytes(),
        ));
        if self.format == DeadLetterFormat::JsonEnvelope {
            out.value = Some(envelope(&out.headers, (Embedded::Null, OMITTED_ENCODING)));
        }
        Some(out)
    }
}

/// The error kind of a record the broker would not take.
pub const UNDELIVERABLE: &str = "undeliverable";
/// The error kind of a source record no plugin can be given.
pub const BAD_INPUT: &str = "bad-input";

/// A source record's position.
#[derive(Debug, Clone, Copy)]
pub struct SourceOffset<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// Why and from where a record is dead-lettered.
struct Why<'a> {
    reason: String,
    kind: &'a str,
    /// Failing stage and its plugin version; none for a record the broker refused.
    stage: Option<(String, String)>,
    topic: &'a str,
    partition: i32,
    offset: i64,
    now_ms: i64,
    /// Replays of its dead letter it has failed (a record dead-lettered again by a replay).
    replays: Option<u32>,
}

fn header(key: &str, value: &[u8]) -> Header {
    Header {
        key: key.to_owned(),
        value: Some(value.to_vec()),
    }
}

/// The longest dead-letter reason kept (a plugin chooses its reasons; it travels in a Kafka
/// header and the log); longer ones are cut by [`cut_reason`].
pub const MAX_REASON_BYTES: usize = 8 * 1024;

/// Room kept after the cut for the note saying how much was cut.
const CUT_NOTE_ROOM: usize = 64;

/// A reason (UTF-8 text) of `total` bytes, of which `head` is the beginning (at least the
/// first [`MAX_REASON_BYTES`] bytes, or all of it), at most [`MAX_REASON_BYTES`] long: whole when it
/// fits, else cut at a character boundary with `... (N more bytes cut)` appended. The plugin
/// lift reads only `head` from guest memory; the router cuts whole reasons.
pub fn cut_reason(head: &[u8], total: usize) -> String {
    if total <= MAX_REASON_BYTES {
        return String::from_utf8_lossy(head).into_owned();
    }
    let mut keep = &head[..head.len().min(MAX_REASON_BYTES - CUT_NOTE_ROOM)];
    // A character the cut splits is left out whole (other invalid bytes become U+FFFD).
    if let Err(e) = std::str::from_utf8(keep)
        && e.error_len().is_none()
    {
        keep = &keep[..e.valid_up_to()];
    }
    let mut text = String::from_utf8_lossy(keep).into_owned();
    text.push_str(&format!("... ({} more bytes cut)", total - keep.len()));
    text
}

fn capped(reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    cut_reason(reason.as_bytes(), reason.len())
}

/// `value_encoding` of an envelope whose value was left out (too large to write).
pub const OMITTED_ENCODING: &str = "omitted";

/// The original value as it goes into a JSON envelope.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum Embedded<'a> {
    /// A null value (or one left out).
    Null,
    /// JSON, byte for byte as it came (big numbers, duplicate keys, key order and inner
    /// spacing kept).
    Json(&'a serde_json::value::RawValue),
    /// Other UTF-8 as a string, anything else as base64.
    Text(String),
}

/// Only the embedded value of an envelope, as written.
#[derive(serde::Deserialize)]
struct EnvelopeSize<'a> {
    #[serde(borrow)]
    value: &'a serde_json::value::RawValue,
}

/// The original value inside a JSON envelope, and how it was encoded: `json` when the bytes
/// are exactly one JSON value (no surrounding spaces, so a replay gets the same bytes),
/// `string` when other UTF-8, `base64` otherwise, `null` for a null value.
fn embed(value: Option<&[u8]>) -> (Embedded<'_>, &'static str) {
    let Some(bytes) = value else {
        return (Embedded::Null, "null");
    };
    if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(bytes)
        && raw.get().len() == bytes.len()
    {
        return (Embedded::Json(raw), "json");
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (Embedded::Text(text.to_owned()), "string"),
        Err(_) => (
            Embedded::Text(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        ),
    }
}

/// A JSON envelope: the embedded value and the dead letter's metadata, read from its
/// `switchyard-dlq-*` headers (`dlq_reason`, `dlq_kind`, `dlq_stage`, `dlq_plugin_version`,
/// `dlq_source_topic`, `dlq_source_partition`, `dlq_source_offset`,
/// `dlq_source_timestamp`, `dlq_timestamp`, `dlq_value_omitted`, `dlq_record_omitted`;
/// numbers as numbers, absent ones null).
fn envelope(headers: &[Header], (value, encoding): (Embedded<'_>, &'static str)) -> Vec<u8> {
    let text = |name: &str| {
        let key = format!("{DLQ_PREFIX}{name}");
        headers
            .iter()
            .rev()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let number = |name: &str| text(name).and_then(|t| t.parse::<i64>().ok());
    let envelope = Envelope {
        value,
        value_encoding: encoding,
        dlq_reason: text("reason"),
        dlq_kind: text("kind"),
        dlq_stage: text("stage"),
        dlq_plugin_version: text("plugin-version"),
        dlq_source_topic: text("source-topic"),
        dlq_source_partition: number("source-partition"),
        dlq_source_offset: number("source-offset"),
        dlq_source_timestamp: number("source-timestamp"),
        dlq_timestamp: number("timestamp"),
        dlq_value_omitted: text("value-omitted"),
        dlq_record_omitted: text("record-omitted"),
        dlq_replays: number("replays"),
    };
    // Strings, numbers and already-valid JSON: serializing them cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// A JSON envelope as written (see [`envelope`]). Serialized field by field, so the
/// embedded JSON goes out byte for byte.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    value: Embedded<'a>,
    value_encoding: &'static str,
    dlq_reason: Option<&'a str>,
    dlq_kind: Option<&'a str>,
    dlq_stage: Option<&'a str>,
    dlq_plugin_version: Option<&'a str>,
    dlq_source_topic: Option<&'a str>,
    dlq_source_partition: Option<i64>,
    dlq_source_offset: Option<i64>,
    dlq_source_timestamp: Option<i64>,
    dlq_timestamp: Option<i64>,
    dlq_value_omitted: Option<&'a str>,
    dlq_record_omitted: Option<&'a str>,
    /// Only on a record a replay dead-lettered again, so other envelopes are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    dlq_replays: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{ErrorKind, RecordError};
    use proptest::prelude::*;

    const VALIDATE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const ROUTE: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn router(format: DeadLetterFormat) -> Router {
        Router::new(
            "orders",
            &["orders-standard", "orders-urgent"],
            &[("validate", VALIDATE), ("route", ROUTE)],
            "orders-dlq",
            format,
        )
    }

    fn original() -> InputRecord {
        InputRecord {
            offset: 77,
            timestamp_ms: Some(1_700_000_000_123),
            key: Some(b"user-1".to_vec()),
            value: Some(br#"{"id":1}"#.to_vec()),
            headers: vec![header("trace", b"t-1")],
        }
    }

    fn routed(route: u16) -> Destination {
        Destination::Route {
            route: RouteId(route),
            record: original(),
        }
    }

    fn dead() -> Destination {
        Destination::DeadLetter(DeadLetter {
            stage: 0,
            stage_name: "validate".into(),
            version: crate::plugin::PluginVersion(VALIDATE.into()),
            error: RecordError {
                kind: ErrorKind::Rejected,
                message: "missing field user_id".into(),
            },
            record: original(),
        })
    }

    const SOURCE: Source<'static> = Source {
        topic: "orders",
        partition: 4,
    };
    const NOW: i64 = 1_700_000_999_000;

    fn headers(out: &Outgoing) -> Vec<(&str, &str)> {
        out.headers
            .iter()
            .map(|h| {
                let value = h.value.as_deref().unwrap_or_default();
                (
                    h.key.as_str(),
                    std::str::from_utf8(value).unwrap_or("<bytes>"),
                )
            })
            .collect()
    }

    /// Every delivery, every format: where it goes and what headers it carries, in order.
    #[test]
    fn each_delivery_goes_to_its_topic_with_its_headers() {
        let versions = format!("validate={VALIDATE},route={ROUTE}");
        let dead_headers = [
            ("trace", "t-1"),
            ("switchyard-pipeline", "orders"),
            ("switchyard-dlq-reason", "missing field user_id"),
            ("switchyard-dlq-kind", "rejected"),
            ("switchyard-dlq-stage", "validate"),
            ("switchyard-dlq-plugin-version", VALIDATE),
            ("switchyard-dlq-source-topic", "orders"),
            ("switchyard-dlq-source-partition", "4"),
            ("switchyard-dlq-source-offset", "77"),
            ("switchyard-dlq-source-timestamp", "1700000000123"),
            ("switchyard-dlq-timestamp", "1700000999000"),
        ];
        let routed_headers = [
            ("trace", "t-1"),
            ("switchyard-pipeline", "orders"),
            ("switchyard-versions", versions.as_str()),
        ];
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Router, Destination, &str, bool, &[(&str, &str)])> = vec![
            (
                "route 0",
                router(DeadLetterFormat::Headers),
                routed(0),
                "orders-standard",
                false,
                &routed_headers,
            ),
            (
                "route 1",
                router(DeadLetterFormat::Headers),
                routed(1),
                "orders-urgent",
                false,
                &routed_headers,
            ),
            (
                "no provenance",
                router(DeadLetterFormat::Headers).without_provenance(),
                routed(1),
                "orders-urgent",
                false,
                &[("trace", "t-1")],
            ),
            // A route id from another table is a host bug: dead-lettered rather than lost.
            (
                "unknown route id",
                router(DeadLetterFormat::Headers),
                routed(9),
                "orders-dlq",
                false,
                &routed_headers,
            ),
            (
                "dead letter, headers",
                router(DeadLetterFormat::Headers),
                dead(),
                "orders-dlq",
                true,
                &dead_headers,
            ),
            // Without provenance a dead letter still says where it came from and why.
            (
                "dead letter, no provenance",
                router(DeadLetterFormat::Headers).without_provenance(),
                dead(),
                "orders-dlq",
                true,
                &dead_headers,
            ),
            // The envelope's metadata is in headers too, as in the headers format.
            (
                "dead letter, envelope",
                router(DeadLetterFormat::JsonEnvelope),
                dead(),
                "orders-dlq",
                true,
                &dead_headers,
            ),
        ];
        for (name, router, destination, topic, dead_letter, expected) in cases {
            let out = router.route(SOURCE, destination, NOW);
            assert_eq!(&*out.topic, topic, "{name}");
            assert_eq!(out.dead_letter, dead_letter, "{name}");
            assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]), "{name}");
            // Dead letters are stamped when they are written (the source's time is a header).
            let stamp = if dead_letter { NOW } else { 1_700_000_000_123 };
            assert_eq!(out.timestamp_ms, Some(stamp), "{name}");
            assert_eq!(headers(&out), expected, "{name}");
            if router.format == DeadLetterFormat::Headers {
                assert_eq!(out.value.as_deref(), Some(&br#"{"id":1}"#[..]), "{name}");
            }
        }
    }

    #[test]
    fn route_apart_leaves_the_provenance_beside_the_record() {
        let router = router(DeadLetterFormat::Headers);
        let (out, provenance) = router.route_apart(SOURCE, routed(0), NOW);
        assert_eq!(headers(&out), [("trace", "t-1")]);
        let keys: Vec<&str> = provenance.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, [PIPELINE_HEADER, VERSIONS_HEADER]);
        let (_, provenance) = router.route_apart(SOURCE, dead(), NOW);
        assert!(
            provenance.is_empty(),
            "a dead letter carries its own headers"
        );
    }

    #[test]
    fn dead_letters_as_a_json_envelope() {
        let out = router(DeadLetterFormat::JsonEnvelope).route(SOURCE, dead(), NOW);
        let envelope: serde_json::Value =
            serde_json::from_slice(out.value.as_deref().unwrap_or_default()).unwrap_or_default();
        let expected = serde_json::json!({
            "value": {"id": 1},
            "value_encoding": "json",
            "dlq_reason": "missing field user_id",
            "dlq_kind": "rejected",
            "dlq_stage": "validate",
            "dlq_plugin_version": VALIDATE,
            "dlq_source_topic": "orders",
            "dlq_source_partition": 4,
            "dlq_source_offset": 77,
            "dlq_source_timestamp": 1_700_000_000_123_i64,
            "dlq_timestamp": NOW,
            "dlq_value_omitted": null,
            "dlq_record_omitted": null,
        });
        assert_eq!(envelope, expected);
    }

    /// The original value goes into the envelope byte for byte: a big integer, a duplicate
    /// key, key order and inner spacing survive; surrounding spaces make it a string.
    #[test]
    fn an_envelope_keeps_the_original_json_exactly() {
        let router = router(DeadLetterFormat::JsonEnvelope);
        for (original, encoding) in [
            (
                &br#"{"z":1, "a":123456789012345678901234567890,"a":2}"#[..],
                "json",
            ),
            (br#"[1.000000000000000000001,  {"k":"\u00e9"}]"#, "json"),
            (b" {\"padded\":true} ", "string"),
        ] {
            let mut dead = dead();
            if let Destination::DeadLetter(d) = &mut dead {
                d.record.value = Some(original.to_vec());
            }
            let out = router.route(SOURCE, dead, NOW);
            let written = out.value.unwrap_or_default();
            let envelope: EnvelopeSize<'_> = serde_json::from_slice(&written).expect("an envelope");
            let back = match encoding {
                "json" => envelope.value.get().as_bytes().to_vec(),
                _ => serde_json::from_str::<String>(envelope.value.get())
                    .expect("a string")
                    .into_bytes(),
            };
            assert_eq!(back, original, "{}", String::from_utf8_lossy(original));
            let parsed: serde_json::Value = serde_json::from_slice(&written).expect("JSON");
            assert_eq!(parsed["value_encoding"], encoding);
        }
    }

    /// A plugin's reason is cut to 8 KiB, at a character boundary, saying how much was cut; a
    /// cut reason is not cut again.
    #[test]
    fn long_reasons_are_cut() {
        let mut dead = dead();
        if let Destination::DeadLetter(d) = &mut dead {
            d.error.message = "é".repeat(10_000);
        }
        let out = router(DeadLetterFormat::Headers).route(SOURCE, dead, NOW);
        let reason = headers(&out)
            .into_iter()
            .find(|(k, _)| *k == "switchyard-dlq-reason")
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default();
        assert!(reason.len() <= MAX_REASON_BYTES, "{}", reason.len());
        assert!(
            reason.ends_with("... (11872 more bytes cut)"),
            "{}",
            &reason[8000..]
        );
        assert_eq!(
            capped(reason.clone()),
            reason,
            "a cut reason is not cut again"
        );
        let ascii = "x".repeat(10_000);
        let from_head = cut_reason(&ascii.as_bytes()[..MAX_REASON_BYTES], ascii.len());
        assert_eq!(from_head, capped(ascii), "a head alone cuts the same");
    }

    /// A dead letter too large to write loses its value, then its key and own headers; the
    /// metadata stays, in both formats, and then nothing more can go.
    #[test]
    fn shrinking_a_dead_letter_keeps_its_metadata() {
        for format in [DeadLetterFormat::Headers, DeadLetterFormat::JsonEnvelope] {
            let router = router(format);
            let out = router.route(SOURCE, dead(), NOW);
            let once = router.shrink(out).expect("the value can go");
            let note = |out: &Outgoing, name: &str| {
                headers(out)
                    .into_iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_owned())
            };
            assert_eq!(
                note(&once, "switchyard-dlq-value-omitted").as_deref(),
                Some("value omitted (8 bytes); the source record holds it"),
                "{format:?}"
            );
            assert_eq!(once.key.as_deref(), Some(&b"user-1"[..]));
            let twice = router.shrink(once).expect("the key and headers can go");
            assert_eq!(twice.key, None);
            assert!(
                twice
                    .headers
                    .iter()
                    .all(|h| h.key.starts_with("switchyard-"))
            );
            assert_eq!(
                note(&twice, "switchyard-dlq-source-offset").as_deref(),
                Some("77")
            );
            match format {
                DeadLetterFormat::Headers => assert_eq!(twice.value, None),
                DeadLetterFormat::JsonEnvelope => {
                    let envelope: serde_json::Value =
                        serde_json::from_slice(twice.value.as_deref().unwrap_or_default())
                            .expect("an envelope");
                    assert_eq!(envelope["value"], serde_json::Value::Null);
                    assert_eq!(envelope["value_encoding"], OMITTED_ENCODING);
                    assert_eq!(envelope["dlq_reason"], "missing field user_id");
                    assert_eq!(envelope["dlq_source_offset"], 77);
                    assert!(envelope["dlq_record_omitted"].is_string());
                }
            }
            assert_eq!(router.shrink(twice), None, "{format:?}");
        }
    }

    #[test]
    fn undeliverable_outputs_lose_their_provenance_and_name_no_stage() {
        let router = router(DeadLetterFormat::Headers);
        let out = router.route(SOURCE, routed(1), NOW);
        let at = SourceOffset {
            topic: "orders",
            partition: 4,
            offset: 77,
        };
        let dead = router.undeliverable(at, out, "message too large".into(), NOW);
        assert_eq!(&*dead.topic, "orders-dlq");
        assert!(dead.dead_letter);
        assert_eq!(
            headers(&dead),
            [
                ("trace", "t-1"),
                ("switchyard-pipeline", "orders"),
                ("switchyard-dlq-reason", "message too large"),
                ("switchyard-dlq-kind", UNDELIVERABLE),
                ("switchyard-dlq-source-topic", "orders"),
                ("switchyard-dlq-source-partition", "4"),
                ("switchyard-dlq-source-offset", "77"),
                ("switchyard-dlq-source-timestamp", "1700000000123"),
                ("switchyard-dlq-timestamp", "1700000999000"),
            ]
        );
    }

    #[test]
    fn embedding_picks_the_most_readable_encoding() {
        let cases: [(Option<&[u8]>, &str, &str); 6] = [
            (None, "null", "null"),
            (Some(br#"{"a":1}"#), r#"{"a":1}"#, "json"),
            (Some(b"42"), "42", "json"),
            (Some(b" 42"), r#"" 42""#, "string"),
            (Some(b"not json"), r#""not json""#, "string"),
            (Some(&[0xff, 0x00]), r#""/wA=""#, "base64"),
        ];
        for (input, written, encoding) in cases {
            let (value, got) = embed(input);
            assert_eq!(got, encoding, "{input:?}");
            assert_eq!(serde_json::to_string(&value).unwrap_or_default(), written);
        }
    }

    proptest! {
        /// Whatever the bytes, the envelope gives them back exactly: compared as bytes, never
        /// through a JSON parser.
        #[test]
        fn embedded_values_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let (value, encoding) = embed(Some(&bytes));
            let written = serde_json::to_string(&value).unwrap();
            let back = match encoding {
                "json" => written.into_bytes(),
                "string" => serde_json::from_str::<String>(&written).unwrap().into_bytes(),
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(serde_json::from_str::<String>(&written).unwrap())
                    .unwrap(),
                other => panic!("unexpected encoding {other}"),
            };
            prop_assert_eq!(back, bytes);
        }

        /// JSON-looking input in particular: numbers and objects of any shape.
        #[test]
        fn embedded_json_round_trips(n in any::<i128>(), k in "[a-z\\\\\"]{0,6}", pad in " {0,2}") {
            let text = format!(r#"{{"{k}":{n},{pad}"{k}":[{n}.5e3]}}"#, k = k.replace('\\', "\\\\").replace('"', "\\\""));
            let (value, _) = embed(Some(text.as_bytes()));
            prop_assert_eq!(serde_json::to_string(&value).unwrap(), text);
        }
    }
}
