//! Changes of a stage's version and config: concurrent uploads to different stages of one
//! pipeline each land, none undoing the other (they are serialized per pipeline); across a
//! restart, an upload wins over the file it was made over, and an edit of the file wins over
//! any upload. Driven through the reloader the admin API calls, on live pipelines over
//! librdkafka's mock cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard::control::Reloader;
use switchyard::pipeline::PipelineHandle;
use switchyard::plugin::PluginVersion;
use switchyard_tests::kafka::Broker;
use switchyard_tests::pipelines::{
    ROUTING_OUTPUTS, create_event_topics, kafka_toml, routing_pipeline_with, scratch_dir, start,
    start_with, write_file,
};
use switchyard_tests::plugin_bytes;

/// `bytes` with a custom section appended, naming `n`: the same plugin, another version
/// (another sha256), so every upload of a test is distinct and a revert cannot pass for
/// progress.
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"switchyard-test";
    let content = n.to_le_bytes();
    let size = 1 + name.len() + content.len();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(u8::try_from(size).expect("a small section"));
    out.push(u8::try_from(name.len()).expect("a short name"));
    out.extend_from_slice(name);
    out.extend_from_slice(&content);
    out
}

fn upload(reloader: &Reloader, p: &Arc<PipelineHandle>, stage: usize, bytes: &[u8]) {
    upload_with(reloader, p, stage, bytes, None);
}

fn upload_with(
    reloader: &Reloader,
    p: &Arc<PipelineHandle>,
    stage: usize,
    bytes: &[u8],
    config: Option<BTreeMap<String, String>>,
) {
    let mut history = p.stages[stage].blocking_lock();
    reloader
        .upload(p, stage, &mut history, bytes, config, "test")
        .unwrap_or_else(|e| panic!("upload to stage {stage}: {e}"));
}

/// The config of a routing pipeline whose one stage (`route`) gets `urgent_values`.
fn routing_with(broker: &Broker, dir: &std::path::Path, urgent_values: &str) -> PathBuf {
    let text = format!(
        "{}\n{}",
        kafka_toml(broker.bootstrap()),
        routing_pipeline_with(
            &[("route", "route", &[("urgent_values", urgent_values)])],
            ""
        )
    );
    write_file(dir, "switchyard.toml", &text)
}

/// `urgent_values` as the stage's history and its live chain have it (they must agree).
fn urgent_values(running: &switchyard_tests::pipelines::Running) -> String {
    let p = &running.handles[0];
    let history = p.stages[0]
        .blocking_lock()
        .active
        .config
        .get("urgent_values")
        .cloned();
    let live = p.control.current().spec.stages()[0]
        .config
        .iter()
        .find(|(k, _)| k == "urgent_values")
        .map(|(_, v)| v.clone());
    assert_eq!(history, live, "the history names what runs");
    history.unwrap_or_default()
}

/// Restarts keep an upload made over an unchanged file; an edit of the stage's config in the
/// file wins, whether or not anything was uploaded.
#[test]
fn an_edit_of_the_file_wins_over_what_was_saved_and_an_upload_survives_an_unchanged_file() {
    let broker = Broker::mock(1).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let dir = scratch_dir("stage-config-restarts");
    let restart = |urgent: &str| {
        let config = routing_with(&broker, &dir, urgent);
        start_with(&config, true).expect("pipeline starts")
    };
    let running = restart("high");
    assert_eq!(urgent_values(&running), "high");
    running.stop().expect("clean stop");

    // Nothing uploaded: the file's new config runs.
    let running = restart("critical");
    assert_eq!(urgent_values(&running), "critical", "the file was edited");

    // An upload of a config over the unchanged file survives a restart.
    let reloader = Reloader::new(running.metrics.clone(), Duration::from_secs(60));
    let config = BTreeMap::from([("urgent_values".to_owned(), "low".to_owned())]);
    upload_with(
        &reloader,
        &running.handles[0],
        0,
        &plugin_bytes("route"),
        Some(config),
    );
    assert_eq!(urgent_values(&running), "low");
    running.stop().expect("clean stop");
    let running = restart("critical");
    assert_eq!(
        urgent_values(&running),
        "low",
        "the upload outlives a restart"
    );
    running.stop().expect("clean stop");

    // An edit of the file after the upload wins over it.
    let running = restart("medium");
    assert_eq!(
        urgent_values(&running),
        "medium",
        "the edit wins over the upload"
    );
    running.stop().expect("clean stop");
}

#[test]
fn concurrent_uploads_to_two_stages_both_land() {
    let broker = Broker::mock(1).expect("mock cluster");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let text = format!(
        "{}\n{}",
        kafka_toml(broker.bootstrap()),
        routing_pipeline_with(
            &[("first", "route", &[]), ("second", "route", &[])],
            "workers = 2"
        )
    );
    let config = write_file(&scratch_dir("reload-races"), "switchyard.toml", &text);
    let running = start(&config).expect("pipeline starts");
    let p = running.handles[0].clone();
    let reloader = Reloader::new(running.metrics.clone(), Duration::from_secs(60));
    let route = plugin_bytes("route");
    for round in 0..12u32 {
        let a = variant(&route, 2 * round);
        let b = variant(&route, 2 * round + 1);
        std::thread::scope(|s| {
            s.spawn(|| upload(&reloader, &p, 0, &a));
            s.spawn(|| upload(&reloader, &p, 1, &b));
        });
        let live = p.control.current();
        let versions: Vec<&str> = live
            .spec
            .stages()
            .iter()
            .map(|s| s.module.version.0.as_str())
            .collect();
        assert_eq!(
            versions,
            [PluginVersion::of(&a).0, PluginVersion::of(&b).0],
            "round {round}: both uploads answered success, so both must run"
        );
        for (stage, bytes) in [(0, &a), (1, &b)] {
            let history = p.stages[stage].blocking_lock();
            assert_eq!(
                history.active.version,
                PluginVersion::of(bytes).0,
                "round {round}: the history of stage {stage} names what runs"
            );
        }
    }
    running.stop().expect("clean stop");
}

/// A change while an output topic is missing (deleted since the start) is refused naming the
/// topic and its key, and the running version stays: the new version would otherwise find it
/// out one record at a time.
#[test]
fn a_change_is_refused_while_an_output_topic_is_missing() {
    let broker = Broker::tansu().expect("tansu starts");
    create_event_topics(&broker, &ROUTING_OUTPUTS);
    let dir = scratch_dir("reload-missing-topic");
    let config = routing_with(&broker, &dir, "high");
    let running = start(&config).expect("pipeline starts");
    let p = running.handles[0].clone();
    let before = p.control.current().spec.stages()[0]
        .module
        .version
        .0
        .clone();
    broker
        .delete_topics(&["events-errors"])
        .expect("topic deleted");
    let reloader = Reloader::new(running.metrics.clone(), Duration::from_secs(60));
    let bytes = variant(&plugin_bytes("route"), 1);
    let result = {
        let mut history = p.stages[0].blocking_lock();
        reloader.upload(&p, 0, &mut history, &bytes, None, "test")
    };
    let error = result.expect_err("refused").to_string();
    assert!(
        error.contains("events-errors (pipeline events: routes.errors)"),
        "{error}"
    );
    assert_eq!(
        p.control.current().spec.stages()[0].module.version.0,
        before
    );
    running.stop().expect("clean stop");
}
