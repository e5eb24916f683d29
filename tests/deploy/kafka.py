#!/usr/bin/env python3
"""The Kafka client of the deployment tests (confluent-kafka, librdkafka 2.x bundled).

    kafka.py produce BROKER TOPIC < JSON lines {"key": "..", "value": {..}}
    kafka.py count BROKER TOPIC        records in the topic now (every partition, read)

Debian's kcat and python3-confluent-kafka use librdkafka 1.9, which cannot talk to tansu 0.6
(its ApiVersions answer fails to parse), and `tansu cat produce` gives every batch the same
offsets. Records are written one per batch: tansu returns nothing to a fetch that starts
inside a batch (tests/README.md).
"""

import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition


def produce(broker, topic):
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 0, "batch.num.messages": 1})
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    for line in sys.stdin:
        record = json.loads(line)
        producer.produce(topic, key=record.get("key"), value=json.dumps(record["value"]),
                         on_delivery=delivered)
        producer.flush(10)
    if producer.flush(10) != 0 or errors:
        raise SystemExit(f"produce to {topic} failed: {errors[:3]}")


def count(broker, topic):
    # Read, not computed from the offsets: tansu's high watermark does not follow the records
    # of a batch of several (as the router's producer writes them).
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "switchyard-deploy-tests",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    total, at_end, deadline = 0, set(), time.monotonic() + 20
    while len(at_end) < len(partitions):
        if time.monotonic() > deadline:
            raise SystemExit(f"{topic}: no end of partition seen within 20 s")
        message = consumer.poll(1)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            raise SystemExit(f"{topic}: {message.error()}")
        total += 1
    consumer.close()
    print(total)


if __name__ == "__main__":
    command, broker, topic = sys.argv[1:4]
    {"produce": produce, "count": count}[command](broker, topic)
