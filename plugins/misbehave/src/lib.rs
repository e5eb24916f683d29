//! `misbehave`: a test plugin that does, per record, whatever the record tells it to.
//!
//! The host's tests use it to exercise every limit both ways (the same guest allocates, loops,
//! panics or floods on command, and behaves otherwise). Never deploy it.
//!
//! # Config
//!
//! | key         | meaning                                        |
//! |-------------|------------------------------------------------|
//! | `fail_init` | if set, `init` fails with this value as message |
//! | `init_table` | if set, `init` looks up key `fail` in this table and fails with the value found, if any (the host's table decides which instantiation fails) |
//!
//! Other keys are accepted and ignored.
//!
//! # Commands
//!
//! Each record's value is a JSON object `{"do": "<command>", ...}`. A value that is not JSON,
//! not an object, or has no or an unknown `do` passes.
//!
//! | command                                              | effect                                            |
//! |------------------------------------------------------|---------------------------------------------------|
//! | `{"do":"pass"}`                                      | pass                                              |
//! | `{"do":"drop"}`                                      | drop                                              |
//! | `{"do":"dead-letter","reason":"x"}`                  | dead-letter with reason `x` (default `misbehave`) |
//! | `{"do":"route","name":"x"}`                          | route to `x` (default empty)                      |
//! | `{"do":"loop"}`                                      | loop forever                                      |
//! | `{"do":"sleep","ms":N}`                              | busy-wait N ms on the monotonic clock, then pass  |
//! | `{"do":"block","ms":N}`                              | `std::thread::sleep` N ms (a blocking WASI clock wait in the host), then pass |
//! | `{"do":"alloc","mb":N}`                              | allocate N MiB, touch every page, hold it until the end of the call, then pass |
//! | `{"do":"panic","message":"x"}`                       | panic with `x` (default `misbehave`)              |
//! | `{"do":"verdicts","n":N}`                            | N pass verdicts for this record instead of one    |
//! | `{"do":"emit","count":N,"bytes":B,"route":"r"}`      | emit N outputs with a value of B `x` bytes, route `r` if given |
//! | `{"do":"log","level":"info","message":"x"}`          | host log (debug/info/warn/error, default info), then pass |
//! | `{"do":"print","message":"x"}`                       | `x` to stdout and to stderr, then pass            |
//! | `{"do":"counter","name":"x","delta":N}`              | host counter add (delta default 1), then pass     |
//! | `{"do":"lookup","table":"t","key":"k"}`              | emit one output whose value is the looked-up bytes, or `null` |
//! | `{"do":"lookup-timing","table":"t","prefix":"user-","keys":K,"n":N}` | N lookups of `prefix` + `i % K` (5 digits), each timed on the monotonic clock; emit one output: JSON `{"n","found","ns":{"p50","p99","p999","max"},"clock_ns":{"p50","p99"}}` (`clock_ns`: two clock reads with nothing between, the timing's own cost) |
//! | `{"do":"probe"}`                                     | emit one output: JSON `{"env_vars","args","read_dir","open_file","tcp"}` |
//! | `{"do":"echo"}`                                      | emit the record with headers `offset`, `topic`, `partition` added |
//!
//! Missing numbers are 0. `probe` reports counts for `env_vars` and `args`, and `"ok"` or the
//! error text for reading `/`, opening `/etc/passwd` and connecting to `127.0.0.1:1`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_plugin_sdk::host::{self, Level};
use switchyard_plugin_sdk::{Batch, Config, Output, Plugin, Record, Verdict};

/// Does what each record says.
#[derive(Debug)]
pub struct Misbehave;

impl Plugin for Misbehave {
    fn init(config: &Config) -> Result<Self, String> {
        if let Some(message) = config.get("fail_init") {
            return Err(message.to_owned());
        }
        if let Some(table) = config.get("init_table")
            && let Some(message) = host::lookup(table, b"fail")
        {
            return Err(String::from_utf8_lossy(&message).into_owned());
        }
        Ok(Self)
    }

