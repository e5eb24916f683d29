//! A scanner that finds top-level fields of a JSON object without building a tree.
//!
//! [`field`] and [`fields`] walk the top-level object key by key and skip each value in
//! place; a found field is a [`Field`] borrowing its raw value bytes. Nothing is allocated
//! (except by [`Field::as_str`] when a string has escapes), nothing recurses, and no input
//! makes it panic.
//!
//! What is checked is what is walked: the top-level object's structure, every key, and every
//! skipped value's outline (strings and their escapes, number grammar, `true`/`false`/`null`,
//! bracket matching of nested objects and arrays, strings inside them). Tokens inside nested
//! values are not checked, strings are not checked for UTF-8, and the scan stops at the last
//! field asked for, so the rest of the document is not looked at. Use
//! [`Record::json`](crate::Record::json) or serde_json when the whole document must be valid.
//!
//! When a key appears more than once, the first occurrence wins.

use std::borrow::Cow;
use std::fmt;

/// The top-level field `name` of the JSON object in `input`: `Ok(None)` when the object has no
/// such key, an error with the byte position when `input` is not an object or cannot be
/// scanned up to that field.
pub fn field<'a>(input: &'a [u8], name: &str) -> Result<Option<Field<'a>>, ScanError> {
    let [found] = fields(input, [name])?;
    Ok(found)
}

/// The top-level fields `names` of the JSON object in `input`, in one pass: one entry per name,
/// in the same order. The scan stops once every name is found.
pub fn fields<'a, const N: usize>(
    input: &'a [u8],
    names: [&str; N],
) -> Result<[Option<Field<'a>>; N], ScanError> {
    scan(input, names, false)
}

/// [`fields`] of an `input` that must be one valid JSON object as a whole: UTF-8, every
/// token of every nested value checked at any depth, nothing after the object but blanks: what
/// serde_json accepts as a document. The whole input is read even when every name is found
/// early: one pass in place of a full parse followed by [`fields`].
pub fn fields_checked<'a, const N: usize>(
    input: &'a [u8],
    names: [&str; N],
) -> Result<[Option<Field<'a>>; N], ScanError> {
    if let Err(e) = std::str::from_utf8(input) {
        return Err(ScanError::new(e.valid_up_to(), ScanErrorKind::NotUtf8));
    }
    scan(input, names, true)
}

/// The top-level object's members: up to the last of `names`, or `whole`.
fn scan<'a, const N: usize>(
    input: &'a [u8],
    names: [&str; N],
    whole: bool,
) -> Result<[Option<Field<'a>>; N], ScanError> {
    let mut s = Scanner {
        input,
        at: 0,
        whole,
    };
    s.skip_ws();
    if s.peek() != Some(b'{') {
        let found = s.peek();
        return Err(ScanError::new(s.at, ScanErrorKind::NotObject { found }));
    }
    s.at += 1;
    // Every `None` from the scanner means "stopped at `s.at`", which the error reports.
    s.members(names).ok_or_else(|| unexpected_at(input, s.at))
}

/// The JSON type of a [`Field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A string.
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
    /// An object.
    Object,
    /// An array.
    Array,
}

impl FieldKind {
    /// The kind's name as in JSON Schema: `string`, `number`, `boolean`, `null`, `object`,
    /// `array`.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "boolean",
            Self::Null => "null",
            Self::Object => "object",
            Self::Array => "array",
        }
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A top-level field found by the scanner: its kind and raw value bytes, borrowed from the
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The value's bytes as they appear in the document, quotes included for a string.
    raw: &'a [u8],
    kind: FieldKind,
    /// Whether a string value contains escapes (so reading it needs unescaping).
    escaped: bool,
}

impl<'a> Field<'a> {
    /// The value's JSON type.
    pub fn kind(&self) -> FieldKind {
        self.kind
    }

    /// The value's bytes as they appear in the document (a string keeps its quotes and
    /// escapes).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The string value, borrowed unless it has escapes. `None` when the value is not a
    /// string, or is not valid UTF-8 or has a lone surrogate escape.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let inner = self.string_contents()?;
        if !self.escaped {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        let mut bytes = Vec::with_capacity(inner.len());
        let complete = unescape(inner, |piece| {
            bytes.extend_from_slice(piece);
            true
        });
        if !complete {
            return None;
        }
        String::from_utf8(bytes).ok().map(Cow::Owned)
    }

