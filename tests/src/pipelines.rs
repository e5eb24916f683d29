//! Running Switchyard pipelines inside the test process, and writing the config files they
//! read.

use crate::engine;
use crate::kafka::{Broker, Consumed};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::pipeline::PipelineHandle;
use switchyard::status::{CountersSnapshot, PipelineStatus};
use switchyard::{AdminListen, StartOptions};

/// A fresh, empty directory for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// A router started in this process (through [`switchyard::start`], as `switchyard run`
/// does), with its admin API on a free loopback port. Stops when dropped.
pub struct Running {
    inner: switchyard::Running,
    /// Every pipeline, as the admin API sees it.
    pub handles: Vec<Arc<PipelineHandle>>,
    /// The metrics they record to.
    pub metrics: Arc<Metrics>,
    /// The parsed config.
    pub config: Config,
}

/// The admin API of a [`Running`].
pub struct AdminServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Loads a config file and runs its pipelines in this process; uploaded versions are kept in
/// memory only.
pub fn start(config: &Path) -> anyhow::Result<Running> {
    start_with(config, false)
}

/// Like [`start`]; with `persist`, uploaded versions persist in the config's state directory.
pub fn start_with(config: &Path, persist: bool) -> anyhow::Result<Running> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    start_parsed(Config::load(config)?, persist, loopback)
}

/// Runs the pipelines of an already parsed config in this process, with the admin API on
/// `admin` (port 0: a free one); `persist` as in [`start_with`].
pub fn start_parsed(
    config: Config,
    persist: bool,
    admin: std::net::SocketAddr,
) -> anyhow::Result<Running> {
    // The pipelines' logs, shown for failing tests; RUST_LOG picks the level (default warn).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let inner = switchyard::start(
        config.clone(),
        StartOptions {
            engine: Some(engine()),
            ephemeral_versions: !persist,
            admin: AdminListen::At(admin),
        },
    )?;
    Ok(Running {
        handles: inner.pipelines().to_vec(),
        metrics: inner.metrics().clone(),
        config,
        inner,
    })
}

impl Running {
    /// The admin API, served with the config's tokens and limits on a free port; its URL is
    /// on the loopback address even when it listens on every address.
    pub fn serve_admin(&self) -> AdminServer {
        let mut address = self
            .inner
            .admin_addr()
            .unwrap_or_else(|| panic!("the admin API is not running"));
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        AdminServer {
            url: format!("http://{address}"),
        }
    }

    /// The live status of a pipeline.
    pub fn status(&self, name: &str) -> &PipelineStatus {
        self.inner
            .pipeline(name)
            .map(|p| p.status.as_ref())
            .unwrap_or_else(|| panic!("no pipeline {name}"))
    }

    /// A pipeline's counters.
    pub fn counters(&self, name: &str) -> CountersSnapshot {
        self.status(name).counters.snapshot()
    }

    /// Waits until `done` holds for a pipeline's counters, or `timeout`; returns the last
    /// counters either way.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&CountersSnapshot) -> bool,
    ) -> CountersSnapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.counters(name);
            if done(&c) || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the pipelines to drain and stop, and returns how they ended.
    pub fn stop(self) -> anyhow::Result<()> {
        self.inner.stop();
        self.inner.wait()
    }

    /// Reads `topics` from the beginning until at least `n` records are read and nothing new
    /// arrives for `settle` (120 s at most), then stops the pipelines and asserts that they
    /// stopped cleanly. The records read.
    pub fn stop_after_reading(
        self,
        broker: &Broker,
        topics: &[&str],
        n: usize,
        settle: Duration,
    ) -> Vec<Consumed> {
        let out = broker
            .consume_all(topics, n, settle, Duration::from_secs(120))
            .expect("consumed");
        self.stop().expect("clean stop");
        out
    }
}

