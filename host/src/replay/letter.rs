//! A dead letter read back: its `switchyard-dlq-*` metadata and the original record, exactly
//! as the failing stage received it, from either dead-letter format.
//!
//! Pure: key, value and headers in, a [`Letter`] out; the inverse of
//! [`Router::dead_letter`](crate::router::Router::dead_letter). A dead letter's headers are
//! the record's own, then `switchyard-pipeline`, then the `switchyard-dlq-*` headers, so
//! the record's own are what is left once those trailing ones are taken off (a record that
//! already carried Switchyard headers of its own keeps them). In the `json-envelope` format
//! the value comes out of the envelope's `value` by its `value_encoding`.

use crate::config::DeadLetterFormat;
use crate::plugin::{Header, InputRecord};
use crate::router::{BAD_INPUT, DLQ_PREFIX, OMITTED_ENCODING, PIPELINE_HEADER, UNDELIVERABLE};
use base64::Engine as _;
use std::collections::HashMap;

/// The header counting the replays a record has failed (`switchyard-dlq-replays`).
pub const REPLAYS_HEADER: &str = "switchyard-dlq-replays";

/// One dead letter, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// `switchyard-dlq-kind`: `trap`, `timeout`, `rejected`, `undeliverable`, ...
    pub kind: String,
    /// `switchyard-dlq-reason`.
    pub reason: String,
    /// `switchyard-dlq-stage`: the failing stage (none for `undeliverable` and `bad-input`).
    pub stage: Option<String>,
    /// Where the original record was read: `switchyard-dlq-source-topic`, `-partition`.
    pub source_topic: String,
    /// The source partition.
    pub source_partition: i32,
    /// The source offset (`switchyard-dlq-source-offset`; for `undeliverable`, the offset
    /// of the input whose output was refused).
    pub source_offset: i64,
    /// `switchyard-dlq-timestamp`: when it was dead-lettered (ms since the epoch).
    pub dead_lettered_ms: Option<i64>,
    /// `switchyard-dlq-replays`: replays it has already failed (0 when absent).
    pub replays: u32,
    /// The record as the failing stage received it (its offset: the source offset), or why
    /// it cannot be given back exactly.
    pub original: Result<InputRecord, NotReplayable>,
}

/// Why a dead letter's original record cannot be replayed exactly. Such letters are counted
/// and reported, never replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReplayable {
    /// Kind `undeliverable`: the dead letter holds an output the broker refused, not the
    /// input of a stage.
    #[error("kind undeliverable: it holds an output the broker refused, not a stage's input")]
    Undeliverable,
    /// Kind `bad-input`: the source record cannot be given to a plugin at all.
    #[error("kind bad-input: the record cannot be given to a plugin")]
    BadInput,
    /// The dead letter was too large to write and lost its value (or key and headers).
    #[error("its {0} was left out (the dead letter was too large); read it at the source offset")]
    Omitted(&'static str),
    /// The `json-envelope` value cannot be read back.
    #[error("unreadable JSON envelope: {0}")]
    Envelope(String),
}

/// Why a record of the dead-letter topic is not a Switchyard dead letter at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Switchyard dead letter: {0}")]
pub struct NotADeadLetter(pub String);

/// Reads a record of the dead-letter topic written in `format`.
pub fn read(
    format: DeadLetterFormat,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    mut headers: Vec<Header>,
) -> Result<Letter, NotADeadLetter> {
    let mut meta: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    while let Some(last) = headers.last()
        && let Some(name) = last.key.strip_prefix(DLQ_PREFIX)
    {
        let name = name.to_owned();
        let value = headers.pop().and_then(|h| h.value);
        meta.entry(name).or_insert(value);
    }
    if headers.last().is_some_and(|h| h.key == PIPELINE_HEADER) {
        headers.pop();
    }
    let text = |name: &str| -> Option<String> {
        meta.get(name)
            .and_then(Option::as_deref)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let number = |name: &str| -> Result<Option<i64>, NotADeadLetter> {
        text(name)
            .map(|t| {
                t.trim().parse::<i64>().map_err(|_| {
                    NotADeadLetter(format!("{DLQ_PREFIX}{name} is not a number: {t:?}"))
                })
            })
            .transpose()
    };
    let required = |name: &str| {
        text(name).ok_or_else(|| NotADeadLetter(format!("no {DLQ_PREFIX}{name} header")))
    };
    let kind = required("kind")?;
    let source_topic = required("source-topic")?;
    let source_partition = number("source-partition")?
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| NotADeadLetter(format!("no valid {DLQ_PREFIX}source-partition header")))?;
    let source_offset = number("source-offset")?
        .ok_or_else(|| NotADeadLetter(format!("no {DLQ_PREFIX}source-offset header")))?;
    let replays = number("replays")?
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let original = if kind == UNDELIVERABLE {
        Err(NotReplayable::Undeliverable)
    } else if kind == BAD_INPUT {
        Err(NotReplayable::BadInput)
    } else if meta.contains_key("record-omitted") {
        Err(NotReplayable::Omitted("key and headers"))
    } else if meta.contains_key("value-omitted") {
        Err(NotReplayable::Omitted("value"))
    } else {
        let value = match format {
            DeadLetterFormat::Headers => Ok(value),
            DeadLetterFormat::JsonEnvelope => unwrap_envelope(value.as_deref()),
        };
        value.map(|value| InputRecord {
            offset: source_offset,
            timestamp_ms: number("source-timestamp").ok().flatten(),
            key,
            value,
            headers,
        })
    };
    Ok(Letter {
        kind,
        reason: text("reason").unwrap_or_default(),
        stage: text("stage"),
        source_topic,
        source_partition,
        source_offset,
        dead_lettered_ms: number("timestamp")?,
        replays,
        original,
    })
}

