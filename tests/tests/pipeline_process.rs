//! The `switchyard` binary against a real broker (tansu): `check`, graceful shutdown on
//! SIGTERM, a SIGKILL mid-stream then a restart, and two routers sharing a consumer group.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchyard_tests::kafka::{Broker, event_records, missing, tally};
use switchyard_tests::pipelines::{
    ADMIN_EPHEMERAL, ROUTING_OUTPUTS, create_event_topics, read_routing_outputs, routing_config,
    scratch_dir, write_file,
};
use switchyard_tests::router_process::{RouterProcess, run_switchyard};

fn setup(name: &str) -> (Broker, std::path::PathBuf) {
    setup_on(Broker::tansu().expect("tansu starts"), name)
}

fn setup_on(broker: Broker, name: &str) -> (Broker, std::path::PathBuf) {
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    // Several routers run at once: each takes a free port for its admin API.
    let extra = "max_in_flight = 2000\ndrain_timeout_ms = 5000";
    let config = routing_config(&broker, name, ADMIN_EPHEMERAL, extra);
    (broker, config)
}

fn router(config: &std::path::Path) -> RouterProcess {
    let path = config.to_str().expect("UTF-8 path");
    RouterProcess::start(&["run", "--config", path]).expect("router starts")
}

/// Waits until at least `n` records are in the output topics; on failure shows the logs.
fn wait_for_outputs(broker: &Broker, n: usize, routers: &[&RouterProcess]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = broker
            .consume_all(&ROUTING_OUTPUTS, n, Duration::ZERO, Duration::from_secs(2))
            .expect("consumed")
            .len();
        if got >= n {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "only {got} of {n} outputs arrived; router logs:\n{}",
                logs(routers)
            );
        }
    }
}

#[test]
fn check_accepts_a_good_config_and_names_what_is_wrong_in_a_bad_one() {
    let (broker, config) = setup("check");
    let (code, stdout, stderr) =
        run_switchyard(&["check", "--config", config.to_str().expect("path")]).expect("runs");
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("pipeline events: ok: route ("), "{stdout}");

    // A file that is not a component: check fails and names the stage and the problem.
    let dir = scratch_dir("check-bad");
    let not_wasm = write_file(&dir, "bad.wasm", "definitely not wasm");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &switchyard_tests::plugin_path("route").display().to_string(),
        &not_wasm.display().to_string(),
    );
    let bad = write_file(&dir, "bad.toml", &text);
    let (code, _, stderr) =
        run_switchyard(&["check", "--config", bad.to_str().expect("path")]).expect("runs");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("stage route") && stderr.contains("not"),
        "{stderr}"
    );
    drop(broker);
}

/// SIGTERM drains and commits: the router exits 0, and a second router started afterwards
/// writes every remaining event exactly once, with no duplicate of what the first wrote.
#[test]
fn sigterm_drains_commits_and_exits_zero_so_a_restart_writes_no_duplicate() {
    const N: u64 = 20_000;
    let (broker, config) = setup("sigterm");
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    let mut first = router(&config);
    wait_for_outputs(&broker, 2_000, &[&first]);
    first.stop_cleanly();
    assert!(first.log().contains("Draining"), "{}", first.log());

    let mut second = router(&config);
    let counts = tally(&read_routing_outputs(&broker, N, Duration::from_secs(1)));
    second.stop_cleanly();
    let lost = missing(&counts, N);
    assert!(lost.is_empty(), "lost: {lost:?}");
    let duplicated: Vec<(&u64, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} duplicates after a graceful stop",
        duplicated.len()
    );
}

