//! What the runner does for stateful stages: the task's watermark and late flags for a
//! batch, calls with the task's state lent to the instance (writes kept only when the call
//! succeeds), and firing due timers through `on-timers`, with the same isolation as
//! records: a failed call is re-run one timer at a time, and a timer that fails on its own
//! is dead-lettered.

use super::{ChainRunner, DeadLetter, Delivery, Destination, StageLoadError, StageSlot};
use crate::plugin::bindings::stateful::{FiredTimer, OutputRecord as TimerOutput};
use crate::plugin::bindings::{Header, InputRecord, RecordBatch, Verdict};
use crate::plugin::engine::PluginEngine;
use crate::plugin::error::{ErrorKind, RecordError};
use crate::plugin::instance::StageInstance;
use crate::plugin::lift::OutputLimits;
use crate::plugin::state::{Domain, StageState, StateAccess, StatefulBatch, StatefulRecord};
use crate::plugin::time::TaskClock;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::verdict::Meta;

/// Timers given to one `on-timers` call at most.
const TIMERS_PER_CALL: usize = 256;
/// Rounds of timers one firing runs at most (a plugin that keeps setting due timers from
/// its timers would otherwise never let the batch end); the rest fire next time.
const MAX_ROUNDS: usize = 64;

/// A batch's place in event time.
pub(super) struct BatchTime {
    /// The task: the source partition number.
    pub(super) task: i32,
    /// The watermark before the batch.
    pub(super) watermark: Option<i64>,
    /// Per source record of the batch: late or not.
    pub(super) late: Vec<bool>,
}

/// Where a timer's outputs come from: the task, and the source record they are written
/// for (their commit waits for it).
pub struct Origin<'a> {
    /// A source topic of the task.
    pub topic: &'a str,
    /// The task.
    pub task: i32,
    /// Index of the source record in the batch the outputs belong to.
    pub source: usize,
    /// Its offset.
    pub offset: i64,
}

impl ChainRunner {
    /// For a stateful chain: moves the task's watermark over the batch and flags late
    /// records. `None` for a stateless chain.
    pub(super) fn batch_time(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[InputRecord],
    ) -> Option<BatchTime> {
        if !self.stages.iter().any(|s| s.state.is_some()) {
            return None;
        }
        let settings = &self.spec.time;
        let clock = self
            .clocks
            .entry(partition)
            .or_insert_with(|| TaskClock::new(settings));
        let watermark = clock.watermark();
        let late = clock.observe(
            settings,
            topic,
            records.iter().map(|r| r.timestamp_ms.filter(|ts| *ts >= 0)),
            Instant::now(),
        );
        self.late += late.iter().filter(|l| **l).count() as u64;
        Some(BatchTime {
            task: partition,
            watermark,
            late,
        })
    }

    /// Records flagged late since the last call.
    pub fn take_late(&mut self) -> u64 {
        std::mem::take(&mut self.late)
    }

    /// The watermark of a task, if it has one.
    pub fn watermark(&self, task: i32) -> Option<i64> {
        self.clocks.get(&task).and_then(TaskClock::watermark)
    }

    /// Keys stored by each stateful stage for `task`, in stage order (stateless stages are
    /// left out).
    pub fn state_keys(&self, task: i32) -> Vec<(String, usize)> {
        self.stages
            .iter()
            .filter(|s| s.state.is_some())
            .map(|s| {
                let keys = s.tasks.get(&task).map_or(0, |t| t.len());
                (s.spec.name.clone(), keys)
            })
            .collect()
    }

    /// What every stateful stage changed in `task` since the last call, by stage name.
    pub fn take_changes(&mut self, task: i32) -> Vec<(String, crate::plugin::state::Changes)> {
        self.stages
            .iter_mut()
            .filter(|s| s.state.is_some())
            .filter_map(|s| {
                let changes = s.tasks.get_mut(&task)?.take_changes();
                let empty = changes.entries.is_empty() && changes.timers.is_empty();
                (!empty).then(|| (s.spec.name.clone(), changes))
            })
            .collect()
    }

