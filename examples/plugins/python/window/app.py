"""`window` in Python: the same windows, aggregates, state and reasons as plugins/window (Rust).

A stateful plugin (contract 0.2.0, world `stateful-plugin`). Each record is added to the
tumbling window its timestamp falls in, `[floor(ts / window_ms) * window_ms, + window_ms)`,
under the text of its key field; when the task's watermark reaches a window's end, an
event-time timer evicts it. `update` mode replaces each record by its window's aggregate after
it; `final` mode drops the records and emits one aggregate per key when the window closes.

Config keys (all optional): key_field (event_type), value_field (amount), window_ms (60000, a
whole number > 0), mode (update or final), route (none: the pipeline's default route, or in
update mode the record's current route). Any other key, an empty key_field, value_field or
route, a window_ms that is not a number > 0, or another mode fails `init` with an error naming
the key, worded as the Rust plugin words it.

Dead-letter reasons, in the order checked (those of the Rust plugin, word for word):
`not a JSON object` (also for a null, non-UTF-8 or invalid value), `no timestamp`,
`negative timestamp`, `missing field <key_field>`, `field <key_field> is not a string or
number`, `missing field <value_field>`, `field <value_field> is not a number`,
`late: event time T is behind the watermark W`, `timestamp T is too large`, `the sum of field
<value_field> overflows`, `bad state entry <key>: <why>` (the <why> is this plugin's own
wording; only a state entry some other writer broke can give it).

What counts as JSON is what serde_json accepts: any depth of nesting, numbers of any size,
lone surrogate escapes inside strings; no NaN or Infinity. A key field is a string (with no
lone surrogate) taken as it is, or a number taken as its text exactly as written; a value is
read as the nearest float to its text. When a field appears more than once, the first
occurrence counts.

State, shared with the Rust plugin so that either can take over the other's: key `w/`, the
window's start as 16 zero-padded digits, `/`, the key text; value `{"count":N,"sum":X}`; one
event-time timer per window at its end, tag `w`. Output: key `<key>|<window_start>`, value
`{"key":K,"window_start":S,"window_end":E,"count":N,"sum":X,"avg":X/N}`. Floats are written
as serde_json writes them, so the state and the outputs are byte for byte the Rust plugin's.

componentize-py makes a new `StatefulTransform` object for every call from the host, so what
`init` sets up lives at module level (one module per plugin instance), not on `self`.
"""

import json
import math
import re
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, state, timers, types

KEYS = ("key_field", "value_field", "window_ms", "mode", "route")
# The tag of every window's timer.
TAG = "w"
# Entries per state scan, as the Rust SDK reads them.
PAGE = 1000
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1
# The characters Rust's `str::trim` removes (Unicode White_Space); Python's `strip()` would
# also remove \x1c-\x1f.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Set by `init`.
_key_field = "event_type"
_value_field = "amount"
_window_ms = 60_000
_final = False  # mode: final (True) or update (False)
_route: Optional[str] = None


class StatefulTransform(exports.StatefulTransform):
    def init(self, config: List[Tuple[str, str]]) -> None:
        global _key_field, _value_field, _window_ms, _final, _route
        for key, _ in config:
            if key not in KEYS:
                raise Err(f"unknown config key `{key}` (known keys: {', '.join(KEYS)})")
        given = dict(config)

        def non_empty(key: str, value: str) -> str:
            value = value.strip(RUST_WHITESPACE)
            if not value:
                raise Err(f"invalid value for config key `{key}`: must not be empty")
            return value

        window_ms = _parse_i64("window_ms", given.get("window_ms"), 60_000)
        if window_ms <= 0:
            raise Err(f"invalid value for config key `window_ms`: must be > 0, not {window_ms}")
        mode = given.get("mode", "update").strip(RUST_WHITESPACE)
        if mode not in ("update", "final"):
            raise Err(
                f"invalid value for config key `mode`: `{mode}` (expected `update` or `final`)"
            )
        key_field = non_empty("key_field", given.get("key_field", "event_type"))
        value_field = non_empty("value_field", given.get("value_field", "amount"))
        route = given.get("route")
        _key_field, _value_field, _window_ms = key_field, value_field, window_ms
        _final = mode == "final"
        _route = None if route is None else non_empty("route", route)

    def process(self, batch: types.RecordBatch) -> List[types.Verdict]:
        return [_process(record, batch.watermark_ms) for record in batch.records]

    def on_timers(
        self, watermark_ms: Optional[int], fired: List[types.FiredTimer]
    ) -> List[List[types.OutputRecord]]:
        return [_on_timer(timer) for timer in fired]


def _parse_i64(key: str, value: Optional[str], default: int) -> int:
    """`value` as Rust's `i64::from_str` reads it after a trim, with its error messages."""
    if value is None:
        return default
    text = value.strip(RUST_WHITESPACE)
    if not text:
        why = "cannot parse integer from empty string"
    elif not re.fullmatch(r"[+-]?[0-9]+", text):
        why = "invalid digit found in string"
    elif int(text) > I64_MAX:
        why = "number too large to fit in target type"
    elif int(text) < I64_MIN:
        why = "number too small to fit in target type"
    else:
        return int(text)
    raise Err(f"invalid value for config key `{key}`: `{value}` ({why})")


