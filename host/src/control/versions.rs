//! Each stage's plugin versions: the active one, the ones a rollback returns to, the history
//! of every change, and their persistence in the state directory.
//!
//! ```text
//! <state_dir>/<pipeline>/<stage>/state.json           active version, rollback stack, history
//! <state_dir>/<pipeline>/<stage>/plugins/<sha256>.wasm every version's component bytes
//! ```
//!
//! On start a stage comes back with its last uploaded version (and config) if the plugin
//! file the config names is the one it was uploaded over; an operator who changes that file
//! and restarts gets the file. Only component bytes are stored, never compiled code: a
//! restart compiles them like any upload.
//!
//! A version's config is kept as written ([`VersionRecord::config`]): `${NAME}` from the
//! config file stays unexpanded, an uploaded value (always literal) has its `${` written
//! `$${`. So `state.json` and the admin API never hold a secret that came from the
//! environment; [`StageHistory::init_config`] expands the written form when a version is
//! started (the config file's own values, else the process's environment).

use crate::config::StageConfig;
use crate::kafka::now_ms;
use crate::plugin::{PluginEngine, PluginModule, PluginVersion};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Most history entries kept per stage.
const HISTORY_LIMIT: usize = 200;
/// Most versions a stage can roll back through.
const ROLLBACK_DEPTH: usize = 20;

/// Where versions persist; `None` keeps them in memory only.
#[derive(Clone, Debug, Default)]
pub struct VersionStore {
    dir: Option<PathBuf>,
    /// Reads the directory but never writes it: a process beside a running router (a
    /// dead-letter replay) resolves the same active versions without touching the router's
    /// files.
    read_only: bool,
}

/// One version of a stage: a plugin and the config its `init` got.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionRecord {
    /// sha256 of the component.
    pub version: String,
    /// The config map as written: `${NAME}` unexpanded, `$${` for an uploaded `${`.
    pub config: BTreeMap<String, String>,
    /// When it became active (ms since the Unix epoch).
    pub loaded_at_ms: i64,
    /// Who made it active (a token name, or `config`).
    pub by: String,
    /// How: `config` (the file the config names), `upload`, `rollback`, `restart` (came back
    /// from the state directory).
    pub origin: String,
}

/// One attempted change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// `start`, `upload` or `rollback`.
    pub action: String,
    /// The version concerned (empty when the upload was not even a component).
    pub version: String,
    /// `ok`, or `rejected: <why>`.
    pub result: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    /// sha256 of the plugin file the config named when this was written.
    base_version: String,
    /// sha256 of the config map the config file gave the stage then (a digest: the map
    /// may hold secrets).
    #[serde(default)]
    base_config: String,
    active: Option<VersionRecord>,
    previous: Vec<VersionRecord>,
    history: Vec<HistoryEntry>,
}

/// One stage's versions.
pub struct StageHistory {
    pipeline: String,
    stage: String,
    store: VersionStore,
    base_version: String,
    base_config: String,
    /// The config file's map for this stage, as written.
    file_config: BTreeMap<String, String>,
    /// The same, expanded as the config was loaded (never persisted).
    file_values: BTreeMap<String, String>,
    /// The version running now.
    pub active: VersionRecord,
    /// Versions a rollback returns to, the most recent last.
    pub previous: Vec<VersionRecord>,
    /// Every change, oldest first.
    pub history: Vec<HistoryEntry>,
    modules: HashMap<String, Arc<PluginModule>>,
}

impl VersionStore {
    /// Versions persist under `dir` (created if missing).
    pub fn at(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        Ok(VersionStore {
            dir: Some(dir),
            read_only: false,
        })
    }

    /// Versions are read from `dir` (which need not exist) and nothing is ever written
    /// there: the versions a router with this state directory would start with.
    pub fn read_only(dir: PathBuf) -> Self {
        VersionStore {
            dir: Some(dir),
            read_only: true,
        }
    }

    /// Versions live in memory only.
    pub fn memory() -> Self {
        VersionStore {
            dir: None,
            read_only: false,
        }
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    fn stage_dir(&self, pipeline: &str, stage: &str) -> Option<PathBuf> {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        Some(self.dir.as_ref()?.join(clean(pipeline)).join(clean(stage)))
    }

    fn read(&self, pipeline: &str, stage: &str) -> Option<Persisted> {
        let path = self.stage_dir(pipeline, stage)?.join("state.json");
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Ignoring an unreadable state file.");
                None
            }
        }
    }

    fn write(&self, pipeline: &str, stage: &str, state: &Persisted) -> anyhow::Result<()> {
        let Some(dir) = self.stage_dir(pipeline, stage).filter(|_| !self.read_only) else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(state)?;
        write_atomically(&dir, "state.json", &text)
    }

    fn save_plugin(&self, pipeline: &str, stage: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let Some(dir) = self.stage_dir(pipeline, stage).filter(|_| !self.read_only) else {
            return Ok(());
        };
        let dir = dir.join("plugins");
        let name = format!("{}.wasm", PluginVersion::of(bytes));
        if dir.join(&name).is_file() {
            return Ok(());
        }
        write_atomically(&dir, &name, bytes)
    }

    fn read_plugin(&self, pipeline: &str, stage: &str, version: &str) -> anyhow::Result<Vec<u8>> {
        let dir = self
            .stage_dir(pipeline, stage)
            .context("no state directory: the version is not kept")?;
        let path = dir.join("plugins").join(format!("{version}.wasm"));
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // The file is ours, but check it is what its name says before compiling it.
        anyhow::ensure!(
            PluginVersion::of(&bytes).0 == version,
            "{} does not hold version {version}",
            path.display()
        );
        Ok(bytes)
    }
}

