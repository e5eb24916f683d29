//! The consumer thread of one pipeline: polls Kafka, tracks each record and pushes it to its
//! partition's worker; pauses under back-pressure; commits what is finished; drains on stop.
//!
//! # States
//!
//! ```text
//! consuming --(stop requested)--> draining --(in flight = 0, or drain timeout)--> committed, closed
//! consuming --(fatal error)-----> draining ------------------------------------> closed, error
//! ```
//!
//! - **consuming** ([`Consumer::poll_once`]): takes each record with one clock read and a few
//!   atomics; every [`HOUSEKEEPING_EVERY`] records, or on an empty poll,
//!   [`Consumer::housekeep`] checks for fatal errors, commits each partition's highest
//!   contiguous finished offset every `commit_interval`, and refreshes lag. Every partition is
//!   paused while `max_in_flight` records are unfinished (or an operator paused the pipeline)
//!   and resumed below half of that.
//! - **draining** ([`Consumer::drain`]): no new record is taken (one already fetched is left
//!   for the next reader); polling goes on so the group and commit callbacks are served, until
//!   every in-flight record is finished or `drain_timeout` passes; then a final commit (at
//!   most [`COMMIT_TIMEOUT`]) and the consumer leaves the group (at most [`CLOSE_TIMEOUT`]).

use super::gaps::GapCheck;
use super::tracker::{PartitionHandle, Tracked, Tracker};
use super::{CLOSE_TIMEOUT, COMMIT_TIMEOUT, SourceContext, close_within, commit_sync};
use crate::config::{StartPosition, Subscription};
use crate::kafka;
use crate::plugin::InputRecord;
use crate::ring::{Job, Ring};
use crate::status::{PipelineCounters, PipelineStatus, Stop};
use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often every partition's commit position is sent again, changed or not: an
/// asynchronous commit can fail without the failure reaching us, and the next reader must
/// not start further back than needed.
const RECOMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Records the consumer takes between two housekeeping passes (fatal errors, commits, lag,
/// progress) while records keep coming; an empty poll always triggers one.
pub const HOUSEKEEPING_EVERY: u32 = 64;

/// How often the consumer reads each partition's end (for lag).
const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the consumer logs its progress (at debug level).
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The names librdkafka subscribes to: a pattern becomes a regex subscription (librdkafka
/// treats a name starting with `^` as one; an unanchored pattern matches anywhere).
fn subscription_names(subscription: &Subscription) -> Vec<String> {
    match subscription {
        Subscription::Topics(topics) => topics.clone(),
        Subscription::Pattern(p) if p.starts_with('^') => vec![p.clone()],
        Subscription::Pattern(p) => vec![format!("^.*{p}")],
    }
}

/// How one pipeline consumes.
pub struct ConsumerSettings<'a> {
    /// The pipeline's name (logs, thread names).
    pub pipeline: &'a str,
    /// librdkafka's consumer settings.
    pub client: ClientConfig,
    /// What to read.
    pub subscription: &'a Subscription,
    /// Where to start when the group has no committed offset.
    pub start: StartPosition,
    /// Longest wait for in-flight records on a stop or a revocation.
    pub drain_timeout: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// Unfinished records above which every partition is paused.
    pub max_in_flight: usize,
    /// Set by an operator to stop consuming (not back-pressure).
    pub operator_paused: &'a AtomicBool,
    /// The pipeline's tracker, health and counters.
    pub status: &'a PipelineStatus,
    /// `switchyard_records_in` for this pipeline.
    pub records_in: Counter,
    /// `switchyard_source_gaps_total` for this pipeline.
    pub source_gaps: Counter,
    /// Which source topics' offset gaps count (the pipeline's `count_source_gaps`).
    pub count_source_gaps: bool,
    /// The producer's fatal error, if any (checked at housekeeping).
    pub producer_fatal: &'a (dyn Fn() -> Option<String> + Sync),
    /// Stateful pipelines: how assigned tasks are restored.
    pub state: Option<crate::changelog::StateSource>,
}

/// The consumer loop of one pipeline.
pub struct Consumer<'a> {
    settings: ConsumerSettings<'a>,
    consumer: BaseConsumer<SourceContext>,
    ring: Ring,
    /// Paused by back-pressure or the operator.
    paused: bool,
    last_commit: Instant,
    last_full_commit: Instant,
    /// When the broker was last asked for the committed offsets (see
    /// [`confirm_from_broker`]).
    last_commit_check: Instant,
    last_report: Instant,
    last_watermarks: Instant,
    since_housekeeping: u32,
    /// The handles of the partitions records came from, so taking a record needs no lookup
    /// in the tracker (a handle found revoked is looked up again).
    handles: HandleCache,
    /// Which source topics' offset gaps count.
    gaps: Arc<GapCheck>,
}

