//! A Kafka-protocol broker for a test, and the client helpers the tests use on it.
//!
//! [`Broker::tansu`] starts tansu (a Kafka-protocol broker from crates.io, in memory) on a free
//! loopback port, in a child process killed when the `Broker` drops; [`Broker::tansu_on`]
//! with another [`Storage`] (an SQLite file survives [`Broker::restart`]). [`Broker::mock`] is
//! librdkafka's in-process mock cluster, for fault injection. Topics are never auto-created:
//! tests create them with [`Broker::create_topics`].

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// Key (`None`: null).
    pub key: Option<Vec<u8>>,
    /// Value (`None`: null).
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Headers whose keys are any bytes (not UTF-8, say), after `headers`.
    pub raw_headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Timestamp (default: the producer's clock).
    pub timestamp_ms: Option<i64>,
    /// Partition (default: by key).
    pub partition: Option<i32>,
}

impl TestRecord {
    /// A keyed record.
    pub fn new(key: &str, value: &[u8]) -> Self {
        TestRecord {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            ..Default::default()
        }
    }
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Timestamp.
    pub timestamp_ms: Option<i64>,
}

impl Consumed {
    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value as text (empty when null or not UTF-8).
    pub fn value_str(&self) -> &str {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("")
    }

    /// The value as JSON; panics when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("output is not JSON ({e}): {:?}", self.value_str()))
    }

    /// The `i` of the [`event`](crate::event) this record carries (its `event_id`,
    /// `evt-<i>`); panics when the value is not JSON or has no such id.
    pub fn event_number(&self) -> u64 {
        let v = self.json();
        v["event_id"]
            .as_str()
            .and_then(|id| id.trim_start_matches("evt-").parse().ok())
            .unwrap_or_else(|| panic!("no event id in {v}"))
    }
}

/// `event(i)` for each `i` in `range`, keyed `user-NNNNN` with `NNNNN = i % keys` (so records
/// of one key are `keys` apart).
pub fn event_records(range: Range<u64>, keys: u64) -> impl Iterator<Item = TestRecord> {
    range
        .map(move |i| TestRecord::new(&format!("user-{:05}", i % keys), crate::event(i).as_bytes()))
}

/// How many times each event (by [`Consumed::event_number`]) was read.
pub fn tally(out: &[Consumed]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for c in out {
        *counts.entry(c.event_number()).or_default() += 1;
    }
    counts
}

/// The first ten of the events `0..n` that `counts` (from [`tally`]) has not seen.
pub fn missing(counts: &HashMap<u64, usize>, n: u64) -> Vec<u64> {
    (0..n)
        .filter(|i| !counts.contains_key(i))
        .take(10)
        .collect()
}

enum Kind {
    Tansu {
        child: Mutex<Child>,
        log: PathBuf,
        /// How it was started, to start it again.
        command: TansuCommand,
    },
    Mock(MockCluster<'static, DefaultProducerContext>),
}

/// Where tansu keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, lost when the broker stops. tansu 0.6's memory engine answers a fetch
    /// that starts inside a record batch from the next batch, so test producers write one
    /// record per batch on it.
    Memory,
    /// In an SQLite file (`--features libsql`): survives a restart of the broker, and answers
    /// mid-batch fetches correctly.
    Sqlite(PathBuf),
}

impl Storage {
    fn engine_url(&self) -> String {
        match self {
            Storage::Memory => "memory://tansu/".to_owned(),
            // tansu takes the URL's path without its leading `/` (relative to its working
            // directory): an absolute path needs one more.
            Storage::Sqlite(path) if path.is_absolute() => format!("sqlite:///{}", path.display()),
            Storage::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
struct TansuCommand {
    binary: PathBuf,
    url: String,
    storage: Storage,
}

impl TansuCommand {
    fn spawn(&self, log: &std::path::Path, append: bool) -> anyhow::Result<Child> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "broker",
                "--listener-url",
                &self.url,
                "--advertised-listener-url",
                &self.url,
            ])
            .args(["--storage-engine", &self.storage.engine_url()])
            // The test's own RUST_LOG must not make the broker log every request.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        // SAFETY: prctl in the forked child before exec only sets a flag of that child.
        // The broker dies with the test process, even when the test is killed.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))
    }
}

/// A broker for one test.
pub struct Broker {
    bootstrap: String,
    kind: Kind,
}

/// Where the tansu binary is: `$SWITCHYARD_TANSU`, the tools cache the test command installs
/// it into, or `tansu` on the PATH.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for candidate in [
        home.join(".cache/switchyard/tools/bin/tansu"),
        home.join(".cache/switchyard-ci/tools/bin/tansu"),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path.context(
        "the tansu broker is not installed: run tests/run.sh (it installs it), or \
         `cargo install tansu --locked --features dynostore` (add `libsql` for `Storage::Sqlite`) and set SWITCHYARD_TANSU",
    )
}

