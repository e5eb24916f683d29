//! Rust types generated from `wit/plugin.wit`. Everything else in the host uses these types
//! directly (no mirror types), so records move through the chain without being copied.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    additional_derives: [PartialEq],
});

pub use self::exports::switchyard::plugin::transform::Guest as Transform;
pub use self::switchyard::plugin::host::Level;
pub use self::switchyard::plugin::types::{
    Header, InputRecord, OutputRecord, RecordBatch, Verdict,
};

/// Rust types generated from `wit/stateful/plugin.wit` (`switchyard:plugin@0.2.0`, world
/// `stateful-plugin`). The host uses them at the boundary only: the records of a batch cross
/// it as [`StatefulBatch`](crate::plugin::state::StatefulBatch), which reuses the 0.1.0
/// header type (the two are the same shape), and verdicts come back as the 0.1.0
/// [`Verdict`].
pub mod stateful {
    wasmtime::component::bindgen!({
        path: "../wit/stateful",
        world: "stateful-plugin",
        additional_derives: [PartialEq],
        imports: {
            "switchyard:plugin/state": trappable,
            "switchyard:plugin/timers": trappable,
        },
    });

    pub use self::switchyard::plugin::types::{Entry, FiredTimer, OutputRecord, TimeDomain};
}
