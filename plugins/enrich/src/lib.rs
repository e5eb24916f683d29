//! `enrich`: adds fields from a lookup table to each record, a left join that never drops.
//!
//! The value of the record's key field is looked up with `host::lookup(table, key)`. The
//! table value is a JSON object; each mapped field of it is added to the record under its new
//! name. When the key field is missing or null, the key is not in the table, the table value
//! is not a JSON object, or it lacks a field, the added field is JSON `null`. The rewritten
//! record is emitted with the input's key, headers and route; its fields keep their order and
//! the added ones come last (an added name that already exists is overwritten in place).
//!
//! A string key field is looked up by its text; a number or boolean by its JSON text
//! (`"user_id": 42` looks up `42`); an object or array is treated as missing.
//!
//! # Config
//!
//! | key         | default                            | meaning                                 |
//! |-------------|------------------------------------|-----------------------------------------|
//! | `table`     | `users`                            | lookup table name                       |
//! | `key_field` | `user_id`                          | top-level field holding the lookup key  |
//! | `fields`    | `name:user_name,segment:user_segment` | `table_field:added_field` pairs      |
//!
//! Any other key, an empty `table` or `key_field`, or a malformed pair fails `init` with an
//! error naming the key.
//!
//! # Dead-letter reasons
//!
//! `null value`, `not UTF-8: invalid byte at N`, `invalid JSON at byte N: <message>`,
//! `not a JSON object`. A table value that is not a JSON object adds nulls and counts
//! `enrich_bad_table_value`.

use serde_json::{Map, Value};
use switchyard_plugin_sdk::{Config, Output, Plugin, Record, Verdict, host};

/// Joins records with a lookup table.
#[derive(Debug)]
pub struct Enrich {
    table: String,
    key_field: String,
    /// (field of the table value, field added to the record)
    fields: Vec<(String, String)>,
}

impl Plugin for Enrich {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["table", "key_field", "fields"])?;
        let non_empty = |key: &str, default: &str| match config.get_or(key, default).trim() {
            "" => Err(format!(
                "invalid value for config key `{key}`: must not be empty"
            )),
            value => Ok(value.to_owned()),
        };
        let fields = config
            .pairs("fields", "name:user_name,segment:user_segment")?
            .into_iter()
            .map(|(from, to)| (from.to_owned(), to.to_owned()))
            .collect();
        Ok(Self {
            table: non_empty("table", "users")?,
            key_field: non_empty("key_field", "user_id")?,
            fields,
        })
    }

    fn process(&mut self, record: &Record) -> Verdict {
        let mut object = match record.json_object() {
            Ok(object) => object,
            Err(e) => return Verdict::DeadLetter(e.to_string()),
        };
        let row = self.row(&object);
        for (from, to) in &self.fields {
            let value = row
                .as_ref()
                .and_then(|row| row.get(from))
                .cloned()
                .unwrap_or(Value::Null);
            object.insert(to.clone(), value);
        }
        // Serializing a map of JSON values into a Vec cannot fail.
        let value = serde_json::to_vec(&object).expect("a JSON map always serializes");
        Verdict::emit_one(Output::rewrite(record, value))
    }
}

impl Enrich {
    /// The table row for this record's key, if there is one and it is a JSON object.
    fn row(&self, object: &Map<String, Value>) -> Option<Map<String, Value>> {
        let found = match object.get(&self.key_field)? {
            Value::String(key) => host::lookup(&self.table, key.as_bytes()),
            key @ (Value::Number(_) | Value::Bool(_)) => {
                host::lookup(&self.table, key.to_string().as_bytes())
            }
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }?;
        match serde_json::from_slice(&found) {
            Ok(Value::Object(row)) => Some(row),
            _ => {
                host::counter_add("enrich_bad_table_value", 1);
                None
            }
        }
    }
}

