//! One live plugin instance: a store, the instance in it, and the calls into it.
//!
//! An instance is owned by one worker for one stage and reused call after call (it is
//! "warm": its memory and any state the plugin keeps survive between batches). After any
//! failed call the owner drops it; a trapped component refuses further calls anyway, and a
//! fresh instance from the pre-instantiated module costs microseconds.

use super::bindings::stateful::{FiredTimer, OutputRecord, StatefulPlugin};
use super::bindings::{Plugin, RecordBatch, Verdict};
use super::engine::EPOCH_TICK;
use super::error::{ErrorKind, LoadError, RecordError};
use super::host_api::{HostServices, HostState, Tags};
use super::lift::{self, OutputLimits, Verdicts};
use super::limits::{MemoryCapExceeded, StageLimits};
use super::module::{PluginModule, StageCode};
use super::schema::JsonSchemaStage;
use super::state::{StageState, StateAccess, StatefulBatch};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Func, Instance, TypedFunc};
use wasmtime::{Engine, Store, Trap};

/// The interface a plugin exports.
const TRANSFORM: &str = "switchyard:plugin/transform@0.1.0";
/// The interface a stateful plugin exports.
pub(crate) const STATEFUL_TRANSFORM: &str = "switchyard:plugin/stateful-transform@0.2.0";

/// Everything needed to make an instance of one stage.
#[derive(Clone)]
pub(crate) struct InstanceSetup {
    pub(crate) tags: Tags,
    pub(crate) services: HostServices,
    pub(crate) limits: StageLimits,
    /// The stage's config map, sorted by key, as `init` receives it.
    pub(crate) config: Vec<(String, String)>,
}

pub(crate) enum StageInstance {
    /// A component instance in its own store.
    Wasm {
        store: Box<Store<HostState>>,
        /// `process`, type-checked against [`Verdicts`] when the instance was made: its
        /// result is lifted with the output limits checked (`lift`).
        process: Func,
    },
    /// A stateful component instance in its own store.
    Stateful {
        store: Box<Store<HostState>>,
        /// `process`, type-checked against [`StatefulBatch`] and [`Verdicts`].
        process: Func,
        plugin: StatefulPlugin,
    },
    /// A built-in stage: nothing to instantiate, shared by every worker.
    JsonSchema(Arc<JsonSchemaStage>),
}

impl StageInstance {
    /// Instantiates `module` and calls its `init`.
    pub(crate) fn new(
        engine: &Engine,
        module: &PluginModule,
        setup: &InstanceSetup,
    ) -> Result<Self, LoadError> {
        let pre = match &module.code {
            StageCode::Wasm(pre) => pre.instance_pre(),
            StageCode::Stateful(pre) => pre.instance_pre(),
            StageCode::JsonSchema(stage) => return Ok(StageInstance::JsonSchema(stage.clone())),
        };
        let cap = usize::try_from(setup.limits.memory_bytes()).unwrap_or(usize::MAX);
        let state = HostState::new(setup.tags.clone(), setup.services.clone(), cap);
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        let init_budget = Duration::from_millis(setup.limits.init_timeout_ms);
        store.set_epoch_deadline(deadline_ticks(init_budget));
        store.data_mut().start_call(init_budget);

        let instance = pre.instantiate(&mut store).map_err(|e| {
            match classify(&store, &e) {
                // A trap or cap hit while instantiating is the component's own fault.
                failure if failure.kind != ErrorKind::Trap => LoadError::InitCrashed(failure),
                _ => LoadError::Instantiate(format!("{e:#}")),
            }
        })?;
        let world = |e: wasmtime::Error| LoadError::World(format!("{e:#}"));
        if module.is_stateful() {
            let plugin = StatefulPlugin::new(&mut store, &instance).map_err(world)?;
            let process = stateful_process_export(&mut store, &instance).map_err(world)?;
            store.data().reset_stderr_tail();
            let outcome = plugin
                .switchyard_plugin_stateful_transform()
                .call_init(&mut store, &setup.config);
            store.data_mut().flush_counters();
            return match outcome {
                Ok(Ok(())) => Ok(StageInstance::Stateful {
                    store: Box::new(store),
                    process,
                    plugin,
                }),
                Ok(Err(message)) => Err(LoadError::Init(message)),
                Err(e) => Err(LoadError::InitCrashed(classify(&store, &e))),
            };
        }
        let plugin = Plugin::new(&mut store, &instance).map_err(world)?;
        let process = process_export(&mut store, &instance).map_err(world)?;
        store.data().reset_stderr_tail();
        let outcome = plugin
            .switchyard_plugin_transform()
            .call_init(&mut store, &setup.config);
        store.data_mut().flush_counters();
        match outcome {
            Ok(Ok(())) => Ok(StageInstance::Wasm {
                store: Box::new(store),
                process,
            }),
            Ok(Err(message)) => Err(LoadError::Init(message)),
            Err(e) => Err(LoadError::InitCrashed(classify(&store, &e))),
        }
    }

