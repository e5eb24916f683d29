//! What the consumer and producer share: client settings with Switchyard's defaults, librdkafka
//! logs routed to `tracing`, and conversions between Kafka headers and the plugin's.
//!
//! # Defaults
//!
//! Chosen for sub-second delivery without giving up safety. Every one can be overridden in
//! `[kafka.consumer]` / `[kafka.producer]` under its librdkafka name.
//!
//! | client   | setting              | default           | why |
//! |----------|----------------------|-------------------|-----|
//! | consumer | `fetch.wait.max.ms`  | `10`              | a fetch returns within 10 ms even when the broker holds it (librdkafka: 500) |
//! | consumer | `fetch.queue.backoff.ms` | `10`          | a router briefly behind its prefetched records fetches again within 10 ms, not 1 s (librdkafka: 1000) |
//! | consumer | `session.timeout.ms` | `10000`           | a dead router's partitions move to the others within 10 s (librdkafka: 45000) |
//! | producer | `enable.idempotence` | `true`            | broker retries neither duplicate nor reorder; implies `acks=all` |
//! | producer | `acks`               | `all`             | an output counts as written only when every in-sync replica has it |
//! | producer | `linger.ms`          | `1`               | batch for 1 ms at most (librdkafka: 5) |
//! | producer | `message.timeout.ms` | `0` (no limit)    | a failed write is retried by librdkafka's idempotent producer, in order, until it succeeds (librdkafka: 300000, after which Switchyard re-sends it, and a re-sent record can land after later records of its partition) |
//! | producer | `partitioner`        | `murmur2_random`  | same key -> same partition as the Java client |
//!
//! Set by Switchyard and refused in the config: `bootstrap.servers` (from `kafka.brokers`),
//! `group.id` (the pipeline's `group`), `auto.offset.reset` (its `start`),
//! `enable.auto.commit` and `enable.auto.offset.store` (always off: offsets are committed
//! only after every output of a record is acknowledged). Refused when weakened:
//! `acks` other than `all`/`-1` and `enable.idempotence` other than `true`.

use crate::config::{KafkaConfig, PipelineConfig, StartPosition};
use crate::plugin::Header;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::{BorrowedHeaders, Header as KafkaHeader, Headers, OwnedHeaders};

/// Consumer settings for one pipeline.
pub fn consumer_config(kafka: &KafkaConfig, pipeline: &PipelineConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    let reset = match pipeline.start {
        StartPosition::Latest => "latest",
        // A timestamp start seeks each partition without a committed offset on assignment;
        // `earliest` only covers a partition the seek could not place.
        StartPosition::Earliest | StartPosition::Timestamp(_) => "earliest",
    };
    config
        .set("fetch.wait.max.ms", "10")
        // When the records fetched ahead pass librdkafka's queue thresholds it stops fetching
        // for this long (default 1000 ms). A router that is briefly behind then runs dry for
        // up to a second: on a backlog this alone cut throughput by 40%.
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", "10000")
        .set("client.id", format!("switchyard-{}", pipeline.name));
    for (key, value) in &kafka.consumer {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", pipeline.group())
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// Producer settings for one pipeline.
pub fn producer_config(kafka: &KafkaConfig, pipeline: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "0")
        .set("partitioner", "murmur2_random")
        .set("client.id", format!("switchyard-{pipeline}"));
    for (key, value) in &kafka.producer {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// librdkafka's log lines as `tracing` events.
pub fn log(pipeline: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", pipeline, facility, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", pipeline, facility, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", pipeline, facility, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", pipeline, facility, "{message}")
        }
    }
}

/// A Kafka message's headers as the plugin sees them, and the first problem with them: a
/// plugin header's key is a string, and a key that is not UTF-8 is passed on with its
/// invalid bytes replaced by U+FFFD and named in the problem (the record is then
/// dead-lettered, not run through the chain).
///
/// Reads through librdkafka directly: rdkafka's own header reader panics on such a key.
pub fn headers_from_kafka(headers: Option<&BorrowedHeaders>) -> (Vec<Header>, Option<String>) {
    let Some(headers) = headers else {
        return (Vec::new(), None);
    };
    let native = headers as *const BorrowedHeaders as *const rdkafka::types::RDKafkaHeaders;
    let mut out = Vec::with_capacity(headers.count());
    let mut problem = None;
    for index in 0..headers.count() {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0;
        // SAFETY: `native` is the message's header list, alive while `headers` is borrowed;
        // librdkafka writes a NUL-terminated name and a value pointer valid as long.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_get_all(
                native, index, &mut name, &mut value, &mut size,
            )
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            || name.is_null()
        {
            break;
        }
        // SAFETY: as above.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null())
            // SAFETY: librdkafka gives the value's size with its pointer.
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec());
        let key = match std::str::from_utf8(key) {
            Ok(key) => key.to_owned(),
            Err(_) => {
                problem.get_or_insert_with(|| {
                    format!(
                        "header {index}'s key is not UTF-8 (bytes: {})",
                        hex_prefix(key, 256)
                    )
                });
                String::from_utf8_lossy(key).into_owned()
            }
        };
        out.push(Header { key, value });
    }
    (out, problem)
}

