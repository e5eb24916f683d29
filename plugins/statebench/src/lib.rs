//! `statebench` (test-only): makes a fixed number of state calls per record, so that a
//! benchmark can measure what one `state::get` or `state::set` costs from inside a plugin.
//!
//! A stateful plugin (contract 0.2.0). For each record it makes `calls` calls of kind `op` on
//! the keys `k/<8 digits>`, the `i`-th call of the record at offset `o` on key number
//! `(o * calls + i) % keys`, then passes the record on. With `calls = 0` it is the boundary of
//! a stateful plugin alone; the difference between the two, per call, is the cost of a call
//! (`tests/benches/stateful.rs`).
//!
//! # Config
//!
//! | key           | default | meaning                                                       |
//! |---------------|---------|---------------------------------------------------------------|
//! | `op`          | `none`  | `get`, `set` or `none`                                        |
//! | `calls`       | `0`     | calls per record                                              |
//! | `keys`        | `10000` | how many distinct keys the calls go round, > 0                |
//! | `value_bytes` | `64`    | size of each value `set` writes                               |
//! | `timed`       | `false` | `true`: time each call on the monotonic clock and emit the times instead of passing the record |
//! | `wall_timer_ms` | (none) | also set, per record with a timestamp, a wall-clock timer this many ms after it |
//!
//! `get` of a key that is not there yet sets it (to a value of `value_bytes`), so the first
//! pass over the keys fills them; after it every `get` finds its key. Any other key, an `op`
//! other than the three, or a number that does not parse fails `init` naming the key.
//!
//! # Wall-clock timers
//!
//! With `wall_timer_ms = D`, each record with timestamp `T` also sets a wall-clock timer at
//! `T + D` tagged with the record's offset (in decimal). When it fires, the plugin writes one
//! record to the pipeline's default route: key = the tag, value = `fired <tag>`. This is how
//! the tests see the host's clock fire timers while no record arrives, and across restarts.
//!
//! # Timed output
//!
//! With `timed = true` each record's verdict emits one output whose value is ASCII decimal
//! nanoseconds separated by spaces: first two clock reads with nothing between (the timing's
//! own cost), then each call in order.

use std::hint::black_box;
use std::time::Instant;

use switchyard_plugin_sdk::timers::{self, Domain};
use switchyard_plugin_sdk::{
    Batch, Config, Output, Record, StatefulPlugin, Timer, Verdict, host, state,
};

/// Digits of a key's number.
const DIGITS: usize = 8;

/// What each call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    None,
    Get,
    Set,
}

/// Makes `calls` state calls per record.
#[derive(Debug)]
pub struct StateBench {
    op: Op,
    calls: u64,
    keys: u64,
    value: Vec<u8>,
    timed: bool,
    /// How long after a record's timestamp its wall-clock timer fires, if set.
    wall_timer_ms: Option<i64>,
    /// The key being called, rewritten in place (no allocation per call).
    key: [u8; 2 + DIGITS],
}

impl StatefulPlugin for StateBench {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&[
            "op",
            "calls",
            "keys",
            "value_bytes",
            "timed",
            "wall_timer_ms",
        ])?;
        let op = match config.get_or("op", "none").trim() {
            "none" => Op::None,
            "get" => Op::Get,
            "set" => Op::Set,
            other => {
                return Err(format!(
                    "invalid value for config key `op`: `{other}` (expected `get`, `set` or `none`)"
                ));
            }
        };
        let keys = config.parse_or("keys", 10_000_u64)?;
        if keys == 0 || keys >= 10_u64.pow(DIGITS as u32) {
            return Err(format!(
                "invalid value for config key `keys`: must be between 1 and {}, not {keys}",
                10_u64.pow(DIGITS as u32) - 1
            ));
        }
        let mut key = [b'0'; 2 + DIGITS];
        key[..2].copy_from_slice(b"k/");
        Ok(Self {
            op,
            calls: config.parse_or("calls", 0_u64)?,
            keys,
            value: vec![b'v'; config.parse_or("value_bytes", 64_usize)?],
            timed: config.parse_or("timed", false)?,
            wall_timer_ms: config.parse("wall_timer_ms")?,
            key,
        })
    }

    fn process(&mut self, record: &Record, _batch: &Batch) -> Verdict {
        let first = u64::try_from(record.offset())
            .unwrap_or(0)
            .wrapping_mul(self.calls);
        if let (Some(after), Some(ts)) = (self.wall_timer_ms, record.timestamp_ms()) {
            timers::set(
                Domain::WallClock,
                ts.saturating_add(after),
                &record.offset().to_string(),
            );
        }
        if !self.timed {
            for i in 0..self.calls {
                self.call(first.wrapping_add(i));
            }
            return Verdict::pass();
        }
        let mut times = String::with_capacity(8 * (self.calls as usize + 1));
        let start = Instant::now();
        let clock = start.elapsed();
        times.push_str(&clock.as_nanos().to_string());
        for i in 0..self.calls {
            let start = Instant::now();
            self.call(first.wrapping_add(i));
            let took = start.elapsed();
            times.push(' ');
            times.push_str(&took.as_nanos().to_string());
        }
        Verdict::emit_one(Output::new().with_value(times))
    }

    fn on_timer(&mut self, timer: &Timer, _watermark_ms: Option<i64>) -> Vec<Output> {
        if self.wall_timer_ms.is_some() && timer.domain == Domain::WallClock {
            return vec![
                Output::new()
                    .with_key(timer.tag.as_bytes())
                    .with_value(format!("fired {}", timer.tag)),
            ];
        }
        host::warn(&format!(
            "statebench: ignored a timer it never sets: {timer:?}"
        ));
        Vec::new()
    }
}

