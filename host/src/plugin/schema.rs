//! The built-in `json-schema` stage: validates every record's value against a JSON Schema,
//! natively (the `jsonschema` crate), with no plugin.
//!
//! The schema is read from a file and compiled once. Its draft comes from its `$schema`
//! keyword (2020-12 when absent); a schema that is not valid for its draft, or that refers
//! to another document (`$ref` to a file or URL: nothing is fetched), is refused at load with
//! the reason. `format` keywords are checked (`date-time`, `email`, `uuid`, ...), not only
//! annotated.
//!
//! A record passes unchanged when its value is a JSON document the schema accepts. Otherwise
//! it is dead-lettered (kind `rejected`) with one of these reasons:
//!
//! - `null value`
//! - `not JSON: <message> at byte N`
//! - `schema: /user_id: 42 is not of type "string"; /timestamp: "x" is not of type "integer"
//!   (+3 more)`: the instance path (`/` for the whole value) and message of the first
//!   [`MAX_REPORTED`] errors, each cut to [`MAX_MESSAGE`] characters, and how many more there
//!   were.

use super::bindings::{RecordBatch, Verdict};
use std::fmt::Write as _;

/// Errors listed in a dead-letter reason; the rest are counted.
pub const MAX_REPORTED: usize = 3;
/// Longest error message kept in a reason, in characters.
pub const MAX_MESSAGE: usize = 200;

/// A compiled schema.
pub struct JsonSchemaStage {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for JsonSchemaStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaStage").finish_non_exhaustive()
    }
}

impl JsonSchemaStage {
    /// Compiles schema text. The error says what is wrong with it.
    pub fn compile(text: &[u8]) -> Result<Self, String> {
        let schema: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| {
                let at = e.instance_path().as_str();
                if at.is_empty() {
                    format!("invalid schema: {e}")
                } else {
                    format!("invalid schema at {at}: {e}")
                }
            })?;
        Ok(JsonSchemaStage { validator })
    }

    /// What happens to one record value.
    pub fn check(&self, value: Option<&[u8]>) -> Verdict {
        let Some(bytes) = value else {
            return Verdict::DeadLetter("null value".into());
        };
        let instance: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(instance) => instance,
            Err(e) => return Verdict::DeadLetter(not_json(bytes, &e)),
        };
        if self.validator.is_valid(&instance) {
            return Verdict::Pass;
        }
        let mut reason = String::from("schema: ");
        let mut more = 0usize;
        for (i, error) in self.validator.iter_errors(&instance).enumerate() {
            if i >= MAX_REPORTED {
                more += 1;
                continue;
            }
            if i > 0 {
                reason.push_str("; ");
            }
            let path = error.instance_path().as_str();
            let message = error.to_string();
            let _ = write!(
                reason,
                "{}: {}",
                if path.is_empty() { "/" } else { path },
                cut(&message, MAX_MESSAGE)
            );
        }
        if more > 0 {
            let _ = write!(reason, " (+{more} more)");
        }
        Verdict::DeadLetter(reason)
    }

    /// One verdict per record of `batch`.
    pub fn process(&self, batch: &RecordBatch) -> Vec<Verdict> {
        batch
            .records
            .iter()
            .map(|r| self.check(r.value.as_deref()))
            .collect()
    }
}

/// serde_json's message without its line and column, and the byte offset instead.
fn not_json(bytes: &[u8], e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    // Line and column (1-based, column in bytes) back to a byte offset.
    let mut offset = 0usize;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i + 1 == e.line() {
            offset += e.column().saturating_sub(1).min(line.len());
            break;
        }
        offset += line.len() + 1;
    }
    format!("not JSON: {message} at byte {}", offset.min(bytes.len()))
}

fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(schema: &str) -> JsonSchemaStage {
        JsonSchemaStage::compile(schema.as_bytes()).unwrap()
    }

    const EVENT: &str = r#"{
        "type": "object",
        "required": ["event_id", "user_id", "timestamp"],
        "properties": {
            "event_id": {"type": "string", "minLength": 1},
            "user_id": {"type": "string"},
            "timestamp": {"type": "integer", "minimum": 0},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}}
        }
    }"#;

    fn reason(value: &str) -> String {
        match stage(EVENT).check(Some(value.as_bytes())) {
            Verdict::DeadLetter(reason) => reason,
            other => panic!("expected a dead letter for {value}, got {other:?}"),
        }
    }

    #[test]
    fn valid_records_pass() {
        let s = stage(EVENT);
        let ok =
            r#"{"event_id":"e1","user_id":"u1","timestamp":1,"tags":["a"],"email":"a@b.example"}"#;
        assert_eq!(s.check(Some(ok.as_bytes())), Verdict::Pass);
    }

    #[test]
    fn each_error_kind_has_its_path_and_message() {
        assert_eq!(
            reason(r#"{"event_id":"e1","timestamp":1}"#),
            r#"schema: /: "user_id" is a required property"#
        );
        assert_eq!(
            reason(r#"{"event_id":"e1","user_id":7,"timestamp":1}"#),
            r#"schema: /user_id: 7 is not of type "string""#
        );
        assert_eq!(
            reason(r#"{"event_id":"","user_id":"u","timestamp":-1}"#),
            r#"schema: /event_id: "" is shorter than 1 character; /timestamp: -1 is less than the minimum of 0"#
        );
        assert_eq!(
            reason(r#"{"event_id":"e","user_id":"u","timestamp":1,"tags":["a",2]}"#),
            r#"schema: /tags/1: 2 is not of type "string""#
        );
        assert_eq!(
            reason(r#"{"event_id":"e","user_id":"u","timestamp":1,"email":"nope"}"#),
            r#"schema: /email: "nope" is not a "email""#
        );
        assert_eq!(reason("[1]"), r#"schema: /: [1] is not of type "object""#);
    }

    #[test]
    fn many_errors_are_bounded() {
        let r = reason(r#"{"event_id":1,"user_id":2,"timestamp":"x","tags":[1,2,3]}"#);
        assert!(r.ends_with(" (+3 more)"), "{r}");
        assert_eq!(r.matches("; ").count(), MAX_REPORTED - 1, "{r}");
        let long = format!(
            r#"{{"event_id":"e","user_id":"{}","timestamp":"x"}}"#,
            "u".repeat(10)
        );
        assert!(reason(&long).len() < 400);
        let huge = format!(
            r#"{{"event_id":["{}"],"user_id":"u","timestamp":1}}"#,
            "x".repeat(5000)
        );
        let r = reason(&huge);
        assert!(
            r.len() < MAX_MESSAGE + 50 && r.ends_with("..."),
            "{}",
            r.len()
        );
    }

    #[test]
    fn not_json_and_null() {
        let s = stage(EVENT);
        assert_eq!(s.check(None), Verdict::DeadLetter("null value".into()));
        assert_eq!(
            reason(r#"{"event_id":"e1",}"#),
            "not JSON: trailing comma at byte 17"
        );
        assert_eq!(reason(""), "not JSON: EOF while parsing a value at byte 0");
        assert_eq!(
            reason("{\n\"a\": tru }"),
            "not JSON: expected ident at byte 10"
        );
        assert!(
            s.check(Some(b"{\"a\xff\":1}")) != Verdict::Pass,
            "bytes that are not UTF-8 are not JSON"
        );
    }

    #[test]
    fn draft_comes_from_dollar_schema() {
        // Draft 4: exclusiveMaximum is a boolean modifier of maximum.
        let draft4 = r#"{"$schema":"http://json-schema.org/draft-04/schema#","maximum":5,"exclusiveMaximum":true}"#;
        let s = stage(draft4);
        assert_eq!(s.check(Some(b"4")), Verdict::Pass);
        assert!(matches!(s.check(Some(b"5")), Verdict::DeadLetter(_)));
        // 2020-12 by default: prefixItems is known.
        let s = stage(r#"{"prefixItems":[{"type":"string"}]}"#);
        assert!(matches!(s.check(Some(b"[1]")), Verdict::DeadLetter(_)));
    }

    #[test]
    fn bad_schemas_say_why() {
        let err = |s: &str| JsonSchemaStage::compile(s.as_bytes()).unwrap_err();
        assert!(err("{not json").starts_with("the schema is not JSON: "));
        let e = err(r#"{"type":"strin"}"#);
        assert!(e.starts_with("invalid schema"), "{e}");
        let e = err(r#"{"$ref":"https://example.com/other.json"}"#);
        assert!(e.contains("example.com"), "{e}");
    }
}
