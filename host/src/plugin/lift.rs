//! Lifting a `process` result out of guest memory with the stage's output limits checked
//! before anything is copied.
//!
//! The canonical ABI lets a guest return lists that all point at the same buffer: 256
//! verdicts of 100 outputs, each naming one 32 MiB value, take 32 MiB of guest memory and
//! would take 800 GiB of host memory once copied. So the result is not lifted into the
//! generated [`Verdict`] type directly but into the mirror types below, whose lists and
//! strings read their length from the canonical ABI layout first and refuse, before the copy,
//! what the limits do not allow: a wrong number of verdicts, more outputs than
//! `limits.max_outputs`, more bytes for one input record than `limits.max_output_bytes`. A
//! refusal is a [`RecordError`] of kind `bad-output`, carried in the call's error. Strings
//! the host only reads are cut instead: a route name longer than any declared route (it is
//! then refused as undeclared, by name) and a dead-letter reason over [`MAX_REASON_BYTES`].
//!
//! What is left unchecked here (the number of headers, which cost the host a few dozen bytes
//! each whatever their size) is bounded by the store's hostcall fuel, which the instance sets
//! per call from the same limits ([`hostcall_fuel`]).
//!
//! The limits reach the lift through a thread-local ([`with_limits`]): lifting happens inside
//! `TypedFunc::call`, on the calling thread, and wasmtime's lift functions take no state of
//! ours.

use super::bindings::{Header, OutputRecord, Verdict};
use super::error::RecordError;
use std::cell::Cell;
use wasmtime::ValRaw;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use crate::router::{MAX_REASON_BYTES, cut_reason};

/// What one `process` call may return.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutputLimits {
    /// Records in the batch: exactly this many verdicts.
    pub(crate) records: usize,
    /// `limits.max_outputs`.
    pub(crate) max_outputs: u32,
    /// `limits.max_output_bytes`.
    pub(crate) max_output_bytes: u64,
    /// The longest declared route name, in bytes.
    pub(crate) longest_route: usize,
}

/// Hostcall fuel (bytes wasmtime may copy out of the guest in one lift) for a call under
/// `limits`: what the records may emit, plus room for the records' and headers' own
/// structures, and never below wasmtime's default.
pub(crate) fn hostcall_fuel(limits: &OutputLimits) -> usize {
    /// wasmtime's default hostcall fuel.
    const DEFAULT: u64 = 128 << 20;
    /// Room per record for the verdict, output and header structures.
    const STRUCTURES: u64 = 1 << 20;
    let records = u64::try_from(limits.records.max(1)).unwrap_or(u64::MAX);
    let per_record = limits.max_output_bytes.saturating_add(STRUCTURES);
    let fuel = records.saturating_mul(per_record).max(DEFAULT);
    usize::try_from(fuel).unwrap_or(usize::MAX)
}

thread_local! {
    /// The limits of the call running on this thread.
    static LIMITS: Cell<Option<OutputLimits>> = const { Cell::new(None) };
    /// Bytes the record whose outputs are being lifted may still emit.
    static REMAINING: Cell<u64> = const { Cell::new(0) };
}

/// Runs `call` (a `process` call) with `limits` in force for the lift of its result.
pub(crate) fn with_limits<R>(limits: OutputLimits, call: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LIMITS.with(|l| l.set(None));
        }
    }
    LIMITS.with(|l| l.set(Some(limits)));
    let _reset = Reset;
    call()
}

fn limits() -> wasmtime::Result<OutputLimits> {
    LIMITS
        .with(Cell::get)
        .ok_or_else(|| wasmtime::format_err!("plugin output lifted outside a checked call"))
}

/// Takes `bytes` from the current record's output budget, or refuses the record.
fn charge(bytes: usize) -> wasmtime::Result<()> {
    let max = limits()?.max_output_bytes;
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    REMAINING.with(|r| match r.get().checked_sub(bytes) {
        Some(left) => {
            r.set(left);
            Ok(())
        }
        None => Err(RecordError::bad_output(format!(
            "the plugin emitted more than {max} bytes for one input; the stage allows {max} (limits.max_output_bytes)"
        ))
        .into()),
    })
}

/// The (pointer, length) of a string or list in the canonical ABI: two little-endian u32s
/// in memory, or two i32s when flat.
fn pointer_pair(bytes: &[u8]) -> wasmtime::Result<(usize, usize)> {
    let word = |at: usize| -> wasmtime::Result<usize> {
        let raw: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| wasmtime::format_err!("a list or string shorter than its layout"))?;
        Ok(u32::from_le_bytes(raw) as usize)
    };
    Ok((word(0)?, word(4)?))
}

fn flat_len(src: &[ValRaw; 2]) -> usize {
    src[1].get_u32() as usize
}

