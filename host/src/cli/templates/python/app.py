"""{{name}}: a Switchyard plugin.

The host calls `init` once per instance with the stage's config map, then `process` with
batches of records of one source partition, in offset order; `process` returns exactly one
verdict per record, in the same order. The contract is wit/plugin.wit; componentize-py turns
it into the `wit_world` module imported below (`componentize-py -d wit -w plugin bindings .`
writes it out, for an editor to read).

The example rule: a record whose JSON value has "priority": "high" goes to the route
`urgent`; a value that is not a JSON object is dead-lettered with the reason; every other
record passes on its current route. Replace `decide` with your own rule.

componentize-py makes a new `Transform` object for every call from the host, so anything
`init` prepares must live at module level (one module per plugin instance), not on `self`.
"""

import json
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


class Transform(exports.Transform):
    def init(self, config: List[Tuple[str, str]]) -> None:
        # The stage's [pipeline.stage.config] map, keys sorted. This plugin takes no config,
        # so any key is refused: a typo in the pipeline's config then fails the load, naming
        # the key, instead of being ignored. The Err's text is the reason the host reports.
        for key, _ in config:
            raise Err(f"unknown config key `{key}`: this plugin takes none")

    def process(self, batch: types.RecordBatch) -> List[types.Verdict]:
        # One verdict per record. An exception here dead-letters the batch's records one by
        # one (kind `trap`); prefer a Verdict_DeadLetter with a reason.
        return [decide(record.value) for record in batch.records]


def decide(value: Optional[bytes]) -> types.Verdict:
    """The rule for one record value (None: a null value, a tombstone).

    Routes are names declared in the pipeline's [pipeline.routes], never topic names: route
    `urgent` must be declared there (and given to `switchyard test-plugin` with
    `--route urgent`), or the record is dead-lettered as `bad-output`.
    """
    if value is None:
        return types.Verdict_DeadLetter("value is null")
    try:
        event = json.loads(value)
    except ValueError:  # also invalid UTF-8
        event = None
    if not isinstance(event, dict):
        return types.Verdict_DeadLetter("value is not a JSON object")
    if event.get("priority") == "high":
        return types.Verdict_Route("urgent")
    return types.Verdict_Pass()
