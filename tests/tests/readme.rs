//! The README's quick start, as written: its config passes `switchyard check`, and `switchyard
//! run` with it routes records on a broker (tansu). What cannot run here is said where it is
//! changed: the TLS/SASL settings (the test broker speaks plaintext) and the admin port (a
//! free one, so the test never collides with a running demo).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_tests::kafka::{Broker, TestRecord};
use switchyard_tests::pipelines::{ADMIN_EPHEMERAL, scratch_dir, write_file};
use switchyard_tests::router_process::{RouterProcess, run_switchyard};
use switchyard_tests::{event, plugin_path};

/// The fenced blocks of `lang` in the README section headed `heading`.
fn blocks(heading: &str, lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(switchyard_tests::repo_root().join("README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading:?} in README.md"));
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .map(str::to_owned)
        .collect()
}

/// A directory laid out like the repository root as the quick start assumes: the config
/// beside `plugins/target/wasm32-wasip2/release/` and `users.jsonl`.
fn workspace(name: &str, config: &str) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(name);
    let built = plugin_path("validate")
        .parent()
        .expect("plugin dir")
        .to_path_buf();
    let release = dir.join("plugins/target/wasm32-wasip2");
    std::fs::create_dir_all(&release).expect("dirs");
    std::os::unix::fs::symlink(&built, release.join("release")).expect("symlink");
    let users: String = (0..50)
        .map(|u| {
            format!("{{\"user_id\":\"user-{u:05}\",\"name\":\"User {u}\",\"segment\":\"smb\"}}\n")
        })
        .collect();
    write_file(&dir, "users.jsonl", &users);
    let path = write_file(&dir, "switchyard.toml", config);
    (dir, path)
}

fn check(config: &Path) -> (Option<i32>, String) {
    let (code, stdout, stderr) =
        run_switchyard(&["check", "--config", config.to_str().expect("path")])
            .expect("switchyard runs");
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn the_quick_start_config_checks_and_runs() {
    let tomls = blocks("Quick start against a Kafka cluster", "toml");
    let config = tomls.first().expect("a toml block in the quick start");
    let commands = blocks("Quick start against a Kafka cluster", "sh").join("\n");
    // The commands this test runs are the ones the README shows.
    assert!(
        commands.contains("switchyard check --config switchyard.toml"),
        "{commands}"
    );
    assert!(
        commands.contains("switchyard run --config switchyard.toml"),
        "{commands}"
    );

    // `check`, on the config exactly as written (its secret comes from the environment).
    let (code, output) = {
        let (_dir, path) = workspace("readme-check", config);
        let out = std::process::Command::new(
            switchyard_tests::router_process::switchyard_binary().expect("binary"),
        )
        .args(["check", "--config", path.to_str().expect("path")])
        .env("SASL_PASSWORD", "not-a-real-secret")
        .output()
        .expect("runs");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("pipeline events: ok: validate") && output.contains("-> route"),
        "{output}"
    );
    // Without the secret, `check` names the missing variable.
    let (_dir, path) = workspace("readme-no-secret", config);
    let (code, output) = check(&path);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("SASL_PASSWORD"), "{output}");

    // `run`, on tansu: the brokers line points at it, the security settings go (plaintext
    // broker), the admin API takes a free port.
    let broker = Broker::tansu().expect("tansu");
    let outputs = [
        "events-standard",
        "events-urgent",
        "events-errors",
        "events-dlq",
    ];
    let mut topics = vec![("events", 2)];
    topics.extend(outputs.iter().map(|t| (*t, 2)));
    broker.create_topics(&topics).expect("topics");
    let runnable: String = config
        .lines()
        .filter(|l| !l.contains("security.protocol") && !l.contains("sasl."))
        .map(|l| {
            if l.starts_with("brokers = ") {
                format!("brokers = \"{}\"", broker.bootstrap())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (_dir, path) = workspace("readme-run", &format!("{runnable}\n{ADMIN_EPHEMERAL}"));
    let mut router =
        RouterProcess::start(&["run", "--config", path.to_str().expect("path")]).expect("run");
    const N: u64 = 300;
    broker
        .produce(
            "events",
            (0..N).map(|i| TestRecord::new(&format!("user-{:05}", i % 100), event(i).as_bytes())),
        )
        .expect("produced");
    let out = broker
        .consume_all(
            &outputs,
            N as usize,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .expect("consumed");
    let _ = router.sigterm();
    assert_eq!(
        router.wait(Duration::from_secs(30)).ok().flatten(),
        Some(0),
        "{}",
        router.log()
    );

    let mut per_topic: HashMap<&str, u64> = HashMap::new();
    let mut enriched = 0;
    for c in &out {
        *per_topic.entry(c.topic.as_str()).or_default() += 1;
        let v: serde_json::Value =
            serde_json::from_slice(c.value.as_deref().unwrap_or_default()).expect("JSON");
        if v["user_name"].is_string() {
            enriched += 1;
        }
    }
    assert_eq!(out.len() as u64, N, "{per_topic:?}\n{}", router.log());
    assert_eq!(per_topic.get("events-dlq"), None, "{per_topic:?}");
    // event(i): every 10th is high priority, every 7th (i % 7 == 3) an error.
    let urgent = (0..N).filter(|i| i % 10 == 0).count() as u64;
    let errors = (0..N).filter(|i| i % 10 != 0 && i % 7 == 3).count() as u64;
    assert_eq!(
        per_topic.get("events-urgent"),
        Some(&urgent),
        "{per_topic:?}"
    );
    assert_eq!(
        per_topic.get("events-errors"),
        Some(&errors),
        "{per_topic:?}"
    );
    // Users 0..49 are in the table, the others are not (left join: nulls).
    let known = (0..N).filter(|i| i % 10_000 < 50).count();
    assert_eq!(enriched, known, "enriched from users.jsonl");
}
