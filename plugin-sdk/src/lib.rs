//! The Switchyard plugin SDK: everything a plugin author writes against, and nothing else.
//!
//! A plugin is one function `fn(&Record) -> Verdict`, or one type implementing [`Plugin`] when
//! it reads config or keeps memory between records, plus one line, [`export!`]: a component of
//! the contract `switchyard:plugin@0.1.0` (world `plugin`). A plugin that aggregates or joins
//! implements [`StatefulPlugin`] and is exported with [`export_stateful!`]: a component of
//! `switchyard:plugin@0.2.0` (world `stateful-plugin`), with keyed [`state`] that survives
//! restarts, [`timers`], the watermark and late records. The SDK owns the boundary with the
//! host (the generated component bindings of both contracts, the single plugin instance, the
//! conversion of batches, timers and verdicts); it does not own what a plugin decides, and it
//! never shows the raw bindings to an author.
//!
//! # Layout
//!
//! - `record`: [`Batch`], [`Record`] and [`Header`], what the host hands in.
//! - `verdict`: [`Verdict`] and [`Output`], what the plugin hands back, one verdict per record.
//! - `config`: [`Config`], the stage's configuration map given to [`Plugin::init`].
//! - [`json`]: a scanner that finds a top-level field of a JSON value without building a tree.
//! - [`host`]: the functions the host gives every plugin: log, lookup, counters.
//! - [`state`] and [`timers`]: the task's keyed state and timers, for stateful plugins.
//! - [`testing`] (native only): the doubles behind [`host`], [`state`] and [`timers`] when a
//!   plugin is unit-tested, and [`testing::Task`], which runs a stateful plugin as the host
//!   would.
//! - `glue` (wasm32 only): the generated bindings and the one plugin instance behind them.
//!
//! The wasm glue sits behind `cfg(target_arch = "wasm32")`, so a plugin crate builds and is
//! unit-tested natively with plain `cargo test`, and is built for the host with
//! `cargo build --target wasm32-wasip2`. Each plugin is exactly one contract: the one of the
//! export macro it invokes (see `glue.rs` for how, with both contracts' bindings in the SDK).
//!
//! # Examples
//!
//! A stateless plugin is one function:
//!
//! ```
//! use switchyard_plugin_sdk::{Record, Verdict};
//!
//! /// Routes records whose `level` field is `"error"` to the `errors` route.
//! pub fn errors(record: &Record) -> Verdict {
//!     match record.field("level") {
//!         Ok(Some(level)) if level.as_str().as_deref() == Some("error") => Verdict::route("errors"),
//!         Ok(_) => Verdict::pass(),
//!         Err(e) => Verdict::dead_letter(e.to_string()),
//!     }
//! }
//!
//! switchyard_plugin_sdk::export!(fn errors);
//!
//! let record = Record::new().with_value(r#"{"level":"error"}"#);
//! assert_eq!(errors(&record), Verdict::route("errors"));
//! ```
//!
//! The same plugin with its route name in the stage's config is a type implementing
//! [`Plugin`]:
//!
//! ```
//! use switchyard_plugin_sdk::{Config, Plugin, Record, Verdict};
//!
//! /// Routes records whose `level` field is `"error"` to the `errors` route.
//! pub struct Errors {
//!     route: String,
//! }
//!
//! impl Plugin for Errors {
//!     fn init(config: &Config) -> Result<Self, String> {
//!         Ok(Self { route: config.get_or("route", "errors").to_owned() })
//!     }
//!
//!     fn process(&mut self, record: &Record) -> Verdict {
//!         match record.field("level") {
//!             Ok(Some(level)) if level.as_str().as_deref() == Some("error") => {
//!                 Verdict::route(&self.route)
//!             }
//!             Ok(_) => Verdict::pass(),
//!             Err(e) => Verdict::dead_letter(e.to_string()),
//!         }
//!     }
//! }
//!
//! switchyard_plugin_sdk::export!(Errors);
//!
//! let mut plugin = Errors::init(&Config::default()).unwrap();
//! let record = Record::new().with_value(r#"{"level":"error"}"#);
//! assert_eq!(plugin.process(&record), Verdict::route("errors"));
//! ```
//!
//! A stateful plugin keeps what it must remember in [`state`] and asks for a call back with
//! [`timers`]. This one passes the first record of each key and drops repeats for an hour of
//! event time; natively, [`testing::Task`] plays the host:
//!
//! ```
//! use switchyard_plugin_sdk::timers::{self, Domain};
//! use switchyard_plugin_sdk::{Batch, Config, Output, Record, StatefulPlugin, Timer, Verdict};
//! use switchyard_plugin_sdk::{state, testing::Task};
//!
//! /// Passes the first record of each key, drops repeats for an hour of event time.
//! pub struct Dedup;
//!
//! impl StatefulPlugin for Dedup {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Dedup)
//!     }
//!
//!     fn process(&mut self, record: &Record, _batch: &Batch) -> Verdict {
//!         let (Some(key), Some(ts)) = (record.key(), record.timestamp_ms()) else {
//!             return Verdict::dead_letter("no key or no timestamp");
//!         };
//!         let Ok(key) = std::str::from_utf8(key) else {
//!             return Verdict::dead_letter("key is not UTF-8");
//!         };
//!         if state::get(key.as_bytes()).is_some() {
//!             return Verdict::drop();
//!         }
//!         state::set(key.as_bytes(), b"");
//!         // The tag says what to forget when the timer fires.
//!         timers::set(Domain::EventTime, ts + 3_600_000, key);
//!         Verdict::pass()
//!     }
//!
//!     fn on_timer(&mut self, timer: &Timer, _watermark_ms: Option<i64>) -> Vec<Output> {
//!         state::delete(timer.tag.as_bytes());
//!         Vec::new()
//!     }
//! }
//!
//! switchyard_plugin_sdk::export_stateful!(Dedup);
//!
//! let mut task = Task::new(Dedup);
//! let at = |ts| Record::new().with_key("k").with_timestamp(ts);
//! assert_eq!(task.process("clicks", vec![at(0), at(10)]), [Verdict::pass(), Verdict::drop()]);
//! task.advance_watermark(3_600_000); // the timer fires: `k` is forgotten
//! assert_eq!(task.process("clicks", vec![at(3_600_001)]), [Verdict::pass()]);
//! ```

