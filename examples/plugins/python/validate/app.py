"""`validate` in Python: the same decisions as plugins/validate (Rust).

Passes records whose value is a JSON object with the required fields and types; dead-letters
every other record with the first reason found.

Config key `required` (default: none): comma-separated `field:type` pairs, e.g.
`event_id:string,timestamp:number`. Types: string, number, integer (a number without
fraction or exponent), boolean, object, array, null, any (present, whatever its value). An
unknown type, a field listed twice, an item that is not a `field:type` pair, or any other
config key fails `init` with an error naming it.

Dead-letter reasons, checked in this order, the first failure wins:

    null value
    not UTF-8: invalid byte at 3
    invalid JSON at byte 17: <message>      (Python's wording, not serde_json's)
    not a JSON object
    missing field user_id                   (required fields in config order)
    expected number at timestamp, found string

Like the Rust plugin, this walks the top-level object key by key and reduces each required
value to its kind; other values are only checked for syntax. `json`'s `raw_decode` parses one
value at a time and says where it ended, which gives byte positions; its `parse_int` and
`parse_float` hooks see a number's text, which is how `1.0` and `1e3` are told from integers.
What serde_json checks only where it reads a value (numbers in range, no lone surrogate
escape in strings) is checked here at the same places: the document itself, the top-level
keys, the required values and the keys of a required object. A key given twice: the last
one counts.

`json`'s C parser recurses once per nesting level, and about a thousand levels of objects
exhaust the wasm call stack (the call traps). So a value nested deeper than MAX_DEPTH is checked by
`_skip` instead, a slower loop over tokens that keeps its own stack.

The walk above is Python code around many small `raw_decode` calls; a plain value is answered
first by `_quick`, one `json` call for the whole value, which answers only where the walk is
known to agree (see there), and leaves the rest to the walk.

componentize-py makes a new `Transform` object for every call from the host, so what `init`
sets up lives at module level (one module per plugin instance), not on `self`.
"""

import json
import re
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

TYPES = ("string", "number", "integer", "boolean", "object", "array", "null", "any")

# (field, type) in config order; set by `init`.
_required: List[Tuple[str, str]] = []
_names = set()
# (field, type, the field's name as a JSON string) in config order; set by `init`.
_quoted: List[Tuple[str, str, str]] = []

# Verdicts without a reason are made once and shared: the bindings only read them.
_PASS = types.Verdict_Pass()


class Transform(exports.Transform):
    def init(self, config: List[Tuple[str, str]]) -> None:
        for key, _ in config:
            if key != "required":
                raise Err(f"unknown config key `{key}` (known keys: required)")
        required = []
        for item in dict(config).get("required", "").split(","):
            item = item.strip()
            if not item:
                continue
            name, colon, type_name = (part.strip() for part in item.partition(":"))
            if not colon or not name or not type_name:
                raise Err(_invalid(f"`{item}` is not a `name:name` pair"))
            if type_name not in TYPES:
                raise Err(_invalid(
                    f"unknown type `{type_name}` for field `{name}` (known types: {', '.join(TYPES)})"
                ))
            if any(name == n for n, _ in required):
                raise Err(_invalid(f"field `{name}` is listed twice"))
            required.append((name, type_name))
        _required[:] = required
        _names.clear()
        _names.update(name for name, _ in required)
        _quoted[:] = [(name, type_name, json.dumps(name, ensure_ascii=False)) for name, type_name in required]

    def process(self, batch: types.RecordBatch) -> List[types.Verdict]:
        verdicts: List[types.Verdict] = []
        for record in batch.records:
            reason = check(record.value)
            verdicts.append(_PASS if reason is None else types.Verdict_DeadLetter(reason))
        return verdicts


def _invalid(what: str) -> str:
    return f"invalid value for config key `required`: {what}"


def check(value: Optional[bytes]) -> Optional[str]:
    """The reason to dead-letter a record with this value, or None to pass it."""
    if value is None:
        return "null value"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8: invalid byte at {e.start}"
    answer = _quick(text)
    if answer is not _UNSURE:
        return answer
    try:
        kinds = _scan(text)
    except _Syntax as e:
        at = len(text[: e.at].encode("utf-8"))  # a character index to a byte offset
        return f"invalid JSON at byte {at}: {e.message}"
    if kinds is None:
        return "not a JSON object"
    for name, expected in _required:
        kind = kinds.get(name)
        if kind is None:
            return f"missing field {name}"
        if not _accepts(expected, kind):
            found = "number" if kind in ("integer", "float") else kind
            return f"expected {expected} at {name}, found {found}"
    return None


