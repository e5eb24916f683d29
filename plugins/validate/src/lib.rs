//! `validate`: passes records whose value is a JSON object with the required fields and
//! types; dead-letters every other record with the first reason found.
//!
//! The whole value is checked for JSON syntax in one serde_json pass that builds no tree: the
//! top-level object's keys are matched against the required names as they stream by, and
//! each required value is reduced to its kind.
//!
//! # Config
//!
//! | key        | default | meaning                                                       |
//! |------------|---------|---------------------------------------------------------------|
//! | `required` | (none)  | comma-separated `field:type` pairs, e.g. `event_id:string,timestamp:number` |
//!
//! Types: `string`, `number`, `integer` (a number without fraction or exponent), `boolean`,
//! `object`, `array`, `null`, `any` (present, whatever its value). An unknown type, a field
//! listed twice, or any other config key fails `init` with an error naming it.
//!
//! # Dead-letter reasons
//!
//! Checked in this order, the first failure wins:
//!
//! - `null value`
//! - `not UTF-8: invalid byte at 3`
//! - `invalid JSON at byte 17: trailing comma` (serde_json's message without its line/column)
//! - `not a JSON object`
//! - `missing field user_id` (required fields in config order)
//! - `expected number at timestamp, found string`

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use switchyard_plugin_sdk::{Config, JsonError, Plugin, Record, Verdict};

/// Checks JSON syntax, shape and required fields.
#[derive(Debug)]
pub struct Validate {
    required: Vec<Required>,
    /// Per required field, what this record has there; reused across records.
    seen: Vec<Option<Kind>>,
}

#[derive(Debug)]
struct Required {
    name: String,
    expected: Expected,
}

/// A type a required field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
    Any,
}

impl Expected {
    const ALL: &[(&str, Expected)] = &[
        ("string", Expected::String),
        ("number", Expected::Number),
        ("integer", Expected::Integer),
        ("boolean", Expected::Boolean),
        ("object", Expected::Object),
        ("array", Expected::Array),
        ("null", Expected::Null),
        ("any", Expected::Any),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("any", |(name, _)| name)
    }

    fn accepts(self, kind: Kind) -> bool {
        match self {
            Self::String => kind == Kind::String,
            Self::Number => matches!(kind, Kind::Integer | Kind::Float),
            Self::Integer => kind == Kind::Integer,
            Self::Boolean => kind == Kind::Boolean,
            Self::Object => kind == Kind::Object,
            Self::Array => kind == Kind::Array,
            Self::Null => kind == Kind::Null,
            Self::Any => true,
        }
    }
}

/// What a JSON value is, without its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    Object,
    Array,
    Null,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "string",
            Self::Integer | Self::Float => "number",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
            Self::Null => "null",
        })
    }
}

impl Plugin for Validate {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["required"])?;
        let mut required: Vec<Required> = Vec::new();
        for (name, type_name) in config.pairs("required", "")? {
            let Some(&(_, expected)) = Expected::ALL.iter().find(|(n, _)| *n == type_name) else {
                let known: Vec<_> = Expected::ALL.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "invalid value for config key `required`: unknown type `{type_name}` for field \
                     `{name}` (known types: {})",
                    known.join(", ")
                ));
            };
            if required.iter().any(|r| r.name == name) {
                return Err(format!(
                    "invalid value for config key `required`: field `{name}` is listed twice"
                ));
            }
            required.push(Required {
                name: name.to_owned(),
                expected,
            });
        }
        let seen = vec![None; required.len()];
        Ok(Self { required, seen })
    }

    fn process(&mut self, record: &Record) -> Verdict {
        match self.check(record) {
            Ok(()) => Verdict::Pass,
            Err(reason) => Verdict::DeadLetter(reason),
        }
    }
}

