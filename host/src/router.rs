//! Where each delivery of the plugin chain is written, and what it looks like there.
//!
//! Pure: a [`Delivery`](crate::plugin::Delivery) and the pipeline's route table in, an
//! [`Outgoing`] record out. No I/O, so every case is a row in a table test.
//!
//! - A routed record goes to its route's topic with its key, value, headers and the source
//!   record's timestamp, plus provenance headers: `switchyard-pipeline` and
//!   `switchyard-versions` (`stage=sha256,...`, the plugin version of every stage).
//! - A dead-lettered record goes to the dead-letter topic. With [`DeadLetterFormat::Headers`]
//!   it keeps its key, value, headers and timestamp and gains `switchyard-dlq-*` headers; with
//!   [`DeadLetterFormat::JsonEnvelope`] its value becomes a JSON object (see
//!   [`Router::dead_letter`]).

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
    /// Headers format: the record as the failing stage received it, plus
    /// `switchyard-pipeline` and `switchyard-dlq-` `reason`, `kind`, `stage`,
    /// `plugin-version`, `source-topic`, `source-partition`, `source-offset`, `timestamp`
    /// (ms since the epoch, when it was dead-lettered).
    ///
    /// JSON envelope format: same key, headers and timestamp; the value is
    /// `{"value": V, "value_encoding": E, "dlq_reason", "dlq_kind", "dlq_stage",
    /// "dlq_plugin_version", "dlq_source_topic", "dlq_source_partition",
    /// "dlq_source_offset", "dlq_timestamp"}` where V is the original value embedded as
    /// JSON when it is valid JSON (E = `json`), as a string when it is other UTF-8
    /// (`string`), as base64 otherwise (`base64`), or null for a null value (`null`).
    pub fn dead_letter(&self, source: Source<'_>, dead: DeadLetter, now_ms: i64) -> Outgoing {
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
        let (stage, version) = match &why.stage {
            Some((stage, version)) => (Some(stage.as_str()), Some(version.as_str())),
            None => (None, None),
        };
        let value = match self.format {
            DeadLetterFormat::Headers => {
                let mut fields: Vec<(&str, String)> =
                    vec![("reason", why.reason), ("kind", why.kind.to_owned())];
                if let (Some(stage), Some(version)) = (stage, version) {
                    fields.push(("stage", stage.to_owned()));
                    fields.push(("plugin-version", version.to_owned()));
                }
                fields.extend([
                    ("source-topic", why.topic.to_owned()),
                    ("source-partition", why.partition.to_string()),
                    ("source-offset", why.offset.to_string()),
                    ("timestamp", why.now_ms.to_string()),
                ]);
                for (name, text) in fields {
                    headers.push(header(&format!("{DLQ_PREFIX}{name}"), text.as_bytes()));
                }
                value
            }
            DeadLetterFormat::JsonEnvelope => {
                let (embedded, encoding) = embed(value.as_deref());
                let envelope = serde_json::json!({
                    "value": embedded,
                    "value_encoding": encoding,
                    "dlq_reason": why.reason,
                    "dlq_kind": why.kind,
                    "dlq_stage": stage,
                    "dlq_plugin_version": version,
                    "dlq_source_topic": why.topic,
                    "dlq_source_partition": why.partition,
                    "dlq_source_offset": why.offset,
                    "dlq_timestamp": why.now_ms,
                });
                Some(envelope.to_string().into_bytes())
            }
        };
        Outgoing {
            topic: self.dead_letter_topic.clone(),
            key,
            value,
            headers,
            timestamp_ms,
            dead_letter: true,
        }
    }
}

/// The error kind of a record the broker would not take.
pub const UNDELIVERABLE: &str = "undeliverable";

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
}

fn header(key: &str, value: &[u8]) -> Header {
    Header {
        key: key.to_owned(),
        value: Some(value.to_vec()),
    }
}

/// The original value inside a JSON envelope, and how it was encoded.
fn embed(value: Option<&[u8]>) -> (serde_json::Value, &'static str) {
    let Some(bytes) = value else {
        return (serde_json::Value::Null, "null");
    };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return (json, "json");
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (serde_json::Value::String(text.to_owned()), "string"),
        Err(_) => (
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        ),
    }
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
            (
                "dead letter, envelope",
                router(DeadLetterFormat::JsonEnvelope),
                dead(),
                "orders-dlq",
                true,
                &[("trace", "t-1"), ("switchyard-pipeline", "orders")],
            ),
        ];
        for (name, router, destination, topic, dead_letter, expected) in cases {
            let out = router.route(SOURCE, destination, NOW);
            assert_eq!(&*out.topic, topic, "{name}");
            assert_eq!(out.dead_letter, dead_letter, "{name}");
            assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]), "{name}");
            assert_eq!(out.timestamp_ms, Some(1_700_000_000_123), "{name}");
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
            "dlq_timestamp": NOW,
        });
        assert_eq!(envelope, expected);
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
                ("switchyard-dlq-timestamp", "1700000999000"),
            ]
        );
    }

    #[test]
    fn embedding_picks_the_most_readable_encoding() {
        let cases: [(Option<&[u8]>, serde_json::Value, &str); 5] = [
            (None, serde_json::Value::Null, "null"),
            (Some(br#"{"a":1}"#), serde_json::json!({"a": 1}), "json"),
            (Some(b"42"), serde_json::json!(42), "json"),
            (Some(b"not json"), serde_json::json!("not json"), "string"),
            (Some(&[0xff, 0x00]), serde_json::json!("/wA="), "base64"),
        ];
        for (input, value, encoding) in cases {
            assert_eq!(embed(input), (value, encoding), "{input:?}");
        }
    }

    proptest! {
        /// Whatever the bytes, the envelope gives them back exactly.
        #[test]
        fn embedded_values_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let (value, encoding) = embed(Some(&bytes));
            let back = match encoding {
                "json" => serde_json::to_vec(&value).unwrap(),
                "string" => value.as_str().unwrap().as_bytes().to_vec(),
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap())
                    .unwrap(),
                other => panic!("unexpected encoding {other}"),
            };
            if encoding == "json" {
                // JSON is embedded as a value: equal as JSON, not byte for byte.
                let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&back).unwrap(), original);
            } else {
                prop_assert_eq!(back, bytes);
            }
        }
    }
}