    fn process(&mut self, record: &Record) -> Verdict {
        let batch = Batch::new("", 0, Vec::new());
        let mut held = Vec::new();
        let mut verdicts = Vec::with_capacity(1);
        obey(&batch, record, &mut held, &mut verdicts);
        verdicts.pop().unwrap_or(Verdict::Pass)
    }

    fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        // Allocations made by `alloc` commands, held until the end of the call.
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut verdicts = Vec::with_capacity(batch.len());
        for record in batch.records() {
            obey(batch, record, &mut held, &mut verdicts);
        }
        drop(held);
        verdicts
    }
}

/// Runs the command in `record`, pushing its verdicts (one, except for `verdicts`).
fn obey(batch: &Batch, record: &Record, held: &mut Vec<Vec<u8>>, verdicts: &mut Vec<Verdict>) {
    let Ok(command) = record.json_object() else {
        verdicts.push(Verdict::Pass);
        return;
    };
    let text = |name: &str, default: &str| -> String {
        command
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let number = |name: &str| command.get(name).and_then(Value::as_u64).unwrap_or(0);
    let verdict = match command.get("do").and_then(Value::as_str).unwrap_or("") {
        "drop" => Verdict::Drop,
        "dead-letter" => Verdict::DeadLetter(text("reason", "misbehave")),
        "route" => Verdict::Route(text("name", "")),
        "loop" => spin_forever(),
        "sleep" => {
            busy_wait(Duration::from_millis(number("ms")));
            Verdict::Pass
        }
        "block" => {
            std::thread::sleep(Duration::from_millis(number("ms")));
            Verdict::Pass
        }
        "alloc" => {
            held.push(allocate_and_touch(number("mb")));
            Verdict::Pass
        }
        "panic" => panic!("{}", text("message", "misbehave")),
        "verdicts" => {
            let n = usize::try_from(number("n")).unwrap_or(usize::MAX);
            verdicts.extend(std::iter::repeat_n(Verdict::Pass, n));
            return;
        }
        "emit" => {
            let bytes = usize::try_from(number("bytes")).unwrap_or(usize::MAX);
            let route = command.get("route").and_then(Value::as_str);
            let outputs = (0..number("count"))
                .map(|_| Output {
                    route: route.map(str::to_owned),
                    value: Some(vec![b'x'; bytes]),
                    ..Output::default()
                })
                .collect();
            Verdict::Emit(outputs)
        }
        "log" => {
            let level = match text("level", "info").as_str() {
                "debug" => Level::Debug,
                "warn" => Level::Warn,
                "error" => Level::Error,
                _ => Level::Info,
            };
            host::log(level, &text("message", ""));
            Verdict::Pass
        }
        "print" => {
            let message = text("message", "");
            println!("{message}");
            eprintln!("{message}");
            Verdict::Pass
        }
        "counter" => {
            let delta = command.get("delta").and_then(Value::as_u64).unwrap_or(1);
            host::counter_add(&text("name", ""), delta);
            Verdict::Pass
        }
        "lookup" => {
            let found = host::lookup(&text("table", ""), text("key", "").as_bytes());
            Verdict::emit_one(Output::new().with_value(found.unwrap_or_else(|| b"null".to_vec())))
        }
        "lookup-timing" => Verdict::emit_one(Output::new().with_json(&lookup_timing(
            &text("table", ""),
            &text("prefix", ""),
            number("keys").max(1),
            number("n"),
        ))),
        "probe" => Verdict::emit_one(Output::new().with_json(&probe())),
        "echo" => Verdict::emit_one(
            Output::from_record(record)
                .with_header("offset", record.offset().to_string())
                .with_header("topic", batch.topic())
                .with_header("partition", batch.partition().to_string()),
        ),
        _ => Verdict::Pass,
    };
    verdicts.push(verdict);
}

/// Never returns; `black_box` keeps the optimizer from proving the loop does nothing.
fn spin_forever() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Burns CPU until `duration` has passed on the monotonic clock.
fn busy_wait(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        black_box(());
    }
}

