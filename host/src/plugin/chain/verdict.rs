//! Carrying out a stage's verdicts: checking them against the chain's routes and the
//! stage's output limits ([`check_verdicts`]), then passing, re-routing, fanning out,
//! dropping or dead-lettering each record into the [`Survivors`] of the stage. Calling the
//! stage and isolating failures is the runner's job (the parent module).

use super::{DeadLetter, Delivery, Destination, StageSlot, StageTrace, TraceOutcome};
use crate::plugin::bindings::{Header, InputRecord, OutputRecord, Verdict};
use crate::plugin::error::{ErrorKind, RecordError};
use crate::plugin::limits::StageLimits;
use crate::plugin::spec::{ChainSpec, RouteId};

/// Records between stages, in two parallel vectors so the records themselves move straight
/// into the next stage's batch: `records[i]` descends from source record `meta[i].source`
/// and is on route `meta[i].route` (`None`: not chosen yet, the default route).
#[derive(Default)]
pub(super) struct Survivors {
    pub(super) meta: Vec<Meta>,
    pub(super) records: Vec<InputRecord>,
}

#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) source: usize,
    pub(super) route: Option<RouteId>,
}

impl Survivors {
    pub(super) fn with_capacity(n: usize) -> Self {
        Survivors {
            meta: Vec::with_capacity(n),
            records: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, meta: Meta, record: InputRecord) {
        self.meta.push(meta);
        self.records.push(record);
    }
}

pub(super) fn dead_letter(
    slot: &mut StageSlot,
    stage: usize,
    source: usize,
    error: RecordError,
    record: InputRecord,
    deliveries: &mut Vec<Delivery>,
) {
    *slot.stats.dead_lettered.entry(error.kind).or_insert(0) += 1;
    if let Some(trace) = &mut slot.trace {
        trace.push(StageTrace {
            stage,
            source,
            outcome: TraceOutcome::DeadLetter {
                kind: error.kind,
                reason: error.message.clone(),
            },
        });
    }
    deliveries.push(Delivery {
        source,
        destination: Destination::DeadLetter(DeadLetter {
            stage,
            stage_name: slot.spec.name.clone(),
            version: slot.spec.module.version.clone(),
            error,
            record,
        }),
    });
}

/// Carries out one checked verdict.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    slot: &mut StageSlot,
    stage: usize,
    spec: &ChainSpec,
    verdict: Verdict,
    meta: Meta,
    record: InputRecord,
    out: &mut Survivors,
    deliveries: &mut Vec<Delivery>,
) {
    let source = meta.source;
    if let Some(trace) = &mut slot.trace {
        let outcome = match &verdict {
            Verdict::Pass => Some(TraceOutcome::Pass),
            Verdict::Route(name) => Some(TraceOutcome::Route(name.clone())),
            Verdict::Emit(outputs) => Some(TraceOutcome::Emit(
                outputs.iter().map(|o| o.route.clone()).collect(),
            )),
            Verdict::Drop => Some(TraceOutcome::Drop),
            // Traced by `dead_letter`.
            Verdict::DeadLetter(_) => None,
        };
        if let Some(outcome) = outcome {
            trace.push(StageTrace {
                stage,
                source,
                outcome,
            });
        }
    }
    match verdict {
        Verdict::Pass => out.push(meta, record),
        Verdict::Route(name) => match spec.route_id(&name) {
            Some(id) => out.push(
                Meta {
                    source,
                    route: Some(id),
                },
                record,
            ),
            None => dead_letter(
                slot,
                stage,
                source,
                unknown_route(spec, &name),
                record,
                deliveries,
            ),
        },
        Verdict::Emit(outputs) => {
            // Routes were checked by `check_verdicts`; resolve them all before moving
            // anything, so that even a mistake there dead-letters the input instead of
            // losing it.
            let mut routes = Vec::with_capacity(outputs.len());
            for output in &outputs {
                match &output.route {
                    None => routes.push(meta.route),
                    Some(name) => match spec.route_id(name) {
                        Some(id) => routes.push(Some(id)),
                        None => {
                            let error = unknown_route(spec, name);
                            dead_letter(slot, stage, source, error, record, deliveries);
                            return;
                        }
                    },
                }
            }
            for (output, route) in outputs.into_iter().zip(routes) {
                let OutputRecord {
                    key,
                    value,
                    headers,
                    ..
                } = output;
                out.push(
                    Meta { source, route },
                    InputRecord {
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                        key,
                        value,
                        headers,
                    },
                );
            }
        }
        Verdict::Drop => slot.stats.dropped += 1,
        Verdict::DeadLetter(reason) => dead_letter(
            slot,
            stage,
            source,
            RecordError::new(ErrorKind::Rejected, reason),
            record,
            deliveries,
        ),
    }
}

fn unknown_route(spec: &ChainSpec, name: &str) -> RecordError {
    RecordError::bad_output(format!(
        "route `{name}` is not declared in pipeline {} (declared: {})",
        spec.pipeline,
        spec.routes.join(", ")
    ))
}

/// Refuses verdicts the host will not carry out. Allocation-free on the happy path.
pub(super) fn check_verdicts(
    verdicts: &[Verdict],
    records: usize,
    spec: &ChainSpec,
    limits: &StageLimits,
) -> Result<(), RecordError> {
    if verdicts.len() != records {
        return Err(RecordError::bad_output(format!(
            "the plugin returned {} verdicts for {} records; it must return exactly one per record",
            verdicts.len(),
            records
        )));
    }
    for verdict in verdicts {
        match verdict {
            Verdict::Route(name) if spec.route_id(name).is_none() => {
                return Err(unknown_route(spec, name));
            }
            Verdict::Emit(outputs) => {
                if outputs.len() > limits.max_outputs as usize {
                    return Err(RecordError::bad_output(format!(
                        "the plugin emitted {} records for one input; the stage allows {} (limits.max_outputs)",
                        outputs.len(),
                        limits.max_outputs
                    )));
                }
                let mut bytes: u64 = 0;
                for output in outputs {
                    if let Some(name) = &output.route
                        && spec.route_id(name).is_none()
                    {
                        return Err(unknown_route(spec, name));
                    }
                    bytes = bytes.saturating_add(output_size(output));
                }
                if bytes > limits.max_output_bytes {
                    return Err(RecordError::bad_output(format!(
                        "the plugin emitted {bytes} bytes for one input; the stage allows {} (limits.max_output_bytes)",
                        limits.max_output_bytes
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn output_size(output: &OutputRecord) -> u64 {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len) as u64;
    let headers: u64 = output
        .headers
        .iter()
        .map(|h: &Header| h.key.len() as u64 + len(&h.value))
        .sum();
    len(&output.key) + len(&output.value) + headers
}