#![deny(missing_docs)]

mod config;
pub mod host;
pub mod json;
mod record;
pub mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod timers;
mod verdict;

pub use config::Config;
pub use json::{Field, FieldKind, ScanError};
pub use record::{Batch, Header, JsonError, Record, ValueError};
pub use timers::Timer;
pub use verdict::{Output, Verdict};

/// A Switchyard plugin: one instance per plugin instance in the host, fed batches of records.
///
/// A plugin without config or state needs no type: `export!(fn my_plugin)` (see [`export!`]).
///
/// The host makes an instance with [`Plugin::init`], then calls [`Plugin::process_batch`]
/// once per batch. A batch holds records of one source partition in offset order.
pub trait Plugin: Sized + 'static {
    /// Called once per instance with the stage's config map. An error fails the load, and the
    /// host reports the message as the reason.
    fn init(config: &Config) -> Result<Self, String>;

    /// One record -> one verdict.
    fn process(&mut self, record: &Record) -> Verdict;

    /// A whole batch -> exactly one verdict per record, in the same order.
    ///
    /// The default maps [`Plugin::process`] over the records. Override it to use the batch's
    /// topic and partition, or to amortise work across records.
    fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        batch
            .records()
            .iter()
            .map(|record| self.process(record))
            .collect()
    }
}

/// A stateful Switchyard plugin (contract 0.2.0): one instance per plugin instance in the
/// host, fed batches of records and the timers that came due.
///
/// Its memory is [`state`] and [`timers`], not fields of `Self`: those belong to one task
/// (partition N of every source topic), and survive instances, restarts and crashes, while an
/// instance serves every task of its worker and is replaced after any trap. Keep in `Self` only
/// what [`StatefulPlugin::init`] derives from the config.
///
/// The host makes an instance with [`StatefulPlugin::init`], then calls
/// [`StatefulPlugin::process_batch`] once per batch (records of one source partition, in offset
/// order, with the task's watermark) and [`StatefulPlugin::on_timers`] with the timers of a
/// task that came due, never both at once. The writes of a call that fails are discarded; the
/// host then re-runs a batch one record at a time, timers one at a time.
pub trait StatefulPlugin: Sized + 'static {
    /// Called once per instance with the stage's config map. An error fails the load, and the
    /// host reports the message as the reason. State is not available here.
    fn init(config: &Config) -> Result<Self, String>;

    /// One record of `batch` -> one verdict. `batch` gives the source topic and partition and
    /// the watermark ([`Batch::watermark_ms`]).
    fn process(&mut self, record: &Record, batch: &Batch) -> Verdict;

    /// A whole batch -> exactly one verdict per record, in the same order.
    ///
    /// The default maps [`StatefulPlugin::process`] over the records.
    fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        batch
            .records()
            .iter()
            .map(|record| self.process(record, batch))
            .collect()
    }

    /// A timer that came due -> the records to write. An output without a route goes to the
    /// pipeline's default route. `watermark_ms` is the task's watermark now. The timer is
    /// removed before the call; set it again to be called again.
    fn on_timer(&mut self, timer: &Timer, watermark_ms: Option<i64>) -> Vec<Output>;

    /// Timers that came due, in order of instant, then tag -> exactly one list of outputs per
    /// timer, in the same order.
    ///
    /// The default maps [`StatefulPlugin::on_timer`] over the timers.
    fn on_timers(&mut self, watermark_ms: Option<i64>, timers: &[Timer]) -> Vec<Vec<Output>> {
        timers
            .iter()
            .map(|timer| self.on_timer(timer, watermark_ms))
            .collect()
    }
}

