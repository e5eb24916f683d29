//! `window`: tumbling event-time windows; per window and key, the count, sum and average of a
//! numeric field.
//!
//! A stateful plugin (contract 0.2.0). Each record is added to the window its timestamp falls
//! in, `[floor(ts / window_ms) * window_ms, + window_ms)`, under the text of its key field.
//! When the task's watermark reaches a window's end, an event-time timer evicts the window: in
//! `final` mode its aggregates are emitted then, one record per key; in `update` mode each
//! record was replaced by its window's aggregate as it arrived, and eviction emits nothing.
//!
//! # Config
//!
//! | key           | default      | meaning                                                    |
//! |---------------|--------------|------------------------------------------------------------|
//! | `key_field`   | `event_type` | top-level field holding the key: a string, or a number (its JSON text as written) |
//! | `value_field` | `amount`     | top-level field holding the number to aggregate            |
//! | `window_ms`   | `60000`      | window length in milliseconds, > 0                         |
//! | `mode`        | `update`     | `update`: emit the aggregate on every record; `final`: emit once per window and key when the window closes |
//! | `route`       | (none)       | route of the aggregates; absent: the pipeline's default route (update mode: the record's current route) |
//!
//! How long a window waits for stragglers is the pipeline's `watermark_delay_ms` (the
//! watermark trails the records' timestamps by it), not a key of this plugin. Any other key,
//! an empty `key_field`, `value_field` or `route`, a `window_ms` that is not a number > 0, or
//! another `mode` fails `init` with an error naming the key. Changing `window_ms` of a running
//! stage strands the entries of the windows open at the time in the state.
//!
//! Numbers are read exactly (the nearest `f64` to the text). When a field appears more than
//! once in a record, the first occurrence counts.
//!
//! # Dead-letter reasons, in the order checked
//!
//! `not a JSON object` (also for a null, non-UTF-8 or invalid value), `no timestamp`,
//! `negative timestamp`, `missing field <key_field>`,
//! `field <key_field> is not a string or number`, `missing field <value_field>`,
//! `field <value_field> is not a number`, `late: event time T is behind the watermark W` (the
//! record came after its window may have closed), `timestamp T is too large` (the window's
//! end is past the largest instant), `the sum of field <value_field> overflows` (the window's
//! sum would not be a finite number), `bad state entry <key>: <why>`.
//!
//! # State
//!
//! Shared with the Python version of this plugin, so that either can take over the other's
//! state. Key: `w/`, the window's start as 16 zero-padded decimal digits, `/`, the key text
//! (UTF-8). Value: the JSON object `{"count":N,"sum":X}`; the sum is the `f64` sum of the
//! values in record order. One event-time timer per window, at its end, tag `w`.
//! Each window and key a batch touches is read from the state once and written back once,
//! when the batch is done: what each record sees and emits is the same as with a read and
//! a write per record, at a fraction of the state calls.
//!
//! # Output
//!
//! Key `<key>|<window_start>`; value
//! `{"key":K,"window_start":S,"window_end":E,"count":N,"sum":X,"avg":X/N}` (fields in this
//! order, times in milliseconds, `sum` and `avg` as JSON numbers); no headers.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use switchyard_plugin_sdk::timers::{self, Domain};
use switchyard_plugin_sdk::{
    Batch, Config, Field, FieldKind, Output, Record, StatefulPlugin, Timer, Verdict, host, json,
    state,
};

/// The tag of every window's timer.
const TAG: &str = "w";

/// Aggregates a numeric field per tumbling window and key.
#[derive(Debug)]
pub struct Window {
    key_field: String,
    value_field: String,
    window_ms: i64,
    mode: Mode,
    route: Option<String>,
}

/// When aggregates are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// On every record: the record becomes its window's aggregate after it.
    Update,
    /// Once per window and key, when the window closes; records are absorbed.
    Final,
}

/// A record that made it into a window.
struct Accepted {
    key: String,
    value: f64,
    window_start: i64,
    window_end: i64,
}

/// The state of one window and key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Aggregate {
    count: u64,
    sum: f64,
}