switchyard_plugin_sdk::export!(Enrich);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::{Header, testing};

    use super::*;

    fn enrich(pairs: &[(&str, &str)], record: Record) -> Verdict {
        let mut plugin = Enrich::init(&Config::from_pairs(pairs.iter().copied())).unwrap();
        plugin.process(&record)
    }

    /// The single output's value as text.
    fn emitted(verdict: Verdict) -> String {
        match verdict {
            Verdict::Emit(mut outputs) if outputs.len() == 1 => {
                String::from_utf8(outputs.remove(0).value.unwrap()).unwrap()
            }
            other => panic!("expected one output, got {other:?}"),
        }
    }

    fn users() {
        testing::set_table(
            "users",
            "u1",
            r#"{"name":"Alice","segment":"gold","age":40}"#,
        );
        testing::set_table("users", "42", r#"{"name":"Numeric"}"#);
        testing::set_table("users", "broken", "not json");
    }

    #[test]
    fn found_users_get_their_fields_and_keep_key_and_headers() {
        users();
        let record = Record::new()
            .with_key("k1")
            .with_header("trace", "t1")
            .with_value(r#"{"user_id":"u1","event_type":"click"}"#);
        let verdict = enrich(&[], record);
        let Verdict::Emit(outputs) = &verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(outputs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(outputs[0].headers, [Header::new("trace", "t1")]);
        assert_eq!(outputs[0].route, None, "stays on the current route");
        assert_eq!(
            emitted(verdict),
            r#"{"user_id":"u1","event_type":"click","user_name":"Alice","user_segment":"gold"}"#
        );
    }

    #[test]
    fn unknown_users_get_nulls() {
        users();
        assert_eq!(
            emitted(enrich(
                &[],
                Record::new().with_value(r#"{"user_id":"nobody"}"#)
            )),
            r#"{"user_id":"nobody","user_name":null,"user_segment":null}"#
        );
        // Partially known: the row lacks `segment`.
        assert_eq!(
            emitted(enrich(&[], Record::new().with_value(r#"{"user_id":42}"#))),
            r#"{"user_id":42,"user_name":"Numeric","user_segment":null}"#
        );
        // A broken table value is counted, not fatal.
        assert_eq!(
            emitted(enrich(
                &[],
                Record::new().with_value(r#"{"user_id":"broken"}"#)
            )),
            r#"{"user_id":"broken","user_name":null,"user_segment":null}"#
        );
        assert_eq!(testing::counters().get("enrich_bad_table_value"), Some(&1));
    }

    #[test]
    fn missing_key_field_adds_nulls() {
        users();
        assert_eq!(
            emitted(enrich(
                &[],
                Record::new().with_value(r#"{"event_type":"click"}"#)
            )),
            r#"{"event_type":"click","user_name":null,"user_segment":null}"#
        );
        assert_eq!(
            emitted(enrich(&[], Record::new().with_value(r#"{"user_id":null}"#))),
            r#"{"user_id":null,"user_name":null,"user_segment":null}"#
        );
    }

    #[test]
    fn custom_table_key_and_fields() {
        testing::set_table("accounts", "a7", r#"{"plan":"pro","region":"eu"}"#);
        let config = [
            ("table", "accounts"),
            ("key_field", "account"),
            ("fields", "plan:account_plan, region:region"),
        ];
        assert_eq!(
            emitted(enrich(
                &config,
                Record::new().with_value(r#"{"region":"old","account":"a7"}"#)
            )),
            r#"{"region":"eu","account":"a7","account_plan":"pro"}"#
        );
    }

    #[test]
    fn records_that_are_not_json_objects_are_dead_lettered() {
        assert_eq!(
            enrich(&[], Record::new()),
            Verdict::dead_letter("null value")
        );
        assert_eq!(
            enrich(&[], Record::new().with_value(b"\xff".to_vec())),
            Verdict::dead_letter("not UTF-8: invalid byte at 0")
        );
        assert_eq!(
            enrich(&[], Record::new().with_value("{")),
            Verdict::dead_letter("invalid JSON at byte 1: EOF while parsing an object")
        );
        assert_eq!(
            enrich(&[], Record::new().with_value("[]")),
            Verdict::dead_letter("not a JSON object")
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let init = |pairs: &[(&str, &str)]| {
            Enrich::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(
            init(&[("fields", "name")]),
            "invalid value for config key `fields`: `name` is not a `name:name` pair"
        );
        assert_eq!(
            init(&[("table", "")]),
            "invalid value for config key `table`: must not be empty"
        );
        assert!(init(&[("tabel", "x")]).starts_with("unknown config key `tabel`"));
    }
}