/// Exports the plugin as the component's `transform` interface (contract 0.1.0).
///
/// Write it once, at the top level of the plugin crate, in one of two forms:
///
/// - `export!(fn my_plugin);`: a stateless plugin, one function
///   `fn(&Record) -> Verdict` called once per record. `init` accepts any config and ignores
///   it.
/// - `export!(MyPlugin);`: a type implementing [`Plugin`], made by [`Plugin::init`] from the
///   stage's config; for a plugin that reads config or keeps state between records.
///
/// On wasm32 it keeps the one plugin instance in a static: `init` stores it, `process` uses
/// it, and a `process` before a successful `init` dead-letters every record with
/// `plugin not initialised`. Natively it only checks the function's signature or that the type
/// implements [`Plugin`], so the crate builds and unit-tests with plain `cargo test`.
///
/// ```
/// use switchyard_plugin_sdk::{Record, Verdict};
///
/// /// Drops records with a null value, passes the rest.
/// pub fn drop_tombstones(record: &Record) -> Verdict {
///     match record.value() {
///         None => Verdict::drop(),
///         Some(_) => Verdict::pass(),
///     }
/// }
///
/// switchyard_plugin_sdk::export!(fn drop_tombstones);
///
/// assert_eq!(drop_tombstones(&Record::new()), Verdict::drop());
/// ```
#[macro_export]
macro_rules! export {
    (fn $function:path) => {
        $crate::__export_function!($function);
    };
    ($plugin:ty) => {
        $crate::__export_plugin!($plugin);
    };
}

/// Exports a [`StatefulPlugin`] type as the component's `stateful-transform` interface
/// (contract 0.2.0, world `stateful-plugin`).
///
/// Write it once, at the top level of the plugin crate: `export_stateful!(MyPlugin);`. A crate
/// invokes one export macro, this one or [`export!`], and is a component of that contract only.
///
/// On wasm32 it keeps the one plugin instance in a static, as [`export!`] does: a `process`
/// before a successful `init` dead-letters every record with `plugin not initialised`, and
/// an `on-timers` before it traps (the host dead-letters the timers). Natively it only checks
/// that the type implements [`StatefulPlugin`]; [`testing::Task`] runs it.
#[macro_export]
macro_rules! export_stateful {
    ($plugin:ty) => {
        $crate::__export_stateful!($plugin);
    };
}

/// [`export!`] of a function: a unit type whose [`Plugin::process`] calls it.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_function {
    ($function:path) => {
        const _: () = {
            struct SwitchyardFunction;

            impl $crate::Plugin for SwitchyardFunction {
                fn init(
                    _config: &$crate::Config,
                ) -> ::core::result::Result<Self, ::std::string::String> {
                    ::core::result::Result::Ok(SwitchyardFunction)
                }

                fn process(&mut self, record: &$crate::Record) -> $crate::Verdict {
                    $function(record)
                }
            }

            $crate::__export_plugin!(SwitchyardFunction);
        };
    };
}

/// [`export!`] of a [`Plugin`] type: the component's exports, backed by one instance.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty) => {
        const _: () = {
            static INSTANCE: $crate::__glue::Slot<$plugin> = $crate::__glue::Slot::new();

            // The imports of contract 0.1.0 only: see `glue.rs`, "One world per plugin".
            #[unsafe(no_mangle)]
            extern "Rust" fn __switchyard_plugin_sdk_imports() -> &'static $crate::__glue::Imports {
                &$crate::__glue::plugin::IMPORTS
            }

            struct SwitchyardExport;

            impl $crate::__glue::plugin::Guest for SwitchyardExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__glue::plugin::init(&INSTANCE, config)
                }

                fn process(
                    batch: $crate::__glue::plugin::WitBatch,
                ) -> ::std::vec::Vec<$crate::Verdict> {
                    $crate::__glue::plugin::process(&INSTANCE, batch)
                }
            }

    $crate::__bindings::export!(SwitchyardExport with_types_in $crate::__bindings);
        };
    };
}

