//! Writing outputs and dead letters to Kafka, and finishing each source record once every one
//! of its writes is acknowledged.
//!
//! Every record sent carries a [`Ticket`] naming its source record. When the broker
//! acknowledges it, the source record's count of outstanding writes drops; at zero the record
//! is finished in the [`Tracker`] and may be committed past. A write the broker refuses:
//!
//! - for good (too large, topic missing, not authorized, invalid, a timestamp or format the
//!   broker refuses): a routed record is dead-lettered instead, with that reason (kind
//!   `undeliverable`); a dead letter that is too large is written again without its value,
//!   then also without its key and own headers (the source offset in its headers points at
//!   the original);
//! - otherwise (librdkafka's own retries ran out: timeouts, a broker down, a dead-letter
//!   topic that refuses writes): written again after a backoff, for as long as it takes.
//!   While a dead-letter write is failing the pipeline is unhealthy; its partition commits
//!   nothing past that record (it is unfinished), the other partitions go on.
//! - a write of a partition revoked meanwhile is not retried: the partition's new owner reads
//!   the record again (counted in `switchyard_produce_retries_dropped_total`).
//!
//! Warnings about refused writes are written once per kind per 10 s, with a count of the
//! rest (`throttle`).
//!
//! Nothing is ever dropped: the only ways out for a ticket are an acknowledgement, a revoked
//! partition (its next owner reads the record again) or the process ending, and then the
//! record was not committed past.
//!
//! The delivery callback runs on the producer's polling thread and must not block on the
//! producer (a full queue empties only when that thread serves acknowledgements), so every
//! write again goes through the retry thread.
//!
//! This module owns the [`Sink`] (the producer, `send`, `close`) and the delivery callback.
//! What a write carries back to its source record is in `ticket`; what happens to a refused
//! write (classification, dead-lettering, retries with backoff) is in `retry`.

mod retry;
mod throttle;
mod ticket;

pub use ticket::{Pending, SourceRecord, Ticket};

use crate::kafka::{self, add_header, headers_from_kafka, now_ms};
use crate::metrics::PipelineMetrics;
use crate::plugin::Header;
use crate::router::{Outgoing, Router};
use crate::source::tracker::Tracker;
use crate::status::{Health, PipelineCounters, PipelineStatus};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use retry::Retry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Warnings about refused writes, one line per kind per interval.
    throttle: throttle::Throttle,
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
                    headers: headers_from_kafka(message.headers()).0,
                    timestamp_ms: message.timestamp().to_millis(),
                    dead_letter: ticket.dead_letter,
                };
                self.shared.refused(out, ticket, error);
            }
        }
    }
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
            throttle: throttle::Throttle::default(),
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
