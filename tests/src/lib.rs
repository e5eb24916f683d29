//! Shared set-up for Switchyard's tests and benchmarks: building the example plugins,
//! one plugin engine per process, and realistic events.
//!
//! Plugins are built from source by [`plugin_path`] the first time a test asks for one (a
//! `cargo build` of the `plugins/` workspace for wasm32-wasip2), never committed as binaries.

pub mod e2e;
pub mod kafka;
pub mod pipelines;
pub mod router_process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use switchyard::plugin::{
    ChainRunner, Delivery, EngineConfig, InputRecord, PluginEngine, PluginModule, StageLimits,
    StageSpec,
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the plugins workspace builds: `$SWITCHYARD_PLUGINS_TARGET_DIR`, else `plugins/target`.
pub fn plugins_target_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("plugins").join("target"))
}

/// Builds every example plugin (release, wasm32-wasip2) once per process; panics with cargo's
/// output if the build fails, since no plugin test can run without them.
fn build_plugins() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = plugins_target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(repo_root().join("plugins").join("Cargo.toml"))
            // The plugins are a separate workspace with their own target directory, so this
            // nested build never waits on the lock of the build that runs the tests.
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cannot run cargo to build the plugins");
        assert!(
            output.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target_dir.join("wasm32-wasip2").join("release")
    })
}

/// Path of a built example plugin: `noop`, `route`, `validate`, `enrich`, `transform`,
/// `misbehave`.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = build_plugins().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "plugin {name} was not built: {}",
        path.display()
    );
    path
}

/// The bytes of a built example plugin.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One engine per test process, as in the router.
pub fn engine() -> Arc<PluginEngine> {
    static ENGINE: OnceLock<Arc<PluginEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(&EngineConfig::default()).expect("engine"))
        .clone()
}

/// An example plugin, compiled once per process.
pub fn module(name: &str) -> Arc<PluginModule> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static MODULES: OnceLock<Mutex<HashMap<String, Arc<PluginModule>>>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    if let Some(m) = modules.lock().expect("module cache").get(name) {
        return m.clone();
    }
    let m = engine()
        .load(&plugin_bytes(name))
        .unwrap_or_else(|e| panic!("cannot load plugin {name}: {e}"));
    modules
        .lock()
        .expect("module cache")
        .insert(name.into(), m.clone());
    m
}

/// A stage running an example plugin with this config and the default limits.
pub fn stage(name: &str, plugin: &str, config: &[(&str, &str)]) -> StageSpec {
    StageSpec {
        name: name.into(),
        module: module(plugin),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limits: StageLimits::default(),
    }
}

/// Runs `values` (record values, offsets 0..n) through `chain` as one batch from partition 0
/// of topic `events`.
pub fn run(chain: &mut ChainRunner, values: &[&str]) -> Vec<Delivery> {
    let records = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(i as i64, v.as_bytes()))
        .collect();
    chain.process("events", 0, records).expect("chain runs")
}

/// A record with this value and no key or headers.
pub fn record(offset: i64, value: impl Into<Vec<u8>>) -> InputRecord {
    InputRecord {
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: None,
        value: Some(value.into()),
        headers: Vec::new(),
    }
}

/// A realistic event of about 220 bytes: the shape the use cases route, validate, enrich
/// and transform. Deterministic in `i`: every 10th is high priority, every 7th an error.
pub fn event(i: u64) -> String {
    const TYPES: [&str; 4] = ["page_view", "click", "purchase", "signup"];
    let event_type = if i % 7 == 3 {
        "error"
    } else {
        TYPES[(i % 4) as usize]
    };
    let priority = if i.is_multiple_of(10) {
        "high"
    } else {
        "normal"
    };
    format!(
        concat!(
            r#"{{"event_id":"evt-{:012}","user_id":"user-{:05}","event_type":"{}","#,
            r#""priority":"{}","timestamp":{},"session":"s-{:08x}","#,
            r#""page":"/products/{}","email":"user{}@example.com","amount":{}.{:02}}}"#
        ),
        i,
        i % 10_000,
        event_type,
        priority,
        1_700_000_000_000u64 + i,
        i.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        i % 500,
        i % 10_000,
        i % 1000,
        i % 100
    )
}

/// A plugin written in another language (`python`, `javascript`): built by
/// `examples/plugins/<language>/build.sh` into `<plugins target>/<language>/NAME.wasm` when
/// missing or older than its sources (the script installs its pinned toolchain the first
/// time). `javascript-interpreted` is the JavaScript plugin built without ahead-of-time
/// compilation (`SWITCHYARD_JS_AOT=0`), for the benchmarks. Panics with the script's output if
/// the build fails.
pub fn polyglot_plugin(language: &str, name: &str) -> PathBuf {
    use std::sync::Mutex;
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let (source_language, aot) = match language {
        "javascript-interpreted" => ("javascript", "0"),
        other => (other, "1"),
    };
    let sources = repo_root()
        .join("examples")
        .join("plugins")
        .join(source_language);
    let out_dir = plugins_target_dir().join(language);
    let output = out_dir.join(format!("{name}.wasm"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = std::fs::read_dir(sources.join(name))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| modified(&e.path()))
        .chain(modified(&sources.join("build.sh")))
        .max();
    let fresh =
        matches!((modified(&output), newest_source), (Some(built), Some(src)) if built >= src);
    if !fresh {
        let result = Command::new("bash")
            .arg(sources.join("build.sh"))
            .arg(&out_dir)
            .env("SWITCHYARD_JS_AOT", aot)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the {language} build script: {e}"));
        assert!(
            result.status.success(),
            "building the {language} plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    assert!(
        output.is_file(),
        "{language} plugin {name} was not built: {}",
        output.display()
    );
    output
}

/// A `kB` field of this process's `/proc/self/status` (`"VmRSS:"`, `"VmHWM:"`), in KiB; NaN
/// when it cannot be read.
pub fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// A copy of a component with one more custom section (ignored when it runs): the same code
/// under a version id of its own.
pub fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}