impl<'a> Consumer<'a> {
    /// Creates the consumer and subscribes.
    pub fn open(settings: ConsumerSettings<'a>, ring: Ring) -> anyhow::Result<Self> {
        let name = settings.pipeline;
        let mut context = SourceContext::new(
            name,
            settings.status.tracker.clone(),
            settings.start,
            settings.drain_timeout,
        );
        context.state = settings.state.clone();
        let gaps = GapCheck::new(
            name,
            settings.client.get("bootstrap.servers").unwrap_or_default(),
            settings.count_source_gaps,
        );
        context.gaps = Some(gaps.clone());
        let consumer: BaseConsumer<SourceContext> = settings
            .client
            .create_with_context(context)
            .with_context(|| format!("pipeline {name}: cannot create the consumer"))?;
        let names = subscription_names(settings.subscription);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .with_context(|| format!("pipeline {name}: cannot subscribe"))?;
        let now = Instant::now();
        Ok(Consumer {
            settings,
            consumer,
            ring,
            paused: false,
            last_commit: now,
            last_full_commit: now,
            last_commit_check: now,
            last_report: now,
            last_watermarks: now,
            since_housekeeping: 0,
            handles: HandleCache::default(),
            gaps,
        })
    }

    fn tracker(&self) -> &Tracker {
        &self.settings.status.tracker
    }

    /// Consumes until `stop` is requested or a fatal error, then drains, commits and leaves
    /// the group. Returns the fatal error, if any.
    pub fn run(mut self, stop: &Stop) -> anyhow::Result<()> {
        let mut fatal = None;
        while !stop.is_requested() {
            if self.since_housekeeping >= HOUSEKEEPING_EVERY {
                self.since_housekeeping = 0;
                fatal = self.housekeep();
                if fatal.is_some() {
                    break;
                }
            }
            self.apply_backpressure();
            self.poll_once();
        }
        self.drain(fatal)
    }

    /// Pauses every partition while too many records are unfinished or an operator paused
    /// the pipeline; resumes below half of `max_in_flight`. A new assignment is paused again.
    fn apply_backpressure(&mut self) {
        let in_flight = self.tracker().in_flight();
        let reassigned = self
            .consumer
            .context()
            .assignment_changed
            .swap(false, Ordering::AcqRel);
        if reassigned {
            self.handles.forget_revoked();
        }
        let max = self.settings.max_in_flight;
        let operator = self.settings.operator_paused.load(Ordering::Acquire);
        if (!self.paused && (in_flight >= max || operator)) || (self.paused && reassigned) {
            set_paused(&self.consumer, self.settings.pipeline, true);
            self.paused = true;
        } else if self.paused && !operator && in_flight <= max / 2 {
            set_paused(&self.consumer, self.settings.pipeline, false);
            self.paused = false;
        }
    }

