//! Event time of a task: its watermark, and which records are late.
//!
//! A task's watermark is the minimum, over its source partitions (partition N of every
//! source topic), of the highest record timestamp seen there minus the pipeline's
//! `watermark_delay_ms`. It never moves backward. A partition that has shown no record for
//! `idle_timeout_ms` (or none at all since the task started that long ago) stops holding it
//! back. It moves record by record, in offset order: a record is late when its timestamp is
//! below the watermark as it stood just before it.

use std::time::{Duration, Instant};

/// The pipeline's event-time settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTime {
    /// The source topics, when the pipeline names them (a task then waits for a record from
    /// partition N of each before its watermark starts); empty for a topic pattern (the
    /// partitions seen so far count).
    pub topics: Vec<String>,
    /// How far the watermark stays behind the highest timestamp, in milliseconds.
    pub watermark_delay_ms: i64,
    /// How long a partition may show no record before it stops holding the watermark back.
    pub idle_timeout: Duration,
}

impl Default for EventTime {
    fn default() -> Self {
        EventTime {
            topics: Vec::new(),
            watermark_delay_ms: 0,
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
        }
    }
}

/// Default `idle_timeout_ms`.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug)]
struct PartitionClock {
    topic: String,
    /// Highest timestamp seen.
    highest: Option<i64>,
    /// When its last record was seen.
    seen: Option<Instant>,
}

/// One task's clock.
#[derive(Debug)]
pub struct TaskClock {
    partitions: Vec<PartitionClock>,
    watermark: Option<i64>,
    started: Instant,
}

impl TaskClock {
    /// A task that has seen nothing yet.
    pub fn new(settings: &EventTime) -> Self {
        TaskClock {
            partitions: settings
                .topics
                .iter()
                .map(|topic| PartitionClock {
                    topic: topic.clone(),
                    highest: None,
                    seen: None,
                })
                .collect(),
            watermark: None,
            started: Instant::now(),
        }
    }

    /// The watermark now.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Restores a persisted watermark (it never goes back below it).
    pub fn restore(&mut self, watermark: Option<i64>) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Moves the watermark over `timestamps` (records of one partition of `topic`, in offset
    /// order) and says, for each, whether it was late.
    pub fn observe(
        &mut self,
        settings: &EventTime,
        topic: &str,
        timestamps: impl IntoIterator<Item = Option<i64>>,
        now: Instant,
    ) -> Vec<bool> {
        let index = match self.partitions.iter().position(|p| p.topic == topic) {
            Some(index) => index,
            None => {
                self.partitions.push(PartitionClock {
                    topic: topic.to_owned(),
                    highest: None,
                    seen: None,
                });
                self.partitions.len() - 1
            }
        };
        let mut late = Vec::new();
        for ts in timestamps {
            late.push(matches!((ts, self.watermark), (Some(ts), Some(w)) if ts < w));
            let partition = &mut self.partitions[index];
            partition.seen = Some(now);
            if let Some(ts) = ts {
                partition.highest = partition.highest.max(Some(ts));
                self.advance(settings, now);
            }
        }
        late
    }

    /// Recomputes the watermark (also when no record arrives: partitions go idle).
    pub fn advance(&mut self, settings: &EventTime, now: Instant) {
        let idle = |seen: Option<Instant>| {
            let since = seen.unwrap_or(self.started);
            now.saturating_duration_since(since) >= settings.idle_timeout
        };
        let mut candidate: Option<i64> = None;
        let mut active = 0;
        for p in &self.partitions {
            if idle(p.seen) {
                continue;
            }
            active += 1;
            match p.highest {
                // An active partition without a timestamp yet holds the watermark.
                None => return,
                Some(h) => {
                    let mark = h.saturating_sub(settings.watermark_delay_ms);
                    candidate = Some(candidate.map_or(mark, |c| c.min(mark)));
                }
            }
        }
        if active == 0 {
            return;
        }
        self.watermark = self.watermark.max(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(topics: &[&str], delay: i64, idle_ms: u64) -> EventTime {
        EventTime {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            watermark_delay_ms: delay,
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    /// The watermark follows the highest timestamp minus the delay, record by record, never
    /// goes back, and a record below it is late.
    #[test]
    fn the_watermark_moves_record_by_record() {
        let s = settings(&["a"], 30, 60_000);
        let mut c = TaskClock::new(&s);
        let now = Instant::now();
        let late = c.observe(
            &s,
            "a",
            [
                Some(100),
                Some(80),
                Some(69),
                None,
                Some(70),
                Some(200),
                Some(150),
            ],
            now,
        );
        assert_eq!(late, [false, false, true, false, false, false, true]);
        assert_eq!(c.watermark(), Some(170));
        c.restore(Some(10));
        assert_eq!(c.watermark(), Some(170));
    }

    /// With two topics the slower partition holds the watermark, until it goes idle.
    #[test]
    fn the_slowest_partition_holds_the_watermark_until_it_is_idle() {
        let s = settings(&["orders", "payments"], 0, 1_000);
        let mut c = TaskClock::new(&s);
        let t0 = Instant::now();
        c.observe(&s, "orders", [Some(500)], t0);
        assert_eq!(c.watermark(), None, "payments has shown nothing yet");
        c.observe(&s, "payments", [Some(100)], t0);
        assert_eq!(c.watermark(), Some(100));
        c.observe(&s, "orders", [Some(900)], t0 + Duration::from_millis(1_500));
        assert_eq!(c.watermark(), Some(900), "payments idle for 1.5 s");
        c.observe(
            &s,
            "payments",
            [Some(50)],
            t0 + Duration::from_millis(1_600),
        );
        assert_eq!(c.watermark(), Some(900), "never backward");
    }
}
