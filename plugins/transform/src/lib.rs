//! `transform`: renames and removes top-level fields and stamps the processing time.
//!
//! The record's value is parsed as a JSON object; fields listed in `remove` are dropped,
//! fields listed in `rename` get their new name in the same position, and
//! `processed_at_field` is set to the current time in milliseconds since the Unix epoch (last,
//! unless the field already exists). The result is re-serialized compactly and emitted with
//! the input's key, headers and route. Field order is kept. When a new name collides with
//! another field, the value later in the record wins, at the earlier position.
//!
//! # Config
//!
//! | key                  | default        | meaning                                          |
//! |----------------------|----------------|--------------------------------------------------|
//! | `rename`             | (none)         | comma-separated `old:new` pairs                  |
//! | `remove`             | (none)         | comma-separated field names                      |
//! | `processed_at_field` | `processed_at` | field set to the current time; empty disables it |
//!
//! Any other key, or a malformed `rename` pair, fails `init` with an error naming the key.
//!
//! # Dead-letter reasons
//!
//! `null value`, `not UTF-8: invalid byte at N`, `invalid JSON at byte N: <message>`,
//! `not a JSON object`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use switchyard_plugin_sdk::{Config, Output, Plugin, Record, Verdict};

/// Renames, removes and stamps fields.
#[derive(Debug)]
pub struct Transform {
    /// (old name, new name)
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    processed_at_field: Option<String>,
}

impl Plugin for Transform {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["rename", "remove", "processed_at_field"])?;
        let rename = config
            .pairs("rename", "")?
            .into_iter()
            .map(|(old, new)| (old.to_owned(), new.to_owned()))
            .collect();
        let remove = config
            .list("remove", "")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let processed_at_field = match config.get_or("processed_at_field", "processed_at").trim() {
            "" => None,
            field => Some(field.to_owned()),
        };
        Ok(Self {
            rename,
            remove,
            processed_at_field,
        })
    }

    fn process(&mut self, record: &Record) -> Verdict {
        let object = match record.json_object() {
            Ok(object) => object,
            Err(e) => return Verdict::DeadLetter(e.to_string()),
        };
        let mut rewritten = Map::with_capacity(object.len() + 1);
        for (name, value) in object {
            if self.remove.contains(&name) {
                continue;
            }
            match self.rename.iter().find(|(old, _)| *old == name) {
                Some((_, new)) => rewritten.insert(new.clone(), value),
                None => rewritten.insert(name, value),
            };
        }
        if let Some(field) = &self.processed_at_field {
            rewritten.insert(field.clone(), Value::from(now_ms()));
        }
        // Serializing a map of JSON values into a Vec cannot fail.
        let value = serde_json::to_vec(&rewritten).expect("a JSON map always serializes");
        Verdict::emit_one(Output::rewrite(record, value))
    }
}

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

switchyard_plugin_sdk::export!(Transform);

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(pairs: &[(&str, &str)], value: &str) -> Verdict {
        let mut plugin = Transform::init(&Config::from_pairs(pairs.iter().copied())).unwrap();
        plugin.process(
            &Record::new()
                .with_key("k")
                .with_header("h", "v")
                .with_value(value),
        )
    }

    /// The single output's value as a JSON map, after checking key and headers were kept.
    fn emitted(verdict: Verdict) -> Map<String, Value> {
        match verdict {
            Verdict::Emit(mut outputs) if outputs.len() == 1 => {
                let output = outputs.remove(0);
                assert_eq!(output.key.as_deref(), Some(&b"k"[..]));
                assert_eq!(output.headers.len(), 1);
                assert_eq!(output.route, None);
                serde_json::from_slice(&output.value.unwrap()).unwrap()
            }
            other => panic!("expected one output, got {other:?}"),
        }
    }

    fn keys(map: &Map<String, Value>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    const NO_STAMP: (&str, &str) = ("processed_at_field", "");

    #[test]
    fn renames_in_place() {
        let out = emitted(transform(
            &[("rename", "b:beta, c:gamma"), NO_STAMP],
            r#"{"a":1,"b":2,"c":{"x":3}}"#,
        ));
        assert_eq!(keys(&out), ["a", "beta", "gamma"]);
        assert_eq!(out["beta"], 2);
        assert_eq!(out["gamma"]["x"], 3);
    }

    #[test]
    fn removes_fields() {
        let out = emitted(transform(
            &[("remove", "email, phone"), NO_STAMP],
            r#"{"email":"e","id":1,"phone":"p","z":0}"#,
        ));
        assert_eq!(keys(&out), ["id", "z"]);
    }

    #[test]
    fn processed_at_is_a_recent_number() {
        let before = now_ms();
        let out = emitted(transform(&[], r#"{"a":1}"#));
        assert_eq!(keys(&out), ["a", "processed_at"]);
        let stamp = out["processed_at"].as_u64().expect("a number");
        assert!(
            stamp >= before && stamp <= now_ms(),
            "{stamp} not in [{before}, now]"
        );

        let out = emitted(transform(
            &[("processed_at_field", "seen")],
            r#"{"seen":0,"a":1}"#,
        ));
        assert_eq!(keys(&out), ["seen", "a"]);
        assert!(out["seen"].as_u64().unwrap() >= before);
    }

    #[test]
    fn order_is_kept_and_output_is_compact() {
        let verdict = transform(
            &[("rename", "m:mm"), ("remove", "x"), NO_STAMP],
            r#"{ "z": 1, "x": 0, "m": [1, 2], "a": "s" }"#,
        );
        let Verdict::Emit(outputs) = verdict else {
            panic!()
        };
        assert_eq!(
            outputs[0].value.as_deref(),
            Some(&br#"{"z":1,"mm":[1,2],"a":"s"}"#[..])
        );
    }

    #[test]
    fn records_that_are_not_json_objects_are_dead_lettered() {
        let mut plugin = Transform::init(&Config::new()).unwrap();
        assert_eq!(
            plugin.process(&Record::new()),
            Verdict::dead_letter("null value")
        );
        assert_eq!(
            transform(&[], "[1]"),
            Verdict::dead_letter("not a JSON object")
        );
        assert_eq!(
            transform(&[], r#"{"a" 1}"#),
            Verdict::dead_letter("invalid JSON at byte 5: expected `:`")
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let init = |pairs: &[(&str, &str)]| {
            Transform::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(
            init(&[("rename", "a:b,c")]),
            "invalid value for config key `rename`: `c` is not a `name:name` pair"
        );
        assert!(init(&[("renmae", "a:b")]).starts_with("unknown config key `renmae`"));
    }
}