impl StateBench {
    /// One call of the configured kind on key number `n % keys`.
    fn call(&mut self, n: u64) {
        let mut rest = n % self.keys;
        for digit in self.key[2..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        match self.op {
            Op::None => {}
            Op::Get => {
                if black_box(state::get(&self.key)).is_none() {
                    state::set(&self.key, &self.value);
                }
            }
            Op::Set => state::set(&self.key, &self.value),
        }
    }
}

switchyard_plugin_sdk::export_stateful!(StateBench);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::testing::{self, Task};

    use super::*;

    fn task(pairs: &[(&str, &str)]) -> Task<StateBench> {
        Task::init(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn at(offset: i64) -> Record {
        Record::new().with_offset(offset).with_timestamp(offset)
    }

    #[test]
    fn set_writes_calls_per_record_round_the_keys() {
        let mut task = task(&[
            ("op", "set"),
            ("calls", "3"),
            ("keys", "4"),
            ("value_bytes", "2"),
        ]);
        let verdicts = task.process("events", vec![at(0), at(1)]);
        assert_eq!(verdicts, [Verdict::pass(), Verdict::pass()]);
        let keys: Vec<Vec<u8>> = testing::state().into_keys().collect();
        assert_eq!(
            keys,
            [b"k/00000000", b"k/00000001", b"k/00000002", b"k/00000003"]
        );
        assert!(testing::state().iter().all(|(_, v)| v == b"vv"));
    }

    #[test]
    fn get_fills_missing_keys_then_reads_them() {
        let mut task = task(&[("op", "get"), ("calls", "2"), ("keys", "2")]);
        task.process("events", vec![at(0)]);
        assert_eq!(testing::state().len(), 2);
        task.process("events", vec![at(1)]);
        assert_eq!(testing::state().len(), 2);
    }

    #[test]
    fn timed_emits_the_clock_and_each_call() {
        let mut task = task(&[("op", "get"), ("calls", "5"), ("timed", "true")]);
        let verdicts = task.process("events", vec![at(7)]);
        let Verdict::Emit(outputs) = &verdicts[0] else {
            panic!("expected an output, got {verdicts:?}");
        };
        let text = String::from_utf8(outputs[0].value.clone().unwrap()).unwrap();
        let times: Vec<u64> = text.split(' ').map(|t| t.parse().unwrap()).collect();
        assert_eq!(times.len(), 6, "{text}");
    }

    #[test]
    fn wall_timer_fires_one_output_per_record() {
        let mut task = task(&[("wall_timer_ms", "500")]);
        task.process("events", vec![at(7), at(9)]);
        let timers = testing::timers();
        assert_eq!(timers.len(), 2, "{timers:?}");
        assert!(timers.iter().all(|t| t.domain == Domain::WallClock));
        assert_eq!((timers[0].at_ms, timers[0].tag.as_str()), (507, "7"));
        assert!(task.advance_clock(508).len() == 1, "only the first is due");
        let fired = task.advance_clock(509);
        assert_eq!(fired.len(), 1);
        let outputs = &fired[0].1;
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].key.as_deref(), Some(&b"9"[..]));
        assert_eq!(outputs[0].value.as_deref(), Some(&b"fired 9"[..]));
        assert!(testing::timers().is_empty());
    }

    #[test]
    fn bad_config_names_the_key() {
        for (pairs, key) in [
            (&[("op", "scan")][..], "`op`"),
            (&[("keys", "0")][..], "`keys`"),
            (&[("calls", "x")][..], "calls"),
            (&[("colls", "1")][..], "colls"),
            (&[("wall_timer_ms", "soon")][..], "wall_timer_ms"),
        ] {
            let error = StateBench::init(&Config::from_pairs(pairs.iter().copied())).unwrap_err();
            assert!(error.contains(key), "{error}");
        }
    }
}