/// Implements `ComponentType` for a wrapper of a list or string as the type it wraps (same
/// WIT type, same ABI: a pointer and a length).
macro_rules! same_type_as {
    ($wrapper:ty, $inner:ty) => {
        // SAFETY: the wrapper is lifted exactly as `$inner` is (every `Lift` function below
        // delegates to `$inner`'s after its checks), so `$inner`'s lowered representation
        // (a list's or string's two flat values), ABI and type check are the wrapper's.
        unsafe impl ComponentType for $wrapper {
            type Lower = [ValRaw; 2];
            const ABI: CanonicalAbiInfo = <$inner as ComponentType>::ABI;
            fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
                <$inner as ComponentType>::typecheck(ty, types)
            }
        }
    };
}

/// `list<verdict>`: the count is checked before any verdict is lifted.
pub(crate) struct Verdicts(pub(crate) Vec<Verdict>);

same_type_as!(Verdicts, Vec<GuestVerdict>);

impl Verdicts {
    fn check_count(len: usize) -> wasmtime::Result<()> {
        let records = limits()?.records;
        if len != records {
            return Err(RecordError::bad_output(format!(
                "the plugin returned {len} verdicts for {records} records; it must return exactly one per record"
            ))
            .into());
        }
        Ok(())
    }

    fn from_guest(verdicts: Vec<GuestVerdict>) -> Self {
        Verdicts(
            verdicts
                .into_iter()
                .map(GuestVerdict::into_verdict)
                .collect(),
        )
    }
}

// SAFETY: delegates to `Vec<GuestVerdict>`'s lift after checking the length.
unsafe impl Lift for Verdicts {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        Self::check_count(flat_len(src))?;
        Vec::<GuestVerdict>::linear_lift_from_flat(cx, ty, src).map(Self::from_guest)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        Self::check_count(pointer_pair(bytes)?.1)?;
        Vec::<GuestVerdict>::linear_lift_from_memory(cx, ty, bytes).map(Self::from_guest)
    }
}

/// `verdict`, with checked payloads.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(variant)]
enum GuestVerdict {
    #[component(name = "pass")]
    Pass,
    #[component(name = "route")]
    Route(RouteName),
    #[component(name = "emit")]
    Emit(Outputs),
    #[component(name = "drop")]
    Drop,
    #[component(name = "dead-letter")]
    DeadLetter(Reason),
}

