//! What the demo writes: the generated events (each knowing the topic it must end up in),
//! the users table, the pipeline config, and the generator that produces the events at the
//! requested rate. Not what is read back (`checker`).

use super::checker::{Checker, WARM_UP, progress};
use super::{DEAD_LETTER, DemoOptions, ID_HEADER, INPUT, ROUTES};
use crate::kafka::now_ms;
use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::path::Path;
use std::time::{Duration, Instant};

/// Users in the reference table (ids user-0000 .. user-0199); events also come from a few
/// unknown users, which the left join keeps with nulls.
const USERS: u64 = 200;

/// One generated event: its bytes and the topic it must end up in.
struct Event {
    key: String,
    value: Vec<u8>,
    expected_topic: &'static str,
}

/// A realistic event stream: page views, clicks, purchases, sign-ups from known and unknown
/// users; about 1 in 12 high priority, 1 in 15 an error event, 1 in 40 invalid.
fn generate_event(i: u64) -> Event {
    const TYPES: [&str; 4] = ["page_view", "click", "purchase", "signup"];
    // A cheap deterministic scramble so the patterns do not line up.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let user = if h.is_multiple_of(50) {
        format!("user-9{:03}", h % 1000) // not in the table: enriched with nulls
    } else {
        format!("user-{:04}", h % USERS)
    };
    let event_type = if h % 15 == 1 {
        "error"
    } else {
        TYPES[(h % 4) as usize]
    };
    let priority = if h % 12 == 2 { "high" } else { "normal" };
    let amount = (h % 50_000) as f64 / 100.0;
    let now = now_ms();
    let (value, expected_topic) = match h % 40 {
        // Not JSON at all.
        7 => (
            format!("{{\"event_id\": \"evt-{i}\", \"user_id\": \"{user}\", oops").into_bytes(),
            DEAD_LETTER,
        ),
        // A required field is missing.
        17 => (
            format!(r#"{{"event_id":"evt-{i}","event_type":"{event_type}","priority":"{priority}","amount":{amount},"ts":{now}}}"#)
                .into_bytes(),
            DEAD_LETTER,
        ),
        // A field of the wrong type.
        27 => (
            format!(r#"{{"event_id":"evt-{i}","user_id":"{user}","event_type":"{event_type}","priority":"{priority}","amount":"{amount}","ts":{now}}}"#)
                .into_bytes(),
            DEAD_LETTER,
        ),
        _ => {
            let topic = if priority == "high" {
                "demo-urgent"
            } else if event_type == "error" {
                "demo-errors"
            } else {
                "demo-standard"
            };
            (
                format!(r#"{{"event_id":"evt-{i}","user_id":"{user}","event_type":"{event_type}","priority":"{priority}","amount":{amount},"email":"{user}@example.com","ts":{now}}}"#)
                    .into_bytes(),
                topic,
            )
        }
    };
    Event {
        key: user,
        value,
        expected_topic,
    }
}

/// The users table (JSON Lines).
pub(super) fn users_table() -> String {
    const SEGMENTS: [&str; 3] = ["enterprise", "smb", "consumer"];
    (0..USERS)
        .map(|u| {
            format!(
                "{{\"id\":\"user-{u:04}\",\"name\":\"User {u}\",\"segment\":\"{}\"}}\n",
                SEGMENTS[(u % 3) as usize]
            )
        })
        .collect()
}

/// The pipeline config the demo runs (written to the work directory for the reader to see).
pub(super) fn config_text(brokers: &str, plugins: &Path, admin_listen: &str) -> String {
    let plugin = |name: &str| plugins.join(format!("{name}.wasm")).display().to_string();
    let routes: String = ROUTES
        .iter()
        .map(|(r, t)| format!("{r} = \"{t}\"\n"))
        .collect();
    format!(
        r#"# Written by `switchyard demo`.
[kafka]
brokers = "{brokers}"

[admin]
listen = "{admin_listen}"
state_dir = "state"

[[table]]
name = "users"
path = "users.jsonl"
key_field = "id"

[[pipeline]]
name = "demo"
topics = ["{INPUT}"]
default_route = "standard"
dead_letter_topic = "{DEAD_LETTER}"
[pipeline.routes]
{routes}
[[pipeline.stage]]
name = "validate"
plugin = "{validate}"
[pipeline.stage.config]
required = "event_id:string,user_id:string,event_type:string,priority:string,amount:number"

[[pipeline.stage]]
name = "enrich"
plugin = "{enrich}"
[pipeline.stage.config]
table = "users"
key_field = "user_id"
fields = "name:user_name,segment:user_segment"

[[pipeline.stage]]
name = "transform"
plugin = "{transform}"
[pipeline.stage.config]
remove = "email"

[[pipeline.stage]]
name = "route"
plugin = "{route}"
"#,
        validate = plugin("validate"),
        enrich = plugin("enrich"),
        transform = plugin("transform"),
        route = plugin("route"),
    )
}

/// The stateful pipeline of `--scenario windows`: the same events, 10-second windows per
/// user (the events are keyed by user, so a user's events stay in one partition: one task).
pub(super) fn windows_config_text(plugins: &Path) -> String {
    let window = plugins.join("window.wasm").display().to_string();
    format!(
        r#"
[[pipeline]]
name = "demo-windows"
topics = ["{INPUT}"]
default_route = "aggregates"
dead_letter_topic = "{dead}"
watermark_delay_ms = 2000
[pipeline.routes]
aggregates = "{aggregates}"
[[pipeline.stage]]
name = "window"
plugin = "{window}"
[pipeline.stage.config]
key_field = "user_id"
value_field = "amount"
window_ms = "10000"
mode = "update"
"#,
        dead = super::WINDOWS_DEAD_LETTER,
        aggregates = super::AGGREGATES,
    )
}

/// What the generator wrote: the topic each event must end up in, by event number.
pub(super) struct Generated {
    pub(super) expected: Vec<&'static str>,
    pub(super) seconds: f64,
}

/// Writes `rate` events per second for `duration`, showing progress; returns once the broker
/// has acknowledged every one.
pub(super) fn generate(
    client: &ClientConfig,
    options: &DemoOptions,
    checker: &Checker,
    terminal: bool,
) -> anyhow::Result<Generated> {
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("cannot create the demo's producer")?;
    let mut expected = Vec::new();
    let started = Instant::now();
    checker.seen().measure_from_ms = now_ms() + WARM_UP.as_millis() as i64;
    let mut last_progress = Instant::now();
    let progress_every = Duration::from_millis(if terminal { 500 } else { 2000 });
    while started.elapsed() < options.duration {
        let due = ((started.elapsed().as_secs_f64() * options.rate as f64) as u64).max(1);
        while (expected.len() as u64) < due && started.elapsed() < options.duration {
            let i = expected.len() as u64;
            let event = generate_event(i);
            send(&producer, i, &event)?;
            expected.push(event.expected_topic);
        }
        if last_progress.elapsed() >= progress_every {
            progress(&checker.seen, started.elapsed(), terminal);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(30))
        .context("the broker did not acknowledge every generated event")?;
    Ok(Generated { expected, seconds })
}

/// Sends one event, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    i: u64,
    event: &Event,
) -> anyhow::Result<()> {
    let id = i.to_string();
    let record = BaseRecord::<str, [u8]>::to(INPUT)
        .key(event.key.as_str())
        .payload(&event.value)
        .headers(OwnedHeaders::new().insert(Header {
            key: ID_HEADER,
            value: Some(id.as_str()),
        }));
    crate::kafka::send_waiting(producer, record)
        .with_context(|| format!("cannot produce to {INPUT}"))
}
