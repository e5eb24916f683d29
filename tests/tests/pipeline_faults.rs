//! Faults injected with librdkafka's mock cluster while a pipeline runs: produce errors,
//! commit errors, a broker down and up, slow round trips. Whatever happens, no record is lost.

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_tests::kafka::{Broker, Consumed, TestRecord, event_records, missing, tally};
use switchyard_tests::pipelines::{
    ROUTING_OUTPUTS, Running, create_event_topics, event_topics, read_routing_outputs,
    routing_config, start,
};

fn setup(name: &str, brokers: i32) -> (Broker, Running) {
    let broker = Broker::mock(brokers).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let running = start_on(&broker, name);
    (broker, running)
}

/// Runs the routing pipeline (consumer group `switchyard-events`) on `broker`.
fn start_on(broker: &Broker, name: &str) -> Running {
    let config = routing_config(broker, name, "", "commit_interval_ms = 100");
    start(&config).expect("pipeline starts")
}

/// Every event 0..n was written at least once, to a route topic (never dead-lettered), and
/// each key's events are in input order within each output partition.
fn assert_all_delivered(out: &[Consumed], n: u64) {
    for c in out {
        assert_ne!(c.topic, "events-dlq", "dead-lettered: {:?}", c.headers);
    }
    let lost = missing(&tally(out), n);
    assert!(lost.is_empty(), "lost (first 10): {lost:?}");
    assert_key_order(out);
}

/// Within each output partition, each key's event numbers never go down (in offset order).
fn assert_key_order(out: &[Consumed]) {
    let mut sorted: Vec<&Consumed> = out.iter().collect();
    sorted
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let mut last: BTreeMap<(&str, i32, Option<&[u8]>), u64> = BTreeMap::new();
    for c in sorted {
        let n = c.event_number();
        let key = (c.topic.as_str(), c.partition, c.key.as_deref());
        if let Some(before) = last.insert(key, n) {
            assert!(
                before <= n,
                "{} partition {}: event {n} written after event {before} of the same key",
                c.topic,
                c.partition
            );
        }
    }
}

/// Reads every output of events 0..n, then stops the pipeline cleanly, and asserts that each
/// event was delivered ([`assert_all_delivered`]).
fn assert_all_delivered_then_stop(broker: &Broker, running: Running, n: u64) {
    let out = running.stop_after_reading(broker, &ROUTING_OUTPUTS, n as usize, SETTLE);
    assert_all_delivered(&out, n);
}

const SETTLE: Duration = Duration::from_secs(1);

#[test]
fn produce_errors_are_retried_and_nothing_is_lost() {
    const N: u64 = 3_000;
    let (broker, running) = setup("produce-errors", 1);
    let cluster = broker.mock_cluster().expect("mock");
    // The next 30 produce requests fail with retriable errors.
    let errors: Vec<RDKafkaRespErr> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS
            } else {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT
            }
        })
        .collect();
    cluster.request_errors(RDKafkaApiKey::Produce, &errors);
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    let out = read_routing_outputs(&broker, N, SETTLE);
    let counters = running.counters("events");
    running.stop().expect("clean stop");
    assert_all_delivered(&out, N);
    assert_eq!(counters.routed, N, "{counters:?}");
    assert_eq!(counters.dead_lettered, 0);
}

#[test]
fn commit_errors_are_retried_and_every_offset_is_committed_in_the_end() {
    const N: u64 = 3_000;
    let (broker, running) = setup("commit-errors", 1);
    let cluster = broker.mock_cluster().expect("mock");
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 10],
    );
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    let out = read_routing_outputs(&broker, N, SETTLE);
    // The running pipeline gets its commits through once the errors are used up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let committed = || -> i64 {
        broker
            .committed("switchyard-events", "events")
            .map(|c| c.values().sum())
            .unwrap_or(0)
    };
    while committed() < N as i64 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        committed(),
        N as i64,
        "every record committed while running"
    );
    running.stop().expect("clean stop");
    assert_all_delivered(&out, N);
    let committed: i64 = broker
        .committed("switchyard-events", "events")
        .expect("committed offsets")
        .values()
        .sum();
    assert_eq!(
        committed, N as i64,
        "every record committed after the errors"
    );
}