/// Only what the original value needs from an envelope.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    value: &'a serde_json::value::RawValue,
    value_encoding: String,
}

/// The original value inside a JSON envelope: `json` byte for byte as embedded, `string` as
/// its UTF-8, `base64` decoded, `null` as a null value.
fn unwrap_envelope(value: Option<&[u8]>) -> Result<Option<Vec<u8>>, NotReplayable> {
    let bytes = value.ok_or_else(|| NotReplayable::Envelope("null value".into()))?;
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| NotReplayable::Envelope(e.to_string()))?;
    let string = || {
        serde_json::from_str::<String>(envelope.value.get())
            .map_err(|e| NotReplayable::Envelope(format!("value: {e}")))
    };
    match envelope.value_encoding.as_str() {
        "json" => Ok(Some(envelope.value.get().as_bytes().to_vec())),
        "string" => Ok(Some(string()?.into_bytes())),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(string()?)
            .map(Some)
            .map_err(|e| NotReplayable::Envelope(format!("value: {e}"))),
        "null" => Ok(None),
        OMITTED_ENCODING => Err(NotReplayable::Omitted("value")),
        other => Err(NotReplayable::Envelope(format!(
            "unknown value_encoding {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{DeadLetter, Destination, ErrorKind, PluginVersion, RecordError};
    use crate::router::{Outgoing, Router, Source, SourceOffset};

    fn router(format: DeadLetterFormat) -> Router {
        Router::new(
            "orders",
            &["orders-standard"],
            &[("validate", "v1")],
            "orders-dlq",
            format,
        )
    }

    fn header(key: &str, value: &[u8]) -> Header {
        Header {
            key: key.into(),
            value: Some(value.to_vec()),
        }
    }

    /// A record whose own headers include Switchyard headers of an upstream pipeline and a
    /// null header value.
    fn original(value: Option<Vec<u8>>) -> InputRecord {
        InputRecord {
            offset: 77,
            timestamp_ms: Some(1_700_000_000_123),
            key: Some(vec![0xff, b'k']),
            value,
            headers: vec![
                header("trace", b"t-1"),
                Header {
                    key: "empty".into(),
                    value: None,
                },
                header(PIPELINE_HEADER, b"upstream"),
                header("switchyard-dlq-kind", b"upstream's own"),
                header("last", &[0, 1, 2]),
            ],
        }
    }

    fn dead_letter(
        format: DeadLetterFormat,
        value: Option<Vec<u8>>,
        replays: Option<u32>,
    ) -> Outgoing {
        let dead = DeadLetter {
            stage: 0,
            stage_name: "validate".into(),
            version: PluginVersion("v1".into()),
            error: RecordError {
                kind: ErrorKind::Trap,
                message: "boom".into(),
            },
            record: original(value),
        };
        let source = Source {
            topic: "orders",
            partition: 4,
        };
        router(format).dead_letter_again(source, dead, 1_700_000_999_000, replays)
    }

    fn read_back(format: DeadLetterFormat, out: Outgoing) -> Letter {
        read(format, out.key, out.value, out.headers).expect("a dead letter")
    }

    /// Every value shape, both formats: the original comes back byte for byte, with its own
    /// headers (upstream Switchyard headers included) and its timestamp.
    #[test]
    fn both_formats_give_back_the_original_exactly() {
        let values: [Option<&[u8]>; 6] = [
            Some(br#"{"z":1, "a":123456789012345678901234567890,"a":2}"#),
            Some(b" {\"padded\":true} "),
            Some(b"not json"),
            Some(&[0xff, 0x00, 0x80]),
            Some(b""),
            None,
        ];
        for format in [DeadLetterFormat::Headers, DeadLetterFormat::JsonEnvelope] {
            for value in values {
                let value = value.map(<[u8]>::to_vec);
                let letter = read_back(format, dead_letter(format, value.clone(), None));
                assert_eq!(
                    letter.original,
                    Ok(original(value.clone())),
                    "{format:?} {value:?}"
                );
                assert_eq!(letter.kind, "trap");
                assert_eq!(letter.reason, "boom");
                assert_eq!(letter.stage.as_deref(), Some("validate"));
                assert_eq!(letter.source_topic, "orders");
                assert_eq!(letter.source_partition, 4);
                assert_eq!(letter.source_offset, 77);
                assert_eq!(letter.dead_lettered_ms, Some(1_700_000_999_000));
                assert_eq!(letter.replays, 0);
            }
        }
    }

    #[test]
    fn the_replay_count_is_read_and_is_not_an_original_header() {
        for format in [DeadLetterFormat::Headers, DeadLetterFormat::JsonEnvelope] {
            let out = dead_letter(format, Some(b"{}".to_vec()), Some(3));
            assert_eq!(
                out.headers.last().map(|h| h.key.as_str()),
                Some(REPLAYS_HEADER)
            );
            if format == DeadLetterFormat::JsonEnvelope {
                let envelope: serde_json::Value =
                    serde_json::from_slice(out.value.as_deref().unwrap_or_default())
                        .expect("an envelope");
                assert_eq!(envelope["dlq_replays"], 3);
            }
            let letter = read_back(format, out);
            assert_eq!(letter.replays, 3);
            assert_eq!(letter.original, Ok(original(Some(b"{}".to_vec()))));
        }
    }

    /// Undeliverable outputs, unreadable inputs and shrunk dead letters are reported, not
    /// replayed.
    #[test]
    fn letters_that_cannot_be_replayed_say_why() {
        for format in [DeadLetterFormat::Headers, DeadLetterFormat::JsonEnvelope] {
            let router = router(format);
            let at = SourceOffset {
                topic: "orders",
                partition: 4,
                offset: 77,
            };
            let routed = router.route(
                Source {
                    topic: "orders",
                    partition: 4,
                },
                Destination::Route {
                    route: crate::plugin::RouteId(0),
                    record: original(Some(b"{}".to_vec())),
                },
                1,
            );
            let undeliverable = router.undeliverable(at, routed, "too large".into(), 2);
            let letter = read_back(format, undeliverable);
            assert_eq!(letter.original, Err(NotReplayable::Undeliverable));
            assert_eq!(letter.stage, None);

            let source = Source {
                topic: "orders",
                partition: 4,
            };
            let bad = router.unreadable(source, original(None), "key".into(), 2);
            assert_eq!(
                read_back(format, bad).original,
                Err(NotReplayable::BadInput)
            );

            let full = dead_letter(format, Some(b"{}".to_vec()), None);
            let once = router.shrink(full).expect("shrinks");
            assert_eq!(
                read_back(format, once.clone()).original,
                Err(NotReplayable::Omitted("value"))
            );
            let twice = router.shrink(once).expect("shrinks again");
            assert_eq!(
                read_back(format, twice).original,
                Err(NotReplayable::Omitted("key and headers"))
            );
        }
    }

    #[test]
    fn other_records_are_not_dead_letters() {
        let plain = read(
            DeadLetterFormat::Headers,
            None,
            Some(b"{}".to_vec()),
            vec![header("trace", b"t")],
        );
        assert!(plain.is_err());
        let mut out = dead_letter(DeadLetterFormat::Headers, None, None);
        out.headers
            .retain(|h| h.key != "switchyard-dlq-source-offset");
        let missing = read(DeadLetterFormat::Headers, out.key, out.value, out.headers);
        assert_eq!(
            missing,
            Err(NotADeadLetter(
                "no switchyard-dlq-source-offset header".into()
            ))
        );
        let out = dead_letter(DeadLetterFormat::JsonEnvelope, None, None);
        let letter = read(
            DeadLetterFormat::JsonEnvelope,
            out.key,
            Some(b"not an envelope".to_vec()),
            out.headers,
        )
        .expect("the headers are there");
        assert!(matches!(letter.original, Err(NotReplayable::Envelope(_))));
    }
}
