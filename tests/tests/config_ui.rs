//! Golden tests for the configuration file: every `tests/ui/bad_*.toml` must fail with exactly
//! the error in the `.err` file beside it, and `tests/ui/good.toml` must load.
//!
//! After an intended change of wording, regenerate with
//! `SWITCHYARD_BLESS=1 cargo test -p switchyard-tests --test config_ui` and review the diff.

use std::path::{Path, PathBuf};
use switchyard::config::{Config, DeadLetterFormat, StageCode, StartPosition, Subscription};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

/// A fixed environment, so the tests never depend on the machine's.
fn env(name: &str) -> Option<String> {
    (name == "SASL_PASSWORD").then(|| "s3cret".to_string())
}

/// Loads a test config; in an error, the test directory reads `$UI` so the golden files do
/// not depend on where the repository is checked out.
fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).expect("readable test file");
    Config::parse(&text, &ui_dir(), &env).map_err(|e| {
        e.to_string()
            .replace(&ui_dir().display().to_string(), "$UI")
    })
}

#[test]
fn bad_configs_fail_with_their_golden_error() {
    let bless = std::env::var_os("SWITCHYARD_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(ui_dir())
        .expect("tests/ui")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("bad_"))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    let mut mismatches = Vec::new();
    for case in &cases {
        let error = match load(case) {
            Ok(_) => "<loaded without error>".to_string(),
            Err(e) => e,
        };
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{error}\n")).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("missing {}", golden.display()));
        if expected.trim_end() != error.trim_end() {
            mismatches.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                case.display(),
                expected.trim_end(),
                error
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn the_good_config_loads_with_defaults_filled_in() {
    let config = load(&ui_dir().join("good.toml")).expect("good.toml loads");
    assert_eq!(config.kafka.producer["sasl.password"], "s3cret");
    assert_eq!(config.kafka.producer["compression.type"], "lz4");
    let p = &config.pipelines[0];
    assert_eq!(p.group(), "switchyard-events");
    assert_eq!(p.source, Subscription::Topics(vec!["events".into()]));
    assert_eq!(p.start, StartPosition::Timestamp(1_700_000_000_000));
    assert_eq!(p.dead_letter_format, DeadLetterFormat::Headers);
    assert_eq!((p.batch_size, p.batch_wait_ms), (256, 0));
    assert_eq!((p.workers, p.max_in_flight), (None, 20_000));
    assert_eq!((p.drain_timeout_ms, p.commit_interval_ms), (10_000, 200));
    assert!(config.tables.is_empty());
    assert_eq!(p.routes["urgent"], "events-urgent");
    let stage = &p.stages[0];
    assert_eq!(
        stage.code,
        StageCode::Plugin(ui_dir().join("placeholder.plugin"))
    );
    assert_eq!(stage.config["urgent_route"], "urgent");
    assert_eq!(stage.limits.memory_mib, 32);
    assert_eq!(
        stage.limits.time_per_record_ms, 50,
        "unset limits keep their defaults"
    );
}