impl Aggregate {
    /// Reads `{"count":N,"sum":X}`; the sum is parsed exactly (nearest `f64`), so that it
    /// survives the round trip through the state bit for bit.
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let [count, sum] = json::fields(bytes, ["count", "sum"]).map_err(|e| e.to_string())?;
        match (count.and_then(|c| c.as_u64()), sum.and_then(|s| s.as_f64())) {
            (Some(count), Some(sum)) => Ok(Self { count, sum }),
            _ => Err("no count or no sum".to_owned()),
        }
    }

    /// `{"count":N,"sum":X}`; the sum must be finite (serde_json writes anything else as
    /// `null`).
    fn encode(&self) -> Vec<u8> {
        // Serializing a struct of numbers into a Vec cannot fail.
        serde_json::to_vec(self).expect("numbers always serialize")
    }
}

impl StatefulPlugin for Window {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["key_field", "value_field", "window_ms", "mode", "route"])?;
        let non_empty = |key: &str, value: &str| match value.trim() {
            "" => Err(format!(
                "invalid value for config key `{key}`: must not be empty"
            )),
            value => Ok(value.to_owned()),
        };
        let window_ms = config.parse_or("window_ms", 60_000_i64)?;
        if window_ms <= 0 {
            return Err(format!(
                "invalid value for config key `window_ms`: must be > 0, not {window_ms}"
            ));
        }
        let mode = match config.get_or("mode", "update").trim() {
            "update" => Mode::Update,
            "final" => Mode::Final,
            other => {
                return Err(format!(
                    "invalid value for config key `mode`: `{other}` (expected `update` or `final`)"
                ));
            }
        };
        Ok(Self {
            key_field: non_empty("key_field", config.get_or("key_field", "event_type"))?,
            value_field: non_empty("value_field", config.get_or("value_field", "amount"))?,
            window_ms,
            mode,
            route: config
                .get("route")
                .map(|route| non_empty("route", route))
                .transpose()?,
        })
    }

    fn process(&mut self, record: &Record, batch: &Batch) -> Verdict {
        let mut windows = Windows::default();
        let verdict = self.accept(record, batch, &mut windows);
        windows.write_back();
        verdict
    }

    /// The batch's records in order, each window and key read from the state once and
    /// written back once at the end: what each record sees and emits is what it would see
    /// and emit were every record a call of its own.
    fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        let mut windows = Windows::default();
        let verdicts = batch
            .records()
            .iter()
            .map(|record| self.accept(record, batch, &mut windows))
            .collect();
        windows.write_back();
        verdicts
    }

    fn on_timer(&mut self, timer: &Timer, _watermark_ms: Option<i64>) -> Vec<Output> {
        if timer.domain != Domain::EventTime || timer.tag != TAG {
            host::warn(&format!("window: ignored a timer it never sets: {timer:?}"));
            return Vec::new();
        }
        let window_start = timer.at_ms.saturating_sub(self.window_ms);
        let prefix = window_prefix(window_start);
        let mut outputs = Vec::new();
        for entry in state::entries(prefix.clone()) {
            if self.mode == Mode::Final {
                let key = String::from_utf8_lossy(&entry.key[prefix.len()..]);
                match Aggregate::decode(&entry.value) {
                    Ok(aggregate) => outputs.push(self.output(&key, window_start, aggregate)),
                    Err(e) => host::error(&format!(
                        "window: dropped bad state entry {}: {e}",
                        String::from_utf8_lossy(&entry.key)
                    )),
                }
            }
            state::delete(&entry.key);
        }
        outputs
    }
}

impl Window {
    /// Adds the record to its window: the verdict; a dead letter with the reason.
    fn accept(&self, record: &Record, batch: &Batch, windows: &mut Windows) -> Verdict {
        match self.add(record, batch, windows) {
            Ok(verdict) => verdict,
            Err(reason) => Verdict::DeadLetter(reason),
        }
    }

