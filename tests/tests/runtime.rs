//! The plugin runtime driven through real, built plugins: every verdict kind, the chain
//! semantics, each limit obeyed and violated, failure isolation, malformed records, loading
//! errors and the sandbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard::plugin::{
    ChainRunner, ChainSpec, Delivery, Destination, ErrorKind, Header, HostServices, InputRecord,
    LoadError, MemoryTables, RouteId, SpecError, StageLimits, StageSpec, Tables,
};
use switchyard_tests::{engine, record, run, stage};

const ROUTES: [&str; 4] = ["standard", "urgent", "errors", "other"];

fn chain_with(stages: Vec<StageSpec>, services: HostServices) -> ChainRunner {
    let spec = ChainSpec::new(
        "test",
        ROUTES.iter().map(|s| s.to_string()).collect(),
        "standard",
        stages,
    )
    .expect("valid chain");
    ChainRunner::new(engine(), Arc::new(spec), services).expect("chain instantiates")
}

fn chain(stages: Vec<StageSpec>) -> ChainRunner {
    chain_with(stages, HostServices::default())
}

fn misbehave() -> ChainRunner {
    chain(vec![stage("m", "misbehave", &[])])
}

fn misbehave_with(limits: StageLimits) -> ChainRunner {
    let mut s = stage("m", "misbehave", &[]);
    s.limits = limits;
    chain(vec![s])
}

fn route_of(d: &Delivery) -> Option<RouteId> {
    match &d.destination {
        Destination::Route { route, .. } => Some(*route),
        Destination::DeadLetter(_) => None,
    }
}

fn value_of(d: &Delivery) -> String {
    let record = match &d.destination {
        Destination::Route { record, .. } => record,
        Destination::DeadLetter(dl) => &dl.record,
    };
    String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned()
}

