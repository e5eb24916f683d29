//! Writing outputs and dead letters to Kafka, and finishing each source record once every one
//! of its writes is acknowledged.
//!
//! Every record sent carries a [`Ticket`] naming its source record. When the broker
//! acknowledges it, the source record's count of outstanding writes drops; at zero the record
//! is finished in the [`Tracker`] and may be committed past. A write the broker refuses:
//!
//! - for good (too large, topic missing, not authorized, invalid): a routed record is
//!   dead-lettered instead, with that reason (kind `undeliverable`); a dead letter that is
//!   too large is written again without its value (the source offset in its headers points at
//!   the original);
//! - otherwise (timeouts, a broker down, a dead-letter topic that refuses writes): written
//!   again after a backoff, for as long as it takes. While a dead-letter write is failing the
//!   pipeline is unhealthy and commits nothing.
//!
//! Nothing is ever dropped: the only ways out for a ticket are an acknowledgement or the
//! process ending, and then the record was not committed past.
//!
//! The delivery callback runs on the producer's polling thread and must not block on the
//! producer (a full queue empties only when that thread serves acknowledgements), so every
//! write again goes through the retry thread.

use crate::kafka::{self, add_header, headers_from_kafka, now_ms};
use crate::metrics::PipelineMetrics;
use crate::plugin::{Header, RouteId};
use crate::router::{Outgoing, Router, SourceOffset};
use crate::source::tracker::{InFlight, PartitionHandle, Tracker};
use crate::status::{Health, PipelineCounters, PipelineStatus};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A source record with several writes outstanding.
#[derive(Debug)]
pub struct Pending {
    record: InFlight,
    remaining: AtomicU32,
}

impl Pending {
    /// A source record with `writes` writes to wait for.
    pub fn new(handle: Arc<PartitionHandle>, offset: i64, writes: u32) -> Arc<Self> {
        Arc::new(Pending {
            record: InFlight { handle, offset },
            remaining: AtomicU32::new(writes),
        })
    }
}

/// The source record a write belongs to.
#[derive(Debug)]
pub enum SourceRecord {
    /// Its only write: the record is finished when this one is acknowledged (most records;
    /// no shared count to allocate and update).
    Only(InFlight),
    /// One of several writes: finished when the last is acknowledged.
    Shared(Arc<Pending>),
}

impl SourceRecord {
    fn record(&self) -> &InFlight {
        match self {
            SourceRecord::Only(record) => record,
            SourceRecord::Shared(pending) => &pending.record,
        }
    }

    /// Counts one write acknowledged; the source record if that was its last.
    fn acknowledge(&self) -> Option<&InFlight> {
        match self {
            SourceRecord::Only(record) => Some(record),
            SourceRecord::Shared(pending) => {
                (pending.remaining.fetch_sub(1, Ordering::AcqRel) == 1).then_some(&pending.record)
            }
        }
    }
}

/// One write, on its way to the broker.
#[derive(Debug)]
pub struct Ticket {
    source: SourceRecord,
    /// The route written to; `None` for a dead letter.
    route: Option<RouteId>,
    dead_letter: bool,
    attempts: u32,
}

impl Ticket {
    /// A write for `source`, to `route` or (`None`) to the dead-letter topic.
    pub fn new(source: SourceRecord, route: Option<RouteId>) -> Box<Self> {
        Box::new(Ticket {
            source,
            route,
            dead_letter: route.is_none(),
            attempts: 0,
        })
    }
}

/// What the producer's callbacks need.
struct Shared {
    pipeline: String,
    tracker: Arc<Tracker>,
    health: Arc<Health>,
    counters: Arc<PipelineCounters>,
    metrics: PipelineMetrics,
    /// Builds dead letters for refused writes. Only its pipeline name, dead-letter topic and
    /// format are used, none of which changes while the pipeline runs.
    router: Router,
    retry: Mutex<Sender<Retry>>,
}

/// The producer's context: delivery reports and logs.
pub struct SinkContext {
    shared: Arc<Shared>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::log(&self.shared.pipeline, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(pipeline = %self.shared.pipeline, error = %error, reason, "Producer error.");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        match result {
            Ok(message) => {
                if let Some(ts) = message.timestamp().to_millis() {
                    let age_ms = (now_ms() - ts).max(0);
                    self.shared
                        .metrics
                        .end_to_end
                        .observe(age_ms as f64 / 1000.0);
                }
                self.shared.acknowledged(&ticket)
            }
            Err((error, message)) => {
                let out = Outgoing {
                    topic: Arc::from(message.topic()),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers: headers_from_kafka(message.headers()),
                    timestamp_ms: message.timestamp().to_millis(),
                    dead_letter: ticket.dead_letter,
                };
                self.shared.refused(out, ticket, error);
            }
        }
    }
}