#[test]
fn a_broker_down_then_up_loses_nothing() {
    const N: u64 = 4_000;
    let (broker, running) = setup("broker-down", 3);
    let cluster = broker.mock_cluster().expect("mock");
    broker
        .produce("events", event_records(0..N / 2, 10_000))
        .expect("produced");
    // Take a broker down mid-stream: partitions it leads cannot be written or read until
    // it comes back.
    cluster.broker_down(2).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(2).expect("broker up");
    broker
        .produce("events", event_records(N / 2..N, 10_000))
        .expect("produced");
    assert_all_delivered_then_stop(&broker, running, N);
}

/// Events 0..n on a fresh mock cluster, then the routing pipeline (`tables` and `extra` as in
/// [`routing_config`]) started with its first `failures` produce requests failing
/// (`NOT_ENOUGH_REPLICAS`, retriable). The input is written first, so only the router's
/// writes fail.
fn start_with_failing_writes(
    name: &str,
    n: u64,
    failures: usize,
    tables: &str,
    extra: &str,
) -> (Broker, Running) {
    let broker = Broker::mock(1).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    broker
        .produce("events", event_records(0..n, 10_000))
        .expect("produced");
    broker.mock_cluster().expect("mock").request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; failures],
    );
    let config = routing_config(&broker, name, tables, extra);
    let running = start(&config).expect("pipeline starts");
    (broker, running)
}

/// With a finite `message.timeout.ms` (librdkafka's default is 300 s; Switchyard's is no
/// limit), writes still failing when it passes come back to Switchyard, which writes them
/// again after a backoff: they are counted as retries and nothing is lost. (Their order
/// against later records of the partition is not kept: the README says so.)
#[test]
fn writes_past_a_short_message_timeout_are_retried_by_switchyard() {
    const N: u64 = 1_000;
    // 300 failures last far longer than the 1 s message timeout (librdkafka backs off
    // 100 ms to 1 s between tries).
    let (broker, running) = start_with_failing_writes(
        "short-timeout",
        N,
        300,
        "[kafka.producer]\n\"message.timeout.ms\" = \"1000\"\n",
        "commit_interval_ms = 100",
    );
    let out = read_routing_outputs(&broker, N, SETTLE);
    let counters = running.counters("events");
    running.stop().expect("clean stop");
    for c in &out {
        assert_ne!(c.topic, "events-dlq", "dead-lettered: {:?}", c.headers);
    }
    let lost = missing(&tally(&out), N);
    assert!(lost.is_empty(), "lost (first 10): {lost:?}");
    assert!(
        counters.produce_retries > 0,
        "Switchyard retried the writes librdkafka gave up on: {counters:?}"
    );
    assert_eq!(counters.routed, N, "{counters:?}");
}

