//! What happens to a write the broker refuses: a refusal no retry can fix dead-letters a
//! routed record (or drops a too-large dead letter's value); any other is written again
//! after a backoff, by the retry thread, in the order the retries fall due. Not the first
//! write nor acknowledgements (the parent module).

use super::{Shared, Sink, Ticket};
use crate::kafka::now_ms;
use crate::router::{Outgoing, SourceOffset};
use crate::status::PipelineCounters;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A write to try again, no earlier than `at`.
pub(super) struct Retry {
    at: Instant,
    out: Outgoing,
    ticket: Box<Ticket>,
}

impl Shared {
    /// The broker (or librdkafka, before sending) refused a write.
    pub(super) fn refused(&self, mut out: Outgoing, mut ticket: Box<Ticket>, error: &KafkaError) {
        let code = error.rdkafka_error_code();
        let permanent = code.is_some_and(is_permanent);
        ticket.attempts += 1;
        let source = ticket.source.record();
        if source.handle.is_revoked() {
            // The partition has a new owner, who reads the record again: writing it from here
            // would only add a duplicate, out of order.
            self.metrics.retries_dropped.inc();
            tracing::debug!(
                pipeline = %self.pipeline, topic = %out.topic, source_topic = %source.handle.topic,
                source_partition = source.handle.partition, error = %error,
                "Write refused for a partition no longer ours; not retried."
            );
            return;
        }
        if !ticket.dead_letter && permanent {
            PipelineCounters::add(&self.counters.undeliverable, 1);
            self.metrics.dead_lettered("", crate::router::UNDELIVERABLE);
            let mut reason = format!("cannot write to topic `{}`: {error}", out.topic);
            if code.is_some_and(is_too_large) {
                reason.push_str(&value_omitted(&out));
                out.value = None;
            }
            if self.throttle.admit("undeliverable", Instant::now()) {
                tracing::warn!(
                    pipeline = %self.pipeline, topic = %out.topic, source_topic = %source.handle.topic,
                    source_partition = source.handle.partition, source_offset = source.offset,
                    error = %error, "Output refused by the broker; dead-lettering it (more within 10 s are counted, not logged)."
                );
            }
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
        if ticket.dead_letter && code.is_some_and(is_too_large) {
            // Without its value, then without its key and own headers; a dead letter with
            // nothing left to take away is retried below (the topic takes nothing: unhealthy).
            if let Some(smaller) = self.router.shrink(out.clone()) {
                self.schedule(smaller, ticket, Duration::ZERO);
                return;
            }
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
        } else if self.throttle.admit("retry", Instant::now()) {
            tracing::warn!(
                pipeline = %self.pipeline, topic = %out.topic, error = %error,
                attempt = ticket.attempts, backoff_ms = backoff.as_millis() as u64,
                "Write failed; retrying (more within 10 s are counted, not logged)."
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
            | E::InvalidTimestamp
            | E::UnsupportedForMessageFormat
            | E::InvalidRequiredAcks
            | E::UnsupportedVersion
            | E::UnsupportedCompressionType
    )
}

fn is_too_large(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        code,
        E::MessageSizeTooLarge | E::InvalidMessageSize | E::MessageBatchTooLarge
    )
}

impl Sink {
    pub(super) fn retry_loop(&self, rx: Receiver<Retry>, stop: &AtomicBool) {
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
                    if due.retry.ticket.source.record().handle.is_revoked() {
                        // Revoked while waiting: its new owner writes it.
                        self.shared.metrics.retries_dropped.inc();
                        continue;
                    }
                    self.send(due.retry.out, &[], due.retry.ticket);
                }
            }
            for (kind, count) in self.shared.throttle.ended(Instant::now()) {
                tracing::warn!(
                    pipeline = %self.shared.pipeline, kind, count,
                    "Refused writes in the last 10 s besides the one logged."
                );
            }
            if stop.load(Ordering::Acquire) && queue.is_empty() {
                return;
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
        assert!(is_permanent(RDKafkaErrorCode::InvalidTimestamp));
        assert!(is_permanent(RDKafkaErrorCode::UnsupportedForMessageFormat));
        assert!(!is_permanent(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_permanent(RDKafkaErrorCode::NotEnoughReplicas));
        assert!(!is_permanent(RDKafkaErrorCode::BrokerTransportFailure));
    }
}
