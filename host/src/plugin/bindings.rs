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
