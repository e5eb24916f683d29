//! {{name}}: a Switchyard plugin.
//!
//! The host calls `init` once per instance with the stage's config map, then `process` with
//! batches of records of one source partition, in offset order; `process` returns exactly one
//! verdict per record, in the same order. The contract is `wit/plugin.wit`.
//!
//! The example rule: a record whose JSON value has `"priority": "high"` goes to the route
//! `urgent`; a value that is not a JSON object is dead-lettered with the reason; every other
//! record passes on its current route. Replace [`decide`] with your own rule.

// Generates the Rust types and traits of the `plugin` world from wit/plugin.wit. They live in
// this crate, so the plugin needs nothing but crates.io and the WIT files next to it.
wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::switchyard::plugin::transform::Guest;
use switchyard::plugin::types::{RecordBatch, Verdict};

/// The plugin: the host sees one instance per stage and worker, each with its own memory.
struct Plugin;

impl Guest for Plugin {
    /// The stage's `[pipeline.stage.config]` map, keys sorted. This plugin takes no config,
    /// so any key is refused: a typo in the pipeline's config then fails the load, naming
    /// the key, instead of being ignored. An `Err` is the reason the host reports.
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        match config.first() {
            Some((key, _)) => Err(format!(
                "unknown config key `{key}`: this plugin takes none"
            )),
            None => Ok(()),
        }
    }

    /// One verdict per record. A panic here dead-letters the batch's records one by one
    /// (kind `trap`); prefer a `DeadLetter` verdict with a reason.
    fn process(batch: RecordBatch) -> Vec<Verdict> {
        batch
            .records
            .iter()
            .map(|record| decide(record.value.as_deref()))
            .collect()
    }
}

/// The rule for one record value (`None`: a null value, a tombstone).
///
/// Routes are names declared in the pipeline's `[pipeline.routes]`, never topic names: route
/// `urgent` must be declared there (and given to `switchyard test-plugin` with
/// `--route urgent`), or the record is dead-lettered as `bad-output`.
pub fn decide(value: Option<&[u8]>) -> Verdict {
    let Some(bytes) = value else {
        return Verdict::DeadLetter("value is null".to_owned());
    };
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(event)) => {
            if event.get("priority").and_then(|p| p.as_str()) == Some("high") {
                Verdict::Route("urgent".to_owned())
            } else {
                Verdict::Pass
            }
        }
        _ => Verdict::DeadLetter("value is not a JSON object".to_owned()),
    }
}

// The exports exist only in the component: natively (`cargo test`) the platform's linker
// refuses their symbol names, which hold `:` and `#`.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

// `cargo test` runs these natively: the bindings' types are plain Rust.
#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::plugin::types::InputRecord;

    fn verdict(value: &str) -> Verdict {
        decide(Some(value.as_bytes()))
    }

    #[test]
    fn one_verdict_per_record_in_order() {
        let record = |offset, value: Option<&str>| InputRecord {
            offset,
            timestamp_ms: None,
            key: None,
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: Vec::new(),
        };
        let batch = RecordBatch {
            topic: "events".to_owned(),
            partition: 0,
            records: vec![record(0, Some(r#"{"priority":"high"}"#)), record(1, None)],
        };
        let verdicts = Plugin::process(batch);
        assert!(matches!(
            verdicts.as_slice(),
            [Verdict::Route(_), Verdict::DeadLetter(_)]
        ));
        assert!(Plugin::init(Vec::new()).is_ok());
        assert!(Plugin::init(vec![("typo".to_owned(), "1".to_owned())]).is_err());
    }

    #[test]
    fn high_priority_is_urgent_and_the_rest_passes() {
        assert!(matches!(verdict(r#"{"priority":"high"}"#), Verdict::Route(r) if r == "urgent"));
        assert!(matches!(verdict(r#"{"priority":"low"}"#), Verdict::Pass));
        assert!(matches!(verdict("{}"), Verdict::Pass));
    }

    #[test]
    fn what_is_not_a_json_object_is_dead_lettered() {
        assert!(matches!(verdict("not json"), Verdict::DeadLetter(_)));
        assert!(matches!(verdict("[1, 2]"), Verdict::DeadLetter(_)));
        assert!(matches!(decide(None), Verdict::DeadLetter(_)));
    }
}