/// `mb` MiB, every page written so the memory is really committed.
fn allocate_and_touch(mb: u64) -> Vec<u8> {
    // Too large for the address space: ask for the impossible and let the allocation fail.
    let size = usize::try_from(mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20))
        .unwrap_or(usize::MAX);
    let mut memory = vec![0u8; size];
    for page in memory.iter_mut().step_by(4096) {
        *page = 1;
    }
    black_box(memory)
}

/// What this instance can see of its environment.
fn probe() -> Value {
    fn outcome<T>(result: std::io::Result<T>) -> String {
        match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }
    json!({
        "env_vars": std::env::vars().count(),
        "args": std::env::args().count(),
        "read_dir": outcome(std::fs::read_dir("/")),
        "open_file": outcome(std::fs::File::open("/etc/passwd")),
        "tcp": outcome(std::net::TcpStream::connect("127.0.0.1:1")),
    })
}

switchyard_plugin_sdk::export!(Misbehave);

/// Times `n` lookups one by one, and the clock alone, and returns their percentiles.
fn lookup_timing(table: &str, prefix: &str, keys: u64, n: u64) -> Value {
    let mut key = String::with_capacity(prefix.len() + 8);
    let mut times = Vec::with_capacity(n as usize);
    let mut clock = Vec::with_capacity(n as usize);
    let mut found = 0u64;
    for i in 0..n {
        key.clear();
        key.push_str(prefix);
        key.push_str(&format!("{:05}", i % keys));
        let started = Instant::now();
        let value = host::lookup(table, key.as_bytes());
        times.push(started.elapsed().as_nanos() as u64);
        found += u64::from(black_box(value).is_some());
        let started = Instant::now();
        clock.push(black_box(started).elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    clock.sort_unstable();
    let at = |v: &[u64], p: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    json!({
        "n": n,
        "found": found,
        "ns": {"p50": at(&times, 0.5), "p99": at(&times, 0.99), "p999": at(&times, 0.999), "max": times.last().copied().unwrap_or(0)},
        "clock_ns": {"p50": at(&clock, 0.5), "p99": at(&clock, 0.99)},
    })
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::testing;

    use super::*;

    fn run(commands: &[&str]) -> Vec<Verdict> {
        let records = commands
            .iter()
            .enumerate()
            .map(|(i, c)| Record::new().with_offset(i as i64 + 10).with_value(*c))
            .collect();
        Misbehave::init(&Config::new())
            .unwrap()
            .process_batch(&Batch::new("in", 2, records))
    }

    fn one(command: &str) -> Verdict {
        let mut verdicts = run(&[command]);
        assert_eq!(verdicts.len(), 1);
        verdicts.remove(0)
    }

    #[test]
    fn init_fails_on_request() {
        assert_eq!(
            Misbehave::init(&Config::from_pairs([("fail_init", "nope")])).unwrap_err(),
            "nope"
        );
        assert!(Misbehave::init(&Config::from_pairs([("other", "x")])).is_ok());
        let from_table = Config::from_pairs([("init_table", "init")]);
        assert!(Misbehave::init(&from_table).is_ok());
        testing::set_table("init", "fail", "not now");
        assert_eq!(Misbehave::init(&from_table).unwrap_err(), "not now");
    }

    #[test]
    fn simple_verdicts() {
        assert_eq!(one(r#"{"do":"pass"}"#), Verdict::Pass);
        assert_eq!(one(r#"{"do":"drop"}"#), Verdict::Drop);
        assert_eq!(
            one(r#"{"do":"dead-letter","reason":"bad"}"#),
            Verdict::dead_letter("bad")
        );
        assert_eq!(one(r#"{"do":"route","name":"r1"}"#), Verdict::route("r1"));
        for other in [
            "not json",
            "[1]",
            "{}",
            r#"{"do":"unknown"}"#,
            r#"{"do":7}"#,
        ] {
            assert_eq!(one(other), Verdict::Pass, "{other}");
        }
        let mut plugin = Misbehave::init(&Config::new()).unwrap();
        assert_eq!(
            plugin.process(&Record::new().with_value(r#"{"do":"drop"}"#)),
            Verdict::Drop
        );
        assert_eq!(plugin.process(&Record::new()), Verdict::Pass);
    }

    #[test]
    fn verdict_counts_can_be_wrong() {
        assert_eq!(run(&[r#"{"do":"verdicts","n":3}"#, "{}"]).len(), 4);
        assert_eq!(run(&[r#"{"do":"verdicts","n":0}"#, "{}"]).len(), 1);
    }

    #[test]
    fn emits_sized_outputs() {
        let Verdict::Emit(outputs) = one(r#"{"do":"emit","count":3,"bytes":5,"route":"r"}"#) else {
            panic!()
        };
        assert_eq!(outputs.len(), 3);
        assert!(
            outputs
                .iter()
                .all(|o| o.value.as_deref() == Some(&b"xxxxx"[..])
                    && o.route.as_deref() == Some("r"))
        );
        let Verdict::Emit(outputs) = one(r#"{"do":"emit","count":1,"bytes":0}"#) else {
            panic!()
        };
        assert_eq!(
            (outputs[0].route.as_deref(), outputs[0].value.as_deref()),
            (None, Some(&b""[..]))
        );
    }

    #[test]
    fn sleeps_and_allocates() {
        let start = Instant::now();
        assert_eq!(one(r#"{"do":"sleep","ms":20}"#), Verdict::Pass);
        assert!(start.elapsed() >= Duration::from_millis(20));
        let start = Instant::now();
        assert_eq!(one(r#"{"do":"block","ms":20}"#), Verdict::Pass);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(one(r#"{"do":"alloc","mb":2}"#), Verdict::Pass);
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn panics_on_request() {
        one(r#"{"do":"panic","message":"boom"}"#);
    }

    #[test]
    fn host_calls() {
        testing::set_table("t", "k", "v1");
        assert_eq!(
            one(r#"{"do":"log","level":"warn","message":"hello"}"#),
            Verdict::Pass
        );
        assert_eq!(
            one(r#"{"do":"counter","name":"c","delta":5}"#),
            Verdict::Pass
        );
        assert_eq!(one(r#"{"do":"print","message":"printed"}"#), Verdict::Pass);
        assert_eq!(testing::logs(), [(Level::Warn, "hello".to_owned())]);
        assert_eq!(testing::counters().get("c"), Some(&5));
        assert_eq!(
            one(r#"{"do":"lookup","table":"t","key":"k"}"#),
            Verdict::emit_one(Output::new().with_value("v1"))
        );
        assert_eq!(
            one(r#"{"do":"lookup","table":"t","key":"nope"}"#),
            Verdict::emit_one(Output::new().with_value("null"))
        );
    }

    #[test]
    fn probe_reports_each_capability() {
        let Verdict::Emit(outputs) = one(r#"{"do":"probe"}"#) else {
            panic!()
        };
        let report: Value = serde_json::from_slice(outputs[0].value.as_deref().unwrap()).unwrap();
        assert!(report["env_vars"].is_u64() && report["args"].is_u64());
        for key in ["read_dir", "open_file", "tcp"] {
            assert!(report[key].is_string(), "{key}: {report}");
        }
    }

    #[test]
    fn echo_shows_what_crossed_the_boundary() {
        let record = Record::new()
            .with_offset(7)
            .with_key("k")
            .with_value(r#"{"do":"echo"}"#)
            .with_header("h", "1");
        let verdicts = Misbehave::init(&Config::new())
            .unwrap()
            .process_batch(&Batch::new("in", 2, vec![record.clone()]));
        let expected = Output::from_record(&record)
            .with_header("offset", "7")
            .with_header("topic", "in")
            .with_header("partition", "2");
        assert_eq!(verdicts, [Verdict::emit_one(expected)]);
    }
}
