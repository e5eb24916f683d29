//! What a plugin instance's store holds, and the `host` interface the plugin imports:
//! logging, table lookups and counters, plus a WASI context with no capabilities.
//!
//! Guests built by the Python and JavaScript toolchains import WASI whether they use it or
//! not, so WASI is linked, but the context grants nothing: no preopened directories, no
//! sockets, no name lookups, no environment variables or arguments, an empty stdin. Clocks
//! and random numbers work, but a wait on the monotonic clock (`std::thread::sleep`, Python's
//! `time.sleep`) ends when the call's time budget does ([`bound_clock_waits`]). Whatever the
//! guest writes to stdout or stderr becomes host log lines tagged with the pipeline and stage.

use super::bindings::{self, Level};
use super::engine::EPOCH_TICK;
use super::limits::MemoryLimiter;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;
use wasmtime_wasi::p2::bindings::sync::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// Enrichment tables as plugins see them through `lookup`: `crate::tables::TableSet` (files
/// and topics, kept up to date), or [`MemoryTables`] (fixed contents, for tests).
pub trait Tables: Send + Sync + 'static {
    /// The value stored under `key` in `table`, if any.
    fn lookup(&self, table: &str, key: &[u8]) -> Option<Vec<u8>>;
}

/// A fixed set of in-memory tables.
#[derive(Debug, Default, Clone)]
pub struct MemoryTables {
    tables: HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryTables {
    /// No tables: every lookup answers `none`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `table`, creating the table if needed.
    pub fn insert(&mut self, table: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.tables
            .entry(table.to_owned())
            .or_default()
            .insert(key.into(), value.into());
    }
}

impl Tables for MemoryTables {
    fn lookup(&self, table: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(table)?.get(key).cloned()
    }
}

/// Plugin-defined counters (`counter-add`), per pipeline, stage and name. Instances add to a
/// private [`PendingCounters`] during a call and fold it in here after the call, so the hot
/// path takes this lock once per batch at most.
///
/// A stage may create at most [`MAX_COUNTER_NAMES`] distinct names over the process's life
/// (all its instances together, across calls and versions): a plugin that names counters
/// after user ids would otherwise grow the host's memory and the `/metrics` cardinality
/// without bound. Further new names, and names over [`MAX_COUNTER_NAME_BYTES`], are dropped
/// and counted ([`PluginCounters::names_dropped`], the
/// `switchyard_plugin_counter_names_dropped_total` metric); the first drop of each kind is
/// logged once per stage.
#[derive(Debug, Default)]
pub struct PluginCounters {
    state: Mutex<CounterState>,
}

#[derive(Debug, Default)]
struct CounterState {
    totals: HashMap<CounterKey, u64>,
    /// Per pipeline, then per stage.
    stages: HashMap<String, HashMap<String, StageNames>>,
}

/// One stage's use of counter names.
#[derive(Debug, Default)]
struct StageNames {
    /// Distinct names created.
    distinct: usize,
    /// Names dropped: new ones past the limit, and over-long ones.
    dropped: u64,
    /// Whether a drop past the limit was logged.
    logged_full: bool,
    /// Whether an over-long name was logged.
    logged_long: bool,
}

/// Identifies one plugin-defined counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// The name the plugin gave.
    pub name: String,
}

