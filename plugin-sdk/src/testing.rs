//! Native doubles for [`host`](crate::host), [`state`](crate::state) and
//! [`timers`](crate::timers), for plugin unit tests, and [`Task`], which runs a
//! [`StatefulPlugin`] as the host would: batches with a watermark, timers fired as it moves.
//!
//! Each test thread has its own doubles (cargo runs every test on its own thread), so tests
//! do not see each other's tables, logs, counters, state or timers. The state is an ordered
//! map and the timers an ordered set, as in the host, but without its limits, its atomicity
//! (a panicking call keeps its writes) or its durability. Not compiled for wasm32.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use crate::host::Level;
use crate::state::{Entry, MAX_SCAN};
use crate::timers::{Domain, MAX_TAG_BYTES, Timer};
use crate::{Batch, Config, Output, Record, StatefulPlugin, Verdict};

#[derive(Default)]
struct State {
    /// table name -> key -> value; filled by [`set_table`], read by `host::lookup`.
    tables: HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
    /// Every `host::log` call, in order.
    logs: Vec<(Level, String)>,
    /// Every counter `host::counter_add` touched, with its total.
    counters: BTreeMap<String, u64>,
    /// The task's state: written by `state::set`/`delete` and [`set_state`], read by
    /// `state::get`/`scan` and [`state`].
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Pending timers as (instant, tag, domain): the order they fire in. Added by
    /// `timers::set`, removed by `timers::cancel` and when [`Task`] fires them.
    timers: BTreeSet<(i64, String, Domain)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// Sets `key` to `value` in the lookup table `table` (creating the table).
pub fn set_table(table: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    STATE.with_borrow_mut(|s| {
        s.tables
            .entry(table.to_owned())
            .or_default()
            .insert(key.as_ref().to_vec(), value.as_ref().to_vec());
    });
}

/// Forgets every table, log line, counter, state entry and timer of this thread.
pub fn clear() {
    STATE.with_borrow_mut(|s| *s = State::default());
}

/// The lines logged so far on this thread, in order.
pub fn logs() -> Vec<(Level, String)> {
    STATE.with_borrow(|s| s.logs.clone())
}

/// The counters touched so far on this thread, with their totals.
pub fn counters() -> BTreeMap<String, u64> {
    STATE.with_borrow(|s| s.counters.clone())
}

/// The state of this thread's task, in key order.
pub fn state() -> BTreeMap<Vec<u8>, Vec<u8>> {
    STATE.with_borrow(|s| s.entries.clone())
}

/// Stores `value` under `key` in this thread's state, as `state::set` does.
pub fn set_state(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    state_set(key.as_ref(), value.as_ref());
}

/// The pending timers of this thread's task, in the order they would fire: by instant, then
/// tag.
pub fn timers() -> Vec<Timer> {
    STATE.with_borrow(|s| s.timers.iter().map(timer).collect())
}

fn timer((at_ms, tag, domain): &(i64, String, Domain)) -> Timer {
    Timer {
        domain: *domain,
        at_ms: *at_ms,
        tag: tag.clone(),
    }
}

pub(crate) fn log(level: Level, message: &str) {
    STATE.with_borrow_mut(|s| s.logs.push((level, message.to_owned())));
}

pub(crate) fn lookup(table: &str, key: &[u8]) -> Option<Vec<u8>> {
    STATE.with_borrow(|s| s.tables.get(table)?.get(key).cloned())
}

pub(crate) fn counter_add(name: &str, delta: u64) {
    STATE.with_borrow_mut(|s| {
        let total = s.counters.entry(name.to_owned()).or_default();
        *total = total.saturating_add(delta);
    });
}

pub(crate) fn state_get(key: &[u8]) -> Option<Vec<u8>> {
    STATE.with_borrow(|s| s.entries.get(key).cloned())
}

pub(crate) fn state_set(key: &[u8], value: &[u8]) {
    STATE.with_borrow_mut(|s| s.entries.insert(key.to_vec(), value.to_vec()));
}

pub(crate) fn state_delete(key: &[u8]) {
    STATE.with_borrow_mut(|s| s.entries.remove(key));
}

pub(crate) fn state_scan(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> Vec<Entry> {
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    STATE.with_borrow(|s| {
        s.entries
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit.min(MAX_SCAN) as usize)
            .map(|(key, value)| Entry {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    })
}

/// Panics on a tag the host refuses, so that a test fails where the host would fail the call.
pub(crate) fn timer_set(domain: Domain, at_ms: i64, tag: &str) {
    assert!(
        tag.len() <= MAX_TAG_BYTES,
        "timer tag of {} bytes: the host refuses tags over {MAX_TAG_BYTES} bytes",
        tag.len()
    );
    STATE.with_borrow_mut(|s| s.timers.insert((at_ms, tag.to_owned(), domain)));
}

pub(crate) fn timer_cancel(domain: Domain, at_ms: i64, tag: &str) {
    STATE.with_borrow_mut(|s| s.timers.remove(&(at_ms, tag.to_owned(), domain)));
}

/// The most `on_timers` calls one move of a clock makes, so that a plugin whose timers keep
/// setting due timers cannot hang a test.
pub const MAX_ROUNDS: usize = 64;

/// A [`StatefulPlugin`] instance and the clocks of its task: runs batches with the task's
/// watermark, and fires the timers that come due as the watermark or the wall clock moves.
///
/// The state and timers are the thread's doubles ([`state`], [`timers`]); [`Task::new`] starts
/// them empty. Like the host, it fires a timer only between calls, removes it before the call,
/// and fires timers set by a timer call if they are due too. Unlike the host, it neither moves
/// the watermark with the records nor flags late records: the test does both
/// ([`Task::advance_watermark`], [`Record::with_late`]), and reads what a move fires.
pub struct Task<P> {
    plugin: P,
    watermark_ms: Option<i64>,
    clock_ms: i64,
}

/// The timers one move fired, each with the outputs of its call, in firing order.
pub type Fired = Vec<(Timer, Vec<Output>)>;

impl<P: StatefulPlugin> Task<P> {
    /// A task running `plugin`, with empty state, no timers, no watermark and the wall clock
    /// at 0.
    pub fn new(plugin: P) -> Self {
        STATE.with_borrow_mut(|s| {
            s.entries.clear();
            s.timers.clear();
        });
        Self {
            plugin,
            watermark_ms: None,
            clock_ms: 0,
        }
    }

    /// [`Task::new`] with the plugin made by [`StatefulPlugin::init`] from `config`.
    pub fn init(config: &Config) -> Result<Self, String> {
        Ok(Self::new(P::init(config)?))
    }

    /// The plugin.
    pub fn plugin(&mut self) -> &mut P {
        &mut self.plugin
    }

    /// The task's watermark: `None` until the first [`Task::advance_watermark`].
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// Runs `records` as one batch of `topic`, partition 0, with the task's watermark: one
    /// verdict per record. Timers the call sets that are already due stay pending until
    /// [`Task::fire_due`] or a move of a clock.
    pub fn process(&mut self, topic: &str, records: Vec<Record>) -> Vec<Verdict> {
        self.process_batch(&Batch::new(topic, 0, records).with_watermark(self.watermark_ms))
    }

    /// Runs `batch` as it is (its own watermark); panics unless the plugin returns exactly one
    /// verdict per record, as the host refuses the call then.
    pub fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        let verdicts = self.plugin.process_batch(batch);
        assert_eq!(
            verdicts.len(),
            batch.len(),
            "one verdict per record: {verdicts:?}"
        );
        verdicts
    }

    /// Moves the watermark to `watermark_ms` and fires the timers that come due. Panics if the
    /// watermark would go back: the host's never does.
    pub fn advance_watermark(&mut self, watermark_ms: i64) -> Fired {
        if let Some(current) = self.watermark_ms {
            assert!(
                watermark_ms >= current,
                "the watermark goes back from {current} to {watermark_ms}"
            );
        }
        self.watermark_ms = Some(watermark_ms);
        self.fire_due()
    }

    /// Moves the wall clock to `clock_ms` and fires the timers that come due. Panics if the
    /// clock would go back.
    pub fn advance_clock(&mut self, clock_ms: i64) -> Fired {
        assert!(
            clock_ms >= self.clock_ms,
            "the wall clock goes back from {} to {clock_ms}",
            self.clock_ms
        );
        self.clock_ms = clock_ms;
        self.fire_due()
    }

    /// Fires every due timer: event-time ones at or before the watermark, wall-clock ones at
    /// or before the wall clock. They go to one `on_timers` call, in order of instant, then
    /// tag; timers set by that call that are due too go to the next one, until none is due or
    /// [`MAX_ROUNDS`] calls were made (as in the host, the rest stay pending until next time).
    pub fn fire_due(&mut self) -> Fired {
        let mut fired = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let due: Vec<Timer> = STATE.with_borrow_mut(|s| {
                let due: Vec<_> = s
                    .timers
                    .iter()
                    .filter(|(at_ms, _, domain)| match domain {
                        Domain::EventTime => self.watermark_ms.is_some_and(|w| *at_ms <= w),
                        Domain::WallClock => *at_ms <= self.clock_ms,
                    })
                    .cloned()
                    .collect();
                for key in &due {
                    s.timers.remove(key);
                }
                due.iter().map(timer).collect()
            });
            if due.is_empty() {
                break;
            }
            let outputs = self.plugin.on_timers(self.watermark_ms, &due);
            assert_eq!(
                outputs.len(),
                due.len(),
                "one list of outputs per timer: {outputs:?}"
            );
            fired.extend(due.into_iter().zip(outputs));
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{host, state, timers};

    #[test]
    fn host_calls_reach_the_doubles() {
        set_table("users", "u1", "alice");
        assert_eq!(host::lookup("users", b"u1"), Some(b"alice".to_vec()));
        assert_eq!(host::lookup("users", b"u2"), None);
        assert_eq!(host::lookup("other", b"u1"), None);

        host::info("hello");
        host::log(Level::Error, "bad");
        assert_eq!(
            logs(),
            [
                (Level::Info, "hello".to_owned()),
                (Level::Error, "bad".to_owned())
            ]
        );

        host::counter_add("seen", 2);
        host::counter_add("seen", 3);
        assert_eq!(counters().get("seen"), Some(&5));

        clear();
        assert!(logs().is_empty() && counters().is_empty());
        assert_eq!(host::lookup("users", b"u1"), None);
    }

    /// Counts records per key in the state; sets an event-time timer at each record's
    /// timestamp + 10 (tag: the key) and a wall-clock one at 100 (tag `tick`). A timer emits
    /// the key's count and forgets it; `tick` sets an event-time timer that is due at once.
    struct Counter;

    impl StatefulPlugin for Counter {
        fn init(config: &Config) -> Result<Self, String> {
            config.check_keys(&[])?;
            Ok(Counter)
        }

        fn process(&mut self, record: &Record, batch: &Batch) -> Verdict {
            if record.late() {
                return Verdict::dead_letter(format!("late: {:?}", batch.watermark_ms()));
            }
            let key = record.key().unwrap();
            let count = state::get(key).map_or(0, |v| v[0]) + 1;
            state::set(key, &[count]);
            let tag = std::str::from_utf8(key).unwrap();
            timers::set(Domain::EventTime, record.timestamp_ms().unwrap() + 10, tag);
            timers::set(Domain::WallClock, 100, "tick");
            Verdict::pass()
        }

        fn on_timer(&mut self, timer: &Timer, watermark_ms: Option<i64>) -> Vec<Output> {
            if timer.tag == "tick" {
                timers::set(Domain::EventTime, i64::MIN, "again");
                return vec![Output::new().with_value("tick")];
            }
            if timer.tag == "again" {
                return vec![Output::new().with_value(format!("again at {watermark_ms:?}"))];
            }
            let count = state::get(timer.tag.as_bytes()).unwrap()[0];
            state::delete(timer.tag.as_bytes());
            vec![
                Output::new()
                    .with_key(timer.tag.as_str())
                    .with_value(count.to_string()),
            ]
        }
    }

    fn record(key: &str, ts: i64) -> Record {
        Record::new().with_key(key).with_timestamp(ts)
    }

    fn values(fired: &Fired) -> Vec<(String, Vec<String>)> {
        fired
            .iter()
            .map(|(timer, outputs)| {
                let values = outputs
                    .iter()
                    .map(|o| String::from_utf8(o.value.clone().unwrap()).unwrap())
                    .collect();
                (timer.tag.clone(), values)
            })
            .collect()
    }

    #[test]
    fn a_task_runs_batches_and_fires_timers_as_the_clocks_move() {
        set_state("left over", "from an earlier task");
        let mut task = Task::<Counter>::init(&Config::default()).unwrap();
        assert!(state().is_empty(), "a new task starts empty");
        assert!(Task::<Counter>::init(&Config::from_pairs([("x", "1")])).is_err());

        let verdicts = task.process("t", vec![record("b", 5), record("a", 5), record("b", 7)]);
        assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Pass]);
        assert_eq!(state().get(&b"b"[..]), Some(&vec![2]));
        let pending: Vec<(Domain, i64, String)> = timers()
            .into_iter()
            .map(|t| (t.domain, t.at_ms, t.tag))
            .collect();
        assert_eq!(
            pending,
            [
                (Domain::EventTime, 15, "a".to_owned()),
                (Domain::EventTime, 15, "b".to_owned()),
                (Domain::EventTime, 17, "b".to_owned()),
                (Domain::WallClock, 100, "tick".to_owned()),
            ],
            "one timer per (domain, instant, tag), by instant then tag"
        );

        // No watermark yet: nothing event-time is due.
        assert!(task.fire_due().is_empty());
        assert!(task.advance_watermark(14).is_empty());
        assert_eq!(task.watermark_ms(), Some(14));
        assert_eq!(
            values(&task.advance_watermark(15)),
            [
                ("a".to_owned(), vec!["1".to_owned()]),
                ("b".to_owned(), vec!["2".to_owned()])
            ]
        );
        assert_eq!(state().len(), 0);

        // The batch carries the watermark.
        let late = record("c", 1).with_late(true);
        assert_eq!(
            task.process("t", vec![late]),
            [Verdict::dead_letter("late: Some(15)")]
        );

        // A timer set by a timer call that is due at once fires in the same move.
        assert_eq!(
            values(&task.advance_clock(100)),
            [
                ("tick".to_owned(), vec!["tick".to_owned()]),
                ("again".to_owned(), vec!["again at Some(15)".to_owned()])
            ]
        );
        // The b@17 timer fires on an empty state: the test's plugin would panic, so cancel it.
        timers::cancel(Domain::EventTime, 17, "b");
        assert!(timers().is_empty());
    }

    /// Sets a due timer from every timer.
    struct Forever;

    impl StatefulPlugin for Forever {
        fn init(_: &Config) -> Result<Self, String> {
            Ok(Forever)
        }

        fn process(&mut self, _: &Record, _: &Batch) -> Verdict {
            timers::set(Domain::EventTime, 0, "0");
            Verdict::Pass
        }

        fn on_timer(&mut self, timer: &Timer, _: Option<i64>) -> Vec<Output> {
            let next = timer.tag.parse::<u32>().unwrap() + 1;
            timers::set(Domain::EventTime, 0, &next.to_string());
            Vec::new()
        }
    }

    #[test]
    fn timers_that_keep_coming_due_fire_in_bounded_rounds() {
        let mut task = Task::new(Forever);
        task.process("t", vec![Record::new()]);
        assert_eq!(task.advance_watermark(0).len(), MAX_ROUNDS);
        assert_eq!(timers()[0].tag, MAX_ROUNDS.to_string(), "the rest waits");
        assert_eq!(task.fire_due().len(), MAX_ROUNDS);
    }

    #[test]
    #[should_panic(expected = "the watermark goes back from 10 to 9")]
    fn the_watermark_never_goes_back() {
        let mut task = Task::new(Counter);
        task.advance_watermark(10);
        task.advance_watermark(9);
    }

    #[test]
    #[should_panic(expected = "the host refuses tags over 256 bytes")]
    fn a_tag_over_the_limit_fails_as_in_the_host() {
        timers::set(Domain::WallClock, 0, &"x".repeat(MAX_TAG_BYTES + 1));
    }
}