/// [`export_stateful!`]: the component's exports, backed by one instance.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_stateful {
    ($plugin:ty) => {
        const _: () = {
            static INSTANCE: $crate::__glue::Slot<$plugin> = $crate::__glue::Slot::new();

            // The imports of contract 0.2.0 only: see `glue.rs`, "One world per plugin".
            #[unsafe(no_mangle)]
            extern "Rust" fn __switchyard_plugin_sdk_imports() -> &'static $crate::__glue::Imports {
                &$crate::__glue::stateful::IMPORTS
            }

            struct SwitchyardExport;

            impl $crate::__glue::stateful::Guest for SwitchyardExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__glue::stateful::init(&INSTANCE, config)
                }

                fn process(batch: $crate::Batch) -> ::std::vec::Vec<$crate::Verdict> {
                    $crate::__glue::stateful::process(&INSTANCE, batch)
                }

                fn on_timers(
                    watermark_ms: ::core::option::Option<i64>,
                    fired: ::std::vec::Vec<$crate::__glue::stateful::WitTimer>,
                ) -> ::std::vec::Vec<::std::vec::Vec<$crate::Output>> {
                    $crate::__glue::stateful::on_timers(&INSTANCE, watermark_ms, fired)
                }
            }

            $crate::__stateful_bindings::export!(
                SwitchyardExport with_types_in $crate::__stateful_bindings
            );
        };
    };
}

/// [`export!`] of a function, natively: checks its signature.
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_function {
    ($function:path) => {
        const _: fn(&$crate::Record) -> $crate::Verdict = $function;
    };
}

/// [`export!`] of a [`Plugin`] type, natively: checks that it implements [`Plugin`].
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty) => {
        const _: () = {
            fn assert_plugin<P: $crate::Plugin>() {}
            let _ = assert_plugin::<$plugin>;
        };
    };
}

/// [`export_stateful!`], natively: checks that the type implements [`StatefulPlugin`].
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_stateful {
    ($plugin:ty) => {
        const _: () = {
            fn assert_stateful<P: $crate::StatefulPlugin>() {}
            let _ = assert_stateful::<$plugin>;
        };
    };
}

/// The generated component bindings of contract 0.1.0 (world `plugin`). Authors never name
/// anything in here.
///
/// The WIT types that match the SDK's own are mapped onto them (`with`), so the generated glue
/// lowers [`Verdict`]s straight from the plugin's result. A batch is lifted into the generated
/// types and moved into [`Batch`] (`glue.rs`): the SDK's [`Record`] has the late flag of 0.2.0.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod __bindings {
    // `wit/` is a byte-for-byte copy of the repository's `wit/` (the contract's one source),
    // so the packaged crate carries it; `tests/tests/sdk_package.rs` fails when they differ.
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "switchyard_plugin_sdk::__bindings",
        with: {
            "switchyard:plugin/types@0.1.0/header": crate::Header,
            "switchyard:plugin/types@0.1.0/output-record": crate::Output,
            "switchyard:plugin/types@0.1.0/verdict": crate::Verdict,
        },
    });
}

/// The generated component bindings of contract 0.2.0 (world `stateful-plugin`). Authors
/// never name anything in here.
///
/// The WIT types are mapped onto the SDK's own types (`with`), so the generated glue lifts a
/// batch straight into [`Batch`], a scan straight into [`state::Entry`], and lowers
/// [`Verdict`]s and [`Output`]s straight from the plugin's result: no conversion pass and no
/// byte copies on either side. Only the small timer records are converted (`glue.rs`).
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod __stateful_bindings {
    wit_bindgen::generate!({
        path: "wit/stateful",
        world: "stateful-plugin",
        pub_export_macro: true,
        default_bindings_module: "switchyard_plugin_sdk::__stateful_bindings",
        with: {
            "switchyard:plugin/types@0.2.0/header": crate::Header,
            "switchyard:plugin/types@0.2.0/input-record": crate::Record,
            "switchyard:plugin/types@0.2.0/record-batch": crate::Batch,
            "switchyard:plugin/types@0.2.0/output-record": crate::Output,
            "switchyard:plugin/types@0.2.0/verdict": crate::Verdict,
            "switchyard:plugin/types@0.2.0/entry": crate::state::Entry,
        },
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[path = "glue.rs"]
pub mod __glue;