/// The dead letter of a delivery, or a panic naming what it was instead.
fn dead(d: &Delivery) -> (&ErrorKind, &str) {
    match &d.destination {
        Destination::DeadLetter(dl) => (&dl.error.kind, dl.error.message.as_str()),
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

fn id(name: &str) -> RouteId {
    RouteId(ROUTES.iter().position(|r| *r == name).expect("route") as u16)
}

#[test]
fn every_verdict_kind() {
    let mut c = misbehave();
    let out = run(
        &mut c,
        &[
            r#"{"do":"pass"}"#,
            r#"{"do":"route","name":"urgent"}"#,
            r#"{"do":"emit","count":2,"bytes":3}"#,
            r#"{"do":"emit","count":1,"bytes":1,"route":"errors"}"#,
            r#"{"do":"drop"}"#,
            r#"{"do":"dead-letter","reason":"no good"}"#,
        ],
    );
    let summary: Vec<(usize, Option<RouteId>)> =
        out.iter().map(|d| (d.source, route_of(d))).collect();
    assert_eq!(
        summary,
        vec![
            (0, Some(id("standard"))),
            (1, Some(id("urgent"))),
            (2, Some(id("standard"))),
            (2, Some(id("standard"))),
            (3, Some(id("errors"))),
            (5, None),
        ]
    );
    assert_eq!(value_of(&out[0]), r#"{"do":"pass"}"#);
    assert_eq!(value_of(&out[2]), "xxx");
    assert_eq!(value_of(&out[4]), "x");
    let (kind, reason) = dead(&out[5]);
    assert_eq!((*kind, reason), (ErrorKind::Rejected, "no good"));
    // Emitted records inherit the source offset and timestamp.
    match &out[3].destination {
        Destination::Route { record, .. } => {
            assert_eq!(record.offset, 2);
            assert_eq!(record.timestamp_ms, Some(1_700_000_000_002));
        }
        other => panic!("{other:?}"),
    }
    let stats = &c.stats()[0];
    assert_eq!(
        (stats.records_in, stats.records_out, stats.dropped),
        (6, 5, 1)
    );
}

#[test]
fn chain_carries_routes_and_survivors_to_the_next_stage() {
    // Stage 1 decides; stage 2 echoes what it received (with the offset it saw).
    let mut c = chain(vec![
        stage("first", "misbehave", &[]),
        stage("second", "misbehave", &[]),
    ]);
    let out = run(
        &mut c,
        &[
            r#"{"do":"route","name":"urgent"}"#,
            r#"{"do":"drop"}"#,
            r#"{"do":"emit","count":2,"bytes":2}"#,
            r#"{"do":"dead-letter","reason":"stage one says no"}"#,
            r#"{"do":"pass"}"#,
        ],
    );
    // The second stage passes everything, so what comes out shows what it received.
    let summary: Vec<(usize, Option<RouteId>, String)> = out
        .iter()
        .map(|d| (d.source, route_of(d), value_of(d)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                0,
                Some(id("urgent")),
                r#"{"do":"route","name":"urgent"}"#.into()
            ),
            (2, Some(id("standard")), "xx".into()),
            (2, Some(id("standard")), "xx".into()),
            (
                3,
                None,
                r#"{"do":"dead-letter","reason":"stage one says no"}"#.into()
            ),
            (4, Some(id("standard")), r#"{"do":"pass"}"#.into()),
        ]
    );
    match &out[3].destination {
        Destination::DeadLetter(dl) => {
            assert_eq!(dl.stage, 0);
            assert_eq!(dl.stage_name, "first");
        }
        other => panic!("{other:?}"),
    }
    let stats = c.stats();
    assert_eq!(stats[0].records_in, 5);
    assert_eq!(
        stats[1].records_in, 4,
        "dropped and dead-lettered records stop"
    );
}

#[test]
fn a_later_stage_sees_the_route_and_can_override_it() {
    let mut c = chain(vec![
        stage("first", "misbehave", &[]),
        stage("second", "route", &[]),
    ]);
    // The first stage routes everything to `other`; the route plugin then overrides for
    // urgent records and passes the rest, which keep `other`.
    let out = run(
        &mut c,
        &[
            r#"{"do":"route","name":"other","priority":"high"}"#,
            r#"{"do":"route","name":"other","priority":"low"}"#,
        ],
    );
    let routes: Vec<_> = out.iter().map(route_of).collect();
    assert_eq!(routes, vec![Some(id("urgent")), Some(id("other"))]);
}

#[test]
fn memory_cap_obeyed_and_violated() {
    let mut c = misbehave_with(StageLimits {
        memory_mib: 32,
        ..StageLimits::default()
    });
    let out = run(
        &mut c,
        &[r#"{"do":"alloc","mb":8}"#, r#"{"do":"alloc","mb":64}"#],
    );
    assert_eq!(route_of(&out[0]), Some(id("standard")));
    let (kind, reason) = dead(&out[1]);
    assert_eq!(*kind, ErrorKind::Memory, "{reason}");
    assert!(reason.contains("limits.memory_mib"), "{reason}");
}

#[test]
fn time_budget_obeyed_and_violated() {
    let mut c = misbehave_with(StageLimits {
        time_per_record_ms: 200,
        ..StageLimits::default()
    });
    let out = run(
        &mut c,
        &[
            r#"{"do":"sleep","ms":5}"#,
            r#"{"do":"loop"}"#,
            r#"{"do":"pass"}"#,
        ],
    );
    assert_eq!(route_of(&out[0]), Some(id("standard")));
    let (kind, reason) = dead(&out[1]);
    assert_eq!(*kind, ErrorKind::Timeout, "{reason}");
    assert!(reason.contains("time_per_record_ms"), "{reason}");
    assert_eq!(route_of(&out[2]), Some(id("standard")));
}

/// A plugin that blocks in a WASI clock wait (`std::thread::sleep`, Python's `time.sleep`)
/// sits in the host, where epoch interruption cannot reach it: the host bounds the wait by
/// the call's remaining budget, so an hour's sleep ends as a `timeout` like a busy loop.
#[test]
fn a_blocking_sleep_is_bounded_by_the_time_budget() {
    let (done, finished) = std::sync::mpsc::channel();
    // On its own thread, so that a wait the host does not bound fails the test instead of
    // hanging it for an hour.
    std::thread::spawn(move || {
        let mut c = misbehave_with(StageLimits {
            time_per_record_ms: 200,
            ..StageLimits::default()
        });
        let out = run(
            &mut c,
            &[
                r#"{"do":"block","ms":5}"#,
                r#"{"do":"block","ms":3600000}"#,
                r#"{"do":"pass"}"#,
            ],
        );
        let _ = done.send(out);
    });
    let out = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the chain returned within 10 s although the plugin asked to sleep 3600 s");
    assert_eq!(out.len(), 3);
    assert_eq!(
        route_of(&out[0]),
        Some(id("standard")),
        "a short sleep is obeyed"
    );
    let (kind, reason) = dead(&out[1]);
    assert_eq!(*kind, ErrorKind::Timeout, "{reason}");
    assert!(reason.contains("time_per_record_ms"), "{reason}");
    assert_eq!(
        route_of(&out[2]),
        Some(id("standard")),
        "the next record runs"
    );
}

#[test]
fn max_outputs_obeyed_and_violated() {
    let mut c = misbehave_with(StageLimits {
        max_outputs: 10,
        ..StageLimits::default()
    });
    let out = run(
        &mut c,
        &[
            r#"{"do":"emit","count":10,"bytes":1}"#,
            r#"{"do":"emit","count":11,"bytes":1}"#,
        ],
    );
    assert_eq!(
        out.iter()
            .filter(|d| d.source == 0 && route_of(d).is_some())
            .count(),
        10
    );
    let last = out.last().expect("deliveries");
    assert_eq!(last.source, 1);
    let (kind, reason) = dead(last);
    assert_eq!(*kind, ErrorKind::BadOutput);
    assert!(reason.contains("limits.max_outputs"), "{reason}");
    assert_eq!(out.len(), 11);
}

#[test]
fn max_output_bytes_obeyed_and_violated() {
    let mut c = misbehave_with(StageLimits {
        max_output_bytes: 1000,
        ..StageLimits::default()
    });
    let out = run(
        &mut c,
        &[
            r#"{"do":"emit","count":2,"bytes":500}"#,
            r#"{"do":"emit","count":2,"bytes":501}"#,
        ],
    );
    assert_eq!(out.len(), 3);
    let (kind, reason) = dead(&out[2]);
    assert_eq!(*kind, ErrorKind::BadOutput);
    assert!(reason.contains("limits.max_output_bytes"), "{reason}");
}

#[test]
fn wrong_number_of_verdicts_is_isolated_to_its_record() {
    let mut c = misbehave();
    for n in [0, 2, 5] {
        let bad = format!(r#"{{"do":"verdicts","n":{n}}}"#);
        let out = run(&mut c, &[r#"{"do":"pass"}"#, &bad, r#"{"do":"pass"}"#]);
        assert_eq!(out.len(), 3, "n={n}");
        assert_eq!(route_of(&out[0]), Some(id("standard")));
        let (kind, reason) = dead(&out[1]);
        assert_eq!(*kind, ErrorKind::BadOutput);
        assert!(
            reason.contains(&format!("returned {n} verdicts for 1 records")),
            "{reason}"
        );
        assert_eq!(route_of(&out[2]), Some(id("standard")));
    }
    // One verdict is the obeyed case.
    let out = run(&mut c, &[r#"{"do":"verdicts","n":1}"#]);
    assert_eq!(route_of(&out[0]), Some(id("standard")));
}

#[test]
fn undeclared_routes_are_bad_output() {
    let mut c = misbehave();
    let out = run(
        &mut c,
        &[
            r#"{"do":"route","name":"urgent"}"#,
            r#"{"do":"route","name":"some-topic"}"#,
            r#"{"do":"emit","count":1,"bytes":1,"route":"nowhere"}"#,
        ],
    );
    assert_eq!(route_of(&out[0]), Some(id("urgent")));
    for d in &out[1..] {
        let (kind, reason) = dead(d);
        assert_eq!(*kind, ErrorKind::BadOutput);
        assert!(
            reason.contains("is not declared in pipeline test"),
            "{reason}"
        );
        assert!(
            reason.contains("standard, urgent, errors, other"),
            "{reason}"
        );
    }
}

#[test]
fn panic_message_reaches_the_dead_letter_reason() {
    let mut c = misbehave();
    let out = run(&mut c, &[r#"{"do":"panic","message":"kaboom 42"}"#]);
    let (kind, reason) = dead(&out[0]);
    assert_eq!(*kind, ErrorKind::Trap);
    assert!(reason.contains("kaboom 42"), "{reason}");
}

/// A poison record inside a batch of 256: exactly that record is dead-lettered, the other
/// 255 pass in order, for each way a plugin can fail.
#[test]
fn poison_record_in_a_batch_of_256() {
    let mut c = misbehave_with(StageLimits {
        time_per_record_ms: 100,
        ..StageLimits::default()
    });
    let poisons = [
        (r#"{"do":"panic","message":"poison"}"#, ErrorKind::Trap),
        (r#"{"do":"loop"}"#, ErrorKind::Timeout),
        (r#"{"do":"alloc","mb":200}"#, ErrorKind::Memory),
        (r#"{"do":"verdicts","n":3}"#, ErrorKind::BadOutput),
        (r#"{"do":"route","name":"nope"}"#, ErrorKind::BadOutput),
        (
            r#"{"do":"emit","count":1000,"bytes":1}"#,
            ErrorKind::BadOutput,
        ),
    ];
    for (poison, expected) in poisons {
        let values: Vec<String> = (0..256)
            .map(|i| {
                if i == 137 {
                    poison.to_string()
                } else {
                    format!(r#"{{"do":"pass","i":{i}}}"#)
                }
            })
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let out = run(&mut c, &refs);
        assert_eq!(out.len(), 256, "{poison}");
        for (i, d) in out.iter().enumerate() {
            assert_eq!(d.source, i, "{poison}: order kept");
            if i == 137 {
                assert_eq!(*dead(d).0, expected, "{poison}");
            } else {
                assert_eq!(route_of(d), Some(id("standard")), "{poison}");
                assert_eq!(value_of(d), values[i]);
            }
        }
    }
    let stats = &c.stats()[0];
    assert_eq!(stats.isolations, 6);
}

#[test]
fn malformed_records_cross_the_boundary_intact() {
    let mut c = misbehave();
    let many_headers: Vec<Header> = (0..1000)
        .map(|i| Header {
            key: format!("h{i}"),
            value: if i % 10 == 0 {
                None
            } else {
                Some(vec![i as u8; 3])
            },
        })
        .collect();
    let big = vec![b'a'; 1024 * 1024];
    let records = vec![
        InputRecord {
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: Some(b"{\"do\":\"pass\"}".to_vec()),
            headers: vec![],
        },
        InputRecord {
            offset: 1,
            timestamp_ms: Some(5),
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![],
        },
        InputRecord {
            offset: 2,
            timestamp_ms: Some(5),
            key: Some(vec![]),
            value: Some(vec![]),
            headers: vec![],
        },
        InputRecord {
            offset: 3,
            timestamp_ms: Some(5),
            key: Some(vec![0xff, 0xfe, 0x00]),
            value: Some(vec![0xc3, 0x28, 0xa0, 0xa1]),
            headers: vec![],
        },
        InputRecord {
            offset: 4,
            timestamp_ms: Some(5),
            key: None,
            value: Some(big.clone()),
            headers: vec![],
        },
        InputRecord {
            offset: 5,
            timestamp_ms: Some(5),
            key: Some(b"h".to_vec()),
            value: Some(b"x".to_vec()),
            headers: many_headers.clone(),
        },
    ];
    let expected = records.clone();
    let out = c.process("events", 0, records).expect("runs");
    assert_eq!(out.len(), 6);
    for (d, want) in out.iter().zip(&expected) {
        match &d.destination {
            Destination::Route { record, .. } => assert_eq!(record, want),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn echo_shows_the_plugin_sees_exact_bytes_topic_and_partition() {
    let mut c = misbehave();
    let mut r = record(41, br#"{"do":"echo"}"#.to_vec());
    r.key = Some(vec![0, 1, 2, 255]);
    r.headers = vec![Header {
        key: "trace".into(),
        value: Some(b"abc".to_vec()),
    }];
    let out = c.process("orders", 7, vec![r]).expect("runs");
    let Destination::Route { record, .. } = &out[0].destination else {
        panic!("{out:?}")
    };
    assert_eq!(record.key.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    let header = |k: &str| {
        record
            .headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert_eq!(header("trace").as_deref(), Some("abc"));
    assert_eq!(header("offset").as_deref(), Some("41"));
    assert_eq!(header("topic").as_deref(), Some("orders"));
    assert_eq!(header("partition").as_deref(), Some("7"));
}

#[test]
fn the_guest_has_no_ambient_authority() {
    let mut c = misbehave();
    let out = run(&mut c, &[r#"{"do":"probe"}"#]);
    let probe: serde_json::Value = serde_json::from_str(&value_of(&out[0])).expect("probe JSON");
    assert_eq!(probe["env_vars"], 0, "{probe}");
    assert_eq!(probe["args"], 0, "{probe}");
    for capability in ["read_dir", "open_file", "tcp"] {
        let result = probe[capability].as_str().unwrap_or("ok");
        assert_ne!(
            result, "ok",
            "{capability} must fail in the sandbox: {probe}"
        );
    }
}

#[test]
fn lookup_counters_and_logs_reach_the_host() {
    let mut tables = MemoryTables::empty();
    tables.insert("users", "u1", r#"{"name":"Ada"}"#);
    let services = HostServices {
        tables: Arc::new(tables),
        ..HostServices::default()
    };
    let counters = services.counters.clone();
    let mut c = chain_with(vec![stage("m", "misbehave", &[])], services);
    let out = run(
        &mut c,
        &[
            r#"{"do":"lookup","table":"users","key":"u1"}"#,
            r#"{"do":"lookup","table":"users","key":"nobody"}"#,
            r#"{"do":"lookup","table":"missing","key":"u1"}"#,
            r#"{"do":"counter","name":"seen","delta":3}"#,
            r#"{"do":"counter","name":"seen","delta":4}"#,
        ],
    );
    assert_eq!(value_of(&out[0]), r#"{"name":"Ada"}"#);
    assert_eq!(value_of(&out[1]), "null");
    assert_eq!(value_of(&out[2]), "null");
    assert_eq!(counters.get("test", "m", "seen"), 7);
}

/// Captures tracing output of the current thread.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().expect("log buffer")).into_owned();
    (result, text)
}

#[test]
fn guest_stdout_stderr_and_log_calls_become_tagged_host_log_lines() {
    let (_, logs) = capture_logs(|| {
        let mut c = misbehave();
        run(
            &mut c,
            &[
                r#"{"do":"print","message":"hello from the guest"}"#,
                r#"{"do":"log","level":"warn","message":"careful now"}"#,
            ],
        )
    });
    for needle in ["hello from the guest", "careful now"] {
        let line = logs
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{logs}"));
        assert!(
            line.contains("pipeline=\"test\"") || line.contains("pipeline=test"),
            "{line}"
        );
        assert!(
            line.contains("stage=\"m\"") || line.contains("stage=m"),
            "{line}"
        );
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("careful now"))
    );
    assert!(
        logs.contains("stream=\"stdout\"") || logs.contains("stream=stdout"),
        "{logs}"
    );
    assert!(
        logs.contains("stream=\"stderr\"") || logs.contains("stream=stderr"),
        "{logs}"
    );
}

#[test]
fn init_error_fails_the_load_with_the_plugins_message() {
    let spec = ChainSpec::new(
        "test",
        vec!["standard".into()],
        "standard",
        vec![stage(
            "m",
            "misbehave",
            &[("fail_init", "table users is required")],
        )],
    )
    .expect("valid spec");
    let err = ChainRunner::new(engine(), Arc::new(spec), HostServices::default())
        .err()
        .expect("init must fail");
    assert!(matches!(err.error, LoadError::Init(ref m) if m == "table users is required"));
    assert_eq!(
        err.to_string(),
        "pipeline test, stage m: the plugin's init failed: table users is required"
    );
}

#[test]
fn bad_components_are_refused_with_a_reason() {
    let engine = engine();
    let err = |bytes: &[u8]| engine.load(bytes).expect_err("must be refused");
    assert!(matches!(err(b"definitely not wasm"), LoadError::NotWasm));
    let core = wat::parse_str("(module)").expect("wat");
    assert!(matches!(err(&core), LoadError::CoreModule));
    let mut truncated = switchyard_tests::plugin_bytes("noop");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(err(&truncated), LoadError::Compile(_)));
    // A component that exports nothing: no `transform`.
    let empty = wat::parse_str("(component)").expect("wat");
    let e = err(&empty);
    assert!(matches!(e, LoadError::World(_)), "{e}");
    assert!(e.to_string().contains("transform"), "{e}");
    // A component that imports something the host does not provide.
    let foreign = wat::parse_str(
        r#"(component (import "acme:secrets/vault" (instance (export "get" (func)))))"#,
    )
    .expect("wat");
    let e = err(&foreign);
    assert!(matches!(e, LoadError::World(_)), "{e}");
    assert!(e.to_string().contains("acme:secrets/vault"), "{e}");
}

#[test]
fn chain_spec_rejects_undeclared_default_route_and_bad_limits() {
    let e = ChainSpec::new("p", vec!["a".into()], "b", vec![]).unwrap_err();
    assert!(matches!(e, SpecError::UnknownDefaultRoute { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "pipeline p: default route `b` is not declared (declared: a)"
    );
    let e = ChainSpec::new("p", vec!["a".into(), "a".into()], "a", vec![]).unwrap_err();
    assert_eq!(e.to_string(), "pipeline p: route `a` is declared twice");
    let mut s = stage("s", "noop", &[]);
    s.limits.memory_mib = 0;
    let e = ChainSpec::new("p", vec!["a".into()], "a", vec![s]).unwrap_err();
    assert!(matches!(e, SpecError::BadLimits { .. }), "{e}");
    assert!(
        e.to_string().contains("stage s") && e.to_string().contains("limits.memory_mib"),
        "{e}"
    );
}

/// Tables whose `init` table answers `fail` with a message on the lookups numbered in
/// `failing` (counting from 1) and with nothing otherwise: the misbehave plugin configured
/// with `init_table = "init"` fails its `init` on exactly those instantiations.
struct FlakyInit {
    lookups: AtomicUsize,
    failing: Vec<usize>,
}

impl Tables for FlakyInit {
    fn lookup(&self, table: &str, key: &[u8]) -> Option<Vec<u8>> {
        if table != "init" || key != b"fail" {
            return None;
        }
        let n = self.lookups.fetch_add(1, Ordering::SeqCst) + 1;
        self.failing
            .contains(&n)
            .then(|| format!("instantiation {n} refused").into_bytes())
    }
}

/// After a trap the stage is instantiated afresh; when that fails (here the plugin's `init`
/// refuses twice) the runner retries with backoff instead of failing the pipeline: the
/// trapping record is dead-lettered and the records after it wait for the instance.
#[test]
fn a_failed_re_instantiation_is_retried_and_the_next_records_wait() {
    let tables = Arc::new(FlakyInit {
        lookups: AtomicUsize::new(0),
        failing: vec![2, 3],
    });
    let services = HostServices {
        tables: tables.clone(),
        ..HostServices::default()
    };
    let mut c = chain_with(
        vec![stage("m", "misbehave", &[("init_table", "init")])],
        services,
    );
    let records = [
        r#"{"do":"panic","message":"poison"}"#,
        r#"{"do":"pass"}"#,
        r#"{"do":"route","name":"urgent"}"#,
    ]
    .iter()
    .enumerate()
    .map(|(i, v)| record(i as i64, v.as_bytes()))
    .collect();
    let out = c
        .process("events", 0, records)
        .expect("a failed re-instantiation does not stop the chain");
    assert_eq!(out.len(), 3);
    let (kind, reason) = dead(&out[0]);
    assert_eq!(*kind, ErrorKind::Trap, "{reason}");
    assert!(reason.contains("poison"), "{reason}");
    assert_eq!(route_of(&out[1]), Some(id("standard")));
    assert_eq!(route_of(&out[2]), Some(id("urgent")));
    // 1 at start, 2 and 3 refused, 4 before the poison record alone, 5 after its trap.
    assert_eq!(tables.lookups.load(Ordering::SeqCst), 5);
}

/// Runs `values` through `c`, one call per record (so a per-call limit cannot hide a
/// per-stage one).
fn run_one_by_one(c: &mut ChainRunner, values: &[String]) {
    for v in values {
        run(c, &[v.as_str()]);
    }
}

/// Distinct counter names are bounded per stage over the process's life, not per call:
/// a plugin counting by user id cannot grow the host's memory or the metrics without bound.
#[test]
fn distinct_counter_names_are_bounded_per_stage() {
    let services = HostServices::default();
    let counters = services.counters.clone();
    let mut c = chain_with(vec![stage("m", "misbehave", &[])], services);
    let values: Vec<String> = (0..150)
        .map(|i| format!(r#"{{"do":"counter","name":"user-{i}","delta":2}}"#))
        .collect();
    run_one_by_one(&mut c, &values);
    // Names seen before still count once the limit is reached.
    run_one_by_one(&mut c, &values[..1]);
    let names: Vec<_> = counters.snapshot();
    assert_eq!(names.len(), 100, "{names:?}");
    assert_eq!(counters.get("test", "m", "user-0"), 4);
    assert_eq!(counters.get("test", "m", "user-99"), 2);
    assert_eq!(counters.get("test", "m", "user-100"), 0);
}

/// A name over the length limit is refused whole: it neither replaces nor creates a
/// counter (it used to be cut, so two of them in one call overwrote each other).
#[test]
fn over_long_counter_names_are_refused() {
    let services = HostServices::default();
    let counters = services.counters.clone();
    let mut c = chain_with(vec![stage("m", "misbehave", &[])], services);
    let long = "n".repeat(8 * 1024 + 1);
    let command = |delta: u64| format!(r#"{{"do":"counter","name":"{long}","delta":{delta}}}"#);
    let (a, b) = (command(3), command(4));
    run(
        &mut c,
        &[a.as_str(), b.as_str(), r#"{"do":"counter","name":"ok"}"#],
    );
    let names: Vec<String> = counters
        .snapshot()
        .into_iter()
        .map(|(k, _)| k.name)
        .collect();
    let lengths: Vec<usize> = names.iter().map(String::len).collect();
    assert_eq!(names, ["ok"], "names of {lengths:?} bytes");
}

/// Dropped counter names are logged once per stage, with the name cut short: a plugin
/// cannot flood the log with its names.
#[test]
fn dropped_counter_names_are_logged_once_and_cut_short() {
    let values: Vec<String> = (0..150)
        .map(|i| format!(r#"{{"do":"counter","name":"{i:04}{}"}}"#, "y".repeat(4096)))
        .collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let (_, logs) = capture_logs(|| {
        let mut c = misbehave();
        run(&mut c, &refs);
        run(&mut c, &refs);
    });
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("counter")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].len() < 1024, "{}", warnings[0]);
}
/// A component that returns, for each record of the batch, 100 outputs whose values all
/// point at one 32 MiB buffer: 32 MiB of guest memory, but 256 x 100 x 32 MiB = 800 GiB of
/// host memory if the result were copied before being checked.
const ALIASED_OUTPUTS: &str = r#"
(component
  (core module $m
    (memory (export "memory") 600)
    ;; The host's arguments are allocated from 1 MiB on; the 32 MiB value is at 4 MiB.
    (global $bump (mut i32) (i32.const 1048576))
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $bump (i32.add (local.get $p) (local.get $size)))
      (local.get $p))
    ;; init: ok, a result<_, string> with discriminant 0 at 16.
    (func (export "init") (param i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
    ;; process: as many `emit` verdicts as records ($n), all sharing one list of 100
    ;; outputs at 8192, each output's value the same 32 MiB at 4 MiB.
    (func (export "process") (param i32 i32 i32 i32) (param $n i32) (result i32)
      (local $i i32) (local $at i32)
      (block $done
        (loop $outputs
          (br_if $done (i32.ge_u (local.get $i) (i32.const 100)))
          (local.set $at (i32.add (i32.const 8192) (i32.mul (local.get $i) (i32.const 44))))
          (i32.store8 offset=0 (local.get $at) (i32.const 0))          ;; route: none
          (i32.store8 offset=12 (local.get $at) (i32.const 0))         ;; key: none
          (i32.store8 offset=24 (local.get $at) (i32.const 1))         ;; value: some
          (i32.store offset=28 (local.get $at) (i32.const 4194304))    ;; ... at 4 MiB
          (i32.store offset=32 (local.get $at) (i32.const 33554432))   ;; ... 32 MiB long
          (i32.store offset=36 (local.get $at) (i32.const 0))          ;; headers: empty
          (i32.store offset=40 (local.get $at) (i32.const 0))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $outputs)))
      (local.set $i (i32.const 0))
      (block $done
        (loop $verdicts
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $at (i32.add (i32.const 65536) (i32.mul (local.get $i) (i32.const 12))))
          (i32.store8 (local.get $at) (i32.const 2))                   ;; emit
          (i32.store offset=4 (local.get $at) (i32.const 8192))
          (i32.store offset=8 (local.get $at) (i32.const 100))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $verdicts)))
      (i32.store (i32.const 0) (i32.const 65536))
      (i32.store (i32.const 4) (local.get $n))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $memory))
  (alias core export $i "realloc" (core func $realloc))
  ;; Types used by exported functions must be exported (named) themselves.
  (type $header' (record (field "key" string) (field "value" (option (list u8)))))
  (export $header "header" (type $header'))
  (type $input' (record
    (field "offset" s64) (field "timestamp-ms" (option s64))
    (field "key" (option (list u8))) (field "value" (option (list u8)))
    (field "headers" (list $header))))
  (export $input "input-record" (type $input'))
  (type $batch' (record (field "topic" string) (field "partition" s32) (field "records" (list $input))))
  (export $batch "record-batch" (type $batch'))
  (type $output' (record
    (field "route" (option string)) (field "key" (option (list u8)))
    (field "value" (option (list u8))) (field "headers" (list $header))))
  (export $output "output-record" (type $output'))
  (type $verdict' (variant
    (case "pass") (case "route" string) (case "emit" (list $output))
    (case "drop") (case "dead-letter" string)))
  (export $verdict "verdict" (type $verdict'))
  (func $init (param "config" (list (tuple string string))) (result (result (error string)))
    (canon lift (core func $i "init") (memory $memory) (realloc $realloc)))
  (func $process (param "batch" $batch) (result (list $verdict))
    (canon lift (core func $i "process") (memory $memory) (realloc $realloc)))
  (instance $transform (export "init" (func $init)) (export "process" (func $process)))
  (export "switchyard:plugin/transform@0.1.0" (instance $transform)))
"#;

/// The process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Outputs that alias one guest buffer are refused before the host copies them: every
/// record is dead-lettered as `bad-output` naming `limits.max_output_bytes`, and the host's
/// memory stays flat (an eager copy would need 800 GiB).
#[test]
fn aliased_outputs_are_refused_before_they_are_copied() {
    let bytes = wat::parse_str(ALIASED_OUTPUTS).expect("wat");
    let module = engine().load(&bytes).expect("the component loads");
    let spec = StageSpec {
        name: "alias".into(),
        module,
        config: Vec::new(),
        limits: StageLimits::default(),
    };
    let mut c = chain(vec![spec]);
    let values: Vec<String> = (0..256).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let before = peak_rss();
    let out = run(&mut c, &refs);
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(out.len(), 256);
    for d in &out {
        let (kind, reason) = dead(d);
        assert_eq!(*kind, ErrorKind::BadOutput, "{reason}");
        assert!(reason.contains("limits.max_output_bytes"), "{reason}");
    }
    assert!(
        grown < 1 << 30,
        "the host's peak memory grew by {grown} bytes while refusing the outputs"
    );
}
