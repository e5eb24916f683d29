//! What the demo reads back: the checker thread that consumes every output topic, the live
//! progress line, and the accounting that proves each generated event landed in exactly
//! one topic. Not what is generated (`events`).

use super::{DEAD_LETTER, ID_HEADER, PARTITIONS, ROUTES, Summary};
use crate::kafka::now_ms;
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the checker saw, shared with the progress display.
#[derive(Default)]
pub(super) struct Seen {
    /// Event number -> the topics it was read from (with repeats).
    events: HashMap<u64, Vec<&'static str>>,
    per_topic: HashMap<&'static str, u64>,
    reasons: BTreeMap<String, u64>,
    /// Latencies of records created after the warm-up.
    latencies_ms: Vec<i64>,
    records: u64,
    /// Records created before this time (ms since the epoch) are not in the latency figures:
    /// the router's producer starts up during the first second of any run.
    pub(super) measure_from_ms: i64,
}

/// The start of a run whose latency is not reported (producer start-up).
pub(super) const WARM_UP: Duration = Duration::from_secs(1);

fn topic_name(topic: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|(_, t)| *t)
        .chain([DEAD_LETTER])
        .find(|t| *t == topic)
        .unwrap_or("other")
}

/// Reads every output topic from its current end until `stop`.
fn checker(
    client: ClientConfig,
    seen: Arc<Mutex<Seen>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "switchyard-demo-checker")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create the checker's consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in ROUTES.iter().map(|(_, t)| *t).chain([DEAD_LETTER]) {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::End)?;
        }
    }
    consumer.assign(&tpl)?;
    // An assignment at End resolves on the first fetch: poll until every partition has a
    // position, so nothing produced from now on is missed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = consumer.poll(Duration::from_millis(50));
        let positioned = consumer.position().map(|p| {
            p.elements()
                .iter()
                .all(|e| matches!(e.offset(), Offset::Offset(_)))
        });
        if positioned.unwrap_or(false) || Instant::now() > deadline {
            break;
        }
    }
    ready.store(true, Ordering::Release);
    while !stop.load(Ordering::Acquire) {
        let Some(result) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = match result {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "Demo checker: read error.");
                continue;
            }
        };
        let now = now_ms();
        let topic = topic_name(message.topic());
        let mut id = None;
        let mut reason = None;
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
                match h.key {
                    ID_HEADER => id = text.and_then(|t| t.parse::<u64>().ok()),
                    "switchyard-dlq-reason" => reason = text.map(str::to_owned),
                    _ => {}
                }
            }
        }
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.records += 1;
        *s.per_topic.entry(topic).or_default() += 1;
        if let Some(ts) = message.timestamp().to_millis()
            && ts >= s.measure_from_ms
        {
            s.latencies_ms.push(now - ts);
        }
        if let Some(reason) = reason {
            *s.reasons.entry(reason).or_default() += 1;
        }
        if let Some(id) = id {
            s.events.entry(id).or_default().push(topic);
        }
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[(((n - 1) as f64) * p).round() as usize] as f64,
    }
}

/// The checker on its own thread, reading every output topic from its current end.
pub(super) struct Checker {
    pub(super) seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Checker {
    /// Starts reading and returns once every output partition has a position.
    pub(super) fn start(client: &ClientConfig) -> anyhow::Result<Checker> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, seen, ready, stop) =
                (client.clone(), seen.clone(), ready.clone(), stop.clone());
            std::thread::Builder::new()
                .name("demo-checker".into())
                .spawn(move || checker(client, seen, ready, stop))?
        };
        while !ready.load(Ordering::Acquire) && !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Checker { seen, stop, thread })
    }

    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the checker panicked"))?
    }
}

/// Waits until every generated event was read from some topic, or 30 s pass with nothing new.
pub(super) fn wait_for_outputs(checker: &Checker, total: u64, started: Instant, terminal: bool) {
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let (accounted, records) = {
            let s = checker.seen();
            (s.events.len() as u64, s.records)
        };
        if accounted >= total || last_change.elapsed() > Duration::from_secs(30) {
            break;
        }
        if records != last_count {
            last_count = records;
            last_change = Instant::now();
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            progress(&checker.seen, started.elapsed(), terminal);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(&checker.seen, started.elapsed(), terminal);
    if terminal {
        eprintln!();
    }
}

pub(super) fn progress(seen: &Mutex<Seen>, elapsed: Duration, terminal: bool) {
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut recent: Vec<i64> = s.latencies_ms.iter().rev().take(5_000).copied().collect();
    recent.sort_unstable();
    let count = |t: &str| s.per_topic.get(t).copied().unwrap_or(0);
    let line = format!(
        "{:6.1} s | out {:>7} ({:>6.0}/s) | standard {:>7} | urgent {:>6} | errors {:>6} | dead-letter {:>5} | p99 {:>5.0} ms",
        elapsed.as_secs_f64(),
        s.records,
        s.records as f64 / elapsed.as_secs_f64().max(0.001),
        count("demo-standard"),
        count("demo-urgent"),
        count("demo-errors"),
        count(DEAD_LETTER),
        percentile(&recent, 0.99),
    );
    if terminal {
        eprint!("\r{line}");
        let _ = std::io::stderr().flush();
    } else {
        eprintln!("{line}");
    }
}

pub(super) fn summarize(seen: &Seen, expected: &[&'static str], seconds: f64) -> Summary {
    let mut summary = Summary {
        generated: expected.len() as u64,
        seconds,
        dead_letter_reasons: seen.reasons.clone(),
        ..Summary::default()
    };
    for (i, want) in expected.iter().enumerate() {
        match seen.events.get(&(i as u64)) {
            None => summary.missing += 1,
            Some(topics) => {
                let first = topics[0];
                if topics.iter().any(|t| *t != first) {
                    summary.split += 1;
                }
                if first != *want {
                    summary.rerouted += 1;
                }
                summary.duplicates += topics.len() as u64 - 1;
                *summary.per_topic.entry(first.to_owned()).or_default() += 1;
            }
        }
    }
    let mut latencies = seen.latencies_ms.clone();
    latencies.sort_unstable();
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)] {
        summary
            .latency_ms
            .insert(name.to_owned(), percentile(&latencies, p));
    }
    summary.all_accounted = summary.missing == 0 && summary.split == 0;
    summary
}

/// Reads every aggregate the windows pipeline wrote (until nothing new comes for a second)
/// and keeps the last one of each window.
pub(super) fn read_aggregates(client: &ClientConfig) -> anyhow::Result<super::WindowsSummary> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{Message as _, Offset, TopicPartitionList};
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "switchyard-demo-aggregates-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the aggregates reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..super::PARTITIONS {
        tpl.add_partition_offset(super::AGGREGATES, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut last: std::collections::BTreeMap<Vec<u8>, serde_json::Value> = Default::default();
    let mut aggregates = 0u64;
    let mut quiet = std::time::Instant::now();
    let started = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) && started.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            quiet = std::time::Instant::now();
            aggregates += 1;
            let value = m
                .payload()
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or(serde_json::Value::Null);
            last.insert(m.key().unwrap_or_default().to_vec(), value);
        }
    }
    let windows = last.len() as u64;
    let mut busiest: Vec<serde_json::Value> = last.into_values().collect();
    busiest.sort_by_key(|v| std::cmp::Reverse(v["count"].as_u64().unwrap_or(0)));
    busiest.truncate(5);
    Ok(super::WindowsSummary {
        aggregates,
        windows,
        busiest,
    })
}
