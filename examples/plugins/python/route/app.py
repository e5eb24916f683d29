"""`route` in Python: the same decisions as plugins/route (Rust).

Config keys (all optional): priority_field (priority), urgent_values (high, comma-separated),
urgent_route (urgent), type_field (event_type), error_values (error), error_route (errors).

1. the priority field's value is one of urgent_values -> route urgent_route;
2. else the type field's value is one of error_values -> route error_route;
3. else pass. A value that is not a JSON object is dead-lettered with the reason.

componentize-py makes a new `Transform` object for every call from the host, so what `init`
sets up lives at module level (one module per plugin instance), not on `self`.
"""

import json
from typing import List, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

KEYS = {"priority_field", "urgent_values", "urgent_route", "type_field", "error_values", "error_route"}

_config = {}


def _text(value) -> str:
    """A field's value as the Rust plugin compares it: a string by its text, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class Transform(exports.Transform):
    def init(self, config: List[Tuple[str, str]]) -> None:
        given = dict(config)
        unknown = sorted(set(given) - KEYS)
        if unknown:
            raise Err(f"unknown config key {unknown[0]} (known: {', '.join(sorted(KEYS))})")
        _config.update(
            priority_field=given.get("priority_field", "priority"),
            urgent=set(given.get("urgent_values", "high").split(",")),
            urgent_route=given.get("urgent_route", "urgent"),
            type_field=given.get("type_field", "event_type"),
            errors=set(given.get("error_values", "error").split(",")),
            error_route=given.get("error_route", "errors"),
        )

    def process(self, batch: types.RecordBatch) -> List[types.Verdict]:
        return [self._one(record) for record in batch.records]

    def _one(self, record: types.InputRecord) -> types.Verdict:
        if record.value is None:
            return types.Verdict_DeadLetter("null value")
        try:
            event = json.loads(record.value)
        except ValueError as e:
            return types.Verdict_DeadLetter(f"invalid JSON: {e}")
        if not isinstance(event, dict):
            return types.Verdict_DeadLetter("not a JSON object")
        c = _config
        if c["priority_field"] in event and _text(event[c["priority_field"]]) in c["urgent"]:
            return types.Verdict_Route(c["urgent_route"])
        if c["type_field"] in event and _text(event[c["type_field"]]) in c["errors"]:
            return types.Verdict_Route(c["error_route"])
        return types.Verdict_Pass()
