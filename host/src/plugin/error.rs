//! Why a plugin call or a plugin load failed.
//!
//! Two families, because callers branch on them differently: a [`RecordError`] ends one
//! call and dead-letters the records involved (the pipeline goes on); a [`LoadError`] stops a
//! plugin from being used at all (start-up fails, or a hot reload is refused and the old
//! version keeps serving).

use std::fmt;

/// The kind of failure that dead-lettered a record. Its text form (`trap`, `timeout`, ...) is
/// what the dead-letter header and the metrics label carry, so it is part of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The guest trapped: a panic, `unreachable`, an out-of-bounds access, a stack overflow.
    Trap,
    /// The call ran past the stage's time budget and was interrupted.
    Timeout,
    /// The guest tried to grow its memory past the stage's memory cap.
    Memory,
    /// The guest returned something the host refuses: a wrong number of verdicts, an
    /// undeclared route, too many or too large outputs.
    BadOutput,
    /// The plugin itself decided the record is bad (`verdict::dead-letter`).
    Rejected,
    /// A stateful stage's write would take its state past `limits.max_state_bytes` or
    /// `limits.max_keys`.
    StateFull,
}

impl ErrorKind {
    /// Every kind, for metrics that want a zero for each.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::Memory,
        ErrorKind::BadOutput,
        ErrorKind::Rejected,
        ErrorKind::StateFull,
    ];

    /// The stable text form: `trap`, `timeout`, `memory`, `bad-output`, `rejected`,
    /// `state-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::BadOutput => "bad-output",
            ErrorKind::Rejected => "rejected",
            ErrorKind::StateFull => "state-full",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed plugin call, or a refused verdict: the records it covers are dead-lettered with
/// this kind and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RecordError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A sentence a person can act on.
    pub message: String,
}

impl RecordError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RecordError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn bad_output(message: impl Into<String>) -> Self {
        RecordError::new(ErrorKind::BadOutput, message)
    }
}

/// Why a plugin cannot be used. Each variant's text says what is wrong with the upload or the
/// file, in terms the plugin's author understands.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component; build it for wasm32-wasip2, or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// Compilation failed: malformed or unsupported WebAssembly.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component does not fit the `switchyard:plugin/plugin` world: it imports something
    /// the host does not provide, or lacks or mistypes the `transform` export.
    #[error("the component does not match the switchyard:plugin@0.1.0 world: {0}")]
    World(String),
    /// Instantiation failed (a start function trapped, the initial memory is over the cap, the
    /// instance pool is exhausted).
    #[error("the component cannot be instantiated: {0}")]
    Instantiate(String),
    /// The plugin's `init` returned an error: the message is the plugin's own.
    #[error("the plugin's init failed: {0}")]
    Init(String),
    /// `init` trapped or ran out of time or memory.
    #[error("the plugin's init crashed: {0}")]
    InitCrashed(RecordError),
}
