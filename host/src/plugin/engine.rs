//! The one wasmtime [`Engine`] of the process, and loading plugins into it.
//!
//! Loading is the whole sequence a plugin goes through before it may touch a record:
//! check the bytes -> compile -> link against the host's imports (this type-checks the
//! component against the `plugin` world) -> pre-instantiate. Every failure is a [`LoadError`]
//! naming what is wrong. Loading never runs on the hot path: callers do it at start-up or on
//! an admin request, then hand the resulting [`PluginModule`] to the workers.

use super::bindings::PluginPre;
use super::bindings::stateful::{StatefulPlugin, StatefulPluginPre};
use super::error::LoadError;
use super::host_api::HostState;
use super::module::PluginModule;
use std::sync::{Arc, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the engine's epoch advances: the resolution of every time budget.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine-wide settings. The defaults suit a router with a few pipelines of a few stages on
/// a handful of worker threads.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How many plugin instances may be alive at once, across all pipelines, workers and
    /// stages, counting the fresh instances made after a trap. It sizes the pooling
    /// allocator, which reserves (but does not commit) address space for each.
    pub max_instances: u32,
    /// The largest memory cap any stage may ask for, in bytes.
    pub max_memory_bytes: usize,
    /// Where compiled plugins are cached (`None`: compile every time). Entries are keyed by
    /// a hash of the component's bytes and of the engine's compilation settings and
    /// version, written and read only by this engine: an upload is always compiled here,
    /// never taken as precompiled code. The directory is made with mode 0700; one that
    /// another user owns, or that its group or others may write, is refused (the engine does
    /// not start): its entries are machine code the engine would run. Default:
    /// [`default_cache_dir`].
    pub cache_dir: Option<std::path::PathBuf>,
}

/// The compiled-plugin cache directory: `$SWITCHYARD_CACHE_DIR` (empty: no cache), else
/// `$XDG_CACHE_HOME/switchyard/compiled`, else `~/.cache/switchyard/compiled`.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    match std::env::var_os("SWITCHYARD_CACHE_DIR") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|base| base.join("switchyard").join("compiled")),
    }
}

/// The fewest instances a pool sized by [`pool_size`] holds.
const MIN_POOLED_INSTANCES: u32 = 100;
/// The most: each instance reserves address space for two memories of up to
/// [`EngineConfig::max_memory_bytes`] (4 GiB by default), and 4,096 of them take a quarter of
/// the 128 TiB a Linux process can map.
const MAX_POOLED_INSTANCES: u32 = 4096;
/// Instances kept for what runs beside the workers: dry runs, the `init` check of an upload.
const RESERVED_INSTANCES: usize = 64;

/// How many instances the pool needs for pipelines of `(workers, stages)`: each worker keeps
/// one instance per stage, and twice that during a reload (a worker makes the new version's
/// instances before it drops the old ones); then half as much again (a fresh instance after
/// a trap is made while the pool may still be recycling the old slot) and a reserve for dry
/// runs and uploads. Bounded by [`MIN_POOLED_INSTANCES`] and [`MAX_POOLED_INSTANCES`].
pub fn pool_size(pipelines: impl IntoIterator<Item = (usize, usize)>) -> u32 {
    let live = pipelines
        .into_iter()
        .fold(0usize, |sum, (workers, stages)| {
            sum.saturating_add(workers.saturating_mul(stages))
        });
    let during_reload = live.saturating_mul(2);
    let needed = during_reload
        .saturating_add(during_reload / 2)
        .saturating_add(RESERVED_INSTANCES);
    u32::try_from(needed)
        .unwrap_or(u32::MAX)
        .clamp(MIN_POOLED_INSTANCES, MAX_POOLED_INSTANCES)
}

impl EngineConfig {
    /// The defaults, with the instance pool sized by [`pool_size`] for pipelines of
    /// `(workers, stages)`.
    pub fn for_pipelines(pipelines: impl IntoIterator<Item = (usize, usize)>) -> Self {
        EngineConfig {
            max_instances: pool_size(pipelines),
            ..EngineConfig::default()
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            cache_dir: default_cache_dir(),
        }
    }
}