impl PluginCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, CounterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current totals, sorted by key.
    pub fn snapshot(&self) -> Vec<(CounterKey, u64)> {
        let state = self.lock();
        let mut all: Vec<_> = state.totals.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// The total of one counter (0 if never added to).
    pub fn get(&self, pipeline: &str, stage: &str, name: &str) -> u64 {
        let key = CounterKey {
            pipeline: pipeline.into(),
            stage: stage.into(),
            name: name.into(),
        };
        self.lock().totals.get(&key).copied().unwrap_or(0)
    }

    /// Counter names dropped so far, per (pipeline, stage), sorted; only stages that have
    /// used counters appear.
    pub fn names_dropped(&self) -> Vec<(String, String, u64)> {
        let state = self.lock();
        let mut all: Vec<_> = state
            .stages
            .iter()
            .flat_map(|(pipeline, stages)| {
                stages
                    .iter()
                    .map(move |(stage, names)| (pipeline.clone(), stage.clone(), names.dropped))
            })
            .collect();
        all.sort();
        all
    }

    pub(crate) fn fold(&self, tags: &Tags, pending: &mut PendingCounters) {
        if pending.is_empty() {
            return;
        }
        let mut state = self.lock();
        let CounterState { totals, stages } = &mut *state;
        let pipeline = match stages.get_mut(&tags.pipeline) {
            Some(stages) => stages,
            None => stages.entry(tags.pipeline.clone()).or_default(),
        };
        let names = match pipeline.get_mut(&tags.stage) {
            Some(names) => names,
            None => pipeline.entry(tags.stage.clone()).or_default(),
        };
        for (name, delta) in pending.added.drain() {
            let key = CounterKey {
                pipeline: tags.pipeline.clone(),
                stage: tags.stage.clone(),
                name,
            };
            if let Some(total) = totals.get_mut(&key) {
                *total = total.saturating_add(delta);
            } else if names.distinct < MAX_COUNTER_NAMES {
                names.distinct += 1;
                totals.insert(key, delta);
            } else {
                names.dropped += 1;
                names.log_full(tags, &key.name);
            }
        }
        if let Some(example) = pending.overflow_example.take() {
            names.dropped = names.dropped.saturating_add(pending.overflow);
            pending.overflow = 0;
            names.log_full(tags, &example);
        }
        if let Some((example, len)) = pending.too_long_example.take() {
            names.dropped = names.dropped.saturating_add(pending.too_long);
            pending.too_long = 0;
            if !names.logged_long {
                names.logged_long = true;
                tracing::warn!(
                    pipeline = %tags.pipeline,
                    stage = %tags.stage,
                    counter = %example,
                    bytes = len,
                    limit = MAX_COUNTER_NAME_BYTES,
                    "Plugin counter dropped: its name is too long; such names are dropped from now on \
                     (counted in switchyard_plugin_counter_names_dropped_total)."
                );
            }
        }
    }
}

impl StageNames {
    /// Logs, the first time only, that the stage's new counter names are being dropped.
    fn log_full(&mut self, tags: &Tags, name: &str) {
        if self.logged_full {
            return;
        }
        self.logged_full = true;
        tracing::warn!(
            pipeline = %tags.pipeline,
            stage = %tags.stage,
            counter = %preview(name),
            limit = MAX_COUNTER_NAMES,
            "Plugin counter dropped: the stage has as many distinct counter names as it may; \
             new names are dropped from now on (counted in switchyard_plugin_counter_names_dropped_total)."
        );
    }
}

/// The counters one instance added during one call, before they are folded into the
/// stage's [`PluginCounters`].
#[derive(Debug, Default)]
pub(crate) struct PendingCounters {
    added: HashMap<String, u64>,
    /// New names refused because this call already has [`MAX_COUNTER_NAMES`] (more than the
    /// stage may ever keep), and the first one's preview.
    overflow: u64,
    overflow_example: Option<String>,
    /// Names refused for their length, and the first one's preview and length.
    too_long: u64,
    too_long_example: Option<(String, usize)>,
}