/// Offsets are committed only after the outputs are acknowledged, checked while the outputs
/// are held back: the router's produce requests fail for a while (commits keep working), and
/// at every moment the committed offsets add up to no more records than were acknowledged
/// (each record has one output). Committing on processing rather than on acknowledgement
/// would commit ahead of the acknowledgements during the failures.
#[test]
fn offsets_are_committed_only_after_the_outputs_are_acknowledged() {
    const N: u64 = 2_000;
    // 100 failures (retried in order by librdkafka) hold every output back for seconds.
    let (broker, running) =
        start_with_failing_writes("commit-after-ack", N, 100, "", "commit_interval_ms = 50");
    let committed = || -> i64 {
        broker
            .committed("switchyard-events", "events")
            .map(|c| c.values().sum())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    let mut held_back_samples = 0;
    loop {
        let c = committed();
        let acknowledged = running.counters("events").routed;
        assert!(
            c <= acknowledged as i64,
            "committed {c} records with only {acknowledged} outputs acknowledged"
        );
        samples += 1;
        if acknowledged < N {
            held_back_samples += 1;
        }
        if c == N as i64 || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(committed(), N as i64, "everything committed in the end");
    assert!(
        held_back_samples >= 5,
        "sampled while outputs were held back: {held_back_samples} of {samples}"
    );
    running.stop().expect("clean stop");
}

#[test]
fn slow_round_trips_delay_but_lose_nothing() {
    const N: u64 = 2_000;
    let (broker, running) = setup("slow", 1);
    let cluster = broker.mock_cluster().expect("mock");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(200))
        .expect("delay set");
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    assert_all_delivered_then_stop(&broker, running, N);
}

/// A dead-letter topic that refuses writes: the pipeline reports unhealthy, never commits a
/// partition past a record whose dead letter is unwritten (the other partitions go on), and
/// keeps retrying; once the topic accepts writes again the dead letters arrive and
/// committing resumes.
#[test]
fn a_failing_dead_letter_topic_stops_commits_until_it_recovers() {
    const N: u64 = 200;
    let (broker, running) = setup("dlq-down", 1);
    let cluster = broker.mock_cluster().expect("mock");
    cluster
        .topic_error(
            "events-dlq",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("topic error set");
    // Every 20th record is not JSON: `route` dead-letters it.
    broker
        .produce(
            "events",
            (0..N).map(|i| {
                if i % 20 == 7 {
                    TestRecord::new("bad", b"not json")
                } else {
                    event_records(i..i + 1, 10_000).next().expect("one record")
                }
            }),
        )
        .expect("produced");
    let status = running.status("events");
    let failing = running.wait_for("events", Duration::from_secs(60), |_| {
        status
            .health
            .dead_letter_failing
            .load(std::sync::atomic::Ordering::Acquire)
    });
    assert!(
        !status.health.is_healthy(),
        "unhealthy while dead letters fail: {failing:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let committed_while_failing = broker
        .committed("switchyard-events", "events")
        .expect("committed offsets");
    // Where each partition's first dead-lettered record ("bad" keys) is.
    let input = broker
        .consume_all(
            &["events"],
            N as usize,
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .expect("input read back");
    let mut first_bad: BTreeMap<i32, i64> = BTreeMap::new();
    for c in input
        .iter()
        .filter(|c| c.key.as_deref() == Some(&b"bad"[..]))
    {
        let first = first_bad.entry(c.partition).or_insert(c.offset);
        *first = (*first).min(c.offset);
    }
    for (partition, committed) in &committed_while_failing {
        if let Some(bad) = first_bad.get(partition) {
            assert!(
                committed <= bad,
                "partition {partition} committed to {committed}, past its unwritten dead letter at {bad}"
            );
        }
    }
    let elsewhere: i64 = committed_while_failing
        .iter()
        .filter(|(p, _)| !first_bad.contains_key(p))
        .map(|(_, c)| *c)
        .sum();
    let clean_partitions = committed_while_failing.len() - first_bad.len();
    assert!(
        clean_partitions == 0 || elsewhere > 0,
        "partitions without dead letters keep committing: {committed_while_failing:?}, bad at {first_bad:?}"
    );
    assert_eq!(running.counters("events").dead_lettered, 0);

    cluster
        .topic_error("events-dlq", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .expect("topic error cleared");
    let counters = running.wait_for("events", Duration::from_secs(60), |c| {
        c.dead_lettered == N / 20
    });
    assert_eq!(counters.dead_lettered, N / 20, "{counters:?}");
    assert!(status.health.is_healthy());
    running.stop().expect("clean stop");
    let committed: i64 = broker
        .committed("switchyard-events", "events")
        .expect("committed offsets")
        .values()
        .sum();
    assert_eq!(committed, N as i64);
    let dlq = broker
        .consume_all(
            &["events-dlq"],
            (N / 20) as usize,
            Duration::from_millis(500),
            Duration::from_secs(30),
        )
        .expect("dead letters read");
    assert_eq!(dlq.len() as u64, N / 20);
}

/// The commit made before partitions change hands or the process stops has a deadline:
/// with the group coordinator answering it commits, and when the coordinator stops answering
/// it gives up after its timeout instead of waiting as librdkafka's synchronous commit does
/// (there a request times out only after 60 s, and every retry waits as long again).
#[test]
fn the_final_commit_gives_up_when_the_group_coordinator_does_not_answer() {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::mocking::MockCoordinator;
    use switchyard::source::commit_sync;
    const GROUP: &str = "silent-coordinator";
    let broker = Broker::mock(3).expect("mock cluster");
    broker.create_topics(&[("events", 1)]).expect("topic");
    let cluster = broker.mock_cluster().expect("mock");
    // Broker 3 coordinates the group and leads nothing.
    cluster
        .partition_leader("events", 0, Some(1))
        .expect("leader set");
    cluster
        .coordinator(MockCoordinator::Group(GROUP.into()), 3)
        .expect("coordinator set");
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let offsets = |o: i64| vec![("events".to_owned(), 0, o)];
    assert!(commit_sync(
        &consumer,
        "t",
        &offsets(5),
        Duration::from_secs(10)
    ));
    assert_eq!(
        broker.committed(GROUP, "events").expect("committed"),
        [(0, 5)].into_iter().collect(),
        "committed while the coordinator answers"
    );

    cluster
        .broker_round_trip_time(3, Duration::from_secs(600))
        .expect("coordinator slowed down");
    let (tx, rx) = std::sync::mpsc::channel();
    // Not joined: dropping a group consumer waits on the coordinator too, and the test
    // process ends regardless.
    std::thread::spawn(move || {
        let _ = tx.send(commit_sync(
            &consumer,
            "t",
            &offsets(7),
            Duration::from_secs(2),
        ));
    });
    let committed = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the commit gave up within its deadline, not librdkafka's");
    assert!(!committed, "a commit nobody answered is reported as failed");
}

/// A stop finishes, within its commit and close deadlines, when the group coordinator stops
/// answering after the records were written: librdkafka's consumer close waits for the
/// coordinator without a limit (a stop took over 150 s before the close had a deadline).
#[test]
fn a_stop_finishes_when_the_group_coordinator_does_not_answer() {
    use rdkafka::mocking::MockCoordinator;
    const N: u64 = 500;
    let broker = Broker::mock(3).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let cluster = broker.mock_cluster().expect("mock");
    // Broker 3 coordinates the group and leads no partition: slowing it down stalls only the
    // group (commits, heartbeats, leaving), never a fetch or a produce.
    for (topic, partitions) in event_topics(&ROUTING_OUTPUTS) {
        for p in 0..partitions {
            cluster
                .partition_leader(topic, p, Some(1 + p % 2))
                .expect("leader set");
        }
    }
    cluster
        .coordinator(MockCoordinator::Group("switchyard-events".into()), 3)
        .expect("coordinator set");
    let running = start_on(&broker, "silent-coordinator-stop");
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    let out = read_routing_outputs(&broker, N, SETTLE);
    assert_all_delivered(&out, N);

    cluster
        .broker_round_trip_time(3, Duration::from_secs(600))
        .expect("coordinator slowed down");
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(running.stop());
    });
    // Commit (10 s) + close (15 s) + the producer's flush, with room for a loaded machine.
    let stopped = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the stop finished within its deadlines");
    eprintln!(
        "stopped in {:?} with a silent coordinator",
        started.elapsed()
    );
    stopped.expect("a stop with nothing in flight is clean");
}
