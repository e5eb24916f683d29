"""`route` in Python: the same decisions as plugins/route (Rust).

Config keys (all optional): priority_field (priority), urgent_values (high, comma-separated),
urgent_route (urgent), type_field (event_type), error_values (error), error_route (errors).
Any other key, or an empty field or route name, fails `init` with an error naming the key.

1. the priority field's value is one of urgent_values -> route urgent_route;
2. else the type field's value is one of error_values -> route error_route;
3. else pass.

A string field matches by its unescaped text; a number or boolean by its JSON text (so
urgent_values = "1" matches "priority": 1). A value that is not a JSON object is
dead-lettered with the scanner's reason: `null value`, ``not a JSON object: found `[` at byte
0``, `not a JSON object: empty value (end at byte 0)`, `invalid JSON: unexpected end at byte 12`.

The two fields are found by a port of the Rust SDK's scanner (plugin-sdk/src/json.rs), so that
both plugins take the same records: the scan walks the top-level object key by key, skips each
value in place (checking its outline), stops once both fields are found, and lets the first of
two equal keys win. It also never recurses, so deep nesting cannot exhaust the wasm call stack.
The scanner is Python code, `json.loads` is C: so a record first goes through `_quick`, which
asks `json.loads` and answers only where the scanner is known to agree (see there), and falls
back to the scanner otherwise.

componentize-py makes a new `Transform` object for every call from the host, so what `init`
sets up lives at module level (one module per plugin instance), not on `self`.
"""

import json
import re
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

KEYS = ("priority_field", "urgent_values", "urgent_route", "type_field", "error_values", "error_route")

_config = {}

# Verdicts are made once and shared: the bindings only read them.
_PASS = types.Verdict_Pass()
_NULL_VALUE = types.Verdict_DeadLetter("null value")


class Transform(exports.Transform):
    def init(self, config: List[Tuple[str, str]]) -> None:
        for key, _ in config:
            if key not in KEYS:
                raise Err(f"unknown config key `{key}` (known keys: {', '.join(KEYS)})")
        given = dict(config)

        def name(key: str, default: str) -> str:
            value = given.get(key, default).strip()
            if not value:
                raise Err(f"invalid value for config key `{key}`: must not be empty")
            return value

        def values(key: str, default: str) -> List[str]:
            return [v.strip() for v in given.get(key, default).split(",") if v.strip()]

        _config.update(
            priority_field=name("priority_field", "priority"),
            urgent_values=values("urgent_values", "high"),
            urgent_route=name("urgent_route", "urgent"),
            type_field=name("type_field", "event_type"),
            error_values=values("error_values", "error"),
            error_route=name("error_route", "errors"),
        )
        c = _config
        c["urgent"] = types.Verdict_Route(c["urgent_route"])
        c["error"] = types.Verdict_Route(c["error_route"])
        c["priority_quoted"] = json.dumps(c["priority_field"], ensure_ascii=False)
        c["type_quoted"] = json.dumps(c["type_field"], ensure_ascii=False)

    def process(self, batch: types.RecordBatch) -> List[types.Verdict]:
        return [decide(record.value) for record in batch.records]


def decide(value: Optional[bytes]) -> types.Verdict:
    if value is None:
        return _NULL_VALUE
    verdict = _quick(value)
    return _scanned(value) if verdict is None else verdict


# --- the quick path ----------------------------------------------------------------------

_UNSURE = object()
# Deeper than this, json's C parser (which recurses) might exhaust the wasm call stack.
_MAX_DEPTH = 200


class _Constant(Exception):
    """NaN, Infinity or -Infinity: `json` accepts them, JSON does not."""