    /// Adds the record to its window: the verdict, or the reason to dead-letter it.
    fn add(
        &self,
        record: &Record,
        batch: &Batch,
        windows: &mut Windows,
    ) -> Result<Verdict, String> {
        let Accepted {
            key,
            value,
            window_start,
            window_end,
        } = self.read(record, batch)?;

        let slot = windows.slot(window_start, &key);
        let aggregate = slot.aggregate.as_mut().map_err(|e| e.clone())?;
        let mut next = *aggregate;
        next.count += 1;
        next.sum += value;
        if !next.sum.is_finite() {
            return Err(format!("the sum of field {} overflows", self.value_field));
        }
        // The window's timer is set with its first entry: state and timers of a call are
        // kept or dropped together, and the timer deletes every entry of its window.
        if aggregate.count == 0 {
            timers::set(Domain::EventTime, window_end, TAG);
        }
        *aggregate = next;
        slot.changed = true;

        Ok(match self.mode {
            Mode::Update => {
                let emitting = slot
                    .emitting
                    .get_or_insert_with(|| self.emitting(&key, window_start));
                Verdict::emit_one(self.output_from(emitting, next))
            }
            Mode::Final => Verdict::Drop,
        })
    }

    /// The record's key, value and window, or the reason to dead-letter it (checked in the
    /// documented order).
    fn read(&self, record: &Record, batch: &Batch) -> Result<Accepted, String> {
        let [key, value] = object_fields(record, [&self.key_field, &self.value_field])?;
        let ts = record.timestamp_ms().ok_or("no timestamp")?;
        if ts < 0 {
            return Err("negative timestamp".to_owned());
        }
        let key = key
            .ok_or_else(|| format!("missing field {}", self.key_field))
            .and_then(|key| {
                key_text(key)
                    .ok_or_else(|| format!("field {} is not a string or number", self.key_field))
            })?
            .into_owned();
        let value = value
            .ok_or_else(|| format!("missing field {}", self.value_field))?
            .as_f64()
            .ok_or_else(|| format!("field {} is not a number", self.value_field))?;
        if record.late() {
            return Err(late(ts, batch.watermark_ms()));
        }
        let window_start = ts - ts % self.window_ms;
        let window_end = window_start
            .checked_add(self.window_ms)
            .ok_or_else(|| format!("timestamp {ts} is too large"))?;
        Ok(Accepted {
            key,
            value,
            window_start,
            window_end,
        })
    }

    /// The aggregate of `key` in the window starting at `window_start`.
    fn output(&self, key: &str, window_start: i64, aggregate: Aggregate) -> Output {
        self.output_from(&self.emitting(key, window_start), aggregate)
    }

