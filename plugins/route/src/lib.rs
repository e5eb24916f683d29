//! `route`: sends urgent records and error events to their own routes, everything else on.
//!
//! Reads two top-level fields of a JSON object value with the SDK's scanner (no tree, one pass)
//! and decides, in this order:
//!
//! 1. the priority field's value is one of `urgent_values` -> route `urgent_route`;
//! 2. else the type field's value is one of `error_values` -> route `error_route`;
//! 3. else pass (the record stays on its current route).
//!
//! A string field matches by its unescaped text; a number or boolean by its JSON text (so
//! `urgent_values = "1"` matches `"priority": 1`). A value that is not a JSON object is
//! dead-lettered with the scanner's reason, e.g. `null value`,
//! ``not a JSON object: found `[` at byte 0``, `invalid JSON: unexpected end at byte 12`.
//!
//! # Config
//!
//! | key              | default      | meaning                                      |
//! |------------------|--------------|----------------------------------------------|
//! | `priority_field` | `priority`   | top-level field holding the priority         |
//! | `urgent_values`  | `high`       | comma-separated priorities that are urgent   |
//! | `urgent_route`   | `urgent`     | route for urgent records                     |
//! | `type_field`     | `event_type` | top-level field holding the event type       |
//! | `error_values`   | `error`      | comma-separated event types that are errors  |
//! | `error_route`    | `errors`     | route for error events                       |
//!
//! Any other key, or an empty field or route name, fails `init` with an error naming the key.

use switchyard_plugin_sdk::{Config, Field, FieldKind, Plugin, Record, Verdict};

const KEYS: &[&str] = &[
    "priority_field",
    "urgent_values",
    "urgent_route",
    "type_field",
    "error_values",
    "error_route",
];

/// Routes records by their priority and event type.
#[derive(Debug)]
pub struct Route {
    priority_field: String,
    urgent_values: Vec<String>,
    urgent_route: String,
    type_field: String,
    error_values: Vec<String>,
    error_route: String,
}

impl Plugin for Route {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KEYS)?;
        let name = |key: &str, default: &str| -> Result<String, String> {
            match config.get_or(key, default).trim() {
                "" => Err(format!(
                    "invalid value for config key `{key}`: must not be empty"
                )),
                name => Ok(name.to_owned()),
            }
        };
        let values = |key: &str, default: &str| -> Vec<String> {
            config
                .list(key, default)
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        Ok(Self {
            priority_field: name("priority_field", "priority")?,
            urgent_values: values("urgent_values", "high"),
            urgent_route: name("urgent_route", "urgent")?,
            type_field: name("type_field", "event_type")?,
            error_values: values("error_values", "error"),
            error_route: name("error_route", "errors")?,
        })
    }

    fn process(&mut self, record: &Record) -> Verdict {
        let [priority, event_type] = match record.fields([&self.priority_field, &self.type_field]) {
            Ok(found) => found,
            Err(e) => return Verdict::DeadLetter(e.to_string()),
        };
        if is_one_of(priority, &self.urgent_values) {
            Verdict::Route(self.urgent_route.clone())
        } else if is_one_of(event_type, &self.error_values) {
            Verdict::Route(self.error_route.clone())
        } else {
            Verdict::Pass
        }
    }
}

/// Whether `field` is present and equal to one of `values`.
fn is_one_of(field: Option<Field<'_>>, values: &[String]) -> bool {
    let Some(field) = field else { return false };
    match field.kind() {
        FieldKind::String => values.iter().any(|v| field.str_eq(v)),
        FieldKind::Number | FieldKind::Bool => values.iter().any(|v| field.raw() == v.as_bytes()),
        FieldKind::Null | FieldKind::Object | FieldKind::Array => false,
    }
}

switchyard_plugin_sdk::export!(Route);

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pairs: &[(&str, &str)], value: &str) -> Verdict {
        let mut plugin = Route::init(&Config::from_pairs(pairs.iter().copied())).unwrap();
        plugin.process(&Record::new().with_value(value))
    }

    fn default(value: &str) -> Verdict {
        route(&[], value)
    }

    #[test]
    fn urgent_priority_goes_to_the_urgent_route() {
        assert_eq!(
            default(r#"{"priority":"high","event_type":"click"}"#),
            Verdict::route("urgent")
        );
        assert_eq!(
            default(r#"{"event_type":"click", "priority": "hi\u0067h"}"#),
            Verdict::route("urgent")
        );
    }

    #[test]
    fn error_events_go_to_the_errors_route() {
        assert_eq!(
            default(r#"{"priority":"low","event_type":"error"}"#),
            Verdict::route("errors")
        );
        assert_eq!(
            default(r#"{"event_type":"error"}"#),
            Verdict::route("errors")
        );
    }

    #[test]
    fn everything_else_passes() {
        assert_eq!(
            default(r#"{"priority":"low","event_type":"click"}"#),
            Verdict::Pass
        );
        assert_eq!(default(r#"{}"#), Verdict::Pass);
        assert_eq!(
            default(r#"{"priority":["high"],"event_type":null}"#),
            Verdict::Pass
        );
        assert_eq!(default(r#"{"nested":{"priority":"high"}}"#), Verdict::Pass);
        assert_eq!(
            default(r#"{"priority":"HIGH"}"#),
            Verdict::Pass,
            "matching is exact"
        );
    }

    #[test]
    fn priority_takes_precedence_over_type() {
        assert_eq!(
            default(r#"{"event_type":"error","priority":"high"}"#),
            Verdict::route("urgent")
        );
    }

    #[test]
    fn config_overrides_fields_values_and_routes() {
        let config = [
            ("priority_field", "p"),
            ("urgent_values", "1, critical"),
            ("urgent_route", "hot"),
            ("type_field", "kind"),
            ("error_values", "fail,crash"),
            ("error_route", "broken"),
        ];
        assert_eq!(route(&config, r#"{"p":1}"#), Verdict::route("hot"));
        assert_eq!(route(&config, r#"{"p":"critical"}"#), Verdict::route("hot"));
        assert_eq!(
            route(&config, r#"{"p":"high","kind":"crash"}"#),
            Verdict::route("broken")
        );
        assert_eq!(
            route(&config, r#"{"priority":"high","event_type":"error"}"#),
            Verdict::Pass
        );
        assert_eq!(
            route(&[("urgent_values", "")], r#"{"priority":"high"}"#),
            Verdict::Pass
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let init = |pairs: &[(&str, &str)]| {
            Route::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(
            init(&[("urgent_route", " ")]),
            "invalid value for config key `urgent_route`: must not be empty"
        );
        assert!(init(&[("priority", "p")]).starts_with("unknown config key `priority`"));
    }

    #[test]
    fn values_that_are_not_objects_are_dead_lettered() {
        let mut plugin = Route::init(&Config::new()).unwrap();
        assert_eq!(
            plugin.process(&Record::new()),
            Verdict::dead_letter("null value")
        );
        assert_eq!(
            default("[1]"),
            Verdict::dead_letter("not a JSON object: found `[` at byte 0")
        );
        assert_eq!(
            default("plain text"),
            Verdict::dead_letter("not a JSON object: found `p` at byte 0")
        );
        assert_eq!(
            default(""),
            Verdict::dead_letter("not a JSON object: empty value (end at byte 0)")
        );
        assert_eq!(
            default(r#"{"priority":"hi"#),
            Verdict::dead_letter("invalid JSON: unexpected end at byte 15")
        );
        assert_eq!(
            default(r#"{"a":tru,"priority":"high"}"#),
            Verdict::dead_letter("invalid JSON: unexpected `,` at byte 8")
        );
    }
}