impl Validate {
    fn check(&mut self, record: &Record) -> Result<(), String> {
        let text = record.value_str().map_err(|e| e.to_string())?;
        self.seen.fill(None);
        let mut parser = serde_json::Deserializer::from_str(text);
        let document = Document {
            required: &self.required,
            seen: &mut self.seen,
        };
        let is_object = document
            .deserialize(&mut parser)
            .and_then(|is_object| parser.end().map(|()| is_object))
            .map_err(|e| JsonError::from_serde(text.as_bytes(), &e).to_string())?;
        if !is_object {
            return Err("not a JSON object".to_owned());
        }
        for (required, seen) in self.required.iter().zip(&self.seen) {
            match seen {
                None => return Err(format!("missing field {}", required.name)),
                Some(kind) if !required.expected.accepts(*kind) => {
                    return Err(format!(
                        "expected {} at {}, found {kind}",
                        required.expected.name(),
                        required.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The top-level value: records the kinds of required fields if it is an object, and
/// returns whether it is one. Every other value is consumed (so its syntax is checked) and
/// ignored.
struct Document<'a> {
    required: &'a [Required],
    seen: &'a mut [Option<Kind>],
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(index) = map.next_key_seed(KeyIndex(self.required))? {
            match index {
                Some(i) => self.seen[i] = Some(map.next_value::<KindOf>()?.0),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A key of the top-level object: the index of the required field it names, if any. Reads
/// the key in place (serde_json unescapes into its scratch buffer), so nothing is allocated.
struct KeyIndex<'a>(&'a [Required]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|r| r.name == key))
    }
}

/// The kind of a value, its contents consumed and ignored.
struct KindOf(Kind);

impl<'de> de::Deserialize<'de> for KindOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor).map(KindOf)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Boolean)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Integer)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Integer)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Float)
    }

    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Kind::Object)
    }
}