/// A loopback port free right now (another process may take it before it is used).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    /// Starts tansu (in memory) on a free loopback port and waits until it answers metadata
    /// requests.
    pub fn tansu() -> anyhow::Result<Broker> {
        Self::tansu_on(Storage::Memory)
    }

    /// Starts tansu on a free loopback port with the given storage.
    pub fn tansu_on(storage: Storage) -> anyhow::Result<Broker> {
        let binary = tansu_binary()?;
        let mut last_error = None;
        // A port found free can be taken before tansu binds it; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let command = TansuCommand {
                binary: binary.clone(),
                url: format!("tcp://127.0.0.1:{port}"),
                storage: storage.clone(),
            };
            let log = std::env::temp_dir().join(format!("switchyard-tansu-{port}.log"));
            let child = command.spawn(&log, false)?;
            let broker = Broker {
                bootstrap: format!("127.0.0.1:{port}"),
                kind: Kind::Tansu {
                    child: Mutex::new(child),
                    log,
                    command,
                },
            };
            match broker.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return Ok(broker),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("tansu did not start")))
    }

    /// Kills tansu (SIGKILL) and starts it again on the same port and storage; waits until it
    /// answers. With [`Storage::Memory`] every record is gone afterwards.
    pub fn restart(&self) -> anyhow::Result<()> {
        let Kind::Tansu {
            child,
            log,
            command,
        } = &self.kind
        else {
            bail!("only tansu restarts");
        };
        {
            let mut child = child
                .lock()
                .map_err(|_| anyhow::anyhow!("tansu's handle is poisoned"))?;
            let _ = child.kill();
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(30);
            // The port is free again only once the old process is gone; retry the bind.
            *child = loop {
                let started = command.spawn(log, true)?;
                std::thread::sleep(Duration::from_millis(300));
                let mut started = started;
                match started.try_wait() {
                    Ok(None) => break started,
                    _ if Instant::now() < deadline => continue,
                    _ => bail!("tansu did not start again:\n{}", self.log()),
                }
            };
        }
        self.wait_ready(Duration::from_secs(60))
    }

    /// librdkafka's in-process mock cluster with `brokers` brokers.
    pub fn mock(brokers: i32) -> anyhow::Result<Broker> {
        let cluster = MockCluster::new(brokers).context("cannot start the mock cluster")?;
        Ok(Broker {
            bootstrap: cluster.bootstrap_servers(),
            kind: Kind::Mock(cluster),
        })
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// tansu's process id (`None` for the mock cluster).
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Tansu { child, .. } => child.lock().ok().map(|c| c.id()),
            Kind::Mock(_) => None,
        }
    }

    /// The mock cluster, for fault injection.
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        match &self.kind {
            Kind::Mock(m) => Some(m),
            Kind::Tansu { .. } => None,
        }
    }

    /// tansu's log so far (empty for the mock cluster).
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Tansu { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            Kind::Mock(_) => String::new(),
        }
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = self.client_config().create()?;
        loop {
            if let Kind::Tansu { child, .. } = &self.kind
                && let Ok(Some(status)) = child
                    .lock()
                    .map_err(|_| ())
                    .and_then(|mut c| c.try_wait().map_err(|_| ()))
            {
                bail!("tansu exited ({status}):\n{}", self.log());
            }
            match consumer.fetch_metadata(None, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "tansu did not answer within {timeout:?}: {e}\n{}",
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Settings every client here starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3");
        c
    }

    /// Deletes topics (a real broker's admin API; not the mock cluster) and waits until
    /// metadata no longer shows them.
    pub fn delete_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !matches!(self.kind, Kind::Mock(_)),
            "the mock cluster cannot delete topics"
        );
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let results = runtime
            .block_on(admin.delete_topics(topics, &AdminOptions::new()))
            .context("delete topics request failed")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("cannot delete topic {topic}: {code}");
            }
        }
        let consumer: BaseConsumer = self
            .client_config()
            .set("allow.auto.create.topics", "false")
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in topics {
            loop {
                let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
                let gone = metadata
                    .topics()
                    .iter()
                    .all(|t| t.name() != *name || t.error().is_some() || t.partitions().is_empty());
                if gone {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "topic {name} still listed after 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Creates topics and waits until metadata shows every partition.
    pub fn create_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        self.create_topics_with(topics, &[])
    }

    /// Creates compacted topics (`cleanup.policy=compact`; the mock cluster ignores topic
    /// configs), as a changelog topic must be.
    pub fn create_compacted_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        self.create_topics_with(topics, &[("cleanup.policy", "compact")])
    }

    /// Creates topics with the topic configs `configs` and waits until metadata shows every
    /// partition.
    pub fn create_topics_with(
        &self,
        topics: &[(&str, i32)],
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        if let Kind::Mock(cluster) = &self.kind {
            for (name, partitions) in topics {
                cluster
                    .create_topic(name, *partitions, 1)
                    .with_context(|| format!("cannot create topic {name}"))?;
            }
        } else {
            let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
            let new: Vec<NewTopic<'_>> = topics
                .iter()
                .map(|(name, partitions)| {
                    configs.iter().fold(
                        NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                        |topic, (key, value)| topic.set(key, value),
                    )
                })
                .collect();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let results = runtime
                .block_on(admin.create_topics(&new, &AdminOptions::new()))
                .context("create topics request failed")?;
            for result in results {
                if let Err((topic, code)) = result {
                    bail!("cannot create topic {topic}: {code}");
                }
            }
        }
        let consumer: BaseConsumer = self.client_config().create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for (name, partitions) in topics {
            loop {
                let seen = consumer
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .ok()
                    .and_then(|m| {
                        m.topics()
                            .first()
                            .map(|t| (t.error().is_none(), t.partitions().len()))
                    });
                if seen == Some((true, *partitions as usize)) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("topic {name} did not appear with {partitions} partitions: {seen:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// An idempotent producer (acks=all) that counts refused records.
    ///
    /// On tansu in memory, one record per batch: tansu 0.6's memory engine answers a fetch that
    /// starts inside a batch from the next batch, so a consumer that resumes mid-batch (after a
    /// pause, a restart from a committed offset, a rebalance) would lose the rest of that batch.
    /// Real Kafka, and tansu on SQLite, do not need this.
    pub fn producer(&self) -> anyhow::Result<ThreadedProducer<Counting>> {
        let mut config = self.client_config();
        config.set("enable.idempotence", "true");
        if let Kind::Tansu { command, .. } = &self.kind
            && command.storage == Storage::Memory
        {
            config.set("batch.num.messages", "1").set("linger.ms", "0");
        }
        config
            .create_with_context(Counting::default())
            .context("cannot create a producer")
    }

    /// Produces records and waits until every one is acknowledged.
    pub fn produce(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = TestRecord>,
    ) -> anyhow::Result<()> {
        let producer = self.producer()?;
        for r in records {
            send(&producer, topic, &r)?;
        }
        // A deadline for a stuck broker, not a speed limit: on two cores shared with other
        // tests, tansu has taken over a minute to take 100,000 records.
        producer
            .flush(Duration::from_secs(300))
            .context("records not acknowledged within 300 s")?;
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} records were refused by the broker");
        }
        Ok(())
    }

    /// Reads every record of `topics` from the beginning (no consumer group) until `expected`
    /// records are read and nothing new arrives for `settle`, or `deadline` passes.
    pub fn consume_all(
        &self,
        topics: &[&str],
        expected: usize,
        settle: Duration,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Consumed>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "switchyard-test-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .with_context(|| format!("no metadata for {topic}"))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                }
            }
        }
        consumer.assign(&tpl)?;
        let start = Instant::now();
        let mut last_new = Instant::now();
        let mut out = Vec::new();
        loop {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    out.push(Consumed {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timestamp_ms: m.timestamp().to_millis(),
                    });
                    last_new = Instant::now();
                }
                Some(Err(e)) => return Err(e).context("consume failed"),
                None => {}
            }
            if out.len() >= expected && last_new.elapsed() >= settle {
                return Ok(out);
            }
            if start.elapsed() >= deadline {
                return Ok(out);
            }
        }
    }

    /// A consumer group's committed offsets for a topic (partition -> next offset to read).
    pub fn committed(&self, group: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// A producer context that counts refused records.
#[derive(Default)]
pub struct Counting {
    /// Records the broker refused.
    pub failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Queues one record, waiting while the producer's queue is full.
pub fn send(
    producer: &ThreadedProducer<Counting>,
    topic: &str,
    r: &TestRecord,
) -> anyhow::Result<()> {
    let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: v.as_deref(),
        })
    });
    for (key, value) in &r.raw_headers {
        let native = headers.as_borrowed() as *const _ as *mut rdkafka::types::RDKafkaHeaders;
        let (value_ptr, value_len) = value
            .as_deref()
            .map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
        // SAFETY: the header list is owned by `headers` and not shared yet; librdkafka copies
        // the name (its length given, so any bytes) and the value.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                native,
                key.as_ptr().cast(),
                key.len() as isize,
                value_ptr.cast(),
                value_len as isize,
            )
        };
        anyhow::ensure!(
            err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "cannot add a raw header: {err:?}"
        );
    }
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_slice());
    }
    if let Some(ts) = r.timestamp_ms {
        record = record.timestamp(ts);
    }
    if let Some(p) = r.partition {
        record = record.partition(p);
    }
    switchyard::kafka::send_waiting(producer, record).context("produce failed")
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Kind::Tansu { child, log, .. } = &self.kind
            && let Ok(mut child) = child.lock()
        {
            let _ = child.kill();
            let _ = child.wait();
            // Kept for a failing test.
            if !std::thread::panicking() {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}
