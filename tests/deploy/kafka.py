#!/usr/bin/env python3
"""The Kafka client of the deployment tests (confluent-kafka, librdkafka 2.x bundled).

    kafka.py produce BROKER TOPIC < JSON lines {"key": "..", "value": {..}}
    kafka.py count BROKER TOPIC        records in the topic (every partition), from its offsets

Debian's kcat and python3-confluent-kafka use librdkafka 1.9, which cannot talk to tansu 0.6
(its ApiVersions answer fails to parse), and `tansu cat produce` gives every batch the same
offsets. Records are written one per batch: tansu returns nothing to a fetch that starts
inside a batch (tests/README.md).
"""

import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition


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
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "switchyard-deploy-tests"})
    metadata = consumer.list_topics(topic, timeout=10)
    total = 0
    for partition in metadata.topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        total += high - low
    consumer.close()
    print(total)


if __name__ == "__main__":
    command, broker, topic = sys.argv[1:4]
    {"produce": produce, "count": count}[command](broker, topic)