impl PendingCounters {
    pub(crate) fn add(&mut self, name: String, delta: u64) {
        if name.len() > MAX_COUNTER_NAME_BYTES {
            self.too_long += 1;
            if self.too_long_example.is_none() {
                self.too_long_example = Some((preview(&name), name.len()));
            }
            return;
        }
        if let Some(total) = self.added.get_mut(&name) {
            *total = total.saturating_add(delta);
        } else if self.added.len() < MAX_COUNTER_NAMES {
            self.added.insert(name, delta);
        } else {
            self.overflow += 1;
            if self.overflow_example.is_none() {
                self.overflow_example = Some(preview(&name));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.overflow == 0 && self.too_long == 0
    }
}

/// Services the host offers every plugin instance. Cheap to clone.
#[derive(Clone)]
pub struct HostServices {
    /// What `lookup` reads.
    pub tables: Arc<dyn Tables>,
    /// Where `counter-add` goes.
    pub counters: Arc<PluginCounters>,
    /// What stateful stages store, per stage.
    pub states: Arc<super::state::StateRegistry>,
}

impl Default for HostServices {
    fn default() -> Self {
        HostServices {
            tables: Arc::new(MemoryTables::empty()),
            counters: Arc::new(PluginCounters::default()),
            states: Arc::new(super::state::StateRegistry::default()),
        }
    }
}

/// Which pipeline and stage an instance serves: every log line of the guest carries these.
#[derive(Clone, Debug)]
pub(crate) struct Tags {
    pub(crate) pipeline: String,
    pub(crate) stage: String,
}

/// Longest log message (and line of stdout or stderr) accepted from a guest; longer ones are
/// cut, so a plugin cannot flood the host's log.
const MAX_GUEST_TEXT: usize = 8 * 1024;
/// Longest counter name accepted from a guest; a longer one is dropped (a metric label).
pub const MAX_COUNTER_NAME_BYTES: usize = 8 * 1024;
/// How many distinct counter names one stage may create over the process's life.
pub const MAX_COUNTER_NAMES: usize = 100;
/// How much of a guest-chosen name a host log line shows.
const LOG_PREVIEW_CHARS: usize = 64;
/// How much of a guest's recent stderr is kept to explain a trap (a panic message).
const STDERR_TAIL: usize = 1024;

/// The data of one plugin instance's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) services: HostServices,
    pub(crate) tags: Tags,
    pending_counters: PendingCounters,
    pub(crate) stderr: Arc<Mutex<GuestOutput>>,
    /// When the running call's time budget ends, a little after the epoch deadline (set by
    /// [`HostState::start_call`] before `init` and before each `process`). Every clock wait
    /// the guest asks for ends by then at the latest.
    deadline: Option<Instant>,
    /// During a call into a stateful stage: the task's state and the call's writes.
    pub(crate) state: Option<super::state::StateAccess>,
}

impl HostState {
    pub(crate) fn new(tags: Tags, services: HostServices, memory_cap: usize) -> Self {
        let stdout = GuestStream::new(tags.clone(), "stdout");
        let stderr = GuestStream::new(tags.clone(), "stderr");
        let stderr_state = stderr.state.clone();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { cap: memory_cap },
            services,
            tags,
            pending_counters: PendingCounters::default(),
            stderr: stderr_state,
            deadline: None,
            state: None,
        }
    }

    /// A call with this time budget starts now: clock waits end when it does. Two epoch ticks
    /// past the budget, so that when a wait ends the epoch deadline has passed too and the
    /// guest is interrupted as soon as it runs again.
    pub(crate) fn start_call(&mut self, budget: Duration) {
        self.deadline = Instant::now().checked_add(budget.saturating_add(2 * EPOCH_TICK));
    }