    /// What the outputs of one window and key share.
    fn emitting(&self, key: &str, window_start: i64) -> Emitting {
        let mut output_key = Vec::with_capacity(key.len() + 21);
        output_key.extend_from_slice(key.as_bytes());
        output_key.push(b'|');
        push_decimal(&mut output_key, window_start, 0);
        let mut value = Vec::with_capacity(key.len() + 64);
        value.extend_from_slice(br#"{"key":"#);
        // A string always serializes.
        serde_json::to_writer(&mut value, key).expect("a string always serializes");
        value.extend_from_slice(br#","window_start":"#);
        push_decimal(&mut value, window_start, 0);
        value.extend_from_slice(br#","window_end":"#);
        push_decimal(&mut value, window_start + self.window_ms, 0);
        value.extend_from_slice(br#","count":"#);
        Emitting {
            key: output_key,
            value_start: value,
        }
    }

    /// `{"key":K,"window_start":S,"window_end":E,"count":N,"sum":X,"avg":X/N}`: the shared
    /// start, then the numbers as serde_json writes them.
    fn output_from(&self, emitting: &Emitting, aggregate: Aggregate) -> Output {
        let mut value = Vec::with_capacity(emitting.value_start.len() + 64);
        value.extend_from_slice(&emitting.value_start);
        let count = i64::try_from(aggregate.count).unwrap_or(i64::MAX);
        push_decimal(&mut value, count, 0);
        // A finite number always serializes (the sum is checked finite before it is kept).
        value.extend_from_slice(br#","sum":"#);
        serde_json::to_writer(&mut value, &aggregate.sum).expect("a number always serializes");
        value.extend_from_slice(br#","avg":"#);
        let avg = aggregate.sum / aggregate.count as f64;
        serde_json::to_writer(&mut value, &avg).expect("a number always serializes");
        value.push(b'}');
        let output = Output::new()
            .with_key(emitting.key.clone())
            .with_value(value);
        match &self.route {
            Some(route) => output.with_route(route),
            None => output,
        }
    }
}

/// The output key of one window and key, and its value up to the count.
struct Emitting {
    key: Vec<u8>,
    value_start: Vec<u8>,
}

/// The top-level fields `names` of the record's value, which must be a valid JSON object
/// (checked whole in the same pass, without building a tree); else the reason
/// `not a JSON object`.
fn object_fields<'a, const N: usize>(
    record: &'a Record,
    names: [&str; N],
) -> Result<[Option<Field<'a>>; N], String> {
    record
        .fields_checked(names)
        .map_err(|_| "not a JSON object".to_owned())
}

/// A key field's text: a string as it is, a number as written in the record; `None` for
/// anything else.
fn key_text(field: Field<'_>) -> Option<Cow<'_, str>> {
    match field.kind() {
        FieldKind::String => field.as_str(),
        // A number's raw text is ASCII.
        FieldKind::Number => std::str::from_utf8(field.raw()).ok().map(Cow::Borrowed),
        _ => None,
    }
}

/// `w/<window_start, 16 digits>/`: the state keys of one window.
fn window_prefix(window_start: i64) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(PREFIX_LEN);
    push_prefix(&mut prefix, window_start);
    prefix
}

/// The length of [`window_prefix`] (a start of more than 16 digits makes it longer).
const PREFIX_LEN: usize = 2 + 16 + 1;

/// Appends `w/<window_start, 16 digits>/`.
fn push_prefix(out: &mut Vec<u8>, window_start: i64) {
    out.extend_from_slice(b"w/");
    push_decimal(out, window_start, 16);
    out.push(b'/');
}

/// Appends `n` in decimal, zero-padded to `width` digits (as `format!("{n:0width$}")`).
fn push_decimal(out: &mut Vec<u8>, n: i64, width: usize) {
    if n < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let mut rest = n.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = digits.len() - at;
    let pad = width.saturating_sub(len + usize::from(n < 0));
    out.extend(std::iter::repeat_n(b'0', pad));
    out.extend_from_slice(&digits[at..]);
}

/// The windows and keys one call touched: each read from the state on first use, kept here
/// while the call's records are added, and written back once by [`Windows::write_back`].
#[derive(Default)]
struct Windows {
    /// Index into `slots` by state key.
    index: HashMap<Vec<u8>, usize>,
    /// In order of first use.
    slots: Vec<Slot>,
    /// A reused buffer for the state key being looked up.
    key: Vec<u8>,
    /// The window start whose prefix `key` starts with, if any.
    prefix_of: Option<i64>,
}

/// One window and key of a call.
struct Slot {
    state_key: Vec<u8>,
    /// Its aggregate so far; the reason its state entry cannot be read.
    aggregate: Result<Aggregate, String>,
    /// Whether a record of the call changed it.
    changed: bool,
    /// Its outputs' shared parts, made with its first output.
    emitting: Option<Emitting>,
}

impl Windows {
    /// The window starting at `window_start` for `key`, read from the state the first time.
    fn slot(&mut self, window_start: i64, key: &str) -> &mut Slot {
        // Most records of a batch fall in the window of the record before.
        if self.prefix_of == Some(window_start) {
            self.key.truncate(PREFIX_LEN);
        } else {
            self.key.clear();
            push_prefix(&mut self.key, window_start);
            self.prefix_of = (self.key.len() == PREFIX_LEN).then_some(window_start);
        }
        self.key.extend_from_slice(key.as_bytes());
        let at = match self.index.get(self.key.as_slice()) {
            Some(&at) => at,
            None => {
                let state_key = self.key.clone();
                let aggregate = match state::get(&state_key) {
                    Some(bytes) => Aggregate::decode(&bytes).map_err(|e| {
                        format!(
                            "bad state entry {}: {e}",
                            String::from_utf8_lossy(&state_key)
                        )
                    }),
                    None => Ok(Aggregate { count: 0, sum: 0.0 }),
                };
                self.index.insert(state_key.clone(), self.slots.len());
                self.slots.push(Slot {
                    state_key,
                    aggregate,
                    changed: false,
                    emitting: None,
                });
                self.slots.len() - 1
            }
        };
        &mut self.slots[at]
    }

    /// Writes every changed aggregate to the state.
    fn write_back(self) {
        for slot in self.slots {
            if let (true, Ok(aggregate)) = (slot.changed, slot.aggregate) {
                state::set(&slot.state_key, &aggregate.encode());
            }
        }
    }
}

/// The reason of a late record.
fn late(ts: i64, watermark_ms: Option<i64>) -> String {
    match watermark_ms {
        Some(watermark) => format!("late: event time {ts} is behind the watermark {watermark}"),
        None => format!("late: event time {ts} is behind the watermark"),
    }
}

switchyard_plugin_sdk::export_stateful!(Window);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::testing::{self, Fired, Task};

    use super::*;

    fn task(pairs: &[(&str, &str)]) -> Task<Window> {
        Task::init(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn event(ts: i64, value: &str) -> Record {
        Record::new().with_timestamp(ts).with_value(value)
    }

    fn click(ts: i64, amount: &str) -> Record {
        event(
            ts,
            &format!(r#"{{"event_type":"click","amount":{amount}}}"#),
        )
    }

    fn view(ts: i64, amount: &str) -> Record {
        event(ts, &format!(r#"{{"event_type":"view","amount":{amount}}}"#))
    }

    /// An output as (route, key, value) text.
    fn text(output: &Output) -> (Option<String>, String, String) {
        assert!(output.headers.is_empty());
        let text = |bytes: &Option<Vec<u8>>| String::from_utf8(bytes.clone().unwrap()).unwrap();
        (output.route.clone(), text(&output.key), text(&output.value))
    }

    /// The one output of an `emit` verdict, as text.
    fn emitted(verdict: &Verdict) -> (Option<String>, String, String) {
        match verdict {
            Verdict::Emit(outputs) if outputs.len() == 1 => text(&outputs[0]),
            other => panic!("expected one output, got {other:?}"),
        }
    }

    /// Every output of the fired timers, as text.
    fn fired(fired: &Fired) -> Vec<(Option<String>, String, String)> {
        fired
            .iter()
            .flat_map(|(_, outputs)| outputs.iter().map(text))
            .collect()
    }

    /// The state as text.
    fn state() -> Vec<(String, String)> {
        testing::state()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn timers() -> Vec<(Domain, i64, String)> {
        testing::timers()
            .into_iter()
            .map(|t| (t.domain, t.at_ms, t.tag))
            .collect()
    }

    fn aggregate(key: &str, start: i64, end: i64, count: u64, sum: &str, avg: &str) -> String {
        format!(
            r#"{{"key":"{key}","window_start":{start},"window_end":{end},"count":{count},"sum":{sum},"avg":{avg}}}"#
        )
    }

    #[test]
    fn update_mode_emits_the_aggregate_after_each_record() {
        let mut task = task(&[]);
        let verdicts = task.process(
            "events",
            vec![click(1_000, "2"), view(2_000, "1.5"), click(59_999, "1.5")],
        );
        assert_eq!(
            verdicts.iter().map(emitted).collect::<Vec<_>>(),
            [
                (
                    None,
                    "click|0".into(),
                    aggregate("click", 0, 60_000, 1, "2.0", "2.0")
                ),
                (
                    None,
                    "view|0".into(),
                    aggregate("view", 0, 60_000, 1, "1.5", "1.5")
                ),
                (
                    None,
                    "click|0".into(),
                    aggregate("click", 0, 60_000, 2, "3.5", "1.75")
                ),
            ]
        );
        assert_eq!(
            state(),
            [
                (
                    "w/0000000000000000/click".to_owned(),
                    r#"{"count":2,"sum":3.5}"#.to_owned()
                ),
                (
                    "w/0000000000000000/view".to_owned(),
                    r#"{"count":1,"sum":1.5}"#.to_owned()
                ),
            ]
        );
        assert_eq!(
            timers(),
            [(Domain::EventTime, 60_000, "w".to_owned())],
            "one timer per window"
        );
    }

    #[test]
    fn out_of_order_records_go_to_their_own_windows() {
        let mut task = task(&[("window_ms", "10000")]);
        let verdicts = task.process(
            "events",
            vec![
                click(25_000, "1"),
                click(3_000, "10"),
                click(29_999, "2"),
                click(10_000, "5"),
            ],
        );
        assert_eq!(
            verdicts.iter().map(emitted).collect::<Vec<_>>(),
            [
                (
                    None,
                    "click|20000".into(),
                    aggregate("click", 20_000, 30_000, 1, "1.0", "1.0")
                ),
                (
                    None,
                    "click|0".into(),
                    aggregate("click", 0, 10_000, 1, "10.0", "10.0")
                ),
                (
                    None,
                    "click|20000".into(),
                    aggregate("click", 20_000, 30_000, 2, "3.0", "1.5")
                ),
                (
                    None,
                    "click|10000".into(),
                    aggregate("click", 10_000, 20_000, 1, "5.0", "5.0")
                ),
            ]
        );
        assert_eq!(
            timers(),
            [
                (Domain::EventTime, 10_000, "w".to_owned()),
                (Domain::EventTime, 20_000, "w".to_owned()),
                (Domain::EventTime, 30_000, "w".to_owned()),
            ]
        );
        // The watermark passes the first two windows' ends: only they are evicted.
        assert!(
            fired(&task.advance_watermark(20_000)).is_empty(),
            "update mode"
        );
        assert_eq!(
            state(),
            [(
                "w/0000000000020000/click".to_owned(),
                r#"{"count":2,"sum":3.0}"#.to_owned()
            )]
        );
        assert_eq!(timers(), [(Domain::EventTime, 30_000, "w".to_owned())]);
    }

    #[test]
    fn final_mode_absorbs_records_and_emits_each_key_once_when_the_window_closes() {
        let mut task = task(&[("mode", "final"), ("route", "totals")]);
        let verdicts = task.process(
            "events",
            vec![
                view(1_000, "3"),
                click(2_000, "0.1"),
                click(3_000, "0.2"),
                click(61_000, "7"),
            ],
        );
        assert_eq!(
            verdicts,
            [Verdict::Drop, Verdict::Drop, Verdict::Drop, Verdict::Drop]
        );

        assert!(task.advance_watermark(59_999).is_empty(), "not yet");
        let route = Some("totals".to_owned());
        assert_eq!(
            fired(&task.advance_watermark(60_000)),
            [
                (
                    route.clone(),
                    "click|0".into(),
                    aggregate(
                        "click",
                        0,
                        60_000,
                        2,
                        "0.30000000000000004",
                        "0.15000000000000002"
                    )
                ),
                (
                    route.clone(),
                    "view|0".into(),
                    aggregate("view", 0, 60_000, 1, "3.0", "3.0")
                ),
            ],
            "one output per key, in key order"
        );
        assert_eq!(
            fired(&task.advance_watermark(200_000)),
            [(
                route,
                "click|60000".into(),
                aggregate("click", 60_000, 120_000, 1, "7.0", "7.0")
            )]
        );
        assert!(
            state().is_empty() && timers().is_empty(),
            "every window evicted"
        );
    }

    #[test]
    fn update_mode_eviction_emits_nothing_and_leaves_no_state() {
        let mut task = task(&[("route", "live")]);
        let verdict = &task.process("events", vec![click(5, "1")])[0];
        assert_eq!(emitted(verdict).0.as_deref(), Some("live"));
        let fired = task.advance_watermark(60_000);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].1.is_empty());
        assert!(state().is_empty() && timers().is_empty());
    }

    #[test]
    fn sums_are_added_in_record_order_and_survive_the_state_exactly() {
        let mut task = task(&[("mode", "final")]);
        let amounts = ["0.1", "0.2", "0.3", "1e-7", "123456.789"];
        let records = amounts.iter().map(|a| click(1, a)).collect();
        task.process("events", records);
        let expected = amounts
            .iter()
            .map(|a| a.parse::<f64>().unwrap())
            .fold(0.0, |sum, a| sum + a);
        let outputs = task.advance_watermark(60_000);
        // Read exactly (serde_json's default float parsing may be off by one bit).
        let value = outputs[0].1[0].value.as_deref().unwrap();
        let [count, sum] = json::fields(value, ["count", "sum"]).unwrap();
        assert_eq!(sum.unwrap().as_f64().unwrap().to_bits(), expected.to_bits());
        assert_eq!(count.unwrap().as_u64(), Some(5));
    }

    #[test]
    fn exotic_keys_and_first_occurrences() {
        let mut task = task(&[]);
        let verdicts = task.process(
            "events",
            vec![
                event(0, r#"{"event_type":"a/b|\u00e9","amount":1}"#),
                event(
                    0,
                    r#"{"event_type":"x","amount":1,"event_type":"y","amount":2}"#,
                ),
                event(0, r#"{"event_type":12345678901234567890123,"amount":1}"#),
                event(0, r#"{"event_type":"\ud800","amount":1}"#),
                event(0, r#"{"event_type":"x","amount":1} trailing"#),
            ],
        );
        assert_eq!(emitted(&verdicts[0]).1, "a/b|é|0");
        assert_eq!(
            emitted(&verdicts[1]).2,
            aggregate("x", 0, 60_000, 1, "1.0", "1.0"),
            "the first occurrence counts"
        );
        assert_eq!(emitted(&verdicts[2]).1, "12345678901234567890123|0");
        assert_eq!(
            verdicts[3],
            Verdict::dead_letter("field event_type is not a string or number")
        );
        assert_eq!(verdicts[4], Verdict::dead_letter("not a JSON object"));
        assert!(testing::state().contains_key("w/0000000000000000/a/b|é".as_bytes()));
    }

    #[test]
    fn number_keys_use_their_json_text() {
        let mut task = task(&[("key_field", "user"), ("value_field", "n")]);
        let verdicts = task.process(
            "events",
            vec![
                event(0, r#"{"user":42,"n":1}"#),
                event(0, r#"{"user":1.50,"n":-1}"#),
            ],
        );
        assert_eq!(emitted(&verdicts[0]).1, "42|0");
        assert_eq!(emitted(&verdicts[1]).1, "1.50|0", "as written");
        assert_eq!(
            emitted(&verdicts[1]).2,
            r#"{"key":"1.50","window_start":0,"window_end":60000,"count":1,"sum":-1.0,"avg":-1.0}"#
        );
    }

    #[test]
    fn late_records_are_dead_lettered_and_change_nothing() {
        let mut task = task(&[]);
        task.process("events", vec![click(10, "1")]);
        task.advance_watermark(60_500);
        let verdicts = task.process(
            "events",
            vec![
                click(59_000, "1").with_late(true),
                click(60_100, "1").with_late(true),
            ],
        );
        assert_eq!(
            verdicts,
            [
                Verdict::dead_letter("late: event time 59000 is behind the watermark 60500"),
                Verdict::dead_letter("late: event time 60100 is behind the watermark 60500"),
            ]
        );
        assert!(state().is_empty() && timers().is_empty());
    }

    #[test]
    fn bad_records_are_dead_lettered_in_order() {
        let mut task = task(&[]);
        let cases = [
            (Record::new().with_timestamp(1), "not a JSON object"),
            (event(1, "[1]"), "not a JSON object"),
            (event(1, "{"), "not a JSON object"),
            (
                Record::new().with_value(b"\xff".to_vec()),
                "not a JSON object",
            ),
            (Record::new().with_value("{}"), "no timestamp"),
            (event(-1, "{}"), "negative timestamp"),
            (event(1, r#"{"amount":1}"#), "missing field event_type"),
            (
                event(1, r#"{"event_type":null}"#),
                "field event_type is not a string or number",
            ),
            (
                event(1, r#"{"event_type":["a"]}"#),
                "field event_type is not a string or number",
            ),
            (event(1, r#"{"event_type":"a"}"#), "missing field amount"),
            (
                event(1, r#"{"event_type":"a","amount":"1"}"#),
                "field amount is not a number",
            ),
            (
                event(1, r#"{"event_type":"a","amount":null}"#),
                "field amount is not a number",
            ),
            // A late record is checked last.
            (
                event(1, r#"{"event_type":"a"}"#).with_late(true),
                "missing field amount",
            ),
            (
                event(1, r#"{"event_type":"a","amount":1}"#).with_late(true),
                "late: event time 1 is behind the watermark",
            ),
            (
                event(i64::MAX, r#"{"event_type":"a","amount":1}"#),
                "timestamp 9223372036854775807 is too large",
            ),
        ];
        for (record, reason) in cases {
            let verdict = task.process("events", vec![record.clone()]);
            assert_eq!(verdict, [Verdict::dead_letter(reason)], "{record:?}");
        }
        assert!(state().is_empty() && timers().is_empty());
    }

    #[test]
    fn a_sum_that_overflows_is_dead_lettered() {
        let mut task = task(&[]);
        task.process("events", vec![click(0, "1e308")]);
        assert_eq!(
            task.process("events", vec![click(0, "1e308")]),
            [Verdict::dead_letter("the sum of field amount overflows")]
        );
        assert_eq!(
            state(),
            [(
                "w/0000000000000000/click".to_owned(),
                r#"{"count":1,"sum":1e+308}"#.to_owned()
            )]
        );
    }

    #[test]
    fn within_one_batch_each_record_sees_the_ones_before_it() {
        let mut task = task(&[]);
        let verdicts = task.process(
            "events",
            vec![
                click(0, "1e308"),
                click(1, "1e308"),
                view(2, "1"),
                click(3, "-1e308"),
                click(4, "2"),
            ],
        );
        assert_eq!(
            verdicts[1],
            Verdict::dead_letter("the sum of field amount overflows")
        );
        assert_eq!(
            emitted(&verdicts[3]).2,
            aggregate("click", 0, 60_000, 2, "0.0", "0.0")
        );
        assert_eq!(
            emitted(&verdicts[4]).2,
            aggregate("click", 0, 60_000, 3, "2.0", "0.6666666666666666")
        );
        assert_eq!(
            state(),
            [
                (
                    "w/0000000000000000/click".to_owned(),
                    r#"{"count":3,"sum":2.0}"#.to_owned()
                ),
                (
                    "w/0000000000000000/view".to_owned(),
                    r#"{"count":1,"sum":1.0}"#.to_owned()
                ),
            ]
        );
        assert_eq!(timers(), [(Domain::EventTime, 60_000, "w".to_owned())]);
    }

    #[test]
    fn a_bad_state_entry_is_reported_not_trusted() {
        let mut task = task(&[("mode", "final")]);
        testing::set_state("w/0000000000000000/click", "nonsense");
        assert_eq!(
            task.process("events", vec![click(0, "1")]),
            [Verdict::dead_letter(
                "bad state entry w/0000000000000000/click: not a JSON object: found `n` at byte 0"
            )]
        );
        // Evicting the window drops it with a logged error.
        task.process("events", vec![view(0, "1")]);
        let outputs = fired(&task.advance_watermark(60_000));
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        assert!(state().is_empty());
        assert!(
            testing::logs()
                .iter()
                .any(|(_, line)| line.contains("dropped bad state entry w/0000000000000000/click"))
        );
    }

    #[test]
    fn timers_it_never_sets_are_ignored() {
        let mut task = task(&[("mode", "final")]);
        task.process("events", vec![click(0, "1")]);
        timers::set(Domain::EventTime, 60_000, "other");
        timers::set(Domain::WallClock, 60_000, "w");
        let fired = task.advance_watermark(60_000);
        assert_eq!(fired.len(), 2, "`other` and `w` at 60000");
        let fired_wall = task.advance_clock(60_000);
        assert!(fired_wall.iter().all(|(_, outputs)| outputs.is_empty()));
        assert!(state().is_empty());
    }

    #[test]
    fn config_defaults_and_errors_name_the_key() {
        let window = Window::init(&Config::new()).unwrap();
        assert_eq!(
            (
                window.key_field.as_str(),
                window.value_field.as_str(),
                window.window_ms,
                window.mode,
                window.route
            ),
            ("event_type", "amount", 60_000, Mode::Update, None)
        );
        let init = |pairs: &[(&str, &str)]| {
            Window::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(
            init(&[("mode", "eventually")]),
            "invalid value for config key `mode`: `eventually` (expected `update` or `final`)"
        );
        assert_eq!(
            init(&[("window_ms", "0")]),
            "invalid value for config key `window_ms`: must be > 0, not 0"
        );
        assert_eq!(
            init(&[("window_ms", "-5")]),
            "invalid value for config key `window_ms`: must be > 0, not -5"
        );
        assert!(
            init(&[("window_ms", "1m")]).starts_with("invalid value for config key `window_ms`")
        );
        assert_eq!(
            init(&[("key_field", " ")]),
            "invalid value for config key `key_field`: must not be empty"
        );
        assert_eq!(
            init(&[("route", "")]),
            "invalid value for config key `route`: must not be empty"
        );
        assert!(
            init(&[("watermark_delay_ms", "5")])
                .starts_with("unknown config key `watermark_delay_ms`")
        );
    }
}