def _reject_constant(name: str):
    raise _Constant(name)


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _quick(value: bytes) -> Optional[types.Verdict]:
    """The verdict for `value` from `json.loads`, or None where only the scanner can tell.

    It answers for a value that is UTF-8 without a backslash, with at most _MAX_DEPTH
    brackets, that `json` reads as an object (NaN and Infinity refused). Such a value is valid
    JSON, so the scanner takes it too, and finds the same fields: with no escape anywhere, a
    key reads as it is written, so a field whose quoted name occurs once in the text is given
    once (the scanner keeps the first of two equal keys, `json` the last: a name that occurs
    twice is left to the scanner), and a string's text is what `json` returns. A number is
    matched by how it is written, which `json` does not keep: left to the scanner too.
    (A leading BOM stays in the text: `json` refuses it as the scanner does.)
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\\" in text or text.count("{") + text.count("[") > _MAX_DEPTH:
        return None
    try:
        doc = _decoder.decode(text)
    except (ValueError, _Constant):
        return None
    if type(doc) is not dict:
        return None
    c = _config
    priority = _quick_match(text, doc, c["priority_field"], c["priority_quoted"], c["urgent_values"])
    if priority is _UNSURE:
        return None
    if priority:
        return c["urgent"]
    event_type = _quick_match(text, doc, c["type_field"], c["type_quoted"], c["error_values"])
    if event_type is _UNSURE:
        return None
    return c["error"] if event_type else _PASS


def _quick_match(text: str, doc: dict, name: str, quoted: str, values: List[str]):
    """Whether field `name` of `doc` (read from `text`) is one of `values`; _UNSURE if `json`
    cannot tell."""
    if name not in doc:
        return False
    if text.count(quoted) > 1:
        return _UNSURE
    field = doc[name]
    if type(field) is str:
        return field in values
    if type(field) is bool:
        return ("true" if field else "false") in values
    if type(field) in (int, float):
        return _UNSURE
    return False  # None, a dict or a list


# --- the scanner's verdict ---------------------------------------------------------------


def _scanned(value: bytes) -> types.Verdict:
    c = _config
    try:
        priority, event_type = fields(value, c["priority_field"], c["type_field"])
    except ScanError as e:
        return types.Verdict_DeadLetter(str(e))
    if _is_one_of(priority, c["urgent_values"]):
        return c["urgent"]
    if _is_one_of(event_type, c["error_values"]):
        return c["error"]
    return _PASS


def _is_one_of(field, values: List[str]) -> bool:
    """Whether `field` (kind, raw bytes, escaped) is present and equal to one of `values`."""
    if field is None:
        return False
    kind, raw, escaped = field
    if kind == "string":
        text = _unescape(raw[1:-1], escaped)
        return text is not None and text in values
    if kind in ("number", "boolean"):
        return raw.decode("ascii") in values
    return False


# --- the scanner -------------------------------------------------------------------------


class ScanError(Exception):
    pass


_BLANK = re.compile(rb"[ \t\n\r]*")
# The rest of a string after its opening quote, up to (not including) the closing quote.
_STRING_BODY = re.compile(rb'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Inside a nested value, everything up to the next quote or bracket.
_NESTED_PLAIN = re.compile(rb'[^"\[\]{}]*')


def _show(byte: int) -> str:
    return chr(byte) if 0x21 <= byte <= 0x7E else f"\\x{byte:02x}"


def _unexpected(b: bytes, at: int) -> ScanError:
    if at < len(b):
        return ScanError(f"invalid JSON: unexpected `{_show(b[at])}` at byte {at}")
    return ScanError(f"invalid JSON: unexpected end at byte {len(b)}")


def fields(b: bytes, *names: str):
    """The top-level fields `names` of the JSON object `b`, one (kind, raw, escaped) or None
    per name, in one pass that stops once every name is found."""
    i = _BLANK.match(b).end()
    if i == len(b):
        raise ScanError(f"not a JSON object: empty value (end at byte {i})")
    if b[i] != ord("{"):
        raise ScanError(f"not a JSON object: found `{_show(b[i])}` at byte {i}")
    found = [None] * len(names)
    missing = len(names)
    i = _BLANK.match(b, i + 1).end()
    if b.startswith(b"}", i):
        _end(b, i + 1)
        return found
    while True:
        i = _BLANK.match(b, i).end()
        if not b.startswith(b'"', i):
            raise _unexpected(b, i)
        key_start = i + 1
        i, key_escaped = _string(b, key_start)
        key = b[key_start : i - 1]
        i = _BLANK.match(b, i).end()
        if not b.startswith(b":", i):
            raise _unexpected(b, i)
        i = _BLANK.match(b, i + 1).end()
        value_start = i
        i, kind, escaped = _value(b, i)
        raw = b[value_start:i]
        # The value must end where a value may end, or `01` would be found as `0`.
        i = _BLANK.match(b, i).end()
        if b.startswith(b",", i):
            last = False
        elif b.startswith(b"}", i):
            last = True
        else:
            raise _unexpected(b, i)
        i += 1
        for n, name in enumerate(names):
            if found[n] is None and _unescape(key, key_escaped) == name:
                found[n] = (kind, raw, escaped)
                missing -= 1
        if missing == 0:
            return found
        if last:
            _end(b, i)
            return found


def _end(b: bytes, i: int) -> None:
    """After the top-level object: only blanks may follow."""
    i = _BLANK.match(b, i).end()
    if i != len(b):
        raise _unexpected(b, i)


def _string(b: bytes, i: int):
    """The rest of a string, `i` just past its opening quote: (index past it, has escapes)."""
    end = _STRING_BODY.match(b, i).end()
    if not b.startswith(b'"', end):
        # On a bad escape, point where the Rust scanner does: at the byte after the backslash,
        # or at the first bad hex digit of a \u escape.
        if b.startswith(b"\\u", end):
            end += 2
            while end < len(b) and b[end] in b"0123456789abcdefABCDEF":
                end += 1
        elif b.startswith(b"\\", end):
            end += 1
        raise _unexpected(b, end)
    return end + 1, b.find(b"\\", i, end) >= 0


def _value(b: bytes, i: int):
    """One value of any kind: (index past it, kind, whether a string has escapes)."""
    c = b[i : i + 1]
    if c == b'"':
        end, escaped = _string(b, i + 1)
        return end, "string", escaped
    if c == b"-" or c.isdigit():
        m = _NUMBER.match(b, i)
        if m is None:
            raise _unexpected(b, i + 1)
        return m.end(), "number", False
    if c in (b"{", b"["):
        return _nested(b, i), ("object" if c == b"{" else "array"), False
    for word, kind in ((b"true", "boolean"), (b"false", "boolean"), (b"null", "null")):
        if c == word[:1]:
            for k in range(len(word)):
                if b[i + k : i + k + 1] != word[k : k + 1]:
                    raise _unexpected(b, i + k)
            return i + len(word), kind, False
    raise _unexpected(b, i)


def _nested(b: bytes, i: int) -> int:
    """A nested object or array at `i`: brackets must match (checked for the first 64
    levels), strings inside are skipped whole, other tokens are not checked."""
    depth = 0
    opened = []  # the opening brackets of the first 64 levels
    while True:
        i = _NESTED_PLAIN.match(b, i).end()
        if i == len(b):
            raise _unexpected(b, i)
        c = b[i]
        if c == ord('"'):
            i, _ = _string(b, i + 1)
            continue
        if c in b"[{":
            if depth < 64:
                opened.append(c)
            depth += 1
        else:
            if depth <= 64 and opened.pop() != (ord("{") if c == ord("}") else ord("[")):
                raise _unexpected(b, i)
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def _unescape(contents: bytes, escaped: bool) -> Optional[str]:
    """A string's contents (between its quotes) as text; None if not UTF-8 or holding a lone
    surrogate, which then equals no configured name."""
    try:
        text = contents.decode("utf-8")
        if escaped:
            text = json.loads('"' + text + '"')
            text.encode("utf-8")  # rejects a lone surrogate
        return text
    except (UnicodeError, ValueError):
        return None
