//! What a stage runs, once loaded: a compiled WebAssembly component or a built-in stage,
//! with its version. The engine makes the first kind, the JSON Schema stage the second;
//! neither knows the other, and the chain runs both the same way.

use super::bindings::PluginPre;
use super::bindings::stateful::StatefulPluginPre;
use super::host_api::HostState;
use super::schema::JsonSchemaStage;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// A plugin version: the sha256 of the component's bytes, as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginVersion(pub String);

impl PluginVersion {
    /// The version of these component bytes.
    pub fn of(bytes: &[u8]) -> Self {
        PluginVersion(hex::encode(Sha256::digest(bytes)))
    }

    /// The first 12 hex digits, for logs.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl std::fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compiled, type-checked plugin, ready to instantiate. Shared by every worker.
pub struct PluginModule {
    /// sha256 of the component bytes.
    pub version: PluginVersion,
    /// Size of the component in bytes.
    pub size: usize,
    /// When it was compiled.
    pub loaded_at: SystemTime,
    pub(crate) code: StageCode,
}

/// What runs a stage: a WebAssembly component, or a built-in stage.
pub(crate) enum StageCode {
    /// A component of the `plugin` world (0.1.0), pre-instantiated.
    Wasm(PluginPre<HostState>),
    /// A component of the `stateful-plugin` world (0.2.0), pre-instantiated.
    Stateful(StatefulPluginPre<HostState>),
    /// The built-in `json-schema` validator.
    JsonSchema(Arc<JsonSchemaStage>),
}

impl PluginModule {
    /// A compiled, type-checked component (made by [`super::PluginEngine::load`]).
    pub(crate) fn wasm(bytes: &[u8], pre: PluginPre<HostState>) -> Arc<Self> {
        Arc::new(PluginModule {
            version: PluginVersion::of(bytes),
            size: bytes.len(),
            loaded_at: SystemTime::now(),
            code: StageCode::Wasm(pre),
        })
    }

    /// A compiled, type-checked stateful component.
    pub(crate) fn stateful(bytes: &[u8], pre: StatefulPluginPre<HostState>) -> Arc<Self> {
        Arc::new(PluginModule {
            version: PluginVersion::of(bytes),
            size: bytes.len(),
            loaded_at: SystemTime::now(),
            code: StageCode::Stateful(pre),
        })
    }

    /// Whether the stage keeps state and timers (a `stateful-plugin` component).
    pub fn is_stateful(&self) -> bool {
        matches!(self.code, StageCode::Stateful(_))
    }

    /// The world the component implements, as `inspect` shows it.
    pub fn world(&self) -> &'static str {
        match self.code {
            StageCode::Wasm(_) => "switchyard:plugin/plugin@0.1.0",
            StageCode::Stateful(_) => "switchyard:plugin/stateful-plugin@0.2.0",
            StageCode::JsonSchema(_) => "built-in json-schema",
        }
    }

    /// A `json-schema` stage from a schema file; its version is the sha256 of the file.
    pub fn json_schema_file(path: &Path) -> anyhow::Result<Arc<PluginModule>> {
        let text = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read schema file {}: {e}", path.display()))?;
        let stage = JsonSchemaStage::compile(&text)
            .map_err(|e| anyhow::anyhow!("schema file {}: {e}", path.display()))?;
        Ok(Arc::new(PluginModule {
            version: PluginVersion::of(&text),
            size: text.len(),
            loaded_at: SystemTime::now(),
            code: StageCode::JsonSchema(Arc::new(stage)),
        }))
    }

    /// The built-in stage kind this is (`json-schema`), or `None` for a plugin.
    pub fn builtin(&self) -> Option<&'static str> {
        match self.code {
            StageCode::Wasm(_) | StageCode::Stateful(_) => None,
            StageCode::JsonSchema(_) => Some("json-schema"),
        }
    }
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule")
            .field("version", &self.version)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::PluginVersion;

    #[test]
    fn version_is_sha256_hex() {
        let v = PluginVersion::of(b"");
        assert_eq!(
            v.0,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(v.short(), "e3b0c44298fc");
    }
}