/// A write to try again, no earlier than `at`.
struct Retry {
    at: Instant,
    out: Outgoing,
    ticket: Box<Ticket>,
}

impl Shared {
    fn acknowledged(&self, ticket: &Ticket) {
        if ticket.dead_letter {
            PipelineCounters::add(&self.counters.dead_lettered, 1);
            if self
                .health
                .dead_letter_failing
                .swap(false, Ordering::AcqRel)
            {
                tracing::info!(pipeline = %self.pipeline, "Dead-letter writes work again; committing resumes.");
            }
        } else {
            PipelineCounters::add(&self.counters.routed, 1);
            if let Some(counter) = ticket
                .route
                .and_then(|r| self.metrics.records_out.get(usize::from(r.0)))
            {
                counter.inc();
            }
        }
        if let Some(record) = ticket.source.acknowledge() {
            self.tracker.finish(record);
        }
    }

    /// The broker (or librdkafka, before sending) refused a write.
    fn refused(&self, mut out: Outgoing, mut ticket: Box<Ticket>, error: &KafkaError) {
        let code = error.rdkafka_error_code();
        let permanent = code.is_some_and(is_permanent);
        ticket.attempts += 1;
        let source = ticket.source.record();
        if !ticket.dead_letter && permanent {
            PipelineCounters::add(&self.counters.undeliverable, 1);
            self.metrics.dead_lettered("", crate::router::UNDELIVERABLE);
            let mut reason = format!("cannot write to topic `{}`: {error}", out.topic);
            if code.is_some_and(is_too_large) {
                reason.push_str(&value_omitted(&out));
                out.value = None;
            }
            tracing::warn!(
                pipeline = %self.pipeline, topic = %out.topic, source_topic = %source.handle.topic,
                source_partition = source.handle.partition, source_offset = source.offset,
                error = %error, "Output refused by the broker; dead-lettering it."
            );
            let at = SourceOffset {
                topic: &source.handle.topic,
                partition: source.handle.partition,
                offset: source.offset,
            };
            let dead = self.router.undeliverable(at, out, reason, now_ms());
            ticket.dead_letter = true;
            ticket.route = None;
            ticket.attempts = 0;
            self.schedule(dead, ticket, Duration::ZERO);
            return;
        }
        if ticket.dead_letter && code.is_some_and(is_too_large) && out.value.is_some() {
            let note = value_omitted(&out);
            out.value = None;
            out.headers.push(Header {
                key: format!("{}value-omitted", crate::router::DLQ_PREFIX),
                value: Some(note.trim_start_matches("; ").as_bytes().to_vec()),
            });
            self.schedule(out, ticket, Duration::ZERO);
            return;
        }
        PipelineCounters::add(&self.counters.produce_retries, 1);
        self.metrics.produce_retries.inc();
        let backoff = backoff(ticket.attempts);
        if ticket.dead_letter {
            if !self.health.dead_letter_failing.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    pipeline = %self.pipeline, topic = %out.topic, error = %error,
                    "DEAD-LETTER WRITE FAILED: committing stops until it succeeds; retrying."
                );
            }
        } else {
            tracing::warn!(
                pipeline = %self.pipeline, topic = %out.topic, error = %error,
                attempt = ticket.attempts, backoff_ms = backoff.as_millis() as u64,
                "Write failed; retrying."
            );
        }
        self.schedule(out, ticket, backoff);
    }

    fn schedule(&self, out: Outgoing, ticket: Box<Ticket>, after: Duration) {
        let retry = Retry {
            at: Instant::now() + after,
            out,
            ticket,
        };
        let sent = self
            .retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(retry);
        if sent.is_err() {
            // The retry thread is gone: the pipeline is shutting down. The record stays
            // unfinished, so it is not committed past and will be read again.
            tracing::warn!(pipeline = %self.pipeline, "Write not retried: shutting down; it will be redelivered.");
        }
    }
}

fn value_omitted(out: &Outgoing) -> String {
    format!(
        "; value omitted ({} bytes); the source record holds it",
        out.value.as_ref().map_or(0, Vec::len)
    )
}

/// 100 ms, doubling, at most 5 s.
fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(5))
}

/// Errors no retry can fix: the record itself or its destination is wrong.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        code,
        E::MessageSizeTooLarge
            | E::InvalidMessageSize
            | E::MessageBatchTooLarge
            | E::UnknownTopic
            | E::UnknownPartition
            | E::UnknownTopicOrPartition
            | E::InvalidTopic
            | E::TopicAuthorizationFailed
            | E::InvalidRecord
            | E::InvalidMessage
            | E::PolicyViolation
    )
}