    /// Takes at most one record: tracks it and pushes it to its partition's worker.
    pub fn poll_once(&mut self) {
        match self.consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                self.since_housekeeping += 1;
                let status = self.settings.status;
                let Some(handle) =
                    self.handles
                        .get(&status.tracker, message.topic(), message.partition())
                else {
                    // Not assigned (any more).
                    return;
                };
                match status.tracker.track_on(&handle, message.offset()) {
                    // Revoked meanwhile, or taken already (fetched again after a seek).
                    Tracked::Refused => return,
                    Tracked::Taken => {}
                    Tracked::AfterGap { expected, first } => {
                        self.gap(&handle, expected, message.offset(), first)
                    }
                }
                PipelineCounters::add(&status.counters.consumed, 1);
                self.settings.records_in.inc();
                let (headers, problem) = kafka::headers_from_kafka(message.headers());
                let record = InputRecord {
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers,
                };
                let job = Job {
                    handle,
                    record,
                    problem,
                };
                if self.ring.push(job).is_err() {
                    status.health.fail("the workers stopped".into());
                }
            }
            Some(Err(e)) => {
                tracing::warn!(pipeline = %self.settings.pipeline, error = %e, "Consumer error.");
                self.since_housekeeping = HOUSEKEEPING_EVERY;
            }
            None => self.since_housekeeping = HOUSEKEEPING_EVERY,
        }
    }

    /// A record came after the offset expected: counted, and logged once per assignment of
    /// the partition, unless the topic is compacted or the pipeline exempts its topics.
    #[cold]
    fn gap(&self, handle: &PartitionHandle, expected: i64, offset: i64, first: bool) {
        if !self.gaps.counts(&handle.topic) {
            return;
        }
        self.settings.source_gaps.inc();
        if first {
            tracing::error!(
                pipeline = %self.settings.pipeline, topic = %handle.topic, partition = handle.partition,
                expected, offset, skipped = offset - expected,
                "Source offsets skipped: records the broker lost (or retention deleted before they were read) were never processed. Counted in switchyard_source_gaps_total; logged once per partition. If the topic is written by transactional producers, set count_source_gaps = false."
            );
        }
    }

    /// Fatal errors, periodic commits, lag, progress. Returns a fatal error, if any.
    pub fn housekeep(&mut self) -> Option<String> {
        let status = self.settings.status;
        if let Some(why) = (self.settings.producer_fatal)() {
            status.health.fail(format!("producer: {why}"));
        }
        if let Some(why) = status.health.fatal() {
            return Some(why);
        }
        let now = Instant::now();
        if now.duration_since(self.last_commit) >= self.settings.commit_interval {
            let again = now.duration_since(self.last_full_commit) >= RECOMMIT_INTERVAL;
            commit_async(&self.consumer, self.settings.pipeline, status, again);
            self.last_commit = now;
            if again {
                self.last_full_commit = now;
            }
        }
        if now.duration_since(self.last_commit_check) >= COMMIT_CHECK_INTERVAL {
            self.last_commit_check = now;
            if status
                .tracker
                .has_commits_unconfirmed_for(COMMIT_CHECK_INTERVAL)
            {
                confirm_from_broker(&self.consumer, self.settings.pipeline, status);
            }
        }
        if now.duration_since(self.last_watermarks) >= WATERMARK_INTERVAL {
            for p in status.tracker.partitions() {
                // Cached from fetch responses: no request to the broker.
                if let Some(high) = cached_high_watermark(&self.consumer, &p.topic, p.partition) {
                    status
                        .tracker
                        .set_high_watermark(&p.topic, p.partition, high);
                }
            }
            self.last_watermarks = now;
        }
        if now.duration_since(self.last_report) >= REPORT_INTERVAL {
            tracing::debug!(
                pipeline = %self.settings.pipeline, in_flight = status.tracker.in_flight(),
                paused = self.paused, counters = ?status.counters.snapshot(), "Progress."
            );
            self.last_report = now;
        }
        None
    }

    /// Stops taking records, waits (bounded) for the in-flight ones, commits, and leaves the
    /// group (bounded). Returns `fatal` as the pipeline's error.
    pub fn drain(self, mut fatal: Option<String>) -> anyhow::Result<()> {
        let Consumer {
            settings,
            consumer,
            ring,
            ..
        } = self;
        let name = settings.pipeline;
        let status = settings.status;
        let tracker = &status.tracker;
        tracing::info!(pipeline = %name, in_flight = tracker.in_flight(), "Draining.");
        set_paused(&consumer, name, true);
        let deadline = Instant::now() + settings.drain_timeout;
        while tracker.in_flight() > 0 && Instant::now() < deadline && fatal.is_none() {
            // Records fetched now are not taken: they stay uncommitted for the next reader.
            let _ = consumer.poll(Duration::from_millis(10));
            if let Some(why) = status.health.fatal() {
                fatal = Some(why);
            }
        }
        let left = tracker.in_flight();
        if left > 0 {
            tracing::warn!(pipeline = %name, in_flight = left, "Stopped before every record finished; those will be delivered again.");
        }
        // Each partition up to its first unfinished record (one whose dead letter is
        // unwritten, say).
        let all: Vec<(String, i32)> = tracker
            .partitions()
            .into_iter()
            .map(|p| (p.topic, p.partition))
            .collect();
        let _ = commit_sync(
            &consumer,
            name,
            &tracker.committable_of(&all),
            COMMIT_TIMEOUT,
        );
        // Nothing left to wait for when the group takes the partitions away on close.
        tracker.revoke_all();
        close_within(consumer, CLOSE_TIMEOUT);
        // Closing the ring lets the workers finish their batch and exit.
        drop(ring);
        match fatal {
            Some(why) => Err(anyhow::anyhow!("pipeline {name} stopped: {why}")),
            None => Ok(()),
        }
    }
}

