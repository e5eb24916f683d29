//! `GET /metrics`: the process's metrics, and the gauges that describe the pipelines' state
//! now (lag, in-flight records, active plugin versions, pipeline state, plugin counters and
//! the counter names dropped).
//!
//! Those gauges are read from the pipelines on each scrape by a [`Collector`] and encoded
//! straight into that scrape's answer: nothing is stored between scrapes, so concurrent
//! scrapes cannot see each other's half-filled values, and a partition, version or state
//! that is gone is gone from the next scrape. Counters and histograms the hot path updates
//! live in [`Metrics`].

use super::AdminState;
use crate::metrics::{
    Metrics, PartitionLabels, PipelineLabels, PluginCounterLabels, StageLabels, StateLabels,
    TaskLabels, VersionLabels,
};
use crate::pipeline::PipelineHandle;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The OpenMetrics text content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<Arc<AdminState>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], st.scrape()).into_response()
}

/// A registry holding only the scrape-time gauges of `pipelines`, under the process's prefix.
pub(super) fn scrape_registry(pipelines: Vec<Arc<PipelineHandle>>) -> Registry {
    let mut registry = Registry::with_prefix(Metrics::PREFIX);
    registry.register_collector(Box::new(PipelineGauges { pipelines }));
    registry
}

/// Reads the scrape-time gauges from the pipelines.
struct PipelineGauges {
    pipelines: Vec<Arc<PipelineHandle>>,
}

impl std::fmt::Debug for PipelineGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.pipelines.iter().map(|p| p.name()).collect();
        f.debug_struct("PipelineGauges")
            .field("pipelines", &names)
            .finish()
    }
}

/// One scrape's values, each series once.
#[derive(Default)]
struct Gauges {
    consumer_lag: Vec<(PartitionLabels, i64)>,
    in_flight: Vec<(PipelineLabels, i64)>,
    plugin_info: Vec<(VersionLabels, i64)>,
    pipeline_state: Vec<(StateLabels, i64)>,
    plugin_counters: Vec<(PluginCounterLabels, i64)>,
    counter_names_dropped: Vec<(StageLabels, u64)>,
    state_keys: Vec<(StageLabels, i64)>,
    state_bytes: Vec<(StageLabels, i64)>,
    state_timers: Vec<(StageLabels, i64)>,
    state_full: Vec<(StageLabels, u64)>,
    watermark_lag: Vec<(TaskLabels, f64)>,
    restore_remaining: Vec<(TaskLabels, i64)>,
    late: Vec<(PipelineLabels, u64)>,
}

impl Gauges {
    fn read(pipelines: &[Arc<PipelineHandle>]) -> Self {
        let mut g = Gauges::default();
        let mut seen_counters: Vec<&Arc<crate::plugin::PluginCounters>> = Vec::new();
        for p in pipelines {
            let pipeline = p.name().to_owned();
            // Pipelines usually share one set of plugin counters: report each set once.
            if !seen_counters
                .iter()
                .any(|c| Arc::ptr_eq(c, &p.services.counters))
            {
                seen_counters.push(&p.services.counters);
                for (key, total) in p.services.counters.snapshot() {
                    let labels = PluginCounterLabels {
                        pipeline: key.pipeline,
                        stage: key.stage,
                        name: key.name,
                    };
                    g.plugin_counters
                        .push((labels, i64::try_from(total).unwrap_or(i64::MAX)));
                }
                for (pipeline, stage, dropped) in p.services.counters.names_dropped() {
                    g.counter_names_dropped
                        .push((StageLabels { pipeline, stage }, dropped));
                }
            }
            let in_flight = i64::try_from(p.status.tracker.in_flight()).unwrap_or(i64::MAX);
            g.in_flight.push((
                PipelineLabels {
                    pipeline: pipeline.clone(),
                },
                in_flight,
            ));
            for part in p.status.tracker.partitions() {
                if let Some(lag) = part.lag {
                    let labels = PartitionLabels {
                        pipeline: pipeline.clone(),
                        topic: part.topic,
                        partition: part.partition.to_string(),
                    };
                    g.consumer_lag.push((labels, lag));
                }
            }
            for stage in p.control.current().spec.stages() {
                let labels = VersionLabels {
                    pipeline: pipeline.clone(),
                    stage: stage.name.clone(),
                    version: stage.module.version.0.clone(),
                };
                g.plugin_info.push((labels, 1));
            }
            if let Some(view) = crate::admin::views::StateView::of(p) {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                for st in view.stages {
                    let labels = StageLabels {
                        pipeline: pipeline.clone(),
                        stage: st.stage,
                    };
                    g.state_keys.push((labels.clone(), n(st.keys)));
                    g.state_bytes.push((labels.clone(), n(st.bytes)));
                    g.state_timers.push((labels.clone(), n(st.timers)));
                    g.state_full.push((labels, st.state_full));
                }
                for task in view.tasks {
                    let labels = TaskLabels {
                        pipeline: pipeline.clone(),
                        task: task.task.to_string(),
                    };
                    if let Some(lag) = task.watermark_lag_ms {
                        g.watermark_lag.push((labels.clone(), lag as f64 / 1000.0));
                    }
                    if task.restoring {
                        let left =
                            task.restore_total.unwrap_or(0) - task.restored_records.unwrap_or(0);
                        g.restore_remaining.push((labels, left.max(0)));
                    }
                }
                g.late.push((
                    PipelineLabels {
                        pipeline: pipeline.clone(),
                    },
                    view.late_records,
                ));
            }
            let state = StateLabels {
                pipeline,
                state: p.state().into(),
            };
            g.pipeline_state.push((state, 1));
        }
        g
    }
}

