//! `join`: an interval join of two source topics of one pipeline, on a key field.
//!
//! A stateful plugin (contract 0.2.0). A left record `l` and a right record `r` with the same
//! join key match when `0 <= r.ts - l.ts <= bound_ms`: an order and the payments made up to
//! `bound_ms` after it, say. Both sides are kept in the state until no later record can match
//! them; each record's verdict emits one pair per match it finds among the other side's
//! records (possibly none), so every matching pair is written once, by whichever of the two
//! came second. The pipeline reads both topics, and a task sees partition N of both: the
//! topics must be keyed (partitioned) by the join key.
//!
//! # Config
//!
//! | key               | default   | meaning                                                  |
//! |-------------------|-----------|----------------------------------------------------------|
//! | `left_topic`      | required  | source topic of the left records                         |
//! | `right_topic`     | required  | source topic of the right records                        |
//! | `left_key`        | `order_id`| top-level field of a left record holding the join key    |
//! | `right_key`       | `order_id`| top-level field of a right record holding the join key   |
//! | `bound_ms`        | `3600000` | how long after a left record a right one still matches, >= 0 |
//! | `left_name`       | `order`   | name of the left record in a pair                        |
//! | `right_name`      | `payment` | name of the right record in a pair                       |
//! | `route`           | (none)    | route of the pairs; absent: the record's current route   |
//! | `unmatched_route` | (none)    | route of left records that never matched; absent: they are only evicted |
//!
//! A join key is a string field as it is, or a number field as written in the record (so
//! `42` and `"42"` match). Any other key, a missing topic, equal topics or names, an empty
//! value, or a `bound_ms` that is not a number >= 0 fails `init` with an error naming the key.
//! How long the join waits for stragglers is the pipeline's `watermark_delay_ms`.
//!
//! # Dead-letter reasons, in the order checked
//!
//! `topic T is neither left_topic nor right_topic` (every record of the batch),
//! `not a JSON object` (also for a null, non-UTF-8 or invalid value), `no timestamp`,
//! `negative timestamp`, `missing field <key field>`,
//! `field <key field> is not a string or number`, `join key contains NUL`,
//! `join key is longer than 217 bytes` (the state key is a timer's tag, at most 256 bytes),
//! `late: event time T is behind the watermark W` (the records it should match may be gone),
//! `timestamp T is too large` (it does not fit the 16 digits of the state key, or its
//! eviction instant is past the largest one).
//!
//! # State
//!
//! Shared with the Python version of this plugin. A left record is stored under
//! `L\0<join key>\0<ts><offset>`, a right one under `R\0<join key>\0<ts><offset>` (`\0` a NUL
//! byte, the timestamp as 16 and the offset as 20 zero-padded decimal digits), so a join key's
//! records are in time order. The value is one flag byte, `0` (never matched) or `1`
//! (matched; kept up to date for left records only, always `0` for right ones), then the
//! record's value bytes exactly. Each entry has an event-time timer whose tag is its state key:
//! a left record's at `ts + bound_ms + 1`, a right record's at `ts + 1`, the first watermark
//! at which no record that could match it can arrive without being late. The timer deletes
//! the entry; for a left record still flagged `0`, it first writes the unmatched record to
//! `unmatched_route`, when that is set.
//!
//! # Output
//!
//! A pair: key = the join key; value =
//! `{"<left_name>":<left value>,"<right_name>":<right value>}`, the two records' value bytes
//! exactly as they came, so duplicates of a pair are byte for byte the same; no headers. An
//! unmatched left record: the same with `null` for the right value.

use std::borrow::Cow;

use switchyard_plugin_sdk::timers::{self, Domain, MAX_TAG_BYTES};
use switchyard_plugin_sdk::{
    Batch, Config, Field, FieldKind, Output, Record, StatefulPlugin, Timer, Verdict, host, state,
};

/// Digits of a timestamp in a state key.
const TS_DIGITS: usize = 16;