/// The consumer's handles of its assigned partitions: a few entries, searched in order.
#[derive(Default)]
struct HandleCache {
    handles: Vec<Arc<PartitionHandle>>,
}

impl HandleCache {
    /// The current assignment of a partition: the cached handle unless it was revoked, else
    /// the tracker's (cached for the next record).
    fn get(
        &mut self,
        tracker: &Tracker,
        topic: &str,
        partition: i32,
    ) -> Option<Arc<PartitionHandle>> {
        let found = self
            .handles
            .iter()
            .position(|h| h.partition == partition && &*h.topic == topic);
        if let Some(i) = found {
            if !self.handles[i].is_revoked() {
                return Some(self.handles[i].clone());
            }
            self.handles.swap_remove(i);
        }
        let handle = tracker.handle(topic, partition)?;
        self.handles.push(handle.clone());
        Some(handle)
    }

    /// Drops the handles of revoked partitions (after an assignment change).
    fn forget_revoked(&mut self) {
        self.handles.retain(|h| !h.is_revoked());
    }
}

/// A partition's end as librdkafka last saw it in a fetch response: no request to the
/// broker (rdkafka's safe API only offers the round trip, `fetch_watermarks`).
fn cached_high_watermark(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a valid C
    // string for the duration of the call; `low` and `high` are valid for writes.
    // rd_kafka_get_watermark_offsets only reads librdkafka's local state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

fn set_paused(consumer: &BaseConsumer<SourceContext>, pipeline: &str, pause: bool) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "Cannot read the assignment to pause or resume it.");
            return;
        }
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => tracing::debug!(pipeline, pause, "Backpressure."),
        Err(e) => tracing::warn!(pipeline, pause, error = %e, "Cannot pause or resume."),
    }
}

/// Sends each partition's commit position without waiting; with `again`, also the positions
/// already committed.
fn commit_async(
    consumer: &BaseConsumer<SourceContext>,
    pipeline: &str,
    status: &PipelineStatus,
    again: bool,
) {
    // A partition whose dead letter is unwritten stops at that record by itself (it is not
    // finished); the others go on.
    let offsets = status.tracker.to_commit(again);
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in &offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(pipeline, error = %e, "Cannot list an offset to commit.");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(pipeline, error = %e, "Cannot send an offset commit; retrying.");
        for (topic, partition, _) in &offsets {
            status.tracker.commit_failed(topic, *partition);
        }
    }
}

/// How often the broker is asked for the committed offsets when a commit has waited longer
/// than this for its confirmation (never on a broker that confirms them, as Kafka does).
const COMMIT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Asks the broker for the group's committed offsets of the assigned partitions and records
/// them as confirmed: the status then shows what is committed even on a broker whose answers
/// to asynchronous commits never reach the commit callback (tansu). A short blocking request,
/// made only while some commit has waited over [`COMMIT_CHECK_INTERVAL`] for its
/// confirmation, at most that often.
fn confirm_from_broker(
    consumer: &BaseConsumer<SourceContext>,
    pipeline: &str,
    status: &PipelineStatus,
) {
    match consumer.committed(Duration::from_secs(2)) {
        Ok(list) => {
            for e in list.elements() {
                if let Offset::Offset(offset) = e.offset() {
                    status
                        .tracker
                        .commit_confirmed(e.topic(), e.partition(), offset);
                }
            }
        }
        Err(e) => {
            tracing::debug!(pipeline, error = %e, "Cannot read the committed offsets back.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Subscription, subscription_names};

    #[test]
    fn a_pattern_becomes_an_anchored_regex_subscription() {
        let names = |s: Subscription| subscription_names(&s);
        assert_eq!(
            names(Subscription::Pattern("^orders-.*".into())),
            ["^orders-.*"]
        );
        assert_eq!(names(Subscription::Pattern("orders".into())), ["^.*orders"]);
        assert_eq!(
            names(Subscription::Topics(vec!["a".into(), "b".into()])),
            ["a", "b"]
        );
    }
}
