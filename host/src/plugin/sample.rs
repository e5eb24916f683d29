//! Sample records written as JSON, run through a chain with tracing on, and what happened to
//! each: shared by the admin API's dry run and `switchyard test-plugin`.

use crate::plugin::{
    ChainRunner, ChainSpec, Delivery, Header, InputRecord, StageLoadError, TraceOutcome,
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A sample record: `{"key": "k", "value": {...} or "text", "value_base64": "..", "headers":
/// {"h": "v"}, "timestamp_ms": 0}`; every field optional. A string value is used as is; any
/// other JSON value as its JSON text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRecord {
    /// Key; absent or null: a null key.
    pub key: Option<String>,
    /// Value.
    #[serde(default)]
    pub value: Value,
    /// The value as base64, for bytes that are not text.
    pub value_base64: Option<String>,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timestamp (default: now).
    pub timestamp_ms: Option<i64>,
    /// Source topic the chain is told (dry run only).
    pub topic: Option<String>,
    /// Source partition the chain is told (dry run only).
    #[serde(default)]
    pub partition: i32,
}

impl SampleRecord {
    /// The record a stage would get, at `offset`.
    pub fn into_input(self, offset: i64) -> Result<InputRecord, String> {
        let value = match (self.value_base64, self.value) {
            (Some(b64), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("value_base64: {e}"))?,
            ),
            (None, Value::Null) => None,
            (None, Value::String(s)) => Some(s.into_bytes()),
            (None, other) => Some(other.to_string().into_bytes()),
        };
        Ok(InputRecord {
            offset,
            timestamp_ms: self.timestamp_ms.or(Some(crate::kafka::now_ms())),
            key: self.key.map(String::into_bytes),
            value,
            headers: self
                .headers
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: Some(value.into_bytes()),
                })
                .collect(),
        })
    }
}

/// What the chain did with one sample record.
#[derive(Debug, Default)]
pub struct Explained {
    /// Each stage's verdict, in order (`{"stage", "verdict", ...}`).
    pub stages: Vec<Value>,
    /// Its outputs and dead letter, as the chain delivered them.
    pub deliveries: Vec<Delivery>,
}

/// Runs `records` through `runner` (tracing on) and explains each one.
pub fn explain(
    runner: &mut ChainRunner,
    spec: &ChainSpec,
    topic: &str,
    partition: i32,
    records: Vec<InputRecord>,
) -> Result<Vec<Explained>, StageLoadError> {
    let count = records.len();
    runner.set_tracing(true);
    let deliveries = runner.process(topic, partition, records)?;
    let trace = runner.take_trace();
    runner.set_tracing(false);
    let mut out: Vec<Explained> = (0..count).map(|_| Explained::default()).collect();
    for t in trace {
        let stage = spec.stages().get(t.stage).map_or("?", |s| s.name.as_str());
        if let Some(e) = out.get_mut(t.source) {
            e.stages.push(verdict_json(stage, t.outcome));
        }
    }
    for d in deliveries {
        if let Some(e) = out.get_mut(d.source) {
            e.deliveries.push(d);
        }
    }
    Ok(out)
}

/// One stage's verdict as JSON.
pub fn verdict_json(stage: &str, outcome: TraceOutcome) -> Value {
    match outcome {
        TraceOutcome::Pass => json!({ "stage": stage, "verdict": "pass" }),
        TraceOutcome::Route(route) => {
            json!({ "stage": stage, "verdict": "route", "route": route })
        }
        TraceOutcome::Emit(routes) => {
            json!({ "stage": stage, "verdict": "emit", "outputs": routes.len(), "routes": routes })
        }
        TraceOutcome::Drop => json!({ "stage": stage, "verdict": "drop" }),
        TraceOutcome::DeadLetter { kind, reason } => json!({
            "stage": stage, "verdict": "dead-letter", "kind": kind.as_str(), "reason": reason,
        }),
    }
}

/// Text as a JSON string; other bytes as `{"base64": ".."}`.
pub fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// Headers as a JSON list of `{"key", "value"}`.
pub fn headers_json(headers: &[Header]) -> Value {
    headers
        .iter()
        .map(|h| json!({ "key": h.key, "value": h.value.as_deref().map(bytes_json) }))
        .collect()
}
