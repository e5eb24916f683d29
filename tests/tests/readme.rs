//! The README's quick start, as written: its config passes `switchyard check`, and `switchyard
//! run` with it routes records on a broker (tansu). What cannot run here is said where it is
//! changed: the TLS/SASL settings (the test broker speaks plaintext) and the admin port (a
//! free one, so the test never collides with a running demo).
//!
//! The README's plugin tutorial, as written, in a fresh directory outside the repository: its
//! commands make, test and build the plugin crate, and `switchyard test-plugin` gives the
//! verdicts it shows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use switchyard_tests::kafka::{Broker, event_records};
use switchyard_tests::pipelines::{
    ADMIN_EPHEMERAL, ROUTING_OUTPUTS, create_event_topics, read_routing_outputs, scratch_dir,
    write_file,
};
use switchyard_tests::plugin_path;
use switchyard_tests::router_process::{RouterProcess, run_switchyard, switchyard_binary};

/// The fenced blocks of the README section headed `heading` (at any level, up to the next
/// heading of the same or a higher level), in order: (language, text without the fences).
fn fenced(heading: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(switchyard_tests::repo_root().join("README.md"))
        .expect("README.md");
    let mut level = None;
    let mut open: Option<(String, Vec<&str>)> = None;
    let mut found = Vec::new();
    for line in readme.lines() {
        if let Some((lang, body)) = &mut open {
            if line == "```" {
                if level.is_some() {
                    found.push((std::mem::take(lang), body.join("\n")));
                }
                open = None;
            } else {
                body.push(line);
            }
            continue;
        }
        if let Some(lang) = line.strip_prefix("```") {
            open = Some((lang.to_owned(), Vec::new()));
            continue;
        }
        let hashes = line.len() - line.trim_start_matches('#').len();
        let Some(title) = line[hashes..].strip_prefix(' ').filter(|_| hashes > 0) else {
            continue;
        };
        match level {
            Some(level) if hashes <= level => break,
            None if title.starts_with(heading) => level = Some(hashes),
            _ => {}
        }
    }
    assert!(level.is_some(), "no section {heading:?} in README.md");
    found
}