/// The largest timestamp that fits [`TS_DIGITS`].
const MAX_TS: i64 = 9_999_999_999_999_999;

/// The longest join key whose state key fits a timer tag: `L\0`, the key, `\0`, 16 + 20
/// digits.
const MAX_KEY_BYTES: usize = MAX_TAG_BYTES - 3 - 16 - 20;

/// The flag of an entry that never matched.
const UNMATCHED: u8 = b'0';

/// The flag of a left entry that matched.
const MATCHED: u8 = b'1';

/// Joins the records of two topics.
#[derive(Debug)]
pub struct Join {
    left_topic: String,
    right_topic: String,
    left_key: String,
    right_key: String,
    bound_ms: i64,
    route: Option<String>,
    unmatched_route: Option<String>,
    /// `{"<left_name>":`, the start of every pair.
    open: Vec<u8>,
    /// `,"<right_name>":`, between the two values of a pair.
    middle: Vec<u8>,
}

/// The topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

impl Side {
    /// The first byte of the side's state keys.
    fn letter(self) -> u8 {
        match self {
            Side::Left => b'L',
            Side::Right => b'R',
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// A record that takes part in the join.
struct Joining<'a> {
    key: Cow<'a, str>,
    ts: i64,
    /// The watermark at which no record that could match it can arrive without being late.
    evict_at: i64,
    value: &'a [u8],
}

impl StatefulPlugin for Join {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&[
            "left_topic",
            "right_topic",
            "left_key",
            "right_key",
            "bound_ms",
            "left_name",
            "right_name",
            "route",
            "unmatched_route",
        ])?;
        let non_empty = |key: &str, value: &str| match value.trim() {
            "" => Err(format!(
                "invalid value for config key `{key}`: must not be empty"
            )),
            value => Ok(value.to_owned()),
        };
        let required = |key: &str| non_empty(key, config.require(key)?);
        let optional = |key: &str| config.get(key).map(|v| non_empty(key, v)).transpose();
        let with_default = |key: &str, default: &str| non_empty(key, config.get_or(key, default));

        let left_topic = required("left_topic")?;
        let right_topic = required("right_topic")?;
        if left_topic == right_topic {
            return Err(format!(
                "invalid value for config key `right_topic`: `{right_topic}` is also `left_topic`"
            ));
        }
        let left_name = with_default("left_name", "order")?;
        let right_name = with_default("right_name", "payment")?;
        if left_name == right_name {
            return Err(format!(
                "invalid value for config key `right_name`: `{right_name}` is also `left_name`"
            ));
        }
        let bound_ms = config.parse_or("bound_ms", 3_600_000_i64)?;
        if bound_ms < 0 {
            return Err(format!(
                "invalid value for config key `bound_ms`: must be >= 0, not {bound_ms}"
            ));
        }
        Ok(Self {
            left_topic,
            right_topic,
            left_key: with_default("left_key", "order_id")?,
            right_key: with_default("right_key", "order_id")?,
            bound_ms,
            route: optional("route")?,
            unmatched_route: optional("unmatched_route")?,
            open: format!("{{{}:", json_string(&left_name)).into_bytes(),
            middle: format!(",{}:", json_string(&right_name)).into_bytes(),
        })
    }

    fn process(&mut self, record: &Record, batch: &Batch) -> Verdict {
        let side = if batch.topic() == self.left_topic {
            Side::Left
        } else if batch.topic() == self.right_topic {
            Side::Right
        } else {
            return Verdict::DeadLetter(format!(
                "topic {} is neither left_topic nor right_topic",
                batch.topic()
            ));
        };
        match self.read(side, record, batch) {
            Ok(joining) => Verdict::Emit(self.join(side, record.offset(), joining)),
            Err(reason) => Verdict::DeadLetter(reason),
        }
    }

