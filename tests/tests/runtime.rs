//! The plugin runtime driven through real, built plugins: every verdict kind, the chain
//! semantics, each limit obeyed and violated, failure isolation, malformed records, loading
//! errors and the sandbox.

use std::sync::Arc;
use switchyard::plugin::{
    ChainRunner, ChainSpec, Delivery, Destination, ErrorKind, Header, HostServices, InputRecord,
    LoadError, MemoryTables, RouteId, SpecError, StageLimits, StageSpec,
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