    /// Whether the value is the string `text`, compared without allocating even when the
    /// value has escapes.
    pub fn str_eq(&self, text: &str) -> bool {
        self.string_contents()
            .is_some_and(|inner| unescaped_eq(inner, self.escaped, text.as_bytes()))
    }

    /// The number value as an `f64` (the nearest one). `None` when the value is not a number.
    pub fn as_f64(&self) -> Option<f64> {
        self.number_text()?.parse().ok()
    }

    /// The number value as an `i64`. `None` when the value is not a number, has a fraction or
    /// exponent, or is out of range.
    pub fn as_i64(&self) -> Option<i64> {
        self.number_text()?.parse().ok()
    }

    /// The number value as a `u64`. `None` when the value is not a number, has a fraction or
    /// exponent, is negative, or is out of range.
    pub fn as_u64(&self) -> Option<u64> {
        self.number_text()?.parse().ok()
    }

    /// The boolean value. `None` when the value is not `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.raw {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.kind == FieldKind::Null
    }

    fn string_contents(&self) -> Option<&'a [u8]> {
        match (self.kind, self.raw) {
            (FieldKind::String, [b'"', inner @ .., b'"']) => Some(inner),
            _ => None,
        }
    }

    fn number_text(&self) -> Option<&'a str> {
        match self.kind {
            // A scanned number is ASCII, so this never fails.
            FieldKind::Number => std::str::from_utf8(self.raw).ok(),
            _ => None,
        }
    }
}

/// Why the scanner could not find a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    at: usize,
    kind: ScanErrorKind,
}

/// What went wrong in a [`ScanError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScanErrorKind {
    /// The record's value is null (a tombstone).
    NullValue,
    /// The value is not a JSON object; `found` is its first non-blank byte, `None` when it is
    /// empty or blank.
    NotObject {
        /// First non-blank byte.
        found: Option<u8>,
    },
    /// The input ends in the middle of the object.
    UnexpectedEnd,
    /// A byte that cannot appear here.
    UnexpectedByte(u8),
    /// The input is not UTF-8 ([`fields_checked`] only); `at` is where the first bad
    /// sequence starts.
    NotUtf8,
}

impl ScanError {
    /// The error for a record whose value is null.
    pub const NULL_VALUE: Self = Self {
        at: 0,
        kind: ScanErrorKind::NullValue,
    };

    fn new(at: usize, kind: ScanErrorKind) -> Self {
        Self { at, kind }
    }

    /// 0-based byte offset of the problem.
    pub fn at(&self) -> usize {
        self.at
    }

    /// What the problem is.
    pub fn kind(&self) -> ScanErrorKind {
        self.kind
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at;
        match self.kind {
            ScanErrorKind::NullValue => f.write_str("null value"),
            ScanErrorKind::NotObject { found: Some(c) } => {
                write!(f, "not a JSON object: found `{}` at byte {at}", ShowByte(c))
            }
            ScanErrorKind::NotObject { found: None } => {
                write!(f, "not a JSON object: empty value (end at byte {at})")
            }
            ScanErrorKind::UnexpectedEnd => write!(f, "invalid JSON: unexpected end at byte {at}"),
            ScanErrorKind::UnexpectedByte(c) => {
                write!(f, "invalid JSON: unexpected `{}` at byte {at}", ShowByte(c))
            }
            ScanErrorKind::NotUtf8 => write!(f, "not UTF-8 at byte {at}"),
        }
    }
}

impl std::error::Error for ScanError {}

/// A byte as text: itself when printable ASCII, `\xNN` otherwise.
struct ShowByte(u8);

impl fmt::Display for ShowByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

/// A cursor over the input. Every method leaves `at` just past what it consumed and returns
/// `Some`, or leaves `at` on the offending byte (or the end) and returns `None`. Keeping
/// errors out of the return values keeps them in registers on the hot path.
struct Scanner<'a> {
    input: &'a [u8],
    at: usize,
    /// Read and check the whole input ([`fields_checked`]), not only up to the last field.
    whole: bool,
}