/// One stage of a test pipeline: name, plugin (built by this crate), config pairs.
pub type StageDef<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A `[[pipeline]]` block. `routes` are (route, topic); the first is the default route.
/// `extra` is appended inside the pipeline table (e.g. `batch_size = 16`).
pub fn pipeline_toml(
    name: &str,
    input: &str,
    routes: &[(&str, &str)],
    dead_letter_topic: &str,
    stages: &[StageDef<'_>],
    extra: &str,
) -> String {
    let mut out = format!(
        "[[pipeline]]\nname = \"{name}\"\ntopics = [\"{input}\"]\ndefault_route = \"{}\"\ndead_letter_topic = \"{dead_letter_topic}\"\n{extra}\n[pipeline.routes]\n",
        routes.first().map_or("standard", |r| r.0)
    );
    for (route, topic) in routes {
        out.push_str(&format!("{route} = \"{topic}\"\n"));
    }
    for (stage, plugin, config) in stages {
        out.push_str(&format!(
            "[[pipeline.stage]]\nname = \"{stage}\"\nplugin = \"{}\"\n[pipeline.stage.config]\n",
            crate::plugin_path(plugin).display()
        ));
        for (k, v) in *config {
            out.push_str(&format!("{k} = \"{v}\"\n"));
        }
    }
    out
}

/// The output topics of [`routing_pipeline_toml`]: its three routes, then its dead-letter
/// topic.
pub const ROUTING_OUTPUTS: [&str; 4] = [
    "events-standard",
    "events-urgent",
    "events-errors",
    "events-dlq",
];

/// The input topic `events` (4 partitions) and `outputs` (2 partitions each).
pub fn event_topics<'a>(outputs: &[&'a str]) -> Vec<(&'a str, i32)> {
    let mut topics = vec![("events", 4)];
    topics.extend(outputs.iter().map(|t| (*t, 2)));
    topics
}

/// Creates [`event_topics`] on `broker`.
pub fn create_event_topics(broker: &Broker, outputs: &[&str]) {
    broker
        .create_topics(&event_topics(outputs))
        .expect("topics created");
}

/// The routing pipeline `events`: it reads the topic `events`, and its one stage, the `route`
/// plugin, sends each event to `events-standard`, `events-urgent` or `events-errors`
/// ([`ROUTING_OUTPUTS`]); dead letters go to `events-dlq`. `extra` as in [`pipeline_toml`].
pub fn routing_pipeline_toml(extra: &str) -> String {
    routing_pipeline_with(&[("route", "route", &[])], extra)
}

/// The routing pipeline's `[[pipeline]]` block (input, routes and dead-letter topic as in
/// [`routing_pipeline_toml`]) with other `stages`.
pub fn routing_pipeline_with(stages: &[StageDef<'_>], extra: &str) -> String {
    pipeline_toml(
        "events",
        "events",
        &[
            ("standard", ROUTING_OUTPUTS[0]),
            ("urgent", ROUTING_OUTPUTS[1]),
            ("errors", ROUTING_OUTPUTS[2]),
        ],
        ROUTING_OUTPUTS[3],
        stages,
        extra,
    )
}

/// Writes `switchyard.toml` in a fresh scratch directory `name`: the `[kafka]` table for
/// `broker`, then `tables` (other tables, e.g. `[admin]`), then [`routing_pipeline_toml`] with
/// `extra`. Its path. The topics are not created here (see [`create_event_topics`]).
pub fn routing_config(broker: &Broker, name: &str, tables: &str, extra: &str) -> PathBuf {
    let text = format!(
        "{}\n{tables}\n{}",
        kafka_toml(broker.bootstrap()),
        routing_pipeline_toml(extra)
    );
    write_file(&scratch_dir(name), "switchyard.toml", &text)
}

/// Reads [`ROUTING_OUTPUTS`] from the beginning until at least `n` records are read and
/// nothing new arrives for `settle` (300 s at most).
pub fn read_routing_outputs(broker: &Broker, n: u64, settle: Duration) -> Vec<Consumed> {
    broker
        .consume_all(
            &ROUTING_OUTPUTS,
            n as usize,
            settle,
            Duration::from_secs(300),
        )
        .expect("consumed")
}

/// An `[admin]` table for a router process that must not take the default port (several
/// run at once): a free port, chosen by the system and logged.
pub const ADMIN_EPHEMERAL: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The `[kafka]` table for a test broker: fast group joins and commits.
pub fn kafka_toml(bootstrap: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n"
    )
}

/// Waits until `GET /readyz` answers 200 (30 s at most, then panics with the last answer).
pub fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call("GET", &format!("{url}/readyz"), None, None);
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The token a router made for its admin API when the config sets none: the file
/// `admin-token` in the state directory of the config in `dir` (the default state directory,
/// `.switchyard-state` next to the config).
pub fn generated_token(dir: &Path) -> String {
    let path = dir.join(".switchyard-state").join("admin-token");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// One request as a browser could send it: `headers` exactly as given (`Host` among them, if
/// at all), then `body`. The status and the body.
pub fn raw_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// One request; the status and the body (JSON if it parses, else a string). A PUT's body is
/// sent as `application/wasm` (an upload), a POST's as `application/json`.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        "POST" | "PUT" => {
            let mut r = if method == "POST" {
                agent.post(url)
            } else {
                agent.put(url)
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            match body {
                Some(b) => {
                    let kind = if method == "PUT" {
                        "application/wasm"
                    } else {
                        "application/json"
                    };
                    r.header("Content-Type", kind).send(b)
                }
                None => r.send_empty(),
            }
        }
        other => panic!("method {other}"),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}
