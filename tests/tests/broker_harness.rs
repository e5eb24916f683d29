//! The test harness itself: a round trip through each broker kind keeps every record intact,
//! consumer groups commit on tansu, oversize records are refused, and the `switchyard` binary
//! can be found and run. The other Kafka tests rely on all of this.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use switchyard_tests::kafka::{Broker, Consumed, TestRecord};
use switchyard_tests::router_process::{run_switchyard, switchyard_binary};

const BASE_TS: i64 = 1_700_000_000_000;

/// Record `i`: key `key-{i % 37}` (so keys repeat and share a partition), value with `i`, two
/// headers (one null), an explicit timestamp.
fn record(i: usize) -> TestRecord {
    TestRecord {
        key: Some(format!("key-{}", i % 37).into_bytes()),
        value: Some(format!("value-{i}").into_bytes()),
        headers: vec![
            ("seq".into(), Some(i.to_string().into_bytes())),
            ("empty".into(), None),
        ],
        timestamp_ms: Some(BASE_TS + i as i64),
        ..Default::default()
    }
}

/// Asserts `got` is exactly records 0..n: each once, intact, per-partition offsets 0, 1, 2, …
/// in produce order, and each key in one partition.
fn assert_round_trip(got: &[Consumed], n: usize, topic: &str, partitions: i32) {
    assert_eq!(got.len(), n, "records read back");
    let mut seen = vec![false; n];
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_seq: BTreeMap<i32, usize> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for c in got {
        assert_eq!(c.topic, topic);
        assert!((0..partitions).contains(&c.partition), "{c:?}");
        let i: usize = c
            .header("seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seq header: {c:?}"));
        assert!(i < n && !seen[i], "record {i} unexpected or read twice");
        seen[i] = true;
        let want = record(i);
        assert_eq!(c.key, want.key, "key of {i}");
        assert_eq!(c.value, want.value, "value of {i}");
        assert_eq!(c.value_str(), format!("value-{i}"));
        assert_eq!(c.headers, want.headers, "headers of {i}");
        assert_eq!(c.header("empty"), None);
        assert_eq!(c.timestamp_ms, want.timestamp_ms, "timestamp of {i}");
        let expected_offset = next_offset.entry(c.partition).or_insert(0);
        assert_eq!(
            c.offset, *expected_offset,
            "offset of {i} in {}",
            c.partition
        );
        *expected_offset += 1;
        if let Some(prev) = last_seq.insert(c.partition, i) {
            assert!(prev < i, "partition {} out of produce order", c.partition);
        }
        let key = c.key.clone().unwrap_or_default();
        assert_eq!(
            *partition_of_key.entry(key).or_insert(c.partition),
            c.partition,
            "a key in two partitions"
        );
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(
        next_offset.len(),
        partitions as usize,
        "every partition used"
    );
}

#[test]
fn tansu_round_trip_keeps_every_record_intact() {
    let started = Instant::now();
    let broker = Broker::tansu().expect("tansu starts");
    eprintln!("tansu answered metadata after {:?}", started.elapsed());
    broker.create_topics(&[("harness", 3)]).expect("topic");
    broker
        .produce("harness", (0..1000).map(record))
        .expect("produce");
    let got = broker
        .consume_all(
            &["harness"],
            1000,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
        .expect("consume");
    assert_round_trip(&got, 1000, "harness", 3);
}

#[test]
fn mock_round_trip_keeps_every_record_intact() {
    let broker = Broker::mock(3).expect("mock cluster");
    assert!(broker.mock_cluster().is_some());
    broker.create_topics(&[("harness", 3)]).expect("topic");
    broker
        .produce("harness", (0..100).map(record))
        .expect("produce");
    let got = broker
        .consume_all(
            &["harness"],
            100,
            Duration::from_millis(500),
            Duration::from_secs(30),
        )
        .expect("consume");
    assert_round_trip(&got, 100, "harness", 3);
}

#[test]
fn tansu_consumer_group_commits_are_read_back() {
    let broker = Broker::tansu().expect("tansu starts");
    assert!(broker.mock_cluster().is_none());
    broker.create_topics(&[("grouped", 2)]).expect("topic");
    broker
        .produce("grouped", (0..50).map(record))
        .expect("produce");
    assert!(
        broker
            .committed("harness-group", "grouped")
            .unwrap()
            .is_empty(),
        "nothing committed yet"
    );
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "harness-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["grouped"]).expect("subscribe");
    let started = Instant::now();
    let mut first = None;
    let mut read = 0;
    while read < 50 && started.elapsed() < Duration::from_secs(60) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                first.get_or_insert(started.elapsed());
                read += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    eprintln!(
        "group: first record after {first:?}, all {read} after {:?}",
        started.elapsed()
    );
    assert_eq!(read, 50);
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let committed = broker
        .committed("harness-group", "grouped")
        .expect("committed");
    let per_partition = broker
        .consume_all(
            &["grouped"],
            50,
            Duration::from_millis(300),
            Duration::from_secs(30),
        )
        .expect("consume")
        .iter()
        .fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c.partition).or_insert(0i64) += 1;
            m
        });
    assert_eq!(committed, per_partition, "committed = next offset to read");
    assert!(
        broker
            .committed("other-group", "grouped")
            .unwrap()
            .is_empty(),
        "groups are separate"
    );
}

