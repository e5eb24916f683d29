//! Per-stage resource limits, and the store limiter that enforces the memory cap.
//!
//! Every limit has a default sized for typical JSON events; the operator overrides any of them
//! per stage in the pipeline configuration (`[pipeline.stage.limits]`).

use serde::Deserialize;
use std::time::Duration;

/// Default memory cap per plugin instance.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Default time budget per record.
pub const DEFAULT_TIME_PER_RECORD_MS: u64 = 50;
/// Default maximum records a plugin may emit for one input record.
pub const DEFAULT_MAX_OUTPUTS: u32 = 100;
/// Default maximum bytes (keys, values and headers) a plugin may emit for one input record.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;
/// Default time budget for instantiating a plugin and running its `init`.
pub const DEFAULT_INIT_TIMEOUT_MS: u64 = 10_000;
/// Default cap on a stateful stage's state: the bytes of its keys and values, all tasks of
/// this process together.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 512 * 1024 * 1024;
/// Default cap on a stateful stage's number of keys, all tasks of this process together.
pub const DEFAULT_MAX_KEYS: u64 = 5_000_000;

/// Resource limits of one stage. Every field is optional in the config file; a missing one
/// takes its default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageLimits {
    /// Linear memory cap of one plugin instance, in MiB (default 64). A guest that grows past
    /// it traps; the record being processed is dead-lettered with kind `memory`.
    pub memory_mib: u64,
    /// Time budget per record in milliseconds (default 50); a batch of n records gets n times
    /// this. A call that runs longer is interrupted; the record is dead-lettered with kind
    /// `timeout`.
    pub time_per_record_ms: u64,
    /// Maximum records a plugin may emit for one input record (default 100).
    pub max_outputs: u32,
    /// Maximum total bytes (keys, values, header keys and values) a plugin may emit for one
    /// input record (default 4 MiB).
    pub max_output_bytes: u64,
    /// Time budget for instantiation plus `init`, in milliseconds (default 10000).
    pub init_timeout_ms: u64,
    /// Stateful stages only: the most bytes (keys plus values) the stage's state may hold,
    /// all tasks of this process together (default 512 MiB). A write past it ends the call;
    /// the record is dead-lettered with kind `state-full`.
    pub max_state_bytes: u64,
    /// Stateful stages only: the most keys the stage's state may hold, all tasks of this
    /// process together (default 5,000,000); past it as for `max_state_bytes`.
    pub max_keys: u64,
}

impl Default for StageLimits {
    fn default() -> Self {
        StageLimits {
            memory_mib: DEFAULT_MEMORY_MIB,
            time_per_record_ms: DEFAULT_TIME_PER_RECORD_MS,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            init_timeout_ms: DEFAULT_INIT_TIMEOUT_MS,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl StageLimits {
    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1024 * 1024)
    }

    /// The time budget of a batch of `records` records.
    pub fn batch_budget(&self, records: usize) -> Duration {
        let records = u64::try_from(records.max(1)).unwrap_or(u64::MAX);
        Duration::from_millis(self.time_per_record_ms.saturating_mul(records))
    }

    /// Checks the values make sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_mib == 0 {
            return Err("limits.memory_mib must be at least 1".into());
        }
        if self.memory_mib > 4096 {
            return Err(format!(
                "limits.memory_mib is {} but a 32-bit WebAssembly memory holds at most 4096 MiB",
                self.memory_mib
            ));
        }
        if self.time_per_record_ms == 0 {
            return Err("limits.time_per_record_ms must be at least 1".into());
        }
        if self.init_timeout_ms == 0 {
            return Err("limits.init_timeout_ms must be at least 1".into());
        }
        if self.max_state_bytes == 0 {
            return Err("limits.max_state_bytes must be at least 1".into());
        }
        if self.max_keys == 0 {
            return Err("limits.max_keys must be at least 1".into());
        }
        Ok(())
    }
}

/// Raised from inside `memory.grow` when a guest asks for more than its cap: wasmtime turns it
/// into a trap whose error chain carries this value, which is how a failed call is classified
/// as [`ErrorKind::Memory`](super::ErrorKind::Memory) rather than a plain trap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the plugin asked for {desired} bytes of memory; the stage cap is {cap} bytes (limits.memory_mib)"
)]
pub struct MemoryCapExceeded {
    /// What the guest asked for.
    pub desired: usize,
    /// The cap.
    pub cap: usize,
}

/// Enforces the stage's memory cap on one store.
pub(crate) struct MemoryLimiter {
    pub(crate) cap: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            return Err(MemoryCapExceeded {
                desired,
                cap: self.cap,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the engine's pool (`table_elements`); growth past it fails
        // there, and the guest sees an ordinary failed `table.grow`.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let l = StageLimits::default();
        assert_eq!(l.memory_bytes(), 64 * 1024 * 1024);
        assert_eq!(l.batch_budget(256), Duration::from_millis(50 * 256));
        assert_eq!(l.batch_budget(0), Duration::from_millis(50));
        assert!(l.validate().is_ok());
    }

    #[test]
    fn validation_names_the_key() {
        let l = StageLimits {
            memory_mib: 0,
            ..StageLimits::default()
        };
        assert!(l.validate().unwrap_err().contains("limits.memory_mib"));
        let l = StageLimits {
            memory_mib: 5000,
            ..StageLimits::default()
        };
        assert!(l.validate().unwrap_err().contains("4096"));
        let l = StageLimits {
            time_per_record_ms: 0,
            ..StageLimits::default()
        };
        assert!(l.validate().unwrap_err().contains("time_per_record_ms"));
    }
}
