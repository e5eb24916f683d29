//! Reading from Kafka: the consumer, its rebalance handling, and which offsets may be
//! committed.
//!
//! - [`consumer`]: the consumer loop: poll, back-pressure, commit, drain.
//! - [`offsets`]: one partition's in-flight records and its commit position.
//! - [`tracker`]: every assigned partition's, shared with the workers and the producer.
//! - [`SourceContext`]: the consumer's callbacks. On an assignment it starts tracking the
//!   partitions (placing them at the start timestamp when the group has no offset); on a
//!   revocation it waits (bounded) for their in-flight records to finish, commits them, and
//!   stops tracking them, so the next owner starts right after what this process finished.

pub mod consumer;
pub mod gaps;
pub mod offsets;
pub mod tracker;

use crate::config::StartPosition;
use crate::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracker::Tracker;

/// The consumer's callbacks.
pub struct SourceContext {
    pipeline: String,
    tracker: Arc<Tracker>,
    start: StartPosition,
    drain_timeout: Duration,
    /// Set by each assignment; the poll loop re-applies a pause to the new partitions.
    pub assignment_changed: AtomicBool,
    /// Stateful pipelines: restores each assigned task before its records are read.
    pub state: Option<crate::changelog::StateSource>,
    /// Which source topics' offset gaps count.
    pub gaps: Option<Arc<gaps::GapCheck>>,
}

/// How long a metadata request made from a callback may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl SourceContext {
    /// Callbacks for one pipeline's consumer.
    pub fn new(
        pipeline: &str,
        tracker: Arc<Tracker>,
        start: StartPosition,
        drain_timeout: Duration,
    ) -> Self {
        SourceContext {
            pipeline: pipeline.to_owned(),
            tracker,
            start,
            drain_timeout,
            assignment_changed: AtomicBool::new(false),
            state: None,
            gaps: None,
        }
    }

    /// Places partitions the group has no offset for at the first record at or after `ts`.
    fn place_at_timestamp(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        ts: i64,
    ) -> KafkaResult<()> {
        let committed = consumer.committed_offsets(tpl.clone(), REQUEST_TIMEOUT)?;
        let mut wanted = TopicPartitionList::new();
        for e in committed.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                wanted.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ts))?;
            }
        }
        if wanted.count() == 0 {
            return Ok(());
        }
        let found = consumer.offsets_for_times(wanted, REQUEST_TIMEOUT)?;
        for e in found.elements() {
            // No record at or after the time: start at the end, as for `latest`.
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::End,
            };
            tracing::info!(
                pipeline = %self.pipeline, topic = e.topic(), partition = e.partition(),
                timestamp_ms = ts, offset = ?offset, "No committed offset: starting at the start timestamp."
            );
            tpl.set_partition_offset(e.topic(), e.partition(), offset)?;
        }
        Ok(())
    }

    /// Waits for the revoked partitions' in-flight records, then commits them.
    fn drain(&self, consumer: &BaseConsumer<Self>, partitions: &[(String, i32)]) {
        let started = Instant::now();
        let deadline = started + self.drain_timeout;
        let mut left = self.tracker.in_flight_of(partitions);
        while left > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            left = self.tracker.in_flight_of(partitions);
        }
        if left > 0 {
            tracing::warn!(
                pipeline = %self.pipeline, in_flight = left, timeout_ms = self.drain_timeout.as_millis() as u64,
                "Partitions revoked before their records finished; those will be delivered again."
            );
        }
        let _ = commit_sync(
            consumer,
            &self.pipeline,
            &self.tracker.committable_of(partitions),
            COMMIT_TIMEOUT,
        );
        tracing::info!(
            pipeline = %self.pipeline, partitions = partitions.len(),
            drain_ms = started.elapsed().as_millis() as u64, "Partitions revoked."
        );
    }
}

/// How long the last commit before partitions change hands, or before the process stops, may
/// take, every attempt included: an unreachable group coordinator must not hold up a
/// rebalance or a shutdown (librdkafka's own synchronous commit waits without a limit).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long leaving the group and closing the consumer may take at shutdown, the commit of the
/// revocation callback it runs included. librdkafka's close waits for the group coordinator's
/// answers without a limit of its own.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Leaves the group and closes the consumer on a thread of its own, waiting at most `timeout`
/// for it. After the final commit there is nothing left to lose, so a coordinator that does
/// not answer must not keep the process from exiting: past the deadline the close is
/// abandoned (its thread ends with the process) and the group notices the member gone after
/// its session timeout, as after a crash.
pub fn close_within(consumer: BaseConsumer<SourceContext>, timeout: Duration) {
    use std::sync::mpsc::RecvTimeoutError;
    let pipeline = consumer.context().pipeline.clone();
    let (done, finished) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new()
        .name(format!("{pipeline}-close"))
        .spawn(move || {
            consumer.unsubscribe();
            drop(consumer);
            let _ = done.send(());
        });
    if let Err(e) = closing {
        // The consumer was closed on this thread when the closure was dropped.
        tracing::warn!(pipeline, error = %e, "Cannot start a thread to close the consumer.");
        return;
    }
    match finished.recv_timeout(timeout) {
        Ok(()) => {}
        Err(RecvTimeoutError::Timeout) => tracing::warn!(
            pipeline,
            timeout_ms = timeout.as_millis() as u64,
            "The consumer did not leave the group in time (the group coordinator does not answer); going on without it. The group reassigns its partitions after the session timeout."
        ),
        Err(RecvTimeoutError::Disconnected) => {
            tracing::error!(pipeline, "Closing the consumer panicked.");
        }
    }
}

