"""The same routing as a Quix Streams app, at least once (Quix Streams' default guarantee).

    python route_quix.py BOOTSTRAP INPUT GROUP STANDARD URGENT ERRORS DLQ

One StreamingDataFrame over the input, each record sent with `to_topic` to the topic the
`route` plugin's rule picks (route_rule.py). Keys and values are read and written as bytes,
so every output carries its input's key and value unchanged. Quix Streams' defaults otherwise:
processing_guarantee "at-least-once", which flushes the producer and then commits the
processed offsets at each checkpoint, every commit_interval (5 s; commit_every 0). Client
settings are Switchyard's, as in route_loop.py (Quix Streams itself already makes the producer
idempotent). SIGTERM stops the app after a last checkpoint.
"""

import logging
import sys
import tempfile

from quixstreams import Application

from route_rule import CONSUMER_SETTINGS, PRODUCER_SETTINGS, arguments

bootstrap, input_topic, group, topics = arguments("route_quix.py", __doc__)
app = Application(
    broker_address=bootstrap,
    consumer_group=group,
    auto_offset_reset="earliest",
    consumer_extra_config=CONSUMER_SETTINGS,
    producer_extra_config=PRODUCER_SETTINGS,
    # Nothing stateful here; keeps Quix Streams' state directory out of the working directory.
    state_dir=tempfile.mkdtemp(prefix="route-quix-state-"),
    loglevel=logging.WARNING,
)
source = app.topic(input_topic, key_deserializer="bytes", value_deserializer="bytes")
outputs = {
    name: app.topic(name, key_serializer="bytes", value_serializer="bytes")
    for name in (topics.standard, topics.urgent, topics.errors, topics.dlq)
}
sdf = app.dataframe(source)
sdf.to_topic(lambda value, _key, _timestamp, _headers: outputs[topics.of(value)])
print(f"routing {input_topic} -> {vars(topics)} as group {group}", file=sys.stderr, flush=True)
app.run()