impl<'a> Scanner<'a> {
    /// The members of the top-level object, `at` just past its `{`.
    fn members<const N: usize>(&mut self, names: [&str; N]) -> Option<[Option<Field<'a>>; N]> {
        let mut found = [None; N];
        let mut missing = N;
        if missing == 0 && !self.whole {
            return Some(found);
        }
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return self.end().map(|()| found);
        }
        loop {
            self.skip_ws();
            self.expect(b'"')?;
            let key_start = self.at;
            let key_escaped = self.string_rest()?;
            // `string_rest` succeeded, so `at` is just past the closing quote.
            let key = &self.input[key_start..self.at - 1];
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value_start = self.at;
            let (kind, escaped) = self.value()?;
            let raw = &self.input[value_start..self.at];
            // The value must end where a value may end, or `01` would be found as `0`.
            self.skip_ws();
            let last = match self.peek() {
                Some(b',') => false,
                Some(b'}') => true,
                _ => return None,
            };
            self.at += 1;
            for (slot, name) in found.iter_mut().zip(names) {
                if slot.is_none() && unescaped_eq(key, key_escaped, name.as_bytes()) {
                    *slot = Some(Field { raw, kind, escaped });
                    missing -= 1;
                }
            }
            if missing == 0 && !self.whole {
                return Some(found);
            }
            if last {
                return self.end().map(|()| found);
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.peek() != Some(byte) {
            return None;
        }
        self.at += 1;
        Some(())
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// After the top-level object: only blanks may follow.
    fn end(&mut self) -> Option<()> {
        self.skip_ws();
        (self.at == self.input.len()).then_some(())
    }

    /// One value of any kind; returns its kind and, for a string, whether it has escapes.
    #[inline]
    fn value(&mut self) -> Option<(FieldKind, bool)> {
        let kind = match self.peek()? {
            b'"' => {
                self.at += 1;
                return Some((FieldKind::String, self.string_rest()?));
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                FieldKind::Number
            }
            b'{' => {
                self.container()?;
                FieldKind::Object
            }
            b'[' => {
                self.container()?;
                FieldKind::Array
            }
            b't' => {
                self.literal(b"true")?;
                FieldKind::Bool
            }
            b'f' => {
                self.literal(b"false")?;
                FieldKind::Bool
            }
            b'n' => {
                self.literal(b"null")?;
                FieldKind::Null
            }
            _ => return None,
        };
        Some((kind, false))
    }

    /// The rest of a string, `at` just past its opening quote; returns whether it has escapes.
    #[inline]
    fn string_rest(&mut self) -> Option<bool> {
        let input = self.input;
        let mut escaped = false;
        loop {
            self.at = skip_plain_string_bytes(input, self.at);
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            self.at += 1;
                            for _ in 0..4 {
                                if !self.peek()?.is_ascii_hexdigit() {
                                    return None;
                                }
                                self.at += 1;
                            }
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    /// A nested object or array, `at` on its opening bracket: checked whole when reading
    /// the whole input, else only outlined.
    #[inline]
    fn container(&mut self) -> Option<()> {
        if self.whole {
            self.nested_checked()
        } else {
            self.nested()
        }
    }

    /// A nested object or array, `at` on its opening bracket, every token checked.
    /// Iterative, so deep nesting cannot overflow the stack.
    fn nested_checked(&mut self) -> Option<()> {
        let mut open = OpenContainers::default();
        loop {
            // `at` is on a value.
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    open.push(c == b'{');
                    self.at += 1;
                    self.skip_ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        open.pop();
                    } else {
                        if c == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => {
                    self.value()?;
                }
            }
            // After a value: a comma and the next one, or the close of its container.
            loop {
                if open.depth == 0 {
                    return Some(());
                }
                self.skip_ws();
                let in_object = open.in_object();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.skip_ws();
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                self.at += 1;
                open.pop();
            }
        }
    }

    /// `"key"` and its colon, and the blanks up to the value.
    fn key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.string_rest()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        Some(())
    }

    /// A nested object or array, `at` on its opening bracket. Brackets must match (checked
    /// for the first 64 levels); strings inside are skipped whole; other tokens are not
    /// checked. Iterative, so deep nesting cannot overflow the stack.
    fn nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        // Which bracket opened each of the first 64 levels, innermost in bit 0 (1 = `{`).
        let mut opened_by_brace = 0u64;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    self.string_rest()?;
                    continue;
                }
                c @ (b'{' | b'[') => {
                    if depth < 64 {
                        opened_by_brace = (opened_by_brace << 1) | u64::from(c == b'{');
                    }
                    depth += 1;
                }
                c @ (b'}' | b']') => {
                    if depth <= 64 {
                        if (opened_by_brace & 1 == 1) != (c == b'}') {
                            return None;
                        }
                        opened_by_brace >>= 1;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        for &byte in word {
            self.expect(byte)?;
        }
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    #[inline]
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits1()?;
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn digits1(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        self.digits();
        Some(())
    }
}

/// The containers a checked scan is inside, innermost last: a bit per level, 1 for an object,
/// in a word for the innermost 128 levels and in `outer` words beyond (allocated only by
/// deeper nesting).
#[derive(Default)]
struct OpenContainers {
    depth: usize,
    bits: u128,
    outer: Vec<u128>,
}

impl OpenContainers {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.outer.push(self.bits);
            self.bits = 0;
        }
        self.bits = (self.bits << 1) | u128::from(object);
        self.depth += 1;
    }

    /// Only with `depth` > 0.
    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.bits = self.outer.pop().unwrap_or_default();
        }
    }

    fn in_object(&self) -> bool {
        self.bits & 1 == 1
    }
}

