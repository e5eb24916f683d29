//! Topic tables: the follower thread that reads a table topic from its beginning, applies
//! each record to a [`Table`]'s rows (a tombstone deletes), and marks the table caught up
//! once every partition reached the end it had at start-up. Not the rows' storage (`rows`)
//! nor the table set (the parent module).

use super::Table;
use crate::config::KafkaConfig;
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Follows a topic from its beginning.
pub(super) struct TopicFollower {
    consumer: BaseConsumer,
    topic: String,
    /// Per partition, the end offset at start-up: caught up once every partition reached it.
    targets: HashMap<i32, i64>,
}

/// Longest wait for the broker's answer about a table topic at start-up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl TopicFollower {
    pub(super) fn connect(kafka: &KafkaConfig, name: &str, topic: &str) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("fetch.wait.max.ms", "50")
            .set("client.id", format!("switchyard-table-{name}"));
        for (key, value) in &kafka.consumer {
            config.set(key, value);
        }
        // Partitions are assigned by hand: no group is joined and nothing is committed (the
        // group id is only there because some librdkafka versions want one).
        let consumer: BaseConsumer = config
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", format!("switchyard-table-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create the table consumer")?;
        let partitions = crate::kafka::partition_ids(&consumer, topic, METADATA_TIMEOUT)?;
        if partitions.is_empty() {
            anyhow::bail!(
                "topic {topic} does not exist (create it, compacted, with the table's rows)"
            );
        }
        let mut targets = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .with_context(|| format!("cannot read the end offsets of {topic}/{partition}"))?;
            if high > low {
                targets.insert(partition, high);
            }
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .context("cannot assign the table topic")?;
        }
        consumer
            .assign(&assignment)
            .context("cannot assign the table topic")?;
        Ok(TopicFollower {
            consumer,
            topic: topic.to_owned(),
            targets,
        })
    }

    pub(super) fn spawn(self, table: Arc<Table>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        if self.targets.is_empty() {
            table.ready.store(true, Ordering::Release);
        }
        std::thread::Builder::new()
            .name(format!("table-{}", table.config.name))
            .spawn(move || self.run(&table, &stop))
            .context("cannot start a table consumer thread")?;
        Ok(())
    }

    fn run(mut self, table: &Table, stop: &AtomicBool) {
        let name = &table.config.name;
        let started = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            match result {
                Ok(message) => {
                    let partition = message.partition();
                    let next = message.offset() + 1;
                    self.apply(table, message.key(), message.payload());
                    if self.targets.get(&partition).is_some_and(|end| next >= *end) {
                        self.targets.remove(&partition);
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.targets.remove(&partition);
                }
                Err(e) => {
                    table.status().last_error = Some(format!("{e}"));
                    if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(table = %name, topic = %self.topic, error = %e, "Table consumer error.");
                        last_error_log = Some(Instant::now());
                    }
                    continue;
                }
            }
            if self.targets.is_empty() && !table.is_ready() {
                table.ready.store(true, Ordering::Release);
                tracing::info!(
                    table = %name, topic = %self.topic, rows = table.len(),
                    ms = started.elapsed().as_millis() as u64, "Table caught up."
                );
            }
        }
    }

    fn apply(&self, table: &Table, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key else {
            table.status().keyless += 1;
            return;
        };
        {
            let mut rows = table.rows.write().unwrap_or_else(|p| p.into_inner());
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(key),
            }
        }
        let mut status = table.status();
        status.applied += 1;
        if value.is_none() {
            status.deleted += 1;
        }
        status.last_update_ms = Some(crate::kafka::now_ms());
        status.last_error = None;
    }
}