switchyard_plugin_sdk::export!(Validate);

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "event_id:string,user_id:string,event_type:string,timestamp:number";

    fn check(required: &str, value: impl Into<Vec<u8>>) -> Verdict {
        let mut plugin = Validate::init(&Config::from_pairs([("required", required)])).unwrap();
        plugin.process(&Record::new().with_value(value))
    }

    fn reason(value: impl Into<Vec<u8>>) -> String {
        match check(EVENTS, value) {
            Verdict::DeadLetter(reason) => reason,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn valid_records_pass() {
        let valid = r#"{"event_id":"e1","user_id":"u1","event_type":"click","timestamp":1700000000000,"extra":{"a":[1,2]}}"#;
        assert_eq!(check(EVENTS, valid), Verdict::Pass);
        assert_eq!(check("", "{}"), Verdict::Pass);
        assert_eq!(check("", "  { } \n"), Verdict::Pass);
        let escaped_key = r#"{"event_id":"e","user_\u0069d":"u","event_type":"t","timestamp":1.5}"#;
        assert_eq!(check(EVENTS, escaped_key), Verdict::Pass);
    }

    #[test]
    fn null_value() {
        let mut plugin = Validate::init(&Config::from_pairs([("required", EVENTS)])).unwrap();
        assert_eq!(
            plugin.process(&Record::new()),
            Verdict::dead_letter("null value")
        );
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            reason(b"{\"a\xff\":1}".to_vec()),
            "not UTF-8: invalid byte at 3"
        );
    }

    #[test]
    fn invalid_json_reports_the_byte_and_serde_message() {
        assert_eq!(
            reason(r#"{"event_id":"e1",}"#),
            "invalid JSON at byte 17: trailing comma"
        );
        assert_eq!(
            reason(r#"{"event_id":"e1""#),
            "invalid JSON at byte 16: EOF while parsing an object"
        );
        assert_eq!(
            reason("{\n\"a\": tru }"),
            "invalid JSON at byte 10: expected ident"
        );
        assert_eq!(
            reason(r#"{"a":1} {}"#),
            "invalid JSON at byte 8: trailing characters"
        );
        assert_eq!(
            reason(r#"[1, 2,]"#),
            "invalid JSON at byte 6: trailing comma"
        );
        assert_eq!(
            reason(""),
            "invalid JSON at byte 0: EOF while parsing a value"
        );
        // Syntax is checked everywhere, not only in the fields that matter.
        assert_eq!(
            reason(r#"{"event_id":"e","user_id":"u","event_type":"t","timestamp":1,"x":[1 2]}"#),
            "invalid JSON at byte 68: expected `,` or `]`"
        );
    }

    #[test]
    fn not_an_object() {
        assert_eq!(reason("[1,2]"), "not a JSON object");
        assert_eq!(reason(r#""text""#), "not a JSON object");
        assert_eq!(reason("42"), "not a JSON object");
        assert_eq!(reason("null"), "not a JSON object");
    }

    #[test]
    fn missing_field() {
        assert_eq!(
            reason(r#"{"event_id":"e1","event_type":"click","timestamp":1}"#),
            "missing field user_id"
        );
        assert_eq!(
            reason(r#"{"nested":{"event_id":"e1"}}"#),
            "missing field event_id"
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            reason(r#"{"event_id":"e1","user_id":"u1","event_type":"click","timestamp":"now"}"#),
            "expected number at timestamp, found string"
        );
        assert_eq!(
            reason(r#"{"event_id":1,"user_id":"u1","event_type":"click","timestamp":1}"#),
            "expected string at event_id, found number"
        );
    }

    #[test]
    fn every_type() {
        let required = "s:string,n:number,i:integer,b:boolean,o:object,a:array,z:null,x:any";
        let valid = r#"{"s":"","n":1.5,"i":-3,"b":false,"o":{},"a":[],"z":null,"x":[{}]}"#;
        assert_eq!(check(required, valid), Verdict::Pass);
        let cases = [
            (
                r#"{"i":1.0}"#,
                "i:integer",
                "expected integer at i, found number",
            ),
            (
                r#"{"i":1e3}"#,
                "i:integer",
                "expected integer at i, found number",
            ),
            (
                r#"{"b":"true"}"#,
                "b:boolean",
                "expected boolean at b, found string",
            ),
            (
                r#"{"o":[]}"#,
                "o:object",
                "expected object at o, found array",
            ),
            (
                r#"{"a":{}}"#,
                "a:array",
                "expected array at a, found object",
            ),
            (r#"{"z":0}"#, "z:null", "expected null at z, found number"),
            (
                r#"{"s":null}"#,
                "s:string",
                "expected string at s, found null",
            ),
            (
                r#"{"n":true}"#,
                "n:number",
                "expected number at n, found boolean",
            ),
        ];
        for (value, required, reason) in cases {
            assert_eq!(
                check(required, value),
                Verdict::dead_letter(reason),
                "{value}"
            );
        }
        assert_eq!(check("x:any", r#"{"x":null}"#), Verdict::Pass);
        assert_eq!(
            check("x:any", r#"{}"#),
            Verdict::dead_letter("missing field x")
        );
    }

    #[test]
    fn first_failure_in_config_order_wins() {
        assert_eq!(
            check("a:string,b:string", r#"{"b":1}"#),
            Verdict::dead_letter("missing field a")
        );
        assert_eq!(
            check("b:string,a:string", r#"{"b":1}"#),
            Verdict::dead_letter("expected string at b, found number")
        );
    }

    #[test]
    fn bad_config_names_the_key_and_the_problem() {
        let init = |required: &str| {
            Validate::init(&Config::from_pairs([("required", required)])).unwrap_err()
        };
        assert_eq!(
            init("a:string,b:date"),
            "invalid value for config key `required`: unknown type `date` for field `b` (known types: \
             string, number, integer, boolean, object, array, null, any)"
        );
        assert_eq!(
            init("a"),
            "invalid value for config key `required`: `a` is not a `name:name` pair"
        );
        assert_eq!(
            init("a:string,a:number"),
            "invalid value for config key `required`: field `a` is listed twice"
        );
        assert!(
            Validate::init(&Config::from_pairs([("requried", "a:string")]))
                .unwrap_err()
                .starts_with("unknown config key `requried`")
        );
    }
}