/// SIGKILL mid-stream, then a restart: nothing lost; every duplicate is a record the first
/// router had not committed when it died.
#[test]
fn sigkill_mid_stream_then_restart_loses_nothing() {
    const N: u64 = 30_000;
    let (broker, config) = setup("sigkill");
    broker
        .produce("events", event_records(0..N, 10_000))
        .expect("produced");
    // Where each event sits in the input topic.
    let input: HashMap<u64, (i32, i64)> = broker
        .consume_all(
            &["events"],
            N as usize,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .expect("input read")
        .iter()
        .map(|c| (c.event_number(), (c.partition, c.offset)))
        .collect();
    assert_eq!(input.len() as u64, N);

    let mut first = router(&config);
    wait_for_outputs(&broker, 5_000, &[&first]);
    first.sigkill().expect("killed");
    first.wait(Duration::from_secs(10)).expect("dead");
    let committed = broker
        .committed("switchyard-events", "events")
        .expect("committed offsets");

    let mut second = router(&config);
    let counts = tally(&read_routing_outputs(&broker, N, Duration::from_secs(2)));
    second.stop_cleanly();

    let lost = missing(&counts, N);
    assert!(lost.is_empty(), "lost after SIGKILL: {lost:?}");
    let duplicates: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    eprintln!(
        "SIGKILL: {} of {N} events written twice (committed at kill: {committed:?})",
        duplicates.len()
    );
    for n in &duplicates {
        let (partition, offset) = input[n];
        let from = committed.get(&partition).copied().unwrap_or(0);
        assert!(
            offset >= from,
            "event {n} (partition {partition}, offset {offset}) was written again although {from} was committed"
        );
    }
}

/// Two routers in one group share the partitions; one is killed mid-stream and the other
/// takes its partitions over: nothing lost.
///
/// On librdkafka's mock cluster (served by this test process, over TCP): tansu 0.6 does not
/// hand a killed member's partitions to the survivor (its group coordinator keeps the dead
/// member's assignment), which real Kafka does after `session.timeout.ms`.
#[test]
fn two_routers_share_the_partitions_and_survive_one_being_killed() {
    const N: u64 = 20_000;
    let (broker, config) = setup_on(Broker::mock(1).expect("mock cluster"), "two");
    let mut a = router(&config);
    let mut b = router(&config);
    // Both must own partitions before the kill, or the test proves nothing about a takeover
    // (one run on a loaded machine killed `a` before the group had given it any).
    wait_for_partitions(&[&a, &b]);
    // Produce in chunks while both run; kill one halfway.
    let chunk = N / 10;
    let mut assignments_before_kill = 0;
    for k in 0..10 {
        broker
            .produce("events", event_records(k * chunk..(k + 1) * chunk, 10_000))
            .expect("produced");
        if k == 4 {
            wait_for_outputs(&broker, (3 * chunk) as usize, &[&a, &b]);
            assignments_before_kill = assignments(&b);
            a.sigkill().expect("killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts = tally(&read_routing_outputs(&broker, N, Duration::from_secs(2)));
    b.stop_cleanly();
    let lost = missing(&counts, N);
    assert!(
        lost.is_empty(),
        "lost: {lost:?}\nsurvivor log:\n{}",
        b.log()
    );
    let duplicates = counts.values().filter(|c| **c > 1).count();
    eprintln!("two routers, one killed: {duplicates} of {N} events written twice");
    assert!(
        assignments(&b) > assignments_before_kill,
        "the survivor took partitions over after the kill:\n{}",
        b.log()
    );
}

/// How many times the router's log reports being given partitions.
fn assignments(router: &RouterProcess) -> usize {
    router.log().lines().filter(|l| owns_partitions(l)).count()
}

/// Whether a log line reports a non-empty assignment.
fn owns_partitions(line: &str) -> bool {
    line.contains("Partitions assigned") && !line.contains("partitions=[]")
}

/// Every router's log, one after the other.
fn logs(routers: &[&RouterProcess]) -> String {
    let logs: Vec<String> = routers.iter().map(|r| r.log()).collect();
    logs.join("\n-----\n")
}

/// Waits until every router's log reports that it owns partitions; on failure shows the logs.
fn wait_for_partitions(routers: &[&RouterProcess]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !routers.iter().all(|r| r.log().lines().any(owns_partitions)) {
        if Instant::now() >= deadline {
            panic!(
                "not every router was given partitions; logs:\n{}",
                logs(routers)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
