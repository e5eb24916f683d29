//! The wasm side of the boundary: the one plugin instance, the exported calls of both
//! contracts, and the table of imports that routes the SDK's host, state and timer calls.
//!
//! [`export!`](crate::export) and [`export_stateful!`](crate::export_stateful) declare a
//! [`Slot`] in the plugin crate and route the generated exports to [`plugin`] (contract
//! 0.1.0, world `plugin`) or [`stateful`] (0.2.0, world `stateful-plugin`). The slot's states:
//!
//! - empty: before `init`, or after an `init` that failed; `process` dead-letters every record
//!   and `on-timers` traps;
//! - holding an instance: after a successful `init`; the calls hand it each batch or timer.
//!
//! A trap (a plugin panic aborts) ends the component instance, and the host makes a fresh one,
//! so there is no poisoned state to recover from.
//!
//! # One world per plugin
//!
//! Both contracts' bindings are generated in this crate, yet a component must be exactly the
//! world of its one export macro. Two things make it so. wit-bindgen emits a library's type
//! section without exports (the exports' section comes from the export macro, in the plugin
//! crate), and wit-component keeps only the imports the module calls. And the SDK never calls
//! an import directly: `host`, `state` and `timers` go through [`imports`], the table that the
//! export macro names by defining the symbol `__switchyard_plugin_sdk_imports` in the plugin
//! crate. The other contract's table, and with it every import of the other world, is never
//! referenced and is dropped at link time.

use std::cell::UnsafeCell;

use crate::host::Level;
use crate::state::Entry;
use crate::timers::{Domain, Timer};
use crate::{Batch, Verdict};

/// The host's functions as one contract provides them; see the module docs.
pub struct Imports {
    /// `host.log`.
    pub log: fn(Level, &str),
    /// `host.lookup`.
    pub lookup: fn(&str, &[u8]) -> Option<Vec<u8>>,
    /// `host.counter-add`.
    pub counter_add: fn(&str, u64),
    /// `state.get`.
    pub state_get: fn(&[u8]) -> Option<Vec<u8>>,
    /// `state.set`.
    pub state_set: fn(&[u8], &[u8]),
    /// `state.delete`.
    pub state_delete: fn(&[u8]),
    /// `state.scan`.
    pub state_scan: Scan,
    /// `timers.set`.
    pub timer_set: fn(Domain, i64, &str),
    /// `timers.cancel`.
    pub timer_cancel: fn(Domain, i64, &str),
}

/// `state.scan(prefix, after, limit)`.
pub type Scan = fn(&[u8], Option<&[u8]>, u32) -> Vec<Entry>;

unsafe extern "Rust" {
    /// Defined by the export macro in the plugin crate: the table of the contract it exports.
    /// Declared safe: the macro defines it with exactly this signature, and it only returns a
    /// reference to a `static`.
    safe fn __switchyard_plugin_sdk_imports() -> &'static Imports;
}

/// The imports of the contract this plugin is exported with.
pub fn imports() -> &'static Imports {
    __switchyard_plugin_sdk_imports()
}

/// The reason every record gets when `process` comes before a successful `init`.
pub const NOT_INITIALISED: &str = "plugin not initialised";

/// Holds the plugin instance of this component instance.
pub struct Slot<P>(UnsafeCell<Option<P>>);

// SAFETY: a wasm32 component instance runs on one thread, and the component model forbids
// re-entering an instance while one of its exports is running, so the cell is never reached
// from two places at once.
unsafe impl<P> Sync for Slot<P> {}

impl<P> Slot<P> {
    /// An empty slot.
    #[allow(
        clippy::new_without_default,
        reason = "used in a `static`, which needs a const fn"
    )]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// Runs `f` on the slot's content.
    fn with<R>(&self, f: impl FnOnce(&mut Option<P>) -> R) -> R {
        // SAFETY: see the `Sync` impl; the reference does not outlive `f`, and nothing in the
        // SDK calls an export, so `f` cannot reach the slot again.
        f(unsafe { &mut *self.0.get() })
    }

    /// Replaces the instance with the result of `make`, or leaves the slot empty and reports
    /// why.
    fn init(&self, make: impl FnOnce() -> Result<P, String>) -> Result<(), String> {
        self.with(|instance| {
            *instance = None;
            *instance = Some(make()?);
            Ok(())
        })
    }
}

/// One `plugin not initialised` dead letter per record of `batch`.
fn not_initialised(batch: &Batch) -> Vec<Verdict> {
    batch
        .records()
        .iter()
        .map(|_| Verdict::DeadLetter(NOT_INITIALISED.to_owned()))
        .collect()
}

/// Contract 0.1.0, world `plugin`: [`Plugin`](crate::Plugin) types.
pub mod plugin {
    use super::{Imports, Slot, not_initialised};
    use crate::__bindings::switchyard::plugin::host as wit;
    use crate::__bindings::switchyard::plugin::types::{InputRecord, RecordBatch};
    use crate::host::Level;
    use crate::state::Entry;
    use crate::timers::Domain;
    use crate::{Batch, Config, Plugin, Record, Verdict};

    pub use crate::__bindings::exports::switchyard::plugin::transform::Guest;
    pub use crate::__bindings::switchyard::plugin::types::RecordBatch as WitBatch;