    fn on_timer(&mut self, timer: &Timer, _watermark_ms: Option<i64>) -> Vec<Output> {
        let state_key = timer.tag.as_bytes();
        let side = match (timer.domain, state_key) {
            (Domain::EventTime, [b'L', 0, ..]) => Side::Left,
            (Domain::EventTime, [b'R', 0, ..]) => Side::Right,
            _ => {
                host::warn(&format!("join: ignored a timer it never sets: {timer:?}"));
                return Vec::new();
            }
        };
        // Only an unmatched left record is written on eviction: otherwise the entry is not
        // read at all.
        let route = match (side, &self.unmatched_route) {
            (Side::Left, Some(route)) => route,
            _ => {
                state::delete(state_key);
                return Vec::new();
            }
        };
        let Some(entry) = state::get(state_key) else {
            return Vec::new();
        };
        state::delete(state_key);
        match entry.split_first() {
            Some((&UNMATCHED, left)) => {
                // The join key: between `L\0` and the next NUL, which a join key never holds.
                let join_key = state_key[2..].split(|b| *b == 0).next().unwrap_or_default();
                vec![self.pair(join_key, left, b"null").with_route(route)]
            }
            _ => Vec::new(),
        }
    }
}

impl Join {
    /// The record's join key, timestamp and value, or the reason to dead-letter it (checked in
    /// the documented order).
    fn read<'a>(
        &self,
        side: Side,
        record: &'a Record,
        batch: &Batch,
    ) -> Result<Joining<'a>, String> {
        let key_field = match side {
            Side::Left => &self.left_key,
            Side::Right => &self.right_key,
        };
        let [key] = object_fields(record, [key_field])?;
        let ts = record.timestamp_ms().ok_or("no timestamp")?;
        if ts < 0 {
            return Err("negative timestamp".to_owned());
        }
        let key = key
            .ok_or_else(|| format!("missing field {key_field}"))
            .and_then(|key| {
                key_text(key).ok_or_else(|| format!("field {key_field} is not a string or number"))
            })?;
        if key.contains('\0') {
            return Err("join key contains NUL".to_owned());
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("join key is longer than {MAX_KEY_BYTES} bytes"));
        }
        if record.late() {
            return Err(late(ts, batch.watermark_ms()));
        }
        let too_large = || format!("timestamp {ts} is too large");
        if ts > MAX_TS {
            return Err(too_large());
        }
        let evict_at = match side {
            Side::Left => ts.checked_add(self.bound_ms).and_then(|t| t.checked_add(1)),
            Side::Right => ts.checked_add(1),
        }
        .ok_or_else(too_large)?;
        Ok(Joining {
            key,
            ts,
            evict_at,
            // Present: `object_fields` read it.
            value: record.value().unwrap_or_default(),
        })
    }

    /// Matches the record with the other side's stored records, stores it, and sets its
    /// eviction timer: the pairs, in state key order.
    fn join(&self, side: Side, offset: i64, record: Joining<'_>) -> Vec<Output> {
        // The other side's timestamps that match, inclusive.
        let (from, to) = match side {
            Side::Left => (record.ts, record.ts.saturating_add(self.bound_ms)),
            Side::Right => (record.ts.saturating_sub(self.bound_ms).max(0), record.ts),
        };
        let prefix = key_prefix(side.other(), &record.key);
        // Every key of timestamp `from` is longer than this, so greater: the range starts there.
        let mut start = prefix.clone();
        push_padded(&mut start, from, TS_DIGITS);
        let mut pairs = Vec::new();
        for entry in state::entries(prefix.clone()).after(start) {
            let ts = entry_ts(&entry.key[prefix.len()..]);
            if ts.is_none_or(|ts| ts > to) {
                break;
            }
            let Some((&flag, other)) = entry.value.split_first() else {
                continue;
            };
            let pair = match side {
                Side::Left => self.pair(record.key.as_bytes(), record.value, other),
                Side::Right => {
                    if flag != MATCHED {
                        let mut matched = entry.value.clone();
                        matched[0] = MATCHED;
                        state::set(&entry.key, &matched);
                    }
                    self.pair(record.key.as_bytes(), other, record.value)
                }
            };
            pairs.push(match &self.route {
                Some(route) => pair.with_route(route),
                None => pair,
            });
        }

        let mut state_key = key_prefix(side, &record.key);
        push_padded(&mut state_key, record.ts, TS_DIGITS);
        push_padded(&mut state_key, offset, 20);
        // Made of the join key (text) and ASCII.
        let state_key = String::from_utf8(state_key).unwrap_or_default();
        let flag = if side == Side::Left && !pairs.is_empty() {
            MATCHED
        } else {
            UNMATCHED
        };
        state::set(state_key.as_bytes(), &[&[flag], record.value].concat());
        timers::set(Domain::EventTime, record.evict_at, &state_key);
        pairs
    }

    /// `{"<left_name>":<left>,"<right_name>":<right>}` keyed by the join key.
    fn pair(&self, join_key: &[u8], left: &[u8], right: &[u8]) -> Output {
        let mut value =
            Vec::with_capacity(self.open.len() + left.len() + self.middle.len() + right.len() + 1);
        value.extend_from_slice(&self.open);
        value.extend_from_slice(left);
        value.extend_from_slice(&self.middle);
        value.extend_from_slice(right);
        value.push(b'}');
        Output::new().with_key(join_key).with_value(value)
    }
}

