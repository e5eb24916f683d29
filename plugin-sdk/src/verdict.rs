//! What the plugin hands back: one [`Verdict`] per input record, and the [`Output`] records of
//! [`Verdict::Emit`].
//!
//! The shapes mirror the WIT `verdict` variant and `output-record` record exactly: on wasm32
//! the generated glue lowers these types directly, so changing a field or case breaks the
//! build there.

use crate::record::{Header, Record};

/// What happens to one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the record unchanged on its current route.
    Pass,
    /// Forward the record unchanged to the named route (a route declared in the pipeline
    /// configuration, not a topic).
    Route(String),
    /// Replace the record with zero or more records. An output without a route keeps the
    /// input's current route; outputs inherit the input's offset and timestamp.
    Emit(Vec<Output>),
    /// Filter the record out.
    Drop,
    /// Send the record, as this stage received it, to the dead-letter topic with this reason.
    DeadLetter(String),
}

impl Verdict {
    /// [`Verdict::Pass`].
    pub fn pass() -> Self {
        Self::Pass
    }

    /// [`Verdict::Route`] to `name`.
    pub fn route(name: impl Into<String>) -> Self {
        Self::Route(name.into())
    }

    /// [`Verdict::Emit`] of `outputs`.
    pub fn emit(outputs: Vec<Output>) -> Self {
        Self::Emit(outputs)
    }

    /// [`Verdict::Emit`] of one output.
    pub fn emit_one(output: Output) -> Self {
        Self::Emit(vec![output])
    }

    /// [`Verdict::Drop`].
    pub fn drop() -> Self {
        Self::Drop
    }

    /// [`Verdict::DeadLetter`] with `reason`.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Self::DeadLetter(reason.into())
    }
}

/// A record produced by [`Verdict::Emit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Route to send this record to; `None` keeps the route the input record had.
    pub route: Option<String>,
    /// Record key; `None` is a null key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` is a null value (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl Output {
    /// An output with no route, null key, null value and no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of `record`'s key, value and headers, on the input's route.
    pub fn from_record(record: &Record) -> Self {
        Self {
            route: None,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        }
    }

    /// `record` rewritten: its key and headers with a new `value`, on the input's route.
    /// Unlike [`Output::from_record`] it does not copy the old value.
    pub fn rewrite(record: &Record, value: impl Into<Vec<u8>>) -> Self {
        Self {
            route: None,
            key: record.key.clone(),
            value: Some(value.into()),
            headers: record.headers.clone(),
        }
    }

    /// Sets the route.
    pub fn with_route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the value to `json`, serialized compactly.
    pub fn with_json(self, json: &serde_json::Value) -> Self {
        // Serializing a `Value` into a Vec cannot fail: its map keys are strings and there is
        // no I/O.
        let bytes = serde_json::to_vec(json).expect("a serde_json::Value always serializes");
        self.with_value(bytes)
    }

    /// Appends a header with a value.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        assert_eq!(Verdict::pass(), Verdict::Pass);
        assert_eq!(Verdict::drop(), Verdict::Drop);
        assert_eq!(Verdict::route("r"), Verdict::Route("r".into()));
        assert_eq!(
            Verdict::dead_letter("why"),
            Verdict::DeadLetter("why".into())
        );
        assert_eq!(
            Verdict::emit_one(Output::new()),
            Verdict::Emit(vec![Output::new()])
        );
        assert_eq!(Verdict::emit(vec![]), Verdict::Emit(vec![]));
    }

    #[test]
    fn output_copies_the_record_and_builds() {
        let record = Record::new()
            .with_key("k")
            .with_value("v")
            .with_header("h", "1");
        let output = Output::from_record(&record)
            .with_route("r")
            .with_json(&serde_json::json!({"a": [true, null, 1.5]}))
            .with_header("x", "y");
        assert_eq!(output.route.as_deref(), Some("r"));
        assert_eq!(output.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            output.value.as_deref(),
            Some(&br#"{"a":[true,null,1.5]}"#[..])
        );
        assert_eq!(
            output.headers,
            [Header::new("h", "1"), Header::new("x", "y")]
        );
        assert_eq!(
            Output::new().with_key("k").with_value("v").key.as_deref(),
            Some(&b"k"[..])
        );
        let rewritten = Output::rewrite(&record, "new");
        assert_eq!(rewritten, Output::from_record(&record).with_value("new"));
    }
}