impl Collector for PipelineGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = Gauges::read(&self.pipelines);
        gauge_family(
            &mut encoder,
            "consumer_lag_records",
            "Records between the first unfinished one and the end of the partition",
            &g.consumer_lag,
        )?;
        gauge_family(
            &mut encoder,
            "in_flight_records",
            "Records taken from Kafka and not yet finished",
            &g.in_flight,
        )?;
        gauge_family(
            &mut encoder,
            "plugin_info",
            "The active plugin version of each stage (value 1)",
            &g.plugin_info,
        )?;
        gauge_family(
            &mut encoder,
            "pipeline_state",
            "The pipeline's state (value 1)",
            &g.pipeline_state,
        )?;
        gauge_family(
            &mut encoder,
            "plugin_counter",
            "Running totals of the counters plugins keep with host::counter-add",
            &g.plugin_counters,
        )?;
        gauge_family(
            &mut encoder,
            "state_keys",
            "Keys a stateful stage holds in this process",
            &g.state_keys,
        )?;
        gauge_family(
            &mut encoder,
            "state_bytes",
            "Bytes of keys and values a stateful stage holds in this process",
            &g.state_bytes,
        )?;
        gauge_family(
            &mut encoder,
            "state_timers",
            "Timers a stateful stage has pending in this process",
            &g.state_timers,
        )?;
        gauge_family(
            &mut encoder,
            "state_restore_remaining_records",
            "Changelog records a task still has to read before its records are processed",
            &g.restore_remaining,
        )?;
        if !g.watermark_lag.is_empty() {
            let mut family = encoder.encode_descriptor(
                "watermark_lag_seconds",
                "Wall clock minus a task's watermark, as of its last batch.",
                None,
                MetricType::Gauge,
            )?;
            for (labels, lag) in &g.watermark_lag {
                ConstGauge::new(*lag).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, series) in [(
            "state_full",
            "Records dead-lettered because a write would have taken a stage's state past \
                 limits.max_state_bytes or limits.max_keys.",
            &g.state_full,
        )] {
            if series.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, n) in series {
                ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
            }
        }
        if !g.late.is_empty() {
            let mut family = encoder.encode_descriptor(
                "late_records",
                "Records that reached a stateful stage flagged late (below the watermark).",
                None,
                MetricType::Counter,
            )?;
            for (labels, n) in &g.late {
                ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
            }
        }
        if !g.counter_names_dropped.is_empty() {
            let mut family = encoder.encode_descriptor(
                "plugin_counter_names_dropped",
                "Counter names plugins passed to host::counter-add that were dropped: new names \
                 past a stage's limit of distinct names, and over-long names.",
                None,
                MetricType::Counter,
            )?;
            for (labels, dropped) in &g.counter_names_dropped {
                ConstCounter::new(*dropped).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Writes one gauge family; nothing at all when it has no series (as a registered family
/// with no series is left out).
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    series: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    // A registered metric's help ends with a full stop; the same here.
    let help = format!("{help}.");
    let mut family = encoder.encode_descriptor(name, &help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