    /// Replaces `task`'s state and watermark with what was restored from the changelog
    /// (nothing restored: an empty state).
    pub fn install_task(&mut self, task: i32, mut restored: crate::changelog::Restored) {
        for slot in &mut self.stages {
            let Some(usage) = &slot.state else {
                continue;
            };
            if let Some(old) = slot.tasks.remove(&task) {
                old.count_in(usage, -1);
            }
            let state = restored.stages.remove(&slot.spec.name).unwrap_or_default();
            state.count_in(usage, 1);
            slot.tasks.insert(task, state);
        }
        let mut clock = TaskClock::new(&self.spec.time);
        clock.restore(restored.marker.and_then(|m| m.watermark));
        self.clocks.insert(task, clock);
    }

    /// Fires the wall-clock timers due at `now_ms` of every task: the deliveries of each
    /// task, by task.
    pub fn fire_wall_clock(
        &mut self,
        topic_of: impl Fn(i32) -> Option<(String, i64)>,
        now_ms: i64,
    ) -> Result<Vec<(i32, Vec<Delivery>)>, StageLoadError> {
        let mut tasks: Vec<i32> = self
            .stages
            .iter()
            .flat_map(|s| {
                s.tasks.iter().filter_map(|(task, state)| {
                    state.has_due(Domain::WallClock, now_ms).then_some(*task)
                })
            })
            .collect();
        tasks.sort_unstable();
        tasks.dedup();
        let mut out = Vec::new();
        for task in tasks {
            let Some((topic, offset)) = topic_of(task) else {
                continue;
            };
            let origin = Origin {
                topic: &topic,
                task,
                source: 0,
                offset,
            };
            let mut deliveries = Vec::new();
            let watermark = self.watermark(task);
            self.fire(
                &origin,
                Domain::WallClock,
                now_ms,
                watermark,
                &mut deliveries,
            )?;
            out.push((task, deliveries));
        }
        Ok(out)
    }

    /// At the end of a sample input (`test-plugin`, dry runs): moves the task's watermark to
    /// `advance_to` and fires the event-time timers due then, or, without `advance_to`,
    /// fires every pending timer of both clocks.
    pub fn finish_input(
        &mut self,
        origin: &Origin<'_>,
        advance_to: Option<i64>,
    ) -> Result<Vec<Delivery>, StageLoadError> {
        let mut deliveries = Vec::new();
        let settings = self.spec.time.clone();
        let clock = self
            .clocks
            .entry(origin.task)
            .or_insert_with(|| TaskClock::new(&settings));
        match advance_to {
            Some(to) => {
                clock.restore(Some(to));
                let watermark = clock.watermark();
                self.fire(origin, Domain::EventTime, to, watermark, &mut deliveries)?;
            }
            None => {
                let watermark = clock.watermark();
                self.fire(
                    origin,
                    Domain::EventTime,
                    i64::MAX,
                    watermark,
                    &mut deliveries,
                )?;
                self.fire(
                    origin,
                    Domain::WallClock,
                    i64::MAX,
                    watermark,
                    &mut deliveries,
                )?;
            }
        }
        Ok(deliveries)
    }