/// `L\0<join key>\0` or `R\0<join key>\0`: the state keys of one side and join key.
fn key_prefix(side: Side, key: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(key.len() + 3);
    prefix.extend_from_slice(&[side.letter(), 0]);
    prefix.extend_from_slice(key.as_bytes());
    prefix.push(0);
    prefix
}

/// Appends `n` in decimal, zero-padded to `width` digits: `format!("{n:0width$}")` without
/// its cost for the non-negative numbers of a state key.
fn push_padded(out: &mut Vec<u8>, n: i64, width: usize) {
    if n < 0 {
        out.extend_from_slice(format!("{n:0width$}").as_bytes());
        return;
    }
    let mut digits = [b'0'; 20];
    let mut rest = n.unsigned_abs();
    let mut at = digits.len();
    while rest > 0 {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let len = (digits.len() - at).max(1);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(len)));
    out.extend_from_slice(&digits[digits.len() - len..]);
}

/// The timestamp at the start of the rest of a state key after its prefix.
fn entry_ts(rest: &[u8]) -> Option<i64> {
    std::str::from_utf8(rest.get(..TS_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// `text` as a JSON string, quotes included.
fn json_string(text: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(text).expect("a string always serializes")
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

/// The reason of a late record.
fn late(ts: i64, watermark_ms: Option<i64>) -> String {
    match watermark_ms {
        Some(watermark) => format!("late: event time {ts} is behind the watermark {watermark}"),
        None => format!("late: event time {ts} is behind the watermark"),
    }
}

switchyard_plugin_sdk::export_stateful!(Join);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::testing::{self, Fired, Task};

    use super::*;

    const ORDERS: &str = "orders";
    const PAYMENTS: &str = "payments";

    fn task(pairs: &[(&str, &str)]) -> Task<Join> {
        let config = [("left_topic", ORDERS), ("right_topic", PAYMENTS)];
        let config = Config::from_pairs(config.iter().chain(pairs).copied());
        Task::init(&config).unwrap()
    }

    fn order(offset: i64, ts: i64, id: &str) -> Record {
        Record::new()
            .with_offset(offset)
            .with_timestamp(ts)
            .with_value(format!(r#"{{"order_id":"{id}","total":10}}"#))
    }

    fn payment(offset: i64, ts: i64, id: &str) -> Record {
        Record::new()
            .with_offset(offset)
            .with_timestamp(ts)
            .with_value(format!(r#"{{ "order_id": "{id}", "paid": 10 }}"#))
    }

    /// A pair's value, as the plugin writes it.
    fn pair(order: &Record, payment: &Record) -> String {
        let text = |r: &Record| r.value_str().unwrap().to_owned();
        format!(r#"{{"order":{},"payment":{}}}"#, text(order), text(payment))
    }

    /// An output as (route, key, value) text.
    fn text(output: &Output) -> (Option<String>, String, String) {
        assert!(output.headers.is_empty());
        let text = |bytes: &Option<Vec<u8>>| String::from_utf8(bytes.clone().unwrap()).unwrap();
        (output.route.clone(), text(&output.key), text(&output.value))
    }

    /// The outputs of an `emit` verdict, as text.
    fn emitted(verdict: &Verdict) -> Vec<(Option<String>, String, String)> {
        match verdict {
            Verdict::Emit(outputs) => outputs.iter().map(text).collect(),
            other => panic!("expected emit, got {other:?}"),
        }
    }

    /// The one verdict of a one-record batch of `topic`, as its outputs.
    fn run(
        task: &mut Task<Join>,
        topic: &str,
        record: &Record,
    ) -> Vec<(Option<String>, String, String)> {
        let verdicts = task.process(topic, vec![record.clone()]);
        emitted(&verdicts[0])
    }

    /// Every output of the fired timers, as text.
    fn fired(fired: &Fired) -> Vec<(Option<String>, String, String)> {
        fired
            .iter()
            .flat_map(|(_, outputs)| outputs.iter().map(text))
            .collect()
    }

    /// The state, keys with NUL shown as `|`, values as text.
    fn state() -> Vec<(String, String)> {
        testing::state()
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k).unwrap().replace('\0', "|"),
                    String::from_utf8(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_payment_after_its_order_is_joined_by_the_payment() {
        let mut task = task(&[]);
        let o = order(7, 1_000, "o1");
        let p = payment(3, 2_000, "o1");
        assert!(
            run(&mut task, ORDERS, &o).is_empty(),
            "nothing to match yet"
        );
        assert_eq!(
            run(&mut task, PAYMENTS, &p),
            [(None, "o1".to_owned(), pair(&o, &p))]
        );
        assert_eq!(
            state(),
            [
                (
                    format!("L|o1|{:016}{:020}", 1_000, 7),
                    format!("1{}", o.value_str().unwrap())
                ),
                (
                    format!("R|o1|{:016}{:020}", 2_000, 3),
                    format!("0{}", p.value_str().unwrap())
                ),
            ]
        );
        let timers: Vec<(Domain, i64, String)> = testing::timers()
            .into_iter()
            .map(|t| (t.domain, t.at_ms, t.tag.replace('\0', "|")))
            .collect();
        assert_eq!(
            timers,
            [
                (
                    Domain::EventTime,
                    2_001,
                    format!("R|o1|{:016}{:020}", 2_000, 3)
                ),
                (
                    Domain::EventTime,
                    3_601_001,
                    format!("L|o1|{:016}{:020}", 1_000, 7)
                ),
            ],
            "tagged with their state keys"
        );
    }

    #[test]
    fn a_payment_before_its_order_is_joined_by_the_order() {
        let mut task = task(&[("route", "paid")]);
        let o = order(1, 1_000, "o1");
        let p = payment(1, 1_500, "o1");
        assert!(run(&mut task, PAYMENTS, &p).is_empty());
        assert_eq!(
            run(&mut task, ORDERS, &o),
            [(Some("paid".to_owned()), "o1".to_owned(), pair(&o, &p))]
        );
        assert!(
            state()[0].1.starts_with('1'),
            "the order is flagged matched"
        );
    }

    #[test]
    fn duplicates_make_byte_identical_pairs() {
        let mut task = task(&[]);
        let o = order(1, 1_000, "o1");
        let p1 = payment(1, 1_100, "o1");
        let p2 = payment(2, 1_100, "o1");
        run(&mut task, PAYMENTS, &p1);
        run(&mut task, PAYMENTS, &p2);
        let pairs = run(&mut task, ORDERS, &o);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], pairs[1]);
        // The same order again (another offset) pairs with both payments again.
        let again = run(&mut task, ORDERS, &order(2, 1_000, "o1"));
        assert_eq!(again, pairs);
        assert_eq!(state().len(), 4);
    }

    #[test]
    fn pairs_come_in_state_key_order_and_only_within_the_bound() {
        let mut task = task(&[("bound_ms", "1000")]);
        let o = order(1, 10_000, "o1");
        // Out of offset order, within and outside the bound, and of another order.
        let payments = [
            payment(5, 10_999, "o1"),
            payment(6, 11_000, "o1"),
            payment(7, 11_001, "o1"),
            payment(8, 9_999, "o1"),
            payment(2, 10_000, "o1"),
            payment(9, 10_500, "o2"),
        ];
        for p in &payments {
            assert!(run(&mut task, PAYMENTS, p).is_empty(), "no order yet");
        }
        let pairs = run(&mut task, ORDERS, &o);
        assert_eq!(
            pairs.iter().map(|(_, _, v)| v.clone()).collect::<Vec<_>>(),
            [
                pair(&o, &payments[4]),
                pair(&o, &payments[0]),
                pair(&o, &payments[1])
            ],
            "0 <= r.ts - l.ts <= bound_ms, in (ts, offset) order"
        );
    }

    #[test]
    fn the_bound_is_inclusive_from_either_side() {
        let mut task = task(&[("bound_ms", "1000")]);
        // Payment second: exactly at the bound matches, one past it does not.
        run(&mut task, ORDERS, &order(1, 0, "a"));
        assert_eq!(run(&mut task, PAYMENTS, &payment(1, 1_000, "a")).len(), 1);
        run(&mut task, ORDERS, &order(2, 0, "b"));
        assert!(run(&mut task, PAYMENTS, &payment(2, 1_001, "b")).is_empty());
        // Order second.
        run(&mut task, PAYMENTS, &payment(3, 2_000, "c"));
        assert_eq!(run(&mut task, ORDERS, &order(3, 1_000, "c")).len(), 1);
        run(&mut task, PAYMENTS, &payment(4, 2_001, "d"));
        assert!(run(&mut task, ORDERS, &order(4, 1_000, "d")).is_empty());
        // A payment before the order never matches it.
        run(&mut task, PAYMENTS, &payment(5, 999, "e"));
        assert!(run(&mut task, ORDERS, &order(5, 1_000, "e")).is_empty());
    }

    #[test]
    fn bound_0_matches_the_same_instant_only() {
        let mut task = task(&[("bound_ms", "0")]);
        run(&mut task, ORDERS, &order(1, 5, "f"));
        assert_eq!(run(&mut task, PAYMENTS, &payment(1, 5, "f")).len(), 1);
        assert!(run(&mut task, PAYMENTS, &payment(2, 6, "f")).is_empty());
    }

    #[test]
    fn unmatched_orders_are_written_once_the_watermark_passes_their_bound() {
        let mut task = task(&[("bound_ms", "1000"), ("unmatched_route", "unpaid")]);
        let lonely = order(1, 0, "o1");
        let paid = order(2, 0, "o2");
        run(&mut task, ORDERS, &lonely);
        run(&mut task, ORDERS, &paid);
        run(&mut task, PAYMENTS, &payment(1, 500, "o2"));

        assert!(fired(&task.advance_watermark(1_000)).is_empty(), "not yet");
        assert_eq!(
            fired(&task.advance_watermark(1_001)),
            [(
                Some("unpaid".to_owned()),
                "o1".to_owned(),
                format!(
                    r#"{{"order":{},"payment":null}}"#,
                    lonely.value_str().unwrap()
                )
            )],
            "only the order that never matched"
        );
        assert!(state().is_empty() && testing::timers().is_empty());
    }

    #[test]
    fn without_unmatched_route_orders_are_only_evicted() {
        let mut task = task(&[("bound_ms", "1000")]);
        run(&mut task, ORDERS, &order(1, 0, "o1"));
        run(&mut task, PAYMENTS, &payment(1, 5_000, "o9"));
        // The payment goes at 5001, the order at 1001.
        task.advance_watermark(1_001);
        assert_eq!(state().len(), 1);
        assert!(fired(&task.advance_watermark(5_001)).is_empty());
        assert!(state().is_empty() && testing::timers().is_empty());
    }

    #[test]
    fn an_evicted_record_no_longer_matches() {
        let mut task = task(&[("bound_ms", "1000")]);
        run(&mut task, PAYMENTS, &payment(1, 2_000, "o1"));
        task.advance_watermark(2_001);
        assert!(state().is_empty());
        // In the host this order would be late; unflagged, it finds nothing.
        assert!(run(&mut task, ORDERS, &order(1, 1_500, "o1")).is_empty());
    }

    #[test]
    fn number_keys_match_their_text_and_names_are_json_escaped() {
        let mut task = task(&[
            ("left_key", "id"),
            ("right_key", "order"),
            ("left_name", "the \"order\""),
            ("right_name", "pay"),
        ]);
        let o = Record::new().with_timestamp(0).with_value(r#"{"id":42}"#);
        let p = Record::new()
            .with_timestamp(0)
            .with_value(r#"{"order":"42"}"#);
        run(&mut task, ORDERS, &o);
        assert_eq!(
            run(&mut task, PAYMENTS, &p),
            [(
                None,
                "42".to_owned(),
                r#"{"the \"order\"":{"id":42},"pay":{"order":"42"}}"#.to_owned()
            )]
        );
    }

    #[test]
    fn bad_records_are_dead_lettered_in_order() {
        let mut task = task(&[]);
        let record = |ts: i64, value: &str| Record::new().with_timestamp(ts).with_value(value);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let cases = [
            (
                ORDERS,
                Record::new().with_timestamp(1),
                "not a JSON object".to_owned(),
            ),
            (ORDERS, record(1, "[]"), "not a JSON object".to_owned()),
            (
                ORDERS,
                record(1, r#"{"order_id":"a""#),
                "not a JSON object".to_owned(),
            ),
            (
                ORDERS,
                Record::new().with_value("{}"),
                "no timestamp".to_owned(),
            ),
            (PAYMENTS, record(-5, "{}"), "negative timestamp".to_owned()),
            (ORDERS, record(1, "{}"), "missing field order_id".to_owned()),
            (
                PAYMENTS,
                record(1, r#"{"order_id":true}"#),
                "field order_id is not a string or number".to_owned(),
            ),
            (
                ORDERS,
                record(1, r#"{"order_id":"a\u0000b"}"#),
                "join key contains NUL".to_owned(),
            ),
            (
                ORDERS,
                record(1, &format!(r#"{{"order_id":"{long_key}"}}"#)),
                "join key is longer than 217 bytes".to_owned(),
            ),
            (
                ORDERS,
                record(1, r#"{"order_id":"a\u0000b"}"#).with_late(true),
                "join key contains NUL".to_owned(),
            ),
            (
                PAYMENTS,
                record(1, r#"{"order_id":"a"}"#).with_late(true),
                "late: event time 1 is behind the watermark".to_owned(),
            ),
            (
                ORDERS,
                record(MAX_TS + 1, r#"{"order_id":"a"}"#),
                "timestamp 10000000000000000 is too large".to_owned(),
            ),
        ];
        for (topic, record, reason) in cases {
            let verdicts = task.process(topic, vec![record.clone()]);
            assert_eq!(verdicts, [Verdict::dead_letter(reason)], "{record:?}");
        }
        assert!(state().is_empty() && testing::timers().is_empty());

        // The longest key that fits a tag is joined.
        let longest = "k".repeat(MAX_KEY_BYTES);
        run(
            &mut task,
            ORDERS,
            &record(1, &format!(r#"{{"order_id":"{longest}"}}"#)),
        );
        assert_eq!(testing::timers()[0].tag.len(), MAX_TAG_BYTES);
    }

    #[test]
    fn the_key_fields_are_per_side() {
        let mut task = task(&[("left_key", "id"), ("right_key", "ref")]);
        let record = |value: &str| Record::new().with_timestamp(1).with_value(value);
        assert_eq!(
            task.process(ORDERS, vec![record(r#"{"ref":"a"}"#)]),
            [Verdict::dead_letter("missing field id")]
        );
        assert_eq!(
            task.process(PAYMENTS, vec![record(r#"{"id":"a"}"#)]),
            [Verdict::dead_letter("missing field ref")]
        );
    }

    #[test]
    fn late_records_name_the_watermark() {
        let mut task = task(&[]);
        task.advance_watermark(5_000);
        let verdicts = task.process(ORDERS, vec![order(1, 4_000, "o1").with_late(true)]);
        assert_eq!(
            verdicts,
            [Verdict::dead_letter(
                "late: event time 4000 is behind the watermark 5000"
            )]
        );
    }

    #[test]
    fn records_of_another_topic_are_all_dead_lettered() {
        let mut task = task(&[]);
        let verdicts = task.process("refunds", vec![order(1, 1, "o1"), Record::new()]);
        let reason = Verdict::dead_letter("topic refunds is neither left_topic nor right_topic");
        assert_eq!(verdicts, [reason.clone(), reason]);
    }

    #[test]
    fn timers_it_never_sets_are_ignored() {
        let mut task = task(&[("unmatched_route", "unpaid")]);
        timers::set(Domain::EventTime, 0, "x");
        timers::set(Domain::WallClock, 0, "L\0o1\0");
        let mut fired = task.advance_watermark(0);
        fired.extend(task.advance_clock(0));
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|(_, outputs)| outputs.is_empty()));
    }

    #[test]
    fn padded_numbers_are_written_as_format_writes_them() {
        for (n, width) in [
            (0, 16),
            (7, 16),
            (1_234, 3),
            (i64::MAX, 20),
            (-5, 16),
            (i64::MIN, 20),
        ] {
            let mut out = b"x".to_vec();
            push_padded(&mut out, n, width);
            assert_eq!(out, format!("x{n:0width$}").into_bytes());
        }
    }

    #[test]
    fn config_defaults_and_errors_name_the_key() {
        let join = task(&[]).plugin().bound_ms;
        assert_eq!(join, 3_600_000);
        let init = |pairs: &[(&str, &str)]| {
            Join::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        let both = [("left_topic", "a"), ("right_topic", "b")];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = both.to_vec();
            pairs.push(extra);
            init(&pairs)
        };
        assert_eq!(
            init(&[("right_topic", "b")]),
            "missing config key `left_topic`"
        );
        assert_eq!(
            init(&[("left_topic", "a")]),
            "missing config key `right_topic`"
        );
        assert_eq!(
            init(&[("left_topic", "a"), ("right_topic", "a")]),
            "invalid value for config key `right_topic`: `a` is also `left_topic`"
        );
        assert_eq!(
            with(("right_name", "order")),
            "invalid value for config key `right_name`: `order` is also `left_name`"
        );
        assert_eq!(
            with(("bound_ms", "-1")),
            "invalid value for config key `bound_ms`: must be >= 0, not -1"
        );
        assert!(with(("bound_ms", "1h")).starts_with("invalid value for config key `bound_ms`"));
        assert_eq!(
            with(("unmatched_route", " ")),
            "invalid value for config key `unmatched_route`: must not be empty"
        );
        assert!(with(("window_ms", "1")).starts_with("unknown config key `window_ms`"));
    }
}