# --- records -------------------------------------------------------------------------------


class _Reject(Exception):
    """A record to dead-letter, with the reason."""


def _process(record: types.InputRecord, watermark_ms: Optional[int]) -> types.Verdict:
    try:
        key, value, window_start = _read(record, watermark_ms)
    except _Reject as e:
        return types.Verdict_DeadLetter(str(e))
    state_key = _window_prefix(window_start) + key.encode("utf-8")
    stored = state.get(state_key)
    if stored is None:
        count, total = 0, 0.0
    else:
        try:
            count, total = _decode(stored)
        except _Reject as e:
            lossy = state_key.decode("utf-8", "replace")
            return types.Verdict_DeadLetter(f"bad state entry {lossy}: {e}")
    count += 1
    total += value
    if not math.isfinite(total):
        return types.Verdict_DeadLetter(f"the sum of field {_value_field} overflows")
    state.set(state_key, f'{{"count":{count},"sum":{_float_text(total)}}}'.encode("utf-8"))
    timers.set(types.TimeDomain.EVENT_TIME, window_start + _window_ms, TAG)
    if _final:
        return types.Verdict_Drop()
    return types.Verdict_Emit([_output(key, window_start, count, total)])


def _read(record: types.InputRecord, watermark_ms: Optional[int]) -> Tuple[str, float, int]:
    """The record's key text, value and window start; raises _Reject with the reason, checked
    in the documented order."""
    try:
        key, value = _fields(record.value, _key_field, _value_field)
    except _NotObject:
        raise _Reject("not a JSON object") from None
    ts = record.timestamp_ms
    if ts is None:
        raise _Reject("no timestamp")
    if ts < 0:
        raise _Reject("negative timestamp")
    if key is _ABSENT:
        raise _Reject(f"missing field {_key_field}")
    text = _key_text(key)
    if text is None:
        raise _Reject(f"field {_key_field} is not a string or number")
    if value is _ABSENT:
        raise _Reject(f"missing field {_value_field}")
    if not isinstance(value, _Number):
        raise _Reject(f"field {_value_field} is not a number")
    if record.late:
        if watermark_ms is None:
            raise _Reject(f"late: event time {ts} is behind the watermark")
        raise _Reject(f"late: event time {ts} is behind the watermark {watermark_ms}")
    window_start = ts - ts % _window_ms
    if window_start + _window_ms > I64_MAX:
        raise _Reject(f"timestamp {ts} is too large")
    return text, float(value.text), window_start


def _key_text(field) -> Optional[str]:
    """A key field's text: a string as it is (None if it holds a lone surrogate), a number as
    written; None for anything else."""
    if isinstance(field, _Number):
        return field.text
    if isinstance(field, str):
        try:
            field.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return field
    return None


def _decode(stored: bytes) -> Tuple[int, float]:
    """A state value `{"count":N,"sum":X}`; raises _Reject with what is wrong."""
    try:
        count, total = _fields(stored, "count", "sum")
    except _NotObject:
        raise _Reject("not a JSON object") from None
    if (
        isinstance(count, _Number)
        and re.fullmatch("[0-9]+", count.text)
        and int(count.text) <= U64_MAX
        and isinstance(total, _Number)
    ):
        return int(count.text), float(total.text)
    raise _Reject("no count or no sum")


# --- timers --------------------------------------------------------------------------------


def _on_timer(timer: types.FiredTimer) -> List[types.OutputRecord]:
    if timer.domain != types.TimeDomain.EVENT_TIME or timer.tag != TAG:
        host.log(host.Level.WARN, f"window: ignored a timer it never sets: {timer}")
        return []
    window_start = max(timer.at_ms - _window_ms, I64_MIN)
    prefix = _window_prefix(window_start)
    outputs = []
    after = None
    while True:
        page = state.scan(prefix, after, PAGE)
        for entry in page:
            if _final:
                key = entry.key[len(prefix) :].decode("utf-8", "replace")
                try:
                    count, total = _decode(entry.value)
                    outputs.append(_output(key, window_start, count, total))
                except _Reject as e:
                    lossy = entry.key.decode("utf-8", "replace")
                    host.log(host.Level.ERROR, f"window: dropped bad state entry {lossy}: {e}")
            state.delete(entry.key)
        if len(page) < PAGE:
            return outputs
        after = page[-1].key


# --- output --------------------------------------------------------------------------------


def _window_prefix(window_start: int) -> bytes:
    """`w/<window_start, 16 digits>/`: the state keys of one window."""
    return f"w/{window_start:016d}/".encode("ascii")


