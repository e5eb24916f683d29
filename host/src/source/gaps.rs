//! Which source topics' offset gaps count as records the broker lost.
//!
//! On a topic that is neither compacted nor written by transactional producers, the offsets
//! of a partition have no holes: a record that comes after the offset expected (the committed
//! offset after an assignment, the next offset after a pause or a seek) means the records in
//! between were lost by the broker, or deleted by retention before they were read. Compacted
//! topics have holes by design: their `cleanup.policy` is read in the background the first
//! time a topic is assigned, and until the answer comes (or when the cluster does not answer)
//! the topic's gaps are counted. Transactional topics are exempted by the pipeline's
//! `count_source_gaps = false`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What is known of a source topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    /// Its cleanup policy is being read, or could not be read: gaps count.
    Unknown,
    /// Not compacted: gaps count.
    Plain,
    /// Compacted: gaps are normal.
    Compacted,
}

/// The gap policy of one pipeline's source topics.
#[derive(Debug)]
pub struct GapCheck {
    enabled: bool,
    brokers: String,
    pipeline: String,
    topics: Mutex<HashMap<String, Topic>>,
}

impl GapCheck {
    /// A policy for one pipeline; `enabled` is its `count_source_gaps`.
    pub fn new(pipeline: &str, brokers: &str, enabled: bool) -> Arc<Self> {
        Arc::new(GapCheck {
            enabled,
            brokers: brokers.to_owned(),
            pipeline: pipeline.to_owned(),
            topics: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        // Every update is a single insert: a poisoned map is still consistent.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Topics were assigned: reads the cleanup policy of those not seen yet, in the
    /// background (the rebalance callback does not wait for it).
    pub fn learn<'t>(self: &Arc<Self>, topics: impl IntoIterator<Item = &'t str>) {
        if !self.enabled {
            return;
        }
        let new: Vec<String> = {
            let mut known = self.lock();
            let mut new = Vec::new();
            for topic in topics {
                if !known.contains_key(topic) {
                    known.insert(topic.to_owned(), Topic::Unknown);
                    new.push(topic.to_owned());
                }
            }
            new
        };
        if new.is_empty() {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-gaps", self.pipeline))
            .spawn(move || {
                for topic in new {
                    match crate::kafka::cleanup_policy(&this.brokers, &topic) {
                        Ok(policy) => {
                            let compacted = policy
                                .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"));
                            let kind = if compacted {
                                Topic::Compacted
                            } else {
                                Topic::Plain
                            };
                            this.lock().insert(topic, kind);
                        }
                        Err(e) => {
                            tracing::debug!(pipeline = %this.pipeline, topic, error = %format!("{e:#}"), "Cannot read the source topic's cleanup.policy; its offset gaps are counted.");
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(pipeline = %self.pipeline, error = %e, "Cannot start the cleanup.policy lookup; offset gaps are counted on every source topic.");
        }
    }

    /// Whether a gap on `topic` counts.
    pub fn counts(&self, topic: &str) -> bool {
        self.enabled && self.lock().get(topic) != Some(&Topic::Compacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_unless_disabled_or_the_topic_is_compacted() {
        let on = GapCheck::new("p", "127.0.0.1:1", true);
        assert!(on.counts("events"), "unknown topics count");
        on.lock().insert("log".into(), Topic::Compacted);
        on.lock().insert("plain".into(), Topic::Plain);
        assert!(!on.counts("log"));
        assert!(on.counts("plain"));
        let off = GapCheck::new("p", "127.0.0.1:1", false);
        assert!(!off.counts("events"));
        off.learn(["events"]);
        assert!(off.lock().is_empty(), "nothing is looked up when disabled");
    }
}