/// `bytes` in hex, at most `max` of them (then `...`).
fn hex_prefix(bytes: &[u8], max: usize) -> String {
    let mut text: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        text.push_str("...");
    }
    text
}

/// `headers` with a plugin header added at the end (for a fold over a record's headers).
pub fn add_header(headers: OwnedHeaders, h: &Header) -> OwnedHeaders {
    headers.insert(KafkaHeader {
        key: &h.key,
        value: h.value.as_deref(),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long the start-up check of the output topics waits for the cluster's answer.
pub const TOPIC_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The partition ids of `topic` as the cluster's metadata lists them; none when it does not
/// exist.
pub fn partition_ids<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<i32>> {
    use anyhow::Context as _;
    use rdkafka::consumer::Consumer as _;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Which of `topics` the cluster says do not exist. Asks for each topic's metadata with a
/// consumer's settings, which never create a topic (`allow.auto.create.topics` is off for
/// consumers). `Err` when the cluster does not answer (the caller decides what that means).
pub fn missing_topics(
    kafka: &KafkaConfig,
    topics: &[&str],
    timeout: std::time::Duration,
) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut config = ClientConfig::new();
    for (key, value) in &kafka.consumer {
        config.set(key, value);
    }
    let client: BaseConsumer = config
        .set("bootstrap.servers", &kafka.brokers)
        .set("allow.auto.create.topics", "false")
        .set("client.id", "switchyard-topic-check")
        .set_log_level(RDKafkaLogLevel::Error)
        .create()?;
    let mut missing = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == *topic && t.error().is_none() && !t.partitions().is_empty());
        if !known {
            missing.push((*topic).to_owned());
        }
    }
    Ok(missing)
}

/// The route and dead-letter topics of `pipelines` that the cluster says do not exist, each
/// as `topic (pipeline P: routes.R)` or `topic (pipeline P: dead_letter_topic)`. `Err` when
/// the cluster does not answer within `timeout`.
pub fn missing_output_topics(
    kafka: &KafkaConfig,
    pipelines: &[&PipelineConfig],
    timeout: std::time::Duration,
) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    let mut wanted: Vec<(&str, String)> = Vec::new();
    for p in pipelines {
        for (route, topic) in &p.routes {
            wanted.push((topic, format!("pipeline {}: routes.{route}", p.name)));
        }
        wanted.push((
            &p.dead_letter_topic,
            format!("pipeline {}: dead_letter_topic", p.name),
        ));
    }
    let mut topics: Vec<&str> = wanted.iter().map(|(t, _)| *t).collect();
    topics.sort_unstable();
    topics.dedup();
    let missing = missing_topics(kafka, &topics, timeout)?;
    Ok(wanted
        .iter()
        .filter(|(topic, _)| missing.iter().any(|m| m == topic))
        .map(|(topic, key)| format!("{topic} ({key})"))
        .collect())
}

/// Queues one record, waiting while librdkafka's queue is full (back-pressure, not an
/// error); any other refusal is returned.
pub fn send_waiting<C, Part, K, P>(
    producer: &rdkafka::producer::ThreadedProducer<C, Part>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> rdkafka::error::KafkaResult<()>
where
    Part: rdkafka::producer::Partitioner,
    C: rdkafka::producer::ProducerContext<Part> + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The topic's `cleanup.policy` as the cluster describes it (`None`: not in its answer).
pub fn cleanup_policy(brokers: &str, topic: &str) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create an admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to describe the topic")?;
    // Kafka and tansu answer at once; librdkafka's mock cluster (the demo's broker) never
    // does, and no caller should wait long for it.
    let options = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(2)));
    let results = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options))
        .context("DescribeConfigs failed")?;
    let resource = results
        .into_iter()
        .next()
        .context("no answer for the topic")?
        .map_err(|code| anyhow::anyhow!("DescribeConfigs: {code}"))?;
    Ok(resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone()))
}

#[cfg(test)]
mod defaults_tests {
    use super::*;
    use crate::config::Config;

    fn parse(kafka_extra: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-kafka-defaults-{}-{}",
            std::process::id(),
            kafka_extra.len()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("s.json"), "{}").expect("schema");
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\n{kafka_extra}\n\
             [[pipeline]]\nname = \"p\"\ntopics = [\"in\"]\ndefault_route = \"out\"\n\
             dead_letter_topic = \"dlq\"\n[pipeline.routes]\nout = \"out-topic\"\n\
             [[pipeline.stage]]\nname = \"schema\"\njson_schema = \"s.json\"\n"
        );
        Config::parse(&text, &dir, &|_| None).expect("config")
    }

    #[test]
    fn the_consumer_refetches_within_10_ms_unless_told_otherwise() {
        let c = parse("");
        let consumer = consumer_config(&c.kafka, &c.pipelines[0]);
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        let c = parse("[kafka.consumer]\n\"fetch.queue.backoff.ms\" = \"250\"\n");
        let consumer = consumer_config(&c.kafka, &c.pipelines[0]);
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("250"));
    }
}