/// The wasmtime engine, the linker with the host's imports, and the epoch ticker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    max_memory_bytes: usize,
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker thread (which stops when the engine is
    /// dropped).
    pub fn new(settings: &EngineConfig) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Time budgets: compiled code checks a per-store deadline against a global epoch
        // counter that a ticker thread bumps every EPOCH_TICK. Much cheaper than fuel, and a
        // guest stuck in `loop {}` is interrupted all the same.
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        // For profiling plugins with `perf`: SWITCHYARD_PERF_MAP=1 writes
        // /tmp/perf-<pid>.map, which names the compiled guest functions in `perf report`.
        if std::env::var_os("SWITCHYARD_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Pooling: every instance slot (memories, tables, instance state) is reserved once
        // up front and recycled, so making a fresh instance after a trap costs microseconds
        // and memory stays flat however often plugins crash.
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(settings.max_instances)
            // A component made by wasm-component-ld has a few core instances (the guest, the
            // WASI adapter, shims); Python and JavaScript components have more.
            .total_core_instances(settings.max_instances.saturating_mul(8))
            .total_memories(settings.max_instances.saturating_mul(2))
            .total_tables(settings.max_instances.saturating_mul(4))
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .max_memory_size(settings.max_memory_bytes)
            // Linear memory is reset on reuse; keep the first pages resident so a recycled
            // instance does not page-fault its stack and data back in.
            .linear_memory_keep_resident(64 * 1024)
            .table_keep_resident(64 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &settings.cache_dir {
            // A cache that cannot be set up costs compile time, never correctness. But its
            // entries are machine code the engine runs without checking it: a directory
            // someone else could have written to is refused outright, never used.
            if let Err(e) = crate::private::create_dir(dir) {
                tracing::debug!(dir = %dir.display(), error = %e, "Cannot create the compiled-plugin cache.");
            }
            crate::private::check_dir(dir).map_err(|why| {
                anyhow::anyhow!(
                    "refusing the compiled-plugin cache {}: {why} (another user could have put machine code there); use a directory of your own with SWITCHYARD_CACHE_DIR, or set it empty for no cache",
                    dir.display()
                )
            })?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            match wasmtime::Cache::new(cache) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(), error = %format!("{e:#}"),
                    "Compiled-plugin cache disabled."
                ),
            }
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Clock waits end with the call's time budget (epoch interruption cannot stop a
        // guest blocked in the host).
        super::host_api::bound_clock_waits(&mut linker)?;
        super::bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )?;
        StatefulPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |state| state,
        )?;

        let this = Arc::new(PluginEngine {
            engine,
            linker,
            max_memory_bytes: settings.max_memory_bytes,
        });
        // Without the ticker no call would ever time out: refuse to run that way.
        spawn_epoch_ticker(Arc::downgrade(&this))
            .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
        Ok(this)
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The largest memory cap a stage may have on this engine.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// Compiles and type-checks a component. Slow (milliseconds to seconds): never call this
    /// on the hot path.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<PluginModule>, LoadError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        // A component exporting the 0.2.0 `stateful-transform` is a stateful plugin; any
        // other is checked against the 0.1.0 `plugin` world.
        if component
            .get_export_index(None, super::instance::STATEFUL_TRANSFORM)
            .is_some()
        {
            let pre = StatefulPluginPre::new(instance_pre)
                .map_err(|e| LoadError::World(format!("{e:#}")))?;
            return Ok(PluginModule::stateful(bytes, pre));
        }
        let pre = PluginPre::new(instance_pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
        Ok(PluginModule::wasm(bytes, pre))
    }

    /// Reads and loads a component file; the error names the file.
    pub fn load_file(&self, path: &std::path::Path) -> anyhow::Result<Arc<PluginModule>> {
        use anyhow::Context;
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read plugin file {}", path.display()))?;
        self.load(&bytes)
            .with_context(|| format!("cannot load plugin {}", path.display()))
    }
}

/// Distinguishes "not wasm" and "core module" from a compile error, so an upload of the
/// wrong kind of file is told exactly that.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version (2 bytes) and layer (2 bytes). Layer 0 is a core module, 1 a
    // component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

fn spawn_epoch_ticker(engine: Weak<PluginEngine>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(drop)
}

/// Compiling a component (at start-up, on an upload) runs on rayon's global thread pool; on a
/// small machine it competes with the workers for the CPU. This gives the pool's threads a
/// lower priority (nice 10), so an upload slows itself down rather than the records flowing.
/// Call once, before the first compile; later calls do nothing.
pub fn lower_compile_priority() {
    let built = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("compile-{i}"))
        .start_handler(|_| {
            // SAFETY: setpriority with this thread's id changes only this thread's nice value
            // (Linux threads have their own); no memory is touched.
            let tid = unsafe { libc::gettid() };
            let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) };
            if result != 0 {
                tracing::debug!("Cannot lower the compile threads' priority.");
            }
        })
        .build_global();
    if built.is_err() {
        tracing::debug!("The compile thread pool was already started.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_on(cache: &std::path::Path) -> anyhow::Result<Arc<PluginEngine>> {
        PluginEngine::new(&EngineConfig {
            max_instances: 4,
            max_memory_bytes: 1 << 20,
            cache_dir: Some(cache.to_path_buf()),
        })
    }

    /// A cache directory others may write, or another user owns, stops the engine with the
    /// directory and the reason; a private one is used.
    #[test]
    fn a_cache_directory_someone_else_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("switchyard-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let shared = base.join("shared");
        std::fs::create_dir_all(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = format!("{:#}", engine_on(&shared).err().expect("refused"));
        assert!(
            e.contains(&shared.display().to_string())
                && e.contains("may write")
                && e.contains("0777"),
            "{e}"
        );
        // Not silently repaired: a planted entry could already be there.
        let mode = std::fs::metadata(&shared)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);

        let theirs = base.join("theirs");
        std::fs::create_dir_all(&theirs).expect("dir");
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        match std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)) {
            Ok(()) => {
                let e = format!("{:#}", engine_on(&theirs).err().expect("refused"));
                assert!(
                    e.contains(&theirs.display().to_string()) && e.contains("owned by uid 65534"),
                    "{e}"
                );
            }
            // Only root can give a directory away.
            Err(e) => eprintln!("skipping the other-owner case: chown: {e}"),
        }

        let own = base.join("own/compiled");
        assert!(engine_on(&own).is_ok());
        let mode = std::fs::metadata(&own).expect("made").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_pool_is_sized_from_workers_and_stages() {
        // 2 pipelines: 4 workers x 3 stages and 8 x 2 = 28 live, 56 during a reload, 84
        // with half again, 148 with the reserve.
        assert_eq!(pool_size([(4, 3), (8, 2)]), 148);
        // 64 workers x 10 stages: 640 live -> 1,280 -> 1,920 -> 1,984.
        assert_eq!(pool_size([(64, 10)]), 1984);
        assert_eq!(pool_size([(1, 1)]), MIN_POOLED_INSTANCES);
        assert_eq!(pool_size([(256, 100), (256, 100)]), MAX_POOLED_INSTANCES);
        assert_eq!(pool_size([(usize::MAX, usize::MAX)]), MAX_POOLED_INSTANCES);
        assert_eq!(EngineConfig::for_pipelines([(64, 10)]).max_instances, 1984);
    }

    #[test]
    fn header_check_names_the_kind_of_file() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