    /// Calls `process` with a time budget. The verdicts' count, outputs and sizes are
    /// checked against `limits` while they are lifted, before the host copies them; their
    /// routes are not checked here.
    pub(crate) fn process(
        &mut self,
        batch: &RecordBatch,
        budget: Duration,
        limits: OutputLimits,
    ) -> Result<Vec<Verdict>, RecordError> {
        let (store, process) = match self {
            StageInstance::Wasm { store, process, .. } => (store, *process),
            StageInstance::JsonSchema(stage) => return Ok(stage.process(batch)),
            StageInstance::Stateful { .. } => {
                return Err(RecordError::new(
                    ErrorKind::Trap,
                    "a stateful stage was called without its state",
                ));
            }
        };
        store.set_hostcall_fuel(lift::hostcall_fuel(&limits));
        store.set_epoch_deadline(deadline_ticks(budget));
        store.data_mut().start_call(budget);
        store.data().reset_stderr_tail();
        // SAFETY: `process` was type-checked against exactly these types when the instance
        // was made (`process_export`), as the generated bindings do before their own
        // unchecked calls.
        let process = unsafe { TypedFunc::<(&RecordBatch,), (Verdicts,)>::new_unchecked(process) };
        let result = lift::with_limits(limits, || process.call(&mut **store, (batch,)));
        store.data_mut().flush_counters();
        result
            .map(|(Verdicts(verdicts),)| verdicts)
            .map_err(|e| classify(store, &e))
    }
}

impl StageInstance {
    /// Calls a stateful stage's `process` with a time budget and its task's state. The state
    /// comes back whatever happens; its writes are kept apart in [`StateAccess::writes`]
    /// for the caller to apply (on success) or drop.
    pub(crate) fn process_stateful(
        &mut self,
        batch: &StatefulBatch,
        access: StateAccess,
        budget: Duration,
        limits: OutputLimits,
    ) -> (Result<Vec<Verdict>, RecordError>, StateAccess) {
        let (store, process) = match self {
            StageInstance::Stateful { store, process, .. } => (store, *process),
            _ => {
                let e = RecordError::new(ErrorKind::Trap, "not a stateful stage");
                return (Err(e), access);
            }
        };
        store.set_hostcall_fuel(lift::hostcall_fuel(&limits));
        store.set_epoch_deadline(deadline_ticks(budget));
        store.data_mut().start_call(budget);
        store.data().reset_stderr_tail();
        store.data_mut().state = Some(access);
        // SAFETY: `process` was type-checked against exactly these types when the instance
        // was made (`stateful_process_export`).
        let process =
            unsafe { TypedFunc::<(&StatefulBatch,), (Verdicts,)>::new_unchecked(process) };
        let result = lift::with_limits(limits, || process.call(&mut **store, (batch,)));
        store.data_mut().flush_counters();
        let result = result
            .map(|(Verdicts(verdicts),)| verdicts)
            .map_err(|e| classify(store, &e));
        let access = take_access(store);
        (result, access)
    }

    /// Calls a stateful stage's `on-timers`: one list of outputs per timer.
    pub(crate) fn on_timers(
        &mut self,
        watermark: Option<i64>,
        fired: &[FiredTimer],
        access: StateAccess,
        budget: Duration,
        limits: OutputLimits,
    ) -> (Result<Vec<Vec<OutputRecord>>, RecordError>, StateAccess) {
        let (store, plugin) = match self {
            StageInstance::Stateful { store, plugin, .. } => (store, plugin),
            _ => {
                let e = RecordError::new(ErrorKind::Trap, "not a stateful stage");
                return (Err(e), access);
            }
        };
        store.set_hostcall_fuel(lift::hostcall_fuel(&limits));
        store.set_epoch_deadline(deadline_ticks(budget));
        store.data_mut().start_call(budget);
        store.data().reset_stderr_tail();
        store.data_mut().state = Some(access);
        let result = plugin
            .switchyard_plugin_stateful_transform()
            .call_on_timers(&mut **store, watermark, fired);
        store.data_mut().flush_counters();
        let result = result.map_err(|e| classify(store, &e)).and_then(|lists| {
            check_timer_outputs(&lists, fired.len(), &limits)?;
            Ok(lists)
        });
        let access = take_access(store);
        (result, access)
    }
}

