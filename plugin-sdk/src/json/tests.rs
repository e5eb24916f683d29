use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

fn get<'a>(input: &'a str, name: &str) -> Option<Field<'a>> {
    field(input.as_bytes(), name).unwrap()
}

fn error(input: &str, name: &str) -> String {
    field(input.as_bytes(), name).unwrap_err().to_string()
}

#[test]
fn finds_each_kind() {
    let doc = r#" { "s": "hi", "n": -12.5e1, "i": 42, "t": true, "f": false, "z": null,
                  "o": {"a": [1, "}"]}, "a": [{"x": 1}, []] } "#;
    assert_eq!(get(doc, "s").unwrap().as_str(), Some(Cow::Borrowed("hi")));
    assert_eq!(get(doc, "n").unwrap().as_f64(), Some(-125.0));
    assert_eq!(get(doc, "n").unwrap().as_i64(), None);
    assert_eq!(get(doc, "i").unwrap().as_i64(), Some(42));
    assert_eq!(get(doc, "i").unwrap().as_u64(), Some(42));
    assert_eq!(get(doc, "t").unwrap().as_bool(), Some(true));
    assert_eq!(get(doc, "f").unwrap().as_bool(), Some(false));
    assert!(get(doc, "z").unwrap().is_null());
    assert_eq!(get(doc, "o").unwrap().raw(), br#"{"a": [1, "}"]}"#);
    assert_eq!(get(doc, "o").unwrap().kind(), FieldKind::Object);
    assert_eq!(get(doc, "a").unwrap().kind(), FieldKind::Array);
    assert!(get(doc, "missing").is_none());
    assert!(
        get(doc, "x").is_none(),
        "nested keys are not top-level fields"
    );
    // Accessors of the wrong kind say so.
    let s = get(doc, "s").unwrap();
    assert_eq!((s.as_f64(), s.as_bool(), s.is_null()), (None, None, false));
    assert_eq!(get(doc, "i").unwrap().as_str(), None);
}

