//! The Switchyard plugin SDK: everything a plugin author writes against, and nothing else.
//!
//! A plugin is one function `fn(&Record) -> Verdict`, or one type implementing [`Plugin`] when
//! it reads config or keeps state, plus one line, [`export!`]. The SDK owns the
//! boundary with the host (the generated component bindings, the single plugin instance, the
//! conversion of batches and verdicts); it does not own what a plugin decides, and it never
//! shows the raw bindings to an author.
//!
//! # Layout
//!
//! - `record`: [`Batch`], [`Record`] and [`Header`], what the host hands in.
//! - `verdict`: [`Verdict`] and [`Output`], what the plugin hands back, one verdict per record.
//! - `config`: [`Config`], the stage's configuration map given to [`Plugin::init`].
//! - [`json`]: a scanner that finds a top-level field of a JSON value without building a tree.
//! - [`host`]: the functions the host gives every plugin: log, lookup, counters.
//! - [`testing`] (native only): the doubles behind [`host`] when a plugin is unit-tested.
//! - `glue` (wasm32 only): the generated bindings and the one plugin instance behind them.
//!
//! The wasm glue sits behind `cfg(target_arch = "wasm32")`, so a plugin crate builds and is
//! unit-tested natively with plain `cargo test`, and is built for the host with
//! `cargo build --target wasm32-wasip2`.
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

#![deny(missing_docs)]

mod config;
pub mod host;
pub mod json;
mod record;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod verdict;

pub use config::Config;
pub use json::{Field, FieldKind, ScanError};
pub use record::{Batch, Header, JsonError, Record, ValueError};
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

/// Exports the plugin as the component's `transform` interface.
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

            struct SwitchyardExport;

            impl $crate::__glue::Guest for SwitchyardExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__glue::init(&INSTANCE, config)
                }

                fn process(batch: $crate::Batch) -> ::std::vec::Vec<$crate::Verdict> {
                    $crate::__glue::process(&INSTANCE, batch)
                }
            }

    $crate::__bindings::export!(SwitchyardExport with_types_in $crate::__bindings);
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

/// The generated component bindings. Authors never name anything in here.
///
/// The WIT types are mapped onto the SDK's own types (`with`), so the generated glue lifts
/// a batch straight into [`Batch`] and lowers [`Verdict`]s straight from the plugin's result:
/// no conversion pass and no byte copies on either side.
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
            "switchyard:plugin/types@0.1.0/input-record": crate::Record,
            "switchyard:plugin/types@0.1.0/record-batch": crate::Batch,
            "switchyard:plugin/types@0.1.0/output-record": crate::Output,
            "switchyard:plugin/types@0.1.0/verdict": crate::Verdict,
        },
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[path = "glue.rs"]
pub mod __glue;
