"""The `route` plugin's rule (plugins/route/src/lib.rs, default config) in plain Python.

Shared by the benches' Python routers (route_loop.py, route_quix.py):

1. `priority` is "high" -> the urgent topic;
2. else `event_type` is "error" -> the errors topic;
3. else the standard topic.

A value that is not a JSON object (null, not UTF-8, invalid JSON, an array, ...) goes to the
dead-letter topic, as the plugin dead-letters it. The plugin scans the two fields without
building the object; here `json.loads` builds it, as a Python router would.
"""

import json
import os
import sys


class Topics:
    """The four output topics, from the command line: STANDARD URGENT ERRORS DLQ."""

    def __init__(self, standard, urgent, errors, dlq):
        self.standard = standard
        self.urgent = urgent
        self.errors = errors
        self.dlq = dlq

    def of(self, value):
        """The topic a record with this value (bytes or None) goes to."""
        try:
            event = json.loads(value)
        except (TypeError, ValueError):
            return self.dlq
        if not isinstance(event, dict):
            return self.dlq
        if event.get("priority") == "high":
            return self.urgent
        if event.get("event_type") == "error":
            return self.errors
        return self.standard


def arguments(script, doc):
    """(bootstrap, input topic, group, Topics) from argv, or exits with the usage."""
    if len(sys.argv) != 8:
        sys.exit(f"usage: {script} BOOTSTRAP INPUT GROUP STANDARD URGENT ERRORS DLQ\n\n{doc}")
    bootstrap, input_topic, group, *outputs = sys.argv[1:]
    return bootstrap, input_topic, group, Topics(*outputs)


# Switchyard's Kafka client settings (host/src/kafka.rs), given to every Python router so that
# the routers differ in their own code, not in client tuning. With PY_CLIENT=defaults in the
# environment the routers keep librdkafka's defaults (and Quix Streams' own) but for the
# idempotent producer with acks=all: a router as written without that tuning.
if os.environ.get("PY_CLIENT") == "defaults":
    CONSUMER_SETTINGS = {}
    PRODUCER_SETTINGS = {"enable.idempotence": True, "acks": "all"}
else:
    CONSUMER_SETTINGS = {
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 10,
        "session.timeout.ms": 10000,
    }
    PRODUCER_SETTINGS = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "partitioner": "murmur2_random",
    }
