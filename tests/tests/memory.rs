//! Memory stays flat however often a plugin traps. In a test binary of its own, because RSS
//! is a process-wide figure: another test allocating at the same time would blur it.

use std::sync::Arc;
use switchyard::plugin::{ChainRunner, ChainSpec, Delivery, Destination, ErrorKind, HostServices};
use switchyard_tests::{engine, run, stage};

fn is_routed(d: &Delivery) -> bool {
    matches!(d.destination, Destination::Route { .. })
}

fn dead_kind(d: &Delivery) -> Option<ErrorKind> {
    match &d.destination {
        Destination::DeadLetter(dl) => Some(dl.error.kind),
        Destination::Route { .. } => None,
    }
}

fn misbehave() -> ChainRunner {
    let mut m = stage("m", "misbehave", &[]);
    // About memory, not time: on a loaded machine touching 4 MiB in a fresh instance can take
    // longer than the default 50 ms per record, which would dead-letter it as `timeout`.
    m.limits.time_per_record_ms = 10_000;
    let spec =
        ChainSpec::new("test", vec!["standard".into()], "standard", vec![m]).expect("valid chain");
    ChainRunner::new(engine(), Arc::new(spec), HostServices::default()).expect("instantiates")
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_thousand_traps_leave_the_host_healthy_and_memory_flat() {
    let mut c = misbehave();
    let trap = |c: &mut ChainRunner| {
        let out = run(
            c,
            &[
                r#"{"do":"alloc","mb":4}"#,
                r#"{"do":"panic","message":"again"}"#,
            ],
        );
        assert!(is_routed(&out[0]), "{:?}", out[0].destination);
        assert_eq!(dead_kind(&out[1]), Some(ErrorKind::Trap));
    };
    for _ in 0..100 {
        trap(&mut c);
    }
    let before = rss_kib();
    for _ in 0..1000 {
        trap(&mut c);
    }
    let after = rss_kib();
    // Each trap throws away an instance that had touched 4 MiB; 1000 of them leaking would
    // be gigabytes. Flat means within a few tens of MiB of noise.
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1000 traps"
    );
    let out = run(&mut c, &[r#"{"do":"pass"}"#]);
    assert!(is_routed(&out[0]));
    assert!(c.stats()[0].restarts >= 1000);
}