    /// Fires the timers of `domain` due at `now` for the task of `origin`, stage by stage;
    /// their outputs go straight to their routes (later stages do not see them).
    pub(super) fn fire(
        &mut self,
        origin: &Origin<'_>,
        domain: Domain,
        now: i64,
        watermark: Option<i64>,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), StageLoadError> {
        let spec = Arc::clone(&self.spec);
        let engine = Arc::clone(&self.engine);
        let longest_route = spec.routes.iter().map(String::len).max().unwrap_or(0);
        for (index, slot) in self.stages.iter_mut().enumerate() {
            let Some(usage) = slot.state.clone() else {
                continue;
            };
            for _ in 0..MAX_ROUNDS {
                let Some(task) = slot.tasks.get_mut(&origin.task) else {
                    break;
                };
                let due = task.take_due(domain, now, TIMERS_PER_CALL);
                if due.is_empty() {
                    break;
                }
                task.timers_fired(due.len(), &usage);
                let fired: Vec<FiredTimer> = due
                    .into_iter()
                    .map(|t| FiredTimer {
                        domain: t.domain.wit(),
                        at_ms: t.at_ms,
                        tag: t.tag,
                    })
                    .collect();
                let results = slot.run_timers(
                    &engine,
                    &fired,
                    watermark,
                    origin.task,
                    &usage,
                    longest_route,
                )?;
                for (timer, result) in fired.iter().zip(results) {
                    match result {
                        Ok(outputs) => {
                            for output in outputs {
                                deliveries
                                    .push(timer_output(&spec, slot, index, origin, timer, output));
                            }
                        }
                        Err(error) => {
                            deliveries.push(timer_dead_letter(slot, index, origin, timer, error));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A timer's output as a delivery: to its route, or dead-lettered if the route is not
/// declared.
fn timer_output(
    spec: &crate::plugin::ChainSpec,
    slot: &mut StageSlot,
    stage: usize,
    origin: &Origin<'_>,
    timer: &FiredTimer,
    output: TimerOutput,
) -> Delivery {
    let record = InputRecord {
        offset: origin.offset,
        timestamp_ms: Some(timer.at_ms.max(0)),
        key: output.key,
        value: output.value,
        headers: output
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
    };
    let route = match &output.route {
        None => Some(spec.default_route),
        Some(name) => spec.route_id(name),
    };
    match route {
        Some(route) => {
            slot.stats.records_out += 1;
            Delivery {
                source: origin.source,
                destination: Destination::Route { route, record },
            }
        }
        None => {
            let name = output.route.unwrap_or_default();
            let error = RecordError::bad_output(format!(
                "a timer emitted to route `{name}`, which is not declared in pipeline {} (declared: {})",
                spec.pipeline,
                spec.routes.join(", ")
            ));
            *slot.stats.dead_lettered.entry(error.kind).or_insert(0) += 1;
            Delivery {
                source: origin.source,
                destination: Destination::DeadLetter(DeadLetter {
                    stage,
                    stage_name: slot.spec.name.clone(),
                    version: slot.spec.module.version.clone(),
                    error,
                    record,
                }),
            }
        }
    }
}

/// A timer that failed on its own, as a dead letter: its tag as the key, and a JSON
/// description as the value.
fn timer_dead_letter(
    slot: &mut StageSlot,
    stage: usize,
    origin: &Origin<'_>,
    timer: &FiredTimer,
    error: RecordError,
) -> Delivery {
    *slot.stats.dead_lettered.entry(error.kind).or_insert(0) += 1;
    let domain = match timer.domain {
        crate::plugin::bindings::stateful::TimeDomain::EventTime => "event-time",
        crate::plugin::bindings::stateful::TimeDomain::WallClock => "wall-clock",
    };
    let value = serde_json::json!({
        "timer": { "domain": domain, "at_ms": timer.at_ms, "tag": timer.tag, "task": origin.task },
    });
    Delivery {
        source: origin.source,
        destination: Destination::DeadLetter(DeadLetter {
            stage,
            stage_name: slot.spec.name.clone(),
            version: slot.spec.module.version.clone(),
            error,
            record: InputRecord {
                offset: origin.offset,
                timestamp_ms: Some(timer.at_ms.max(0)),
                key: Some(timer.tag.clone().into_bytes()),
                value: Some(value.to_string().into_bytes()),
                headers: Vec::new(),
            },
        }),
    }
}

impl StageSlot {
    /// Calls `process` with the task's state; the batch's records are lent to the call and
    /// put back in `batch` afterwards.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_stateful(
        &mut self,
        instance: &mut StageInstance,
        batch: &mut RecordBatch,
        meta: &[Meta],
        time: &BatchTime,
        usage: &Arc<StageState>,
        budget: Duration,
        limits: OutputLimits,
    ) -> Result<Vec<Verdict>, RecordError> {
        let records = std::mem::take(&mut batch.records)
            .into_iter()
            .zip(meta)
            .map(|(r, m)| StatefulRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
                late: time.late.get(m.source).copied().unwrap_or(false),
            })
            .collect();
        let lent = StatefulBatch {
            topic: std::mem::take(&mut batch.topic),
            partition: batch.partition,
            watermark_ms: time.watermark,
            records,
        };
        let task = self.tasks.remove(&time.task).unwrap_or_default();
        let access = StateAccess::new(task, usage.clone());
        let (result, access) = instance.process_stateful(&lent, access, budget, limits);
        let StateAccess {
            mut task, writes, ..
        } = access;
        if result.is_ok() {
            task.apply(writes, usage);
        }
        self.tasks.insert(time.task, task);
        batch.topic = lent.topic;
        batch.records = lent
            .records
            .into_iter()
            .map(|r| InputRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
            .collect();
        if let Err(error) = &result
            && error.kind == ErrorKind::StateFull
        {
            usage
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Runs `on-timers` for `fired`: one result per timer. A failed call is re-run one timer
    /// at a time on fresh instances.
    fn run_timers(
        &mut self,
        engine: &PluginEngine,
        fired: &[FiredTimer],
        watermark: Option<i64>,
        task: i32,
        usage: &Arc<StageState>,
        longest_route: usize,
    ) -> Result<Vec<Result<Vec<TimerOutput>, RecordError>>, StageLoadError> {
        match self.call_timers(engine, fired, watermark, task, usage, longest_route)? {
            Ok(lists) => Ok(lists.into_iter().map(Ok).collect()),
            Err(error) if fired.len() == 1 => {
                self.instance = None;
                Ok(vec![Err(error)])
            }
            Err(error) => {
                self.instance = None;
                self.stats.isolations += 1;
                tracing::warn!(
                    pipeline = %self.setup.tags.pipeline, stage = %self.spec.name,
                    timers = fired.len(), error = %error,
                    "Timer call failed; re-running the timers one at a time."
                );
                let mut out = Vec::with_capacity(fired.len());
                for timer in fired {
                    let one = std::slice::from_ref(timer);
                    match self.call_timers(engine, one, watermark, task, usage, longest_route)? {
                        Ok(mut lists) => out.push(Ok(lists.pop().unwrap_or_default())),
                        Err(error) => {
                            self.instance = None;
                            out.push(Err(error));
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    fn call_timers(
        &mut self,
        engine: &PluginEngine,
        fired: &[FiredTimer],
        watermark: Option<i64>,
        task: i32,
        usage: &Arc<StageState>,
        longest_route: usize,
    ) -> Result<Result<Vec<Vec<TimerOutput>>, RecordError>, StageLoadError> {
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => {
                self.stats.restarts += 1;
                self.reinstantiate(engine)?
            }
        };
        let budget = self.spec.limits.batch_budget(fired.len());
        let limits = OutputLimits {
            records: fired.len(),
            max_outputs: self.spec.limits.max_outputs,
            max_output_bytes: self.spec.limits.max_output_bytes,
            longest_route,
        };
        let state = self.tasks.remove(&task).unwrap_or_default();
        let access = StateAccess::new(state, usage.clone());
        let (result, access) = instance.on_timers(watermark, fired, access, budget, limits);
        let StateAccess {
            task: mut state,
            writes,
            ..
        } = access;
        if result.is_ok() {
            state.apply(writes, usage);
        }
        self.tasks.insert(task, state);
        self.instance = Some(instance);
        Ok(result)
    }
}