_UNSURE = object()
_INFINITIES = (float("inf"), float("-inf"))


def _quick(text: str):
    """What `check` answers for `text`, from one `json` call; _UNSURE where only the walk can
    tell.

    It answers for a text without a backslash, with at most MAX_DEPTH brackets, that `json`
    reads as an object (NaN and Infinity refused). Such a text is valid JSON, and with no
    escape anywhere a key reads as it is written. What is left to the walk: a required name
    whose quoted form occurs twice in the text (serde_json reads every value given for a key,
    `json` keeps the last), a required number that serde_json would find out of range (an
    infinite float, an integer beyond 64 bits), and a required number where `integer` is
    expected (`json` reads `-0` as an integer, serde_json as a float). (A leading BOM stays in
    the text: `json` refuses it as serde_json does.)
    """
    if "\\" in text or text.count("{") + text.count("[") > MAX_DEPTH:
        return _UNSURE
    try:
        doc = _plain.decode(text)
    except (ValueError, _Constant):
        return _UNSURE
    if type(doc) is not dict:
        return _UNSURE
    # Syntax comes before fields: every required value must be known good before a reason is
    # given for one of them.
    for name, expected, quoted in _quoted:
        if name not in doc:
            continue
        if text.count(quoted) > 1:
            return _UNSURE
        field = doc[name]
        kind = type(field)
        if kind is int and (expected == "integer" or not -(2**63) <= field < 2**64):
            return _UNSURE
        if kind is float and (expected == "integer" or field in _INFINITIES):
            return _UNSURE
    for name, expected in _required:
        if name not in doc:
            return f"missing field {name}"
        field = doc[name]
        kind = _KINDS.get(type(field), "float")  # an int or a float: a number either way here
        if not _accepts(expected, kind):
            return f"expected {expected} at {name}, found {'number' if kind == 'float' else kind}"
    return None


_KINDS = {str: "string", bool: "boolean", type(None): "null", dict: "object", list: "array"}


def _accepts(expected: str, kind: str) -> bool:
    if expected == "any":
        return True
    if expected == "number":
        return kind in ("integer", "float")
    return expected == kind


class _Syntax(Exception):
    def __init__(self, at: int, message: str):
        super().__init__(message)
        self.at = at  # character index in the text
        self.message = message


class _Number:
    """A number as written; what `_kind` needs to tell an integer from a float."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Constant(Exception):
    """NaN, Infinity or -Infinity: Python's json accepts them, JSON does not."""


def _reject_constant(name: str):
    raise _Constant(name)


_decoder = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
# For `_quick`: numbers as Python reads them.
_plain = json.JSONDecoder(parse_constant=_reject_constant)
_blank = re.compile(r"[ \t\n\r]*")
# Outside strings, the first NaN/Infinity: for the position of a rejected constant.
_constant = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)')
# Deeper than this, containers go to `_skip`, not to json's recursive parser.
MAX_DEPTH = 200
_bracket = re.compile(r'"(?:[^"\\]|\\.)*"|([\[{])|[\]}]')
# One JSON token after blanks, for `_skip`.
_token = re.compile(
    r"""[ \t\n\r]*(?:
      (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
    | (?P<scalar>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)
    | (?P<mark>[\[\]{},:]))""",
    re.VERBOSE,
)


def _ws(text: str, i: int) -> int:
    return _blank.match(text, i).end()