def _output(key: str, window_start: int, count: int, total: float) -> types.OutputRecord:
    value = (
        f'{{"key":{json.dumps(key, ensure_ascii=False)},"window_start":{window_start},'
        f'"window_end":{window_start + _window_ms},"count":{count},'
        f'"sum":{_float_text(total)},"avg":{_float_text(total / count)}}}'
    )
    return types.OutputRecord(
        route=_route,
        key=f"{key}|{window_start}".encode("utf-8"),
        value=value.encode("utf-8"),
        headers=[],
    )


def _float_text(x: float) -> str:
    """A finite float as serde_json writes it: the shortest digits that read back as `x`
    (`repr`'s), fixed notation for decimal exponents -5 to 15 (`0.00001`, `1.0`,
    `1000000000000000.0`), else `1.5e+16`, `1e-7`."""
    text = repr(x)
    if "e" not in text:
        return text  # repr is fixed for exponents -4 to 15, where serde_json is too
    mantissa, _, exponent = text.partition("e")
    if int(exponent) == -5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e{int(exponent):+d}"


# --- reading JSON ----------------------------------------------------------------------------


class _NotObject(Exception):
    """Not valid UTF-8, not JSON as serde_json reads it, or JSON but not an object."""


class _Number:
    """A number as written: a key's text, a value read exactly by `float`."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        # Python's pure-Python JSON scanner (not the C one) would take other Unicode digits.
        if not text.isascii():
            raise _NotObject
        self.text = text


# A field the object does not have (None is a field whose value is null).
_ABSENT = object()


class _Object(list):
    """An object's (key, value) pairs in document order, duplicates kept."""

    __slots__ = ()


def _reject_constant(name: str):
    """NaN, Infinity and -Infinity: Python's json accepts them, JSON does not."""
    raise _NotObject


_decoder = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_int=_Number,
    parse_float=_Number,
    parse_constant=_reject_constant,
)
_blank = re.compile(r"[ \t\n\r]*")
# Deeper than this, a document goes to `_walk`, not to json's recursive parser (about a
# thousand levels exhaust the wasm call stack, and serde_json has no depth limit here).
MAX_DEPTH = 200
_bracket = re.compile(r'"(?:[^"\\]|\\.)*"|([\[{])|[\]}]')
# One JSON token after blanks, for `_walk`.
_token = re.compile(
    r"""[ \t\n\r]*(?:
      (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
    | (?P<scalar>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)
    | (?P<mark>[\[\]{},:]))""",
    re.VERBOSE,
)


def _fields(value: Optional[bytes], *names: str) -> list:
    """The top-level fields `names` of the JSON object `value`, each the first occurrence's
    value (a str, a _Number, or another Python value for other kinds) or _ABSENT. Raises
    _NotObject when `value` is not a JSON object."""
    if value is None:
        raise _NotObject
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotObject from None
    i = _blank.match(text).end()
    if not text.startswith("{", i):
        raise _NotObject  # valid JSON or not, it is no object
    if _is_deep(text):
        members, end = _walk(text, i)
    else:
        try:
            members, end = _decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            raise _NotObject from None
    if _blank.match(text, end).end() != len(text):
        raise _NotObject
    found = [_ABSENT] * len(names)
    missing = len(names)
    for key, field in members:
        for n, name in enumerate(names):
            if found[n] is _ABSENT and key == name:
                found[n] = field
                missing -= 1
        if missing == 0:
            break
    return found


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


def _walk(text: str, i: int):
    """Checks the JSON object at `i` without recursing: its top-level (key, value) pairs (a
    string as str, a number as _Number, anything else as a stand-in of its kind) and the
    index just past it. Raises _NotObject on any syntax error."""
    close = {"[": "]", "{": "}"}
    stack = []  # the open brackets
    members = []
    key = None
    # What comes next: a value, a key, a colon, or more (`,` or a closing bracket); "first"
    # states also accept the closing bracket of an empty container.
    expect = "value"
    while True:
        m = _token.match(text, i)
        if m is None:
            raise _NotObject
        kind, token, i = m.lastgroup, m.group(m.lastgroup), m.end()
        if expect in ("first-value", "first-key") and token == close[stack[-1]]:
            expect = "more"
        elif expect in ("value", "first-value"):
            if token in ("[", "{"):
                if len(stack) == 1:
                    members.append((key, _Object() if token == "{" else []))
                stack.append(token)
                expect = "first-key" if token == "{" else "first-value"
                continue
            if kind == "mark":
                raise _NotObject
            if len(stack) == 1:
                members.append((key, _scalar(kind, token)))
            expect = "more"
            continue
        elif expect in ("key", "first-key"):
            if kind != "string":
                raise _NotObject
            if len(stack) == 1:
                key = json.loads(token)  # one flat string: no recursion
            expect = "colon"
            continue
        elif expect == "colon":
            if token != ":":
                raise _NotObject
            expect = "value"
            continue
        elif token == ",":
            expect = "key" if stack[-1] == "{" else "value"
            continue
        elif token != close[stack[-1]]:
            raise _NotObject
        stack.pop()  # a closing bracket
        if not stack:
            return members, i


def _scalar(kind: str, token: str):
    if kind == "string":
        return json.loads(token)
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    return _Number(token)