#[test]
fn escapes_in_keys_and_values() {
    let doc = r#"{"a\"b": 1, "\u00e9t\u00E9": 2, "emoji\ud83d\ude00": 3, "v": "line\nx\u0041\/"}"#;
    assert_eq!(get(doc, "a\"b").unwrap().as_i64(), Some(1));
    assert_eq!(get(doc, "été").unwrap().as_i64(), Some(2));
    assert_eq!(get(doc, "emoji😀").unwrap().as_i64(), Some(3));
    assert!(get(doc, "ab").is_none());
    assert!(
        get(doc, "a\"").is_none(),
        "a prefix of an escaped key does not match"
    );
    let v = get(doc, "v").unwrap();
    assert_eq!(v.as_str(), Some(Cow::Owned::<str>("line\nxA/".to_owned())));
    assert!(v.str_eq("line\nxA/"));
    assert!(!v.str_eq("line\nxA"));
    // A lone surrogate scans but is not a string value.
    let lone = get(r#"{"v": "\ud800"}"#, "v").unwrap();
    assert_eq!(lone.as_str(), None);
    assert!(!lone.str_eq("\u{fffd}"));
}

#[test]
fn first_occurrence_wins_and_fields_scan_once() {
    let doc = r#"{"a": 1, "b": "x", "a": 2}"#;
    assert_eq!(get(doc, "a").unwrap().as_i64(), Some(1));
    let [b, a, c, a2] = fields(doc.as_bytes(), ["b", "a", "c", "a"]).unwrap();
    assert!(b.unwrap().str_eq("x"));
    assert_eq!(a.unwrap().as_i64(), Some(1));
    assert!(c.is_none());
    assert_eq!(a2.unwrap().as_i64(), Some(1));
}

#[test]
fn stops_at_the_field_it_needs() {
    // Garbage after the field is not looked at.
    assert_eq!(get(r#"{"a": 1, oops"#, "a").unwrap().as_i64(), Some(1));
    // Garbage before it is.
    assert_eq!(
        error(r#"{"x": oops, "a": 1}"#, "a"),
        "invalid JSON: unexpected `o` at byte 6"
    );
}

#[test]
fn empty_object_and_blanks() {
    assert!(get(" {\t}\n", "a").is_none());
    assert!(get("{\r\n\"a\" \t:\n1 }", "a").is_some());
}

#[test]
fn errors_name_the_byte() {
    assert_eq!(error("[1]", "a"), "not a JSON object: found `[` at byte 0");
    assert_eq!(
        error("  \"s\"", "a"),
        "not a JSON object: found `\"` at byte 2"
    );
    assert_eq!(
        error("", "a"),
        "not a JSON object: empty value (end at byte 0)"
    );
    assert_eq!(
        error("  ", "a"),
        "not a JSON object: empty value (end at byte 2)"
    );
    assert_eq!(
        error(r#"{"a": "#, "a"),
        "invalid JSON: unexpected end at byte 6"
    );
    assert_eq!(
        error(r#"{"a": "x"#, "a"),
        "invalid JSON: unexpected end at byte 8"
    );
    assert_eq!(
        error(r#"{"a" 1}"#, "a"),
        "invalid JSON: unexpected `1` at byte 5"
    );
    assert_eq!(
        error(r#"{a: 1}"#, "a"),
        "invalid JSON: unexpected `a` at byte 1"
    );
    assert_eq!(
        error(r#"{"b": 1,}"#, "a"),
        "invalid JSON: unexpected `}` at byte 8"
    );
    assert_eq!(
        error(r#"{"b": 1 "c": 2}"#, "a"),
        "invalid JSON: unexpected `\"` at byte 8"
    );
    assert_eq!(
        error(r#"{"b": tru}"#, "a"),
        "invalid JSON: unexpected `}` at byte 9"
    );
    assert_eq!(
        error(r#"{"b": [1, 2}}"#, "a"),
        "invalid JSON: unexpected `}` at byte 11"
    );
    assert_eq!(
        error(r#"{"b": {"c": [}]}"#, "a"),
        "invalid JSON: unexpected `}` at byte 13"
    );
    assert_eq!(
        error(r#"{"b": "\q"}"#, "a"),
        "invalid JSON: unexpected `q` at byte 8"
    );
    assert_eq!(
        error(r#"{"b": "\u12x4"}"#, "a"),
        "invalid JSON: unexpected `x` at byte 11"
    );
    assert_eq!(
        error("{\"b\": \"a\tb\"}", "a"),
        "invalid JSON: unexpected `\\x09` at byte 8"
    );
    assert_eq!(
        error(r#"{"b": 1} x"#, "a"),
        "invalid JSON: unexpected `x` at byte 9"
    );
    assert_eq!(ScanError::NULL_VALUE.to_string(), "null value");
}

#[test]
fn number_grammar() {
    for good in [
        "0",
        "-0",
        "1",
        "-12",
        "1.5",
        "1e5",
        "1E+5",
        "1.25e-3",
        "123456789012345678901234",
    ] {
        let doc = format!(r#"{{"n": {good}}}"#);
        let n = get(&doc, "n").unwrap_or_else(|| panic!("{good}"));
        assert_eq!(n.raw(), good.as_bytes());
        assert_eq!(n.kind(), FieldKind::Number);
    }
    for bad in ["01", "-", "1.", ".5", "1e", "1e+", "+1", "--1", "1.e5"] {
        let doc = format!(r#"{{"n": {bad}}}"#);
        assert!(field(doc.as_bytes(), "n").is_err(), "{bad} scanned");
    }
    assert_eq!(
        get(r#"{"n": 18446744073709551615}"#, "n").unwrap().as_u64(),
        Some(u64::MAX)
    );
    assert_eq!(
        get(r#"{"n": 18446744073709551615}"#, "n").unwrap().as_i64(),
        None
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!(
        r#"{{"a": {}{}, "b": 1}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(get(&deep, "b").unwrap().as_i64(), Some(1));
    let unclosed = format!(r#"{{"a": {}"#, "[".repeat(100_000));
    assert!(field(unclosed.as_bytes(), "b").is_err());
}

/// Whether serde_json reads `bytes`, as text, as one valid JSON object (its validity,
/// without a tree).
fn serde_object(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let object = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    object && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// `fields_checked` accepts exactly what serde_json does, and then finds what `fields` finds.
fn assert_checked_agrees(bytes: &[u8], names: [&str; 2]) -> Result<(), TestCaseError> {
    let checked = fields_checked(bytes, names);
    prop_assert_eq!(
        checked.is_ok(),
        serde_object(bytes),
        "{:?}: {:?}",
        String::from_utf8_lossy(bytes),
        checked
    );
    if let Ok(found) = checked {
        prop_assert_eq!(Ok(found), fields(bytes, names));
    }
    Ok(())
}

#[test]
fn fields_checked_reads_the_whole_document() {
    let names = ["a", "b"];
    fn ok(doc: &str) -> Result<Option<&[u8]>, ScanError> {
        fields_checked(doc.as_bytes(), ["a", "b"]).map(|[a, _]| a.map(|a| a.raw()))
    }
    assert_eq!(
        ok(r#"{"a":1,"b":[{"c":[]},{}],"z":{"x":null}}"#),
        Ok(Some(&b"1"[..]))
    );
    assert_eq!(ok(r#" { } "#), Ok(None));
    assert_eq!(
        ok(r#"{"a":1,"b":[],"z":[1,]}"#).unwrap_err().to_string(),
        "invalid JSON: unexpected `]` at byte 21"
    );
    // `fields` stops at the last name and does not see what `fields_checked` refuses.
    for bad in [
        r#"{"a":1,"b":2,"z":[tru]}"#,
        r#"{"a":1,"b":2,"z":{"k" 1}}"#,
        r#"{"a":1,"b":2,"z":{1:1}}"#,
        r#"{"a":1,"b":2,"z":[01]}"#,
        r#"{"a":1,"b":2,"z":[1 2]}"#,
        r#"{"a":1,"b":2,"z":[}"#,
        r#"{"a":1,"b":2} x"#,
        r#"{"a":1,"b":2,"z":{"k":1,}}"#,
    ] {
        assert!(fields(bad.as_bytes(), names).is_ok(), "{bad}");
        assert!(fields_checked(bad.as_bytes(), names).is_err(), "{bad}");
        assert!(!serde_object(bad.as_bytes()), "{bad}");
    }
    let not_utf8 = fields_checked(b"{\"a\":\"\xff\"}", names).unwrap_err();
    assert_eq!(
        (not_utf8.kind(), not_utf8.at()),
        (ScanErrorKind::NotUtf8, 6)
    );
    // Any depth, as serde_json without a tree; brackets and member syntax checked at every level.
    for levels in [1, 127, 128, 129, 256, 300, 100_000] {
        let arrays = format!(
            r#"{{"a":{}{},"b":1}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let objects = format!(
            r#"{{"a":{}1{},"b":1}}"#,
            r#"{"k":"#.repeat(levels),
            "}".repeat(levels)
        );
        let mixed = format!(
            r#"{{"a":{}1{},"b":1}}"#,
            r#"[{"k":"#.repeat(levels),
            "}]".repeat(levels)
        );
        let crossed = format!(
            r#"{{"a":{}1{},"b":1}}"#,
            r#"[{"k":"#.repeat(levels),
            "]}".repeat(levels)
        );
        for (doc, valid) in [
            (arrays, true),
            (objects, true),
            (mixed, true),
            (crossed, false),
        ] {
            assert_eq!(
                fields_checked(doc.as_bytes(), names).is_ok(),
                valid,
                "{levels}"
            );
            assert_eq!(serde_object(doc.as_bytes()), valid, "{levels}");
        }
    }
}

/// Arbitrary JSON values with finite numbers; strings and keys draw from all of Unicode so
/// that serialization has to escape some of them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z\"\\\\/\n\t\u{1}\u{7f}é😀]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![any::<String>(), "[a-z\"\\\\/\n\u{1}é😀]{0,6}"];
    prop::collection::vec((key, json_value()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
}

/// Serializes like serde_json, but writes every non-alphanumeric character of every string
/// as a `\uXXXX` escape (surrogate pairs beyond the BMP), to exercise escaped keys.
fn escape_everything(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c.is_ascii_alphanumeric() {
                    out.push(c);
                } else {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                escape_everything(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("{ ");
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\n");
                }
                escape_everything(&Value::String(k.clone()), out);
                out.push_str(" : ");
                escape_everything(v, out);
            }
            out.push_str(" }");
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The scanner's view of `key` in `doc` agrees with serde_json's `expected`.
fn assert_agrees(doc: &[u8], key: &str, expected: &Value) -> Result<(), TestCaseError> {
    let found = field(doc, key).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let found = found.ok_or_else(|| TestCaseError::fail(format!("key {key:?} not found")))?;
    match expected {
        Value::Null => prop_assert!(found.is_null()),
        Value::Bool(b) => prop_assert_eq!(found.as_bool(), Some(*b)),
        Value::Number(n) => {
            prop_assert_eq!(found.kind(), FieldKind::Number);
            prop_assert_eq!(found.as_i64(), n.as_i64());
            prop_assert_eq!(found.as_u64(), n.as_u64());
            prop_assert_eq!(found.as_f64(), n.as_f64());
        }
        Value::String(s) => {
            let text = found.as_str();
            prop_assert_eq!(text.as_deref(), Some(s.as_str()));
            prop_assert!(found.str_eq(s));
        }
        Value::Array(_) | Value::Object(_) => {
            let kind = if expected.is_array() {
                FieldKind::Array
            } else {
                FieldKind::Object
            };
            prop_assert_eq!(found.kind(), kind);
            let parsed: Value = serde_json::from_slice(found.raw()).unwrap();
            prop_assert_eq!(&parsed, expected);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn agrees_with_serde_json(object in json_object(), absent in any::<String>()) {
        let value = Value::Object(object.clone());
        let mut escaped = String::new();
        escape_everything(&value, &mut escaped);
        let docs = [
            serde_json::to_vec(&value).unwrap(),
            serde_json::to_vec_pretty(&value).unwrap(),
            escaped.into_bytes(),
        ];
        for doc in &docs {
            prop_assert_eq!(&serde_json::from_slice::<Value>(doc).unwrap(), &value);
            for (key, expected) in &object {
                assert_agrees(doc, key, expected)?;
            }
            if !object.contains_key(&absent) {
                prop_assert_eq!(field(doc, &absent), Ok(None));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Mostly JSON punctuation after an opening brace, to get past the first byte.
            "\\{[{}\\[\\]\":, 0-9a-z\\\\.eE+-]{0,64}".prop_map(String::into_bytes),
        ],
        name in "[a-z]{0,3}",
    ) {
        if let Ok(Some(found)) = field(&bytes, &name) {
            let _ = (found.as_str(), found.as_f64(), found.as_i64(), found.as_bool(), found.str_eq(&name));
        }
    }

    #[test]
    fn damaged_json_never_panics(object in json_object(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let doc = serde_json::to_vec(&Value::Object(object.clone())).unwrap();
        let truncated = &doc[..cut.index(doc.len() + 1)];
        let mut flipped = doc.clone();
        if !flipped.is_empty() {
            let at = flip.0.index(flipped.len());
            flipped[at] = flip.1;
        }
        for damaged in [truncated, &flipped[..]] {
            for key in object.keys().map(String::as_str).chain(["", "zz"]) {
                if let Ok(Some(found)) = field(damaged, key) {
                    let _ = (found.as_str(), found.as_f64(), found.as_u64(), found.as_bool(), found.str_eq(key));
                }
            }
        }
    }

    #[test]
    fn fields_checked_agrees_with_serde_json(
        object in json_object(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
        names in ["[a-z]{0,2}", "[a-z]{0,2}"],
    ) {
        let value = Value::Object(object);
        let mut escaped = String::new();
        escape_everything(&value, &mut escaped);
        let doc = serde_json::to_vec_pretty(&value).unwrap();
        let truncated = &doc[..cut.index(doc.len() + 1)];
        let mut flipped = doc.clone();
        if !flipped.is_empty() {
            let at = flip.0.index(flipped.len());
            flipped[at] = flip.1;
        }
        let names = [names[0].as_str(), names[1].as_str()];
        for bytes in [&doc[..], escaped.as_bytes(), truncated, &flipped[..]] {
            assert_checked_agrees(bytes, names)?;
        }
    }

    #[test]
    fn fields_checked_agrees_with_serde_json_on_punctuation(
        bytes in "\\{[{}\\[\\]\":, 0-9a-z\\\\.eE+-]{0,64}".prop_map(String::into_bytes),
    ) {
        assert_checked_agrees(&bytes, ["a", "b"])?;
    }
}