/// The offset of the first byte at or after `i` that ends a run of plain string bytes: a
/// quote, a backslash or a control character (or `input.len()`).
///
/// Looks at eight bytes at a time: for each byte, the classic "has a zero byte" bit trick on
/// the word XOR a repeated quote or backslash, and the "has a byte below 0x20" trick. The
/// tricks can also flag bytes *after* a real hit, never before one, so the lowest flagged
/// byte is exact.
#[inline]
fn skip_plain_string_bytes(input: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    while let Some(chunk) = input.get(i..i + 8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let quote = word ^ QUOTES;
        let backslash = word ^ BACKSLASHES;
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(SPACES) & !word);
        let special = special & HIGH;
        if special != 0 {
            // Little-endian: the lowest set bit belongs to the first flagged byte.
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = input.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cold]
fn unexpected_at(input: &[u8], at: usize) -> ScanError {
    match input.get(at) {
        Some(&c) => ScanError::new(at, ScanErrorKind::UnexpectedByte(c)),
        None => ScanError::new(at.min(input.len()), ScanErrorKind::UnexpectedEnd),
    }
}

/// Whether the contents of a JSON string (between its quotes) unescape to exactly `text`.
#[inline]
fn unescaped_eq(contents: &[u8], escaped: bool, text: &[u8]) -> bool {
    if !escaped {
        return contents == text;
    }
    let mut rest = text;
    let complete = unescape(contents, |piece| match rest.strip_prefix(piece) {
        Some(tail) => {
            rest = tail;
            true
        }
        None => false,
    });
    complete && rest.is_empty()
}

/// Unescapes the contents of a JSON string piece by piece (runs of plain bytes, and one
/// UTF-8-encoded character per escape), handing each to `sink` until it returns `false`.
/// Returns whether every piece was handed over: `false` when `sink` stopped, or on an escape
/// that is invalid or a lone surrogate.
fn unescape(contents: &[u8], mut sink: impl FnMut(&[u8]) -> bool) -> bool {
    let mut i = 0;
    while i < contents.len() {
        let rest = &contents[i..];
        let plain = rest.iter().position(|&c| c == b'\\').unwrap_or(rest.len());
        if plain > 0 {
            if !sink(&rest[..plain]) {
                return false;
            }
            i += plain;
            continue;
        }
        let (c, used) = match rest.get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => match unicode_escape(rest) {
                Some(decoded) => decoded,
                None => return false,
            },
            _ => return false,
        };
        let mut buf = [0; 4];
        if !sink(c.encode_utf8(&mut buf).as_bytes()) {
            return false;
        }
        i += used;
    }
    true
}

/// A `\uXXXX` escape at the start of `s`, or a surrogate pair `\uD8XX\uDCXX`: the character
/// and the bytes used. `None` for a lone surrogate or bad hex.
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let high = hex4(s.get(2..6)?)?;
    if !(0xD800..0xE000).contains(&high) {
        return Some((char::from_u32(high)?, 6));
    }
    if high >= 0xDC00 || s.get(6..8)? != b"\\u" {
        return None;
    }
    let low = hex4(s.get(8..12)?)?;
    if !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?;
    Some((c, 12))
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

#[cfg(test)]
mod tests;