/// The state lent to a call, back from its store.
fn take_access(store: &mut Store<HostState>) -> StateAccess {
    store.data_mut().state.take().unwrap_or_else(|| {
        // Never: the state is put in before every call and only taken here.
        StateAccess::new(Default::default(), StageState::new(0, 0))
    })
}

/// One list per timer, each within the stage's output limits.
fn check_timer_outputs(
    lists: &[Vec<OutputRecord>],
    timers: usize,
    limits: &OutputLimits,
) -> Result<(), RecordError> {
    if lists.len() != timers {
        return Err(RecordError::bad_output(format!(
            "on-timers returned {} lists of outputs for {timers} timers",
            lists.len()
        )));
    }
    for list in lists {
        if list.len() > limits.max_outputs as usize {
            return Err(RecordError::bad_output(format!(
                "a timer emitted {} records; the stage allows {} (limits.max_outputs)",
                list.len(),
                limits.max_outputs
            )));
        }
        let bytes: u64 = list
            .iter()
            .map(|o| {
                let headers: usize = o
                    .headers
                    .iter()
                    .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                    .sum();
                (o.key.as_ref().map_or(0, Vec::len)
                    + o.value.as_ref().map_or(0, Vec::len)
                    + headers) as u64
            })
            .sum();
        if bytes > limits.max_output_bytes {
            return Err(RecordError::bad_output(format!(
                "a timer emitted {bytes} bytes; the stage allows {} (limits.max_output_bytes)",
                limits.max_output_bytes
            )));
        }
    }
    Ok(())
}

/// The `process` function of a stateful instance, type-checked.
fn stateful_process_export(
    store: &mut Store<HostState>,
    instance: &Instance,
) -> wasmtime::Result<Func> {
    let missing = |what: &str| wasmtime::format_err!("the component does not export {what}");
    let transform = instance
        .get_export_index(&mut *store, None, STATEFUL_TRANSFORM)
        .ok_or_else(|| missing(STATEFUL_TRANSFORM))?;
    let index = instance
        .get_export_index(&mut *store, Some(&transform), "process")
        .ok_or_else(|| missing("process"))?;
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| missing("process as a function"))?;
    func.typed::<(&StatefulBatch,), (Verdicts,)>(&*store)?;
    Ok(func)
}

/// The `process` function of an instance, type-checked against the checked lift.
fn process_export(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Func> {
    let missing = |what: &str| wasmtime::format_err!("the component does not export {what}");
    let transform = instance
        .get_export_index(&mut *store, None, TRANSFORM)
        .ok_or_else(|| missing(TRANSFORM))?;
    let index = instance
        .get_export_index(&mut *store, Some(&transform), "process")
        .ok_or_else(|| missing("process"))?;
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| missing("process as a function"))?;
    func.typed::<(&RecordBatch,), (Verdicts,)>(&*store)?;
    Ok(func)
}

/// The epoch deadline for a budget: rounded up, plus one tick because the current tick may
/// be nearly over when the call starts.
fn deadline_ticks(budget: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = budget.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// Turns a failed call into the kind and message a dead-letter record carries.
fn classify(store: &Store<HostState>, error: &wasmtime::Error) -> RecordError {
    // Output refused while it was lifted (`lift`).
    if let Some(refused) = error.chain().find_map(|e| e.downcast_ref::<RecordError>()) {
        return refused.clone();
    }
    // wasmtime's own bound on what one lift may copy out of the guest (its error type is
    // private; the message is its interface).
    if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return RecordError::bad_output(
            "the plugin handed the host more data in one call than the stage's limits allow \
             (limits.max_outputs, limits.max_output_bytes)",
        );
    }
    if let Some(cap) = error
        .chain()
        .find_map(|e| e.downcast_ref::<MemoryCapExceeded>())
    {
        return RecordError::new(ErrorKind::Memory, cap.to_string());
    }
    let stderr = store.data().stderr_tail();
    let with_stderr = |message: String| match &stderr {
        Some(text) => format!("{message}; the plugin wrote to stderr: {text}"),
        None => message,
    };
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RecordError::new(
            ErrorKind::Timeout,
            "the plugin ran past its time budget (limits.time_per_record_ms) and was interrupted",
        ),
        Some(trap) => RecordError::new(ErrorKind::Trap, with_stderr(format!("wasm trap: {trap}"))),
        // Not a wasm trap: a host-side failure during the call, such as an unrepresentable
        // value while lifting the results (an invalid UTF-8 string, a bad discriminant).
        None => RecordError::new(ErrorKind::Trap, with_stderr(format!("{error:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        assert_eq!(deadline_ticks(Duration::from_millis(50)), 51);
        assert_eq!(deadline_ticks(Duration::from_micros(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
        assert_eq!(deadline_ticks(Duration::MAX), u64::MAX);
    }
}