/// The fenced blocks of `lang` in the README section headed `heading`.
fn blocks(heading: &str, lang: &str) -> Vec<String> {
    fenced(heading)
        .into_iter()
        .filter(|(l, _)| l == lang)
        .map(|(_, text)| text)
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
    create_event_topics(&broker, &ROUTING_OUTPUTS);
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
        .produce("events", event_records(0..N, 100))
        .expect("produced");
    let out = read_routing_outputs(&broker, N, Duration::from_secs(1));
    router.stop_cleanly();

    let mut per_topic: HashMap<&str, u64> = HashMap::new();
    let mut enriched = 0;
    for c in &out {
        *per_topic.entry(c.topic.as_str()).or_default() += 1;
        if c.json()["user_name"].is_string() {
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

const TUTORIAL: &str = "A plugin in Rust in five minutes";

/// Runs a `sh` block of the tutorial with bash (`set -eu`) in `cwd`, as a reader would in their
/// shell: `SWITCHYARD_SRC` is this repository, `switchyard` is on the `PATH`, and cargo builds
/// into the crate's own `target/` (no inherited `CARGO_TARGET_DIR`). Returns its stdout and
/// moves `cwd` to the directory the block ended in, since a reader's `cd` carries over.
fn shell(block: &str, cwd: &mut PathBuf, scratch: &Path) -> String {
    let binary = switchyard_binary().expect("switchyard binary");
    let mut path = vec![binary.parent().expect("binary dir").to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let end = scratch.join("cwd");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -eu\n{block}\npwd > '{}'", end.display()))
        .current_dir(&*cwd)
        .env("SWITCHYARD_SRC", switchyard_tests::repo_root())
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the README block failed ({}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    *cwd = PathBuf::from(std::fs::read_to_string(&end).expect("cwd").trim_end());
    stdout
}

/// A row of `test-plugin`'s table from one of its JSON lines, whitespace collapsed: `line
/// verdict route value`, `line dead-letter - kind: reason`, or `line verdict - -`.
fn rows(json: &serde_json::Value) -> Vec<String> {
    let line = &json["line"];
    let verdict = json["verdict"].as_str().unwrap_or("?");
    let mut rows: Vec<String> = json["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let route = o["route"].as_str().unwrap_or("?");
            format!("{line} {verdict} {route} {}", o["value"])
        })
        .collect();
    let dead = &json["dead_letter"];
    if !dead.is_null() {
        let (kind, reason) = (dead["kind"].as_str(), dead["reason"].as_str());
        rows.push(format!(
            "{line} dead-letter - {}: {}",
            kind.unwrap_or("?"),
            reason.unwrap_or("?")
        ));
    } else if rows.is_empty() {
        rows.push(format!("{line} {verdict} - -"));
    }
    rows.iter().map(|r| collapse(r)).collect()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_plugin_tutorial_works_verbatim_outside_the_repository() {
    let scratch = scratch_dir("plugin-tutorial");
    let root = switchyard_tests::repo_root();
    assert!(!scratch.starts_with(&root), "{}", scratch.display());
    // Cargo's output for the reader's crate, kept between runs so that only the crate itself
    // is compiled again: the crate's `target` is a link to it (cargo follows it).
    let exe = std::env::current_exe().expect("test executable");
    let cache = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>")
        .join("readme-plugin-tutorial");
    std::fs::create_dir_all(&cache).expect("cache dir");

    let mut cwd = scratch.clone();
    let mut stdout = String::new();
    let mut expected = None;
    let blocks = fenced(TUTORIAL);
    assert!(
        blocks.iter().filter(|(lang, _)| lang == "sh").count() >= 2,
        "{blocks:?}"
    );
    for (lang, text) in &blocks {
        match lang.as_str() {
            "sh" => stdout.push_str(&shell(text, &mut cwd, &scratch)),
            "text" => expected = Some(text.clone()),
            // A file, named by its first line: `// src/lib.rs`, `# samples.jsonl`.
            _ => {
                let first = text.lines().next().unwrap_or_default();
                let name = first
                    .strip_prefix("// ")
                    .or_else(|| first.strip_prefix("# "))
                    .unwrap_or_else(|| panic!("a {lang} block that names no file:\n{text}"));
                std::fs::write(cwd.join(name), format!("{text}\n")).expect("write file");
            }
        }
        if cwd.join("Cargo.toml").is_file() && !cwd.join("target").exists() {
            std::os::unix::fs::symlink(&cache, cwd.join("target")).expect("target link");
        }
    }
    assert!(
        cwd.starts_with(&scratch) && cwd != scratch,
        "{}",
        cwd.display()
    );
    let manifest = std::fs::read_to_string(cwd.join("Cargo.toml")).expect("the crate's Cargo.toml");
    assert!(
        manifest.contains("switchyard-plugin-sdk") && manifest.contains("cdylib"),
        "{manifest}"
    );

    // `cargo test` ran the crate's unit test, `inspect` accepted the component.
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "target/wasm32-wasip2/release/my_router.wasm: ok"),
        "{stdout}"
    );
    // `test-plugin` (JSON lines: its stdout is not a terminal) decided as the README's table
    // shows.
    let shown: Vec<String> = expected
        .expect("a text block with the output")
        .lines()
        .skip(1)
        .map(collapse)
        .collect();
    let got: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j.get("verdict").is_some())
        .flat_map(|j| rows(&j))
        .collect();
    assert_eq!(got, shown, "{stdout}");
    assert!(
        shown.iter().any(|r| r.contains(" route urgent "))
            && shown.iter().any(|r| r.contains(" dead-letter ")),
        "{shown:?}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