    /// The world's imports: `host`; state and timers trap.
    pub static IMPORTS: Imports = Imports {
        log,
        lookup: wit::lookup,
        counter_add: wit::counter_add,
        state_get,
        state_set,
        state_delete,
        state_scan,
        timer_set,
        timer_cancel,
    };

    fn log(level: Level, message: &str) {
        let level = match level {
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }

    /// The trap of a state or timer call from a 0.1.0 plugin.
    fn stateless(what: &str) -> ! {
        panic!("{what} needs a stateful plugin: export it with `export_stateful!`")
    }

    fn state_get(_: &[u8]) -> Option<Vec<u8>> {
        stateless("state::get")
    }

    fn state_set(_: &[u8], _: &[u8]) {
        stateless("state::set")
    }

    fn state_delete(_: &[u8]) {
        stateless("state::delete")
    }

    fn state_scan(_: &[u8], _: Option<&[u8]>, _: u32) -> Vec<Entry> {
        stateless("state::scan")
    }

    fn timer_set(_: Domain, _: i64, _: &str) {
        stateless("timers::set")
    }

    fn timer_cancel(_: Domain, _: i64, _: &str) {
        stateless("timers::cancel")
    }

    /// The `init` export.
    pub fn init<P: Plugin>(slot: &Slot<P>, config: Vec<(String, String)>) -> Result<(), String> {
        slot.init(|| P::init(&Config::from_pairs(config)))
    }

    /// The `process` export: one verdict per record, or `plugin not initialised` for each.
    pub fn process<P: Plugin>(slot: &Slot<P>, batch: RecordBatch) -> Vec<Verdict> {
        let batch = lift(batch);
        slot.with(|instance| match instance {
            Some(plugin) => plugin.process_batch(&batch),
            None => not_initialised(&batch),
        })
    }

    /// A 0.1.0 batch as the SDK's [`Batch`]: no watermark, no record late. The buffers move;
    /// only the record list is rebuilt.
    fn lift(batch: RecordBatch) -> Batch {
        Batch {
            topic: batch.topic,
            partition: batch.partition,
            watermark_ms: None,
            records: batch.records.into_iter().map(record).collect(),
        }
    }

    fn record(record: InputRecord) -> Record {
        Record {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            value: record.value,
            headers: record.headers,
            late: false,
        }
    }
}

/// Contract 0.2.0, world `stateful-plugin`: [`StatefulPlugin`](crate::StatefulPlugin) types.
pub mod stateful {
    use super::{Imports, Slot, Timer, not_initialised};
    use crate::__stateful_bindings::switchyard::plugin::types::{FiredTimer, TimeDomain};
    use crate::__stateful_bindings::switchyard::plugin::{host, state, timers};
    use crate::host::Level;
    use crate::timers::Domain;
    use crate::{Batch, Config, Output, StatefulPlugin, Verdict};

    pub use crate::__stateful_bindings::exports::switchyard::plugin::stateful_transform::Guest;
    pub use crate::__stateful_bindings::switchyard::plugin::types::FiredTimer as WitTimer;

    /// The world's imports: `host`, `state` and `timers`.
    pub static IMPORTS: Imports = Imports {
        log,
        lookup: host::lookup,
        counter_add: host::counter_add,
        state_get: state::get,
        state_set: state::set,
        state_delete: state::delete,
        state_scan: state::scan,
        timer_set,
        timer_cancel,
    };

    fn log(level: Level, message: &str) {
        let level = match level {
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    fn domain(domain: Domain) -> TimeDomain {
        match domain {
            Domain::EventTime => TimeDomain::EventTime,
            Domain::WallClock => TimeDomain::WallClock,
        }
    }

    fn timer_set(d: Domain, at_ms: i64, tag: &str) {
        timers::set(domain(d), at_ms, tag);
    }

    fn timer_cancel(d: Domain, at_ms: i64, tag: &str) {
        timers::cancel(domain(d), at_ms, tag);
    }

    /// The `init` export.
    pub fn init<P: StatefulPlugin>(
        slot: &Slot<P>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        slot.init(|| P::init(&Config::from_pairs(config)))
    }

    /// The `process` export: one verdict per record, or `plugin not initialised` for each.
    pub fn process<P: StatefulPlugin>(slot: &Slot<P>, batch: Batch) -> Vec<Verdict> {
        slot.with(|instance| match instance {
            Some(plugin) => plugin.process_batch(&batch),
            None => not_initialised(&batch),
        })
    }

    /// The `on-timers` export: one list of outputs per timer. Before a successful `init` it
    /// traps, and the host dead-letters the timers: returning nothing would lose them.
    pub fn on_timers<P: StatefulPlugin>(
        slot: &Slot<P>,
        watermark_ms: Option<i64>,
        fired: Vec<FiredTimer>,
    ) -> Vec<Vec<Output>> {
        let fired: Vec<Timer> = fired.into_iter().map(timer).collect();
        slot.with(|instance| match instance {
            Some(plugin) => plugin.on_timers(watermark_ms, &fired),
            None => panic!("{}", super::NOT_INITIALISED),
        })
    }

    fn timer(fired: FiredTimer) -> Timer {
        Timer {
            domain: match fired.domain {
                TimeDomain::EventTime => Domain::EventTime,
                TimeDomain::WallClock => Domain::WallClock,
            },
            at_ms: fired.at_ms,
            tag: fired.tag,
        }
    }
}