    /// A trap if the call's budget is spent (checked after a wait in the host, where the
    /// epoch deadline cannot fire, since the epoch ticker may lag behind the clock).
    fn check_deadline(&self) -> wasmtime::Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(wasmtime::Trap::Interrupt.into()),
            _ => Ok(()),
        }
    }

    /// `wait`, cut to what is left of the call's budget.
    fn bounded_wait(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }

    fn clocks(&mut self) -> WasiClocksCtxView<'_> {
        WasiClocksCtxView {
            ctx: self.wasi.clocks(),
            table: &mut self.table,
        }
    }

    /// Folds the counters added during the last call into the shared totals.
    pub(crate) fn flush_counters(&mut self) {
        self.services
            .counters
            .fold(&self.tags, &mut self.pending_counters);
    }

    /// Forgets the stderr seen so far; called before each plugin call.
    pub(crate) fn reset_stderr_tail(&self) {
        let mut out = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        out.tail.clear();
    }

    /// The last lines the guest wrote to stderr since the call began (a panic message,
    /// typically), flushed to the log, or `None`.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        let mut out = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        out.flush_partial_line();
        let text = String::from_utf8_lossy(&out.tail).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The WASI monotonic clock and polling as wasmtime-wasi links them (components importing
/// any 0.2.x version resolve to these).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
const POLL: &str = "wasi:io/poll@0.2.12";

/// Replaces the two functions of `wasi:clocks/monotonic-clock` that make a pollable, so that
/// every clock wait ends by the running call's deadline, and the two of `wasi:io/poll` that
/// wait, so that a wait that ends past the deadline ends the call.
///
/// Epoch interruption only stops a guest while it runs wasm code; a guest blocked in
/// `pollable.block` or `poll` on a clock waits in the host, where no epoch check happens,
/// for as long as it asked. In this sandbox a clock is the only thing a pollable can wait
/// for (stdin is empty, stdout and stderr are always ready, sockets and files are denied),
/// so bounding the clock's pollables bounds every blocking host call. A wait that ran into
/// the deadline then traps with an interrupt, as the epoch deadline would (which may not have
/// passed yet: the ticker thread can lag the clock on a busy machine): the record is
/// dead-lettered with kind `timeout`, as a busy loop is.
pub(crate) fn bound_clock_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, HostState>,
         (nanos,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let state = store.data_mut();
            let wait = state.bounded_wait(Duration::from_nanos(nanos));
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            Ok((state.clocks().subscribe_duration(nanos)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, HostState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let state = store.data_mut();
            let now = state.clocks().now()?;
            let wait = state.bounded_wait(Duration::from_nanos(when.saturating_sub(now)));
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            Ok((state.clocks().subscribe_duration(nanos)?,))
        },
    )?;
    let mut poll = linker.instance(POLL)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>,
         (pollable,): (Resource<DynPollable>,)|
         -> wasmtime::Result<()> {
            let state = store.data_mut();
            state.table.block(pollable)?;
            state.check_deadline()
        },
    )?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>,
         (pollables,): (Vec<Resource<DynPollable>>,)|
         -> wasmtime::Result<(Vec<u32>,)> {
            let state = store.data_mut();
            let ready = state.table.poll(pollables)?;
            state.check_deadline()?;
            Ok((ready,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The start of a guest-chosen name, for a log line.
fn preview(name: &str) -> String {
    match name.char_indices().nth(LOG_PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

fn truncate_text(mut s: String) -> String {
    if s.len() > MAX_GUEST_TEXT {
        let mut cut = MAX_GUEST_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl bindings::switchyard::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate_text(message);
        let (pipeline, stage) = (&self.tags.pipeline, &self.tags.stage);
        match level {
            Level::Debug => tracing::debug!(pipeline, stage, "{message}"),
            Level::Info => tracing::info!(pipeline, stage, "{message}"),
            Level::Warn => tracing::warn!(pipeline, stage, "{message}"),
            Level::Error => tracing::error!(pipeline, stage, "{message}"),
        }
    }

    fn lookup(&mut self, table: String, key: Vec<u8>) -> Option<Vec<u8>> {
        self.services.tables.lookup(&table, &key)
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.pending_counters.add(name, delta);
    }
}

impl bindings::switchyard::plugin::types::Host for HostState {}

/// Line-buffered guest output that becomes host log lines.
#[derive(Debug)]
pub(crate) struct GuestOutput {
    tags: Tags,
    stream: &'static str,
    line: Vec<u8>,
    /// The most recent bytes written (stderr only matters), to explain a trap.
    tail: Vec<u8>,
}

impl GuestOutput {
    fn write(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > STDERR_TAIL {
            let excess = self.tail.len() - STDERR_TAIL;
            self.tail.drain(..excess);
        }
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if chunk.ends_with(b"\n") {
                self.line.extend_from_slice(&chunk[..chunk.len() - 1]);
                self.emit_line();
            } else {
                self.line.extend_from_slice(chunk);
                if self.line.len() >= MAX_GUEST_TEXT {
                    self.emit_line();
                }
            }
        }
    }

    fn flush_partial_line(&mut self) {
        if !self.line.is_empty() {
            self.emit_line();
        }
    }

    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(
            pipeline = %self.tags.pipeline,
            stage = %self.tags.stage,
            stream = self.stream,
            "{text}"
        );
        self.line.clear();
    }
}

/// The guest's stdout or stderr.
struct GuestStream {
    state: Arc<Mutex<GuestOutput>>,
}

impl GuestStream {
    fn new(tags: Tags, stream: &'static str) -> Self {
        GuestStream {
            state: Arc::new(Mutex::new(GuestOutput {
                tags,
                stream,
                line: Vec::new(),
                tail: Vec::new(),
            })),
        }
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestWriter {
            state: self.state.clone(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(GuestWriter {
            state: self.state.clone(),
        })
    }
}

struct GuestWriter {
    state: Arc<Mutex<GuestOutput>>,
}

impl GuestWriter {
    fn write_bytes(&self, bytes: &[u8]) {
        let mut out = self.state.lock().unwrap_or_else(|p| p.into_inner());
        out.write(bytes);
    }
}

#[async_trait::async_trait]
impl Pollable for GuestWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