/// Commits offsets and waits for the broker's answer, trying again (after 100 ms, then twice
/// as long each time) when the commit fails, for at most `timeout` in all: this is the last
/// commit before the partitions go to another reader, and each failed one means records
/// delivered again. Returns whether it succeeded.
pub fn commit_sync<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    pipeline: &str,
    offsets: &[(String, i32, i64)],
    timeout: Duration,
) -> bool {
    if offsets.is_empty() {
        return true;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(pipeline, error = %e, "Cannot list an offset to commit.");
        }
    }
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1.. {
        let error = match commit_within(
            consumer,
            &tpl,
            deadline.saturating_duration_since(Instant::now()),
        ) {
            Ok(()) => return true,
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            tracing::warn!(
                pipeline, error = %error, attempts = attempt, timeout_ms = timeout.as_millis() as u64,
                "Offset commit failed; the records after the last commit will be delivered again."
            );
            break;
        }
        tracing::warn!(pipeline, error = %error, attempt, "Offset commit failed; trying again.");
        std::thread::sleep(backoff);
        backoff *= 2;
    }
    false
}

/// One commit of `tpl`, waiting at most `wait` for the broker's answer.
fn commit_within<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    wait: Duration,
) -> Result<(), String> {
    use rdkafka::bindings as rd;
    use rdkafka::error::RDKafkaErrorCode;
    let no_error = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let rk = consumer.client().native_ptr();
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` and `tpl` are valid for the whole call (borrowed from live values). The
    // queue is created and destroyed here; librdkafka copies `tpl` and holds its own
    // reference to the queue while the commit is outstanding, so destroying ours after a
    // timeout is safe: a late answer is discarded with the queue. With no callback the
    // answer arrives as an OFFSET_COMMIT event, which is destroyed after reading its error.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return Err("librdkafka could not create a queue".into());
        }
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        let result = if err != no_error {
            Err(RDKafkaErrorCode::from(err).to_string())
        } else {
            let event = rd::rd_kafka_queue_poll(queue, wait_ms);
            if event.is_null() {
                Err(format!(
                    "no answer from the group coordinator within {wait_ms} ms"
                ))
            } else {
                let err = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                if err == no_error {
                    Ok(())
                } else {
                    Err(RDKafkaErrorCode::from(err).to_string())
                }
            }
        };
        rd::rd_kafka_queue_destroy(queue);
        result
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::log(&self.pipeline, level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(pipeline = %self.pipeline, error = %error, reason, "Consumer error.");
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let StartPosition::Timestamp(ts) = self.start
                    && let Err(e) = self.place_at_timestamp(consumer, tpl, ts)
                {
                    tracing::warn!(pipeline = %self.pipeline, error = %e, "Cannot find offsets for the start timestamp; starting from the earliest.");
                }
                let partitions = partitions_of(tpl);
                // Where each partition's first record is expected: the committed offset, or
                // where the start timestamp placed it.
                let committed: Vec<(String, i32, i64)> = consumer
                    .committed_offsets(tpl.clone(), REQUEST_TIMEOUT)
                    .map(|c| {
                        c.elements()
                            .iter()
                            .filter_map(|e| match e.offset() {
                                Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_else(|e| {
                        tracing::warn!(pipeline = %self.pipeline, error = %e, "Cannot read the committed offsets of the assigned partitions.");
                        Vec::new()
                    });
                // Inside the callback no record of the new assignment can be read yet: the
                // tasks' state is in place before their first record reaches a worker.
                if let Some(state) = &self.state {
                    state.on_assign(&self.pipeline, &partitions, &committed);
                }
                for (topic, partition) in &partitions {
                    self.tracker.assign(topic, *partition);
                }
                for (topic, partition, offset) in &committed {
                    self.tracker.expect(topic, *partition, *offset);
                }
                for e in tpl.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        self.tracker.expect(e.topic(), e.partition(), o);
                    }
                }
                if let Some(gaps) = &self.gaps {
                    gaps.learn(partitions.iter().map(|(t, _)| t.as_str()));
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!(pipeline = %self.pipeline, error = %e, "Cannot take the assigned partitions.");
                }
                self.assignment_changed.store(true, Ordering::Release);
                tracing::info!(pipeline = %self.pipeline, partitions = ?partitions, "Partitions assigned.");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = partitions_of(tpl);
                if consumer.assignment_lost() {
                    tracing::warn!(pipeline = %self.pipeline, "Assignment lost (session timed out); in-flight records will be delivered again by the new owner.");
                } else {
                    self.drain(consumer, &partitions);
                }
                for (topic, partition) in &partitions {
                    self.tracker.revoke(topic, *partition);
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(pipeline = %self.pipeline, error = %e, "Cannot give up the revoked partitions.");
                }
            }
            other => {
                tracing::error!(pipeline = %self.pipeline, error = ?other, "Rebalance error; dropping the assignment.");
                self.tracker.revoke_all();
                if let Err(e) = consumer.unassign() {
                    tracing::error!(pipeline = %self.pipeline, error = %e, "Cannot drop the assignment.");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            tracing::warn!(pipeline = %self.pipeline, error = %e, "Offset commit failed; retrying at the next commit.");
        }
        for e in offsets.elements() {
            match (&result, e.error(), e.offset()) {
                (Ok(()), Ok(()), Offset::Offset(offset)) => {
                    self.tracker
                        .commit_confirmed(e.topic(), e.partition(), offset);
                }
                _ => self.tracker.commit_failed(e.topic(), e.partition()),
            }
        }
    }
}