/// Keeps each delivery report's outcome.
#[derive(Default)]
struct Reports(Mutex<Vec<Result<(), KafkaError>>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        self.0.lock().expect("reports").push(outcome);
    }
}

/// Produces one record of `size` bytes with a producer whose own limit is far above it, so
/// what refuses it (if anything) is the broker; the delivery report's outcome.
fn produce_big(broker: &Broker, topic: &str, size: usize) -> Result<(), KafkaError> {
    let producer: BaseProducer<Reports> = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "20000000")
        .set("message.timeout.ms", "20000")
        .create_with_context(Reports::default())
        .expect("producer");
    let value = vec![b'x'; size];
    producer
        .send(BaseRecord::<[u8], [u8]>::to(topic).payload(&value[..]))
        .map_err(|(e, _)| e)?;
    let _ = producer.flush(Duration::from_secs(30));
    producer
        .context()
        .0
        .lock()
        .expect("reports")
        .pop()
        .unwrap_or(Err(KafkaError::Canceled))
}

#[test]
fn oversize_records_are_refused_by_the_producer_not_by_tansu() {
    let broker = Broker::tansu().expect("tansu starts");
    broker.create_topics(&[("big", 1)]).expect("topic");
    // librdkafka refuses a record over its message.max.bytes (1,000,000) before sending it.
    let refused = broker
        .produce("big", [TestRecord::new("k", &vec![b'x'; 1_100_000])])
        .expect_err("a 1.1 MB record is refused");
    let text = format!("{refused:#}");
    assert!(text.contains("MessageSizeTooLarge"), "{text}");
    // tansu itself has no such limit: with the producer's limit raised, 3 MB goes through.
    produce_big(&broker, "big", 3_000_000).expect("tansu takes 3 MB");
    let got = broker
        .consume_all(
            &["big"],
            1,
            Duration::from_millis(300),
            Duration::from_secs(30),
        )
        .expect("consume");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_ref().map(Vec::len), Some(3_000_000));
}

/// tansu 0.6 returns nothing for a fetch that starts inside a record batch; the harness's
/// producer writes one record per batch on tansu so a consumer can start at any offset.
#[test]
fn tansu_consumers_can_start_at_any_offset() {
    let broker = Broker::tansu().expect("tansu starts");
    broker.create_topics(&[("resume", 1)]).expect("topic");
    broker
        .produce(
            "resume",
            (0..10).map(|i| TestRecord {
                partition: Some(0),
                ..record(i)
            }),
        )
        .expect("produce");
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "harness-resume")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("resume", 0, Offset::Offset(5))
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut offsets = Vec::new();
    while offsets.len() < 5 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => offsets.push(m.offset()),
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
}

#[test]
fn switchyard_binary_runs() {
    let path = switchyard_binary().expect("binary");
    assert!(path.is_file());
    let (code, stdout, stderr) = run_switchyard(&["--help"]).expect("runs");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("inspect"), "{stdout}");
}