def _is_deep(text: str) -> bool:
    """Whether brackets nest deeper than MAX_DEPTH anywhere (strings aside)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for m in _bracket.finditer(text):
        if m.group(1):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif m.group() in "]}":
            depth -= 1
    return False


def _scan(text: str):
    """The kind of each top-level field if `text` is a JSON object, None if it is another JSON
    value; raises _Syntax if it is not JSON."""
    deep = _is_deep(text)
    i = _ws(text, 0)
    if not text.startswith("{", i):
        _, i = _kind(text, i, deep)
        kinds = None
    else:
        kinds = {}
        i = _ws(text, i + 1)
        if text.startswith("}", i):
            i += 1
        else:
            while True:
                if i == len(text):
                    raise _Syntax(i, "EOF while parsing an object")
                if not text.startswith('"', i):
                    raise _Syntax(i, "key must be a string")
                key, i = _decode(text, i)
                _no_surrogate(key, i)
                i = _ws(text, i)
                if not text.startswith(":", i):
                    raise _Syntax(i, "EOF while parsing an object" if i == len(text) else "expected `:`")
                i = _ws(text, i + 1)
                if key in _names:
                    kinds[key], i = _kind(text, i, deep)
                elif deep and text.startswith(("[", "{"), i):
                    i = _skip(text, i)
                else:
                    i = _decode(text, i)[1]
                i = _ws(text, i)
                if text.startswith("}", i):
                    i += 1
                    break
                if not text.startswith(",", i):
                    raise _Syntax(i, "EOF while parsing an object" if i == len(text) else "expected `,` or `}`")
                i = _ws(text, i + 1)
                if text.startswith("}", i):
                    raise _Syntax(i, "trailing comma")
    i = _ws(text, i)
    if i != len(text):
        raise _Syntax(i, "trailing characters")
    return kinds


def _decode(text: str, i: int):
    """One JSON value at `i` with json's parser: (value, index just past it)."""
    try:
        return _decoder.raw_decode(text, i)
    except json.JSONDecodeError as e:
        raise _Syntax(e.pos, e.msg) from None
    except _Constant:
        found = next((m.start(1) for m in _constant.finditer(text, i) if m.group(1)), i)
        raise _Syntax(found, "expected value") from None


def _kind(text: str, i: int, deep: bool):
    """The kind of the JSON value at `i` and the index just past it. Checks what serde_json
    checks of a value it reads: a number must be in range, a string (or a key of an object)
    must not hold a lone surrogate escape."""
    if deep and text.startswith(("[", "{"), i):
        return ("array" if text[i] == "[" else "object"), _skip(text, i, check_keys=True)
    value, end = _decode(text, i)
    if isinstance(value, str):
        _no_surrogate(value, end)
        return "string", end
    if isinstance(value, bool):  # before numbers: True is an int in Python
        return "boolean", end
    if value is None:
        return "null", end
    if isinstance(value, dict):
        for key in value:
            _no_surrogate(key, end)
        return "object", end
    if isinstance(value, list):
        return "array", end
    return _number_kind(value.text, end), end


def _number_kind(number: str, end: int) -> str:
    # serde_json: an integer in u64 or i64 range is an integer; `-0`, a larger one, or one with
    # a fraction or exponent is a float, and one beyond f64 is an error.
    if not any(c in number for c in ".eE") and number != "-0" and len(number) <= 21:
        if -(2**63) <= int(number) < 2**64:
            return "integer"
    if float(number) in (float("inf"), float("-inf")):
        raise _Syntax(end, "number out of range")
    return "float"


def _no_surrogate(string: str, end: int) -> None:
    try:
        string.encode("utf-8")
    except UnicodeEncodeError:
        raise _Syntax(end, "lone surrogate in hex escape") from None


def _skip(text: str, i: int, check_keys: bool = False) -> int:
    """Checks the syntax of the array or object at `i` without recursing; returns the index
    just past it. With check_keys, the object's own keys must not hold a lone surrogate."""
    close = {"[": "]", "{": "}"}
    stack = []  # the open brackets
    state = "value"  # what comes next: value, key, colon, or more (`,` or a closing bracket)
    token = ""
    while True:
        m = _token.match(text, i)
        if m is None:
            at = _ws(text, i)
            raise _Syntax(at, "EOF while parsing a value" if at == len(text) else "expected value")
        previous = token
        kind, token, at, i = m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup), m.end()
        if stack and previous in ("[", "{") and token == close[stack[-1]]:
            state = "more"  # an empty array or object
        elif kind == "mark" and token in "]}" and state in ("value", "key"):
            raise _Syntax(at, "trailing comma" if previous == "," else "expected value")
        elif state == "value":
            if token in ("[", "{"):
                stack.append(token)
                state = "key" if token == "{" else "value"
            elif kind == "mark":
                raise _Syntax(at, "expected value")
            else:
                state = "more"
            continue
        elif state == "key":
            if kind != "string":
                raise _Syntax(at, "key must be a string")
            if check_keys and len(stack) == 1:
                _no_surrogate(json.loads(token), i)
            state = "colon"
            continue
        elif state == "colon":
            if token != ":":
                raise _Syntax(at, "expected `:`")
            state = "value"
            continue
        elif token == ",":
            state = "key" if stack[-1] == "{" else "value"
            continue
        elif token != close[stack[-1]]:
            raise _Syntax(at, f"expected `,` or `{close[stack[-1]]}`")
        stack.pop()  # a closing bracket
        if not stack:
            return i