/// Writes `dir/name` through a temporary file renamed into place. The temporary name is unique
/// to this process and call: several routers started with one config share the state
/// directory, and with a shared temporary name one start renamed the other's file away
/// (`cannot rename ... into place: No such file or directory`).
fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, dir.join(name))
                .with_context(|| format!("cannot rename {} into place", tmp.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// sha256 of a config map as written (`${NAME}` unexpanded: no secret goes into it), as
/// JSON with its keys sorted.
fn config_digest(config: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    PluginVersion::of(&serde_json::to_vec(config).unwrap_or_default()).0
}

/// A stage at start-up: its versions, and the module and config to run.
pub type Started = (StageHistory, Arc<PluginModule>, Vec<(String, String)>);

impl StageHistory {
    /// The stage's versions at start-up, and the module and config to run: the last
    /// uploaded version if the config's file is unchanged since, else the config's file
    /// (`configured`: the stage as the config file has it; `file_bytes`: its plugin file).
    pub fn start(
        store: &VersionStore,
        engine: &PluginEngine,
        pipeline: &str,
        configured: &StageConfig,
        file_bytes: &[u8],
        file_module: impl FnOnce() -> anyhow::Result<Arc<PluginModule>>,
    ) -> anyhow::Result<Started> {
        let stage = configured.name.as_str();
        let (file_config, file_values) = (&configured.config, &configured.config_values);
        let base_version = PluginVersion::of(file_bytes).0;
        let base_config = config_digest(file_config);
        let now = now_ms();
        let persisted = store.read(pipeline, stage).unwrap_or_default();
        let mut history = StageHistory {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            store: store.clone(),
            base_version: base_version.clone(),
            base_config: base_config.clone(),
            file_config: file_config.clone(),
            file_values: file_values.clone(),
            active: VersionRecord {
                version: base_version.clone(),
                config: file_config.clone(),
                loaded_at_ms: now,
                by: "config".into(),
                origin: "config".into(),
            },
            previous: Vec::new(),
            history: persisted.history,
            modules: HashMap::new(),
        };
        let mut restored = None;
        // What was uploaded wins only over the file it was uploaded over: the same plugin
        // file with the same config. An edit of either in the file wins over any upload.
        let file_unchanged =
            persisted.base_version == base_version && persisted.base_config == base_config;
        if file_unchanged && let Some(active) = persisted.active {
            if active.origin == "config" {
                // Nothing was uploaded: the file's plugin and config, as set above.
            } else if !history.restorable_config(&active) {
                // Logged: the config file's version and config run.
            } else if active.version == base_version {
                // The config's own plugin with an uploaded config.
                history.active.config = active.config.clone();
            } else {
                match store
                    .read_plugin(pipeline, stage, &active.version)
                    .and_then(|bytes| engine.load(&bytes).map_err(anyhow::Error::from))
                {
                    Ok(module) => restored = Some((module, active.clone())),
                    Err(e) => tracing::warn!(
                        pipeline, stage, version = %active.version, error = %format!("{e:#}"),
                        "Cannot restore the uploaded version; using the config's plugin file."
                    ),
                }
            }
            history.previous = persisted.previous;
        } else if !persisted.base_version.is_empty() && !file_unchanged {
            tracing::info!(
                pipeline,
                stage,
                "The config's plugin file or the stage's config changed since the last start: running the file."
            );
        }
        let module = match restored {
            Some((module, record)) => {
                tracing::info!(
                    pipeline, stage, version = %record.version, by = %record.by,
                    "Restored the version uploaded before the restart (state directory)."
                );
                history.active = VersionRecord {
                    loaded_at_ms: now,
                    origin: "restart".into(),
                    ..record
                };
                module
            }
            None => file_module()?,
        };
        history
            .modules
            .insert(module.version.0.clone(), module.clone());
        store.save_plugin(pipeline, stage, file_bytes)?;
        history.log("config", "start", &history.active.version.clone(), "ok");
        history.persist()?;
        let config = history
            .init_config(&history.active.config)
            .map_err(|e| anyhow::anyhow!("pipeline {pipeline}, stage {stage}: {e}"))?;
        Ok((history, module, config))
    }

    /// Whether a persisted version's config can be expanded now; if not, it is logged and the
    /// config file's version runs instead.
    fn restorable_config(&self, record: &VersionRecord) -> bool {
        match self.init_config(&record.config) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    pipeline = %self.pipeline, stage = %self.stage, version = %record.version,
                    error = %e,
                    "Cannot restore the uploaded version's config; using the config file's version."
                );
                false
            }
        }
    }

    /// A config map as `init` gets it (sorted pairs): each value as written, expanded. A value
    /// the config file has under the same key and in the same words gets the file's value as
    /// it was loaded; any other is expanded with the process's environment (an uploaded value
    /// has no `${NAME}` left to expand). The error names the key.
    pub fn init_config(
        &self,
        config: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, String> {
        config
            .iter()
            .map(|(key, written)| {
                let from_file = self
                    .file_config
                    .get(key)
                    .filter(|w| *w == written)
                    .and_then(|_| self.file_values.get(key));
                let value = match from_file {
                    Some(value) => value.clone(),
                    None => crate::config::expand(written, &format!("config.{key}"), &|name| {
                        std::env::var(name).ok()
                    })
                    .map_err(|e| e.to_string())?,
                };
                Ok((key.clone(), value))
            })
            .collect()
    }

    /// Pipeline name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// Stage name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    fn log(&mut self, by: &str, action: &str, version: &str, result: &str) {
        self.history.push(HistoryEntry {
            at_ms: now_ms(),
            by: by.to_owned(),
            action: action.to_owned(),
            version: version.to_owned(),
            result: result.to_owned(),
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    fn persist(&self) -> anyhow::Result<()> {
        self.store.write(
            &self.pipeline,
            &self.stage,
            &Persisted {
                base_version: self.base_version.clone(),
                base_config: self.base_config.clone(),
                active: Some(self.active.clone()),
                previous: self.previous.clone(),
                history: self.history.clone(),
            },
        )
    }

    /// A new version is running on every worker: make it the active one.
    pub fn activated(
        &mut self,
        module: Arc<PluginModule>,
        bytes: Option<&[u8]>,
        config: BTreeMap<String, String>,
        by: &str,
    ) -> anyhow::Result<()> {
        if let Some(bytes) = bytes {
            self.store.save_plugin(&self.pipeline, &self.stage, bytes)?;
        }
        let version = module.version.0.clone();
        self.modules.insert(version.clone(), module);
        let record = VersionRecord {
            version: version.clone(),
            config,
            loaded_at_ms: now_ms(),
            by: by.to_owned(),
            origin: "upload".into(),
        };
        let old = std::mem::replace(&mut self.active, record);
        self.previous.push(old);
        if self.previous.len() > ROLLBACK_DEPTH {
            self.previous.remove(0);
        }
        self.forget_unused_modules();
        self.log(by, "upload", &version, "ok");
        self.persist()
    }

    /// The version a rollback returns to, and its module.
    pub fn rollback_target(
        &self,
        engine: &PluginEngine,
    ) -> anyhow::Result<(VersionRecord, Arc<PluginModule>)> {
        let target = self
            .previous
            .last()
            .context("no earlier version to roll back to")?
            .clone();
        let module = match self.modules.get(&target.version) {
            Some(m) => m.clone(),
            None => {
                let bytes = self
                    .store
                    .read_plugin(&self.pipeline, &self.stage, &target.version)?;
                engine.load(&bytes)?
            }
        };
        Ok((target, module))
    }

    /// The rollback target is running on every worker.
    pub fn rolled_back(&mut self, module: Arc<PluginModule>, by: &str) -> anyhow::Result<()> {
        let Some(target) = self.previous.pop() else {
            anyhow::bail!("no earlier version to roll back to");
        };
        self.modules.insert(target.version.clone(), module);
        let version = target.version.clone();
        self.active = VersionRecord {
            loaded_at_ms: now_ms(),
            by: by.to_owned(),
            origin: "rollback".into(),
            ..target
        };
        self.forget_unused_modules();
        self.log(by, "rollback", &version, "ok");
        self.persist()
    }

    /// A change was refused; the active version is unchanged.
    pub fn rejected(&mut self, by: &str, action: &str, version: &str, why: &str) {
        self.log(by, action, version, &format!("rejected: {why}"));
        if let Err(e) = self.persist() {
            tracing::warn!(pipeline = %self.pipeline, stage = %self.stage, error = %format!("{e:#}"), "Cannot persist the version history.");
        }
    }

    fn forget_unused_modules(&mut self) {
        let keep: std::collections::HashSet<&str> = std::iter::once(&self.active)
            .chain(&self.previous)
            .map(|r| r.version.as_str())
            .collect();
        self.modules.retain(|v, _| keep.contains(v.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::write_atomically;

    /// Writers of one file at once (routers sharing a state directory) all succeed, the file
    /// holds one whole version, and no temporary file is left.
    #[test]
    fn concurrent_writes_of_one_file_all_succeed() {
        let dir = std::env::temp_dir().join(format!("switchyard-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| write_atomically(&dir, "state.json", &[w; 4096]))
                        .collect::<Result<Vec<()>, _>>()
                })
            })
            .collect();
        for writer in writers {
            let result = writer.join().expect("writer thread");
            assert!(result.is_ok(), "{result:?}");
        }
        let bytes = std::fs::read(dir.join("state.json")).expect("file written");
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|b| *b == bytes[0]), "one whole version");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