impl GuestVerdict {
    fn into_verdict(self) -> Verdict {
        match self {
            GuestVerdict::Pass => Verdict::Pass,
            GuestVerdict::Route(name) => Verdict::Route(name.0),
            GuestVerdict::Emit(outputs) => Verdict::Emit(
                outputs
                    .0
                    .into_iter()
                    .map(|o| OutputRecord {
                        route: o.route.map(|r| r.0),
                        key: o.key.map(|k| k.0),
                        value: o.value.map(|v| v.0),
                        headers: o
                            .headers
                            .into_iter()
                            .map(|h| Header {
                                key: h.key.0,
                                value: h.value.map(|v| v.0),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            GuestVerdict::Drop => Verdict::Drop,
            GuestVerdict::DeadLetter(reason) => Verdict::DeadLetter(reason.0),
        }
    }
}

/// `output-record`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
struct GuestOutput {
    route: Option<RouteName>,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<GuestHeader>,
}

/// `header`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
struct GuestHeader {
    key: Text,
    value: Option<Bytes>,
}

/// One record's `list<output-record>`: the count is checked against `limits.max_outputs`
/// first, then the record's byte budget starts.
struct Outputs(Vec<GuestOutput>);

same_type_as!(Outputs, Vec<GuestOutput>);

impl Outputs {
    fn start(len: usize) -> wasmtime::Result<()> {
        let limits = limits()?;
        if len > limits.max_outputs as usize {
            return Err(RecordError::bad_output(format!(
                "the plugin emitted {len} records for one input; the stage allows {} (limits.max_outputs)",
                limits.max_outputs
            ))
            .into());
        }
        REMAINING.with(|r| r.set(limits.max_output_bytes));
        Ok(())
    }
}

// SAFETY: delegates to `Vec<GuestOutput>`'s lift after checking the length.
unsafe impl Lift for Outputs {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        Self::start(flat_len(src))?;
        Vec::<GuestOutput>::linear_lift_from_flat(cx, ty, src).map(Outputs)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        Self::start(pointer_pair(bytes)?.1)?;
        Vec::<GuestOutput>::linear_lift_from_memory(cx, ty, bytes).map(Outputs)
    }
}

/// An output's key or value, or a header's value: charged to the record's budget before it
/// is copied.
struct Bytes(Vec<u8>);

same_type_as!(Bytes, Vec<u8>);

// SAFETY: delegates to `Vec<u8>`'s lift after charging the length.
unsafe impl Lift for Bytes {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        charge(flat_len(src))?;
        Vec::<u8>::linear_lift_from_flat(cx, ty, src).map(Bytes)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        charge(pointer_pair(bytes)?.1)?;
        Vec::<u8>::linear_lift_from_memory(cx, ty, bytes).map(Bytes)
    }
}

/// A header key: charged to the record's budget before it is copied. (The length is in
/// code units: bytes for UTF-8 guests, which is what every toolchain here emits.)
struct Text(String);

same_type_as!(Text, String);

// SAFETY: delegates to `String`'s lift after charging the length.
unsafe impl Lift for Text {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        charge(flat_len(src))?;
        String::linear_lift_from_flat(cx, ty, src).map(Text)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        charge(pointer_pair(bytes)?.1)?;
        String::linear_lift_from_memory(cx, ty, bytes).map(Text)
    }
}

/// A route name. One longer than every declared route cannot be declared: only its start is
/// read (cut, with `…` appended, so it stays longer than every declared route), and the
/// verdict check refuses it by name as any undeclared route.
struct RouteName(String);

same_type_as!(RouteName, String);

impl RouteName {
    /// How much of an over-long name to keep: one byte more than the longest route.
    fn keep() -> wasmtime::Result<usize> {
        Ok(limits()?.longest_route.saturating_add(1))
    }
}

// SAFETY: delegates to `String`'s lift, or reads a bounds-checked prefix of memory.
unsafe impl Lift for RouteName {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (len, keep) = (flat_len(src), Self::keep()?);
        if len > keep {
            return cut(cx, src[0].get_u32() as usize, len, keep).map(RouteName);
        }
        String::linear_lift_from_flat(cx, ty, src).map(RouteName)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let ((ptr, len), keep) = (pointer_pair(bytes)?, Self::keep()?);
        if len > keep {
            return cut(cx, ptr, len, keep).map(RouteName);
        }
        String::linear_lift_from_memory(cx, ty, bytes).map(RouteName)
    }
}

/// A dead-letter reason, cut to [`MAX_REASON_BYTES`]: only that much is read.
struct Reason(String);

same_type_as!(Reason, String);

/// The first `keep` bytes of the string of `len` bytes at `ptr`, read straight from memory
/// (lossy UTF-8), with `…` appended.
fn cut(cx: &LiftContext<'_>, ptr: usize, len: usize, keep: usize) -> wasmtime::Result<String> {
    let memory = cx.memory();
    let in_bounds = ptr.checked_add(len).is_some_and(|end| end <= memory.len());
    if !in_bounds {
        wasmtime::bail!("string pointer/length out of bounds of memory");
    }
    let head = &memory[ptr..ptr + keep.min(len)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    // The cut may split a character, which then decodes as one replacement character.
    if text.ends_with('\u{fffd}') {
        text.pop();
    }
    text.push('…');
    Ok(text)
}

impl Reason {
    /// The reason of `len` bytes at `ptr`, cut by [`cut_reason`] from its first
    /// [`MAX_REASON_BYTES`] bytes: no more than that is read.
    fn cut(cx: &LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        let memory = cx.memory();
        let in_bounds = ptr.checked_add(len).is_some_and(|end| end <= memory.len());
        if !in_bounds {
            wasmtime::bail!("string pointer/length out of bounds of memory");
        }
        Ok(Reason(cut_reason(
            &memory[ptr..ptr + MAX_REASON_BYTES],
            len,
        )))
    }
}

// SAFETY: delegates to `String`'s lift, or reads a bounds-checked prefix of memory.
unsafe impl Lift for Reason {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let len = flat_len(src);
        if len > MAX_REASON_BYTES {
            return Reason::cut(cx, src[0].get_u32() as usize, len);
        }
        String::linear_lift_from_flat(cx, ty, src).map(Reason)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pointer_pair(bytes)?;
        if len > MAX_REASON_BYTES {
            return Reason::cut(cx, ptr, len);
        }
        String::linear_lift_from_memory(cx, ty, bytes).map(Reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_follows_the_limits_and_never_drops_below_the_default() {
        let limits = OutputLimits {
            records: 256,
            max_outputs: 100,
            max_output_bytes: 4 << 20,
            longest_route: 8,
        };
        assert_eq!(hostcall_fuel(&limits), 256 * (5 << 20));
        let one = OutputLimits {
            records: 1,
            ..limits
        };
        assert_eq!(hostcall_fuel(&one), 128 << 20);
        let huge = OutputLimits {
            max_output_bytes: u64::MAX,
            ..limits
        };
        assert_eq!(hostcall_fuel(&huge), usize::MAX);
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit() {
        let limits = OutputLimits {
            records: 1,
            max_outputs: 2,
            max_output_bytes: 10,
            longest_route: 3,
        };
        with_limits(limits, || {
            Outputs::start(2).expect("two outputs are allowed");
            charge(6).expect("6 of 10");
            charge(4).expect("10 of 10");
            let e = charge(1).expect_err("11 of 10");
            let e = e.downcast_ref::<RecordError>().expect("a record error");
            assert!(e.message.contains("limits.max_output_bytes"), "{e}");
            // The next record's outputs start a new budget.
            Outputs::start(0).expect("no outputs");
            charge(10).expect("a fresh budget");
            assert!(Outputs::start(3).is_err(), "three outputs are too many");
            assert_eq!(RouteName::keep().expect("limits"), 4);
            assert!(Verdicts::check_count(1).is_ok());
            assert!(Verdicts::check_count(2).is_err());
        });
        assert!(charge(0).is_err(), "no limits outside a call");
    }
}