fn is_too_large(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        code,
        E::MessageSizeTooLarge | E::InvalidMessageSize | E::MessageBatchTooLarge
    )
}

/// The pipeline's producer.
#[derive(Clone)]
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    shared: Arc<Shared>,
}

/// The sink and its retry thread; stop it with [`SinkHandle::close`].
pub struct SinkHandle {
    /// The sink, cloned into every worker.
    pub sink: Sink,
    stop: Arc<AtomicBool>,
    retry_thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Creates the producer and starts the retry thread.
    pub fn start(
        config: &ClientConfig,
        pipeline: &str,
        router: Router,
        status: Arc<PipelineStatus>,
        metrics: PipelineMetrics,
    ) -> anyhow::Result<SinkHandle> {
        let (retry_tx, retry_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            pipeline: pipeline.to_owned(),
            tracker: status.tracker.clone(),
            health: status.health.clone(),
            counters: status.counters.clone(),
            metrics,
            router,
            retry: Mutex::new(retry_tx),
        });
        let producer: ThreadedProducer<SinkContext> = config
            .create_with_context(SinkContext {
                shared: shared.clone(),
            })
            .map_err(|e| anyhow::anyhow!("pipeline {pipeline}: cannot create the producer: {e}"))?;
        let sink = Sink { producer, shared };
        let stop = Arc::new(AtomicBool::new(false));
        let retry_thread = {
            let sink = sink.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("{pipeline}-retry"))
                .spawn(move || sink.retry_loop(retry_rx, &stop))?
        };
        Ok(SinkHandle {
            sink,
            stop,
            retry_thread: Some(retry_thread),
        })
    }

    /// Writes one record. Blocks while librdkafka's queue is full (backpressure); a record
    /// refused before it is even queued takes the same path as one the broker refused.
    pub fn send(&self, mut out: Outgoing, extra: &[Header], ticket: Box<Ticket>) {
        let mut record = BaseRecord::<[u8], [u8], Box<Ticket>>::with_opaque_to(&out.topic, ticket);
        let headers = out.headers.len() + extra.len();
        if headers > 0 {
            // librdkafka allocates a header list even for no headers: skip it then.
            let headers = out
                .headers
                .iter()
                .chain(extra)
                .fold(OwnedHeaders::new_with_capacity(headers), add_header);
            record = record.headers(headers);
        }
        if let Some(key) = &out.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &out.value {
            record = record.payload(value.as_slice());
        }
        if let Some(ts) = out.timestamp_ms {
            record = record.timestamp(ts);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, back)) => {
                    let ticket = back.delivery_opaque;
                    out.headers.extend_from_slice(extra);
                    self.shared.refused(out, ticket, &error);
                    return;
                }
            }
        }
    }

    fn retry_loop(&self, rx: Receiver<Retry>, stop: &AtomicBool) {
        let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut seq = 0u64;
        loop {
            let wait = queue
                .peek()
                .map(|Reverse(d)| d.at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            match rx.recv_timeout(wait) {
                Ok(retry) => {
                    seq += 1;
                    queue.push(Reverse(Due {
                        at: retry.at,
                        seq,
                        retry,
                    }));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while queue
                .peek()
                .is_some_and(|Reverse(d)| d.at <= Instant::now())
            {
                if let Some(Reverse(due)) = queue.pop() {
                    self.send(due.retry.out, &[], due.retry.ticket);
                }
            }
            if stop.load(Ordering::Acquire) && queue.is_empty() {
                return;
            }
        }
    }

    /// Records handed to librdkafka and not yet acknowledged or refused.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// librdkafka's fatal error, if it raised one (the producer cannot go on).
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }
}

impl SinkHandle {
    /// Waits up to `timeout` for every write to be acknowledged, then stops the retry thread.
    /// Writes still waiting for a retry then are abandoned (their source records were not
    /// committed past).
    pub fn close(mut self, timeout: Duration) {
        if let Err(e) = self.sink.producer.flush(timeout) {
            tracing::warn!(pipeline = %self.sink.shared.pipeline, error = %e, "Producer flush did not finish.");
        }
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.retry_thread.take() {
            // The retry thread ends once its queue is empty; give up on it after the timeout
            // (it only holds records that were not committed past).
            let deadline = Instant::now() + timeout;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

struct Due {
    at: Instant,
    seq: u64,
    retry: Retry,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn refusals_that_no_retry_fixes() {
        assert!(is_permanent(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_permanent(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(is_permanent(RDKafkaErrorCode::UnknownTopicOrPartition));
        assert!(!is_permanent(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_permanent(RDKafkaErrorCode::NotEnoughReplicas));
        assert!(!is_permanent(RDKafkaErrorCode::BrokerTransportFailure));
    }
}
