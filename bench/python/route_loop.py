"""A plain Python consume -> route -> produce loop on confluent-kafka, at least once.

    python route_loop.py BOOTSTRAP INPUT GROUP STANDARD URGENT ERRORS DLQ

What a team would write instead of a router: take what the consumer has (up to BATCH
records), send each to the topic the `route` plugin's rule picks (route_rule.py) with its key,
value and timestamp, then flush the producer and, once every record is acknowledged, commit
the consumed offsets synchronously. A failed delivery stops the loop before that commit, so
nothing is committed that was not written. Client settings are Switchyard's (idempotent
producer, acks=all, linger.ms=1; fetch.wait.max.ms=10). SIGTERM finishes the batch, commits
and exits 0.
"""

import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from route_rule import CONSUMER_SETTINGS, PRODUCER_SETTINGS, arguments

# Most records taken per poll, and so per flush and commit.
BATCH = 1000

bootstrap, input_topic, group, topics = arguments("route_loop.py", __doc__)
consumer = Consumer(
    {
        **CONSUMER_SETTINGS,
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
producer = Producer({**PRODUCER_SETTINGS, "bootstrap.servers": bootstrap})
failed = []


def delivered(error, message):
    if error is not None:
        failed.append(f"{message.topic()}: {error}")


stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
consumer.subscribe([input_topic])
print(f"routing {input_topic} -> {vars(topics)} as group {group}", file=sys.stderr, flush=True)
while not stopping:
    # Wait for one record, then take what else has arrived (consume waits out its timeout
    # unless the batch is full, so only the first wait may block).
    first = consumer.poll(1.0)
    if first is None:
        continue
    messages = [first] + consumer.consume(num_messages=BATCH - 1, timeout=0)
    for m in messages:
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        value = m.value()
        kind, timestamp = m.timestamp()
        while True:
            try:
                producer.produce(
                    topics.of(value),
                    value,
                    m.key(),
                    timestamp=timestamp if kind != 0 else 0,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                # The producer's queue is full: serve acknowledgements and try again.
                producer.poll(0.05)
        producer.poll(0)
    # At least once: every output acknowledged before the offsets past it are committed.
    left = producer.flush(30)
    if left or failed:
        sys.exit(f"not committed: {left} outputs unacknowledged, failures: {failed[:3]}")
    consumer.commit(asynchronous=False)
consumer.close()
