//! The Prometheus metrics the admin API serves at `/metrics`, registered once per process.
//!
//! The hot path only touches pre-resolved handles (an atomic add, or a histogram bucket).
//! Gauges that describe state (lag, in-flight, versions, pipeline state, plugin counters) are
//! not stored here: the admin API reads them from the pipelines on each scrape
//! ([`crate::admin`]'s metrics collector) and passes them to [`Metrics::encode_with`]. The
//! label sets of those gauges are defined here with the others.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a pipeline-wide metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// Pipeline name.
    pub pipeline: String,
}

/// Labels of a per-route metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Route name.
    pub route: String,
}

/// Labels of a per-stage metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
}

/// Labels of a per-task metric (stateful pipelines).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Task: the source partition number.
    pub task: String,
}

/// Labels of a per-stage, per-error-kind metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name (empty for records the broker refused).
    pub stage: String,
    /// Error kind (`trap`, `timeout`, `memory`, `bad-output`, `rejected`, `undeliverable`).
    pub kind: String,
}

/// Labels of a per-partition metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: String,
}

/// Labels of the active plugin version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// sha256 of the component.
    pub version: String,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// `ok` or `rejected`.
    pub result: String,
}

/// Labels of a counter a plugin keeps.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCounterLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// The name the plugin gave it.
    pub name: String,
}

/// Labels of the pipeline state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// `running`, `paused` or `degraded`.
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    // 10 µs .. ~5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the process, registered once.
pub struct Metrics {
    registry: Registry,
    /// Records taken from Kafka.
    pub records_in: Family<PipelineLabels, Counter>,
    /// Records acknowledged on a route's topic.
    pub records_out: Family<RouteLabels, Counter>,
    /// Records the chain dropped.
    pub records_dropped: Family<PipelineLabels, Counter>,
    /// Records dead-lettered, by stage and error kind.
    pub dead_lettered: Family<KindLabels, Counter>,
    /// Plugin calls that trapped, timed out or hit the memory cap.
    pub plugin_failures: Family<KindLabels, Counter>,
    /// Duration of each plugin call (a batch).
    pub plugin_call_seconds: HistogramFamily<StageLabels>,
    /// Record timestamp -> produce acknowledgement.
    pub end_to_end_seconds: HistogramFamily<PipelineLabels>,
    /// Produce attempts retried.
    pub produce_retries: Family<PipelineLabels, Counter>,
    /// Refused writes not retried because their source partition was revoked.
    pub retries_dropped: Family<PipelineLabels, Counter>,
    /// Plugin uploads and rollbacks, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Source offsets skipped where the next record was expected (records the broker lost).
    pub source_gaps: Family<PipelineLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The prefix of every metric name.
    pub const PREFIX: &'static str = "switchyard";

    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(Self::PREFIX);
        let m = Metrics {
            records_in: Family::default(),
            records_out: Family::default(),
            records_dropped: Family::default(),
            dead_lettered: Family::default(),
            plugin_failures: Family::default(),
            plugin_call_seconds: Family::new_with_constructor(call_histogram),
            end_to_end_seconds: Family::new_with_constructor(latency_histogram),
            produce_retries: Family::default(),
            retries_dropped: Family::default(),
            reloads: Family::default(),
            source_gaps: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_in",
            "Records taken from Kafka",
            m.records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records acknowledged on a route's topic",
            m.records_out.clone(),
        );
        registry.register(
            "records_dropped",
            "Records a stage dropped",
            m.records_dropped.clone(),
        );
        registry.register(
            "dead_lettered",
            "Records dead-lettered, by stage and error kind",
            m.dead_lettered.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that trapped, timed out or hit the memory cap, by kind",
            m.plugin_failures.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Duration of one plugin call (one batch)",
            m.plugin_call_seconds.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "Record timestamp to produce acknowledgement",
            m.end_to_end_seconds.clone(),
        );
        registry.register(
            "produce_retries",
            "Produce attempts that failed and were retried",
            m.produce_retries.clone(),
        );
        registry.register(
            "produce_retries_dropped",
            "Refused writes not retried because their source partition was revoked (its new owner writes them again)",
            m.retries_dropped.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Plugin uploads and rollbacks, by result",
            m.reloads.clone(),
        );
        registry.register(
            "source_gaps",
            "Times a source partition's next record came after the offset expected (after an assignment, a pause or a seek) on a topic neither compacted nor exempted: records the broker lost",
            m.source_gaps.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        self.encode_with(&Registry::default())
    }

    /// The OpenMetrics text exposition of every metric and of `scraped` (metrics produced
    /// for this scrape only, such as a collector's), in one document.
    pub fn encode_with(&self, scraped: &Registry) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, scraped))
            .and_then(|()| encode_eof(&mut out));
        out
    }

    /// Pre-resolved handles for one pipeline's hot path.
    pub fn pipeline(&self, pipeline: &str, routes: &[String]) -> PipelineMetrics {
        let labels = PipelineLabels {
            pipeline: pipeline.to_owned(),
        };
        PipelineMetrics {
            pipeline: pipeline.to_owned(),
            records_in: self.records_in.get_or_create_owned(&labels),
            records_dropped: self.records_dropped.get_or_create_owned(&labels),
            produce_retries: self.produce_retries.get_or_create_owned(&labels),
            retries_dropped: self.retries_dropped.get_or_create_owned(&labels),
            source_gaps: self.source_gaps.get_or_create_owned(&labels),
            end_to_end: self.end_to_end_seconds.get_or_create_owned(&labels),
            records_out: routes
                .iter()
                .map(|route| {
                    self.records_out.get_or_create_owned(&RouteLabels {
                        pipeline: pipeline.to_owned(),
                        route: route.clone(),
                    })
                })
                .collect(),
            dead_lettered: self.dead_lettered.clone(),
            plugin_failures: self.plugin_failures.clone(),
            plugin_call_seconds: self.plugin_call_seconds.clone(),
        }
    }
}

/// One pipeline's metric handles.
#[derive(Clone)]
pub struct PipelineMetrics {
    pipeline: String,
    /// Records taken from Kafka.
    pub records_in: Counter,
    /// Records dropped by the chain.
    pub records_dropped: Counter,
    /// Produce retries.
    pub produce_retries: Counter,
    /// Refused writes of revoked partitions, not retried.
    pub retries_dropped: Counter,
    /// Gaps in source offsets.
    pub source_gaps: Counter,
    /// End-to-end latency.
    pub end_to_end: Histogram,
    /// Records acknowledged per route, indexed by route id.
    pub records_out: Vec<Counter>,
    dead_lettered: Family<KindLabels, Counter>,
    plugin_failures: Family<KindLabels, Counter>,
    plugin_call_seconds: HistogramFamily<StageLabels>,
}

impl PipelineMetrics {
    /// Handles that record nowhere (for tests and tools that run a pipeline's parts alone).
    pub fn detached(pipeline: &str, routes: &[String]) -> Self {
        Metrics::new().pipeline(pipeline, routes)
    }

    /// A record was dead-lettered by `stage` (empty: refused by the broker) with `kind`.
    pub fn dead_lettered(&self, stage: &str, kind: &str) {
        let labels = KindLabels {
            pipeline: self.pipeline.clone(),
            stage: stage.to_owned(),
            kind: kind.to_owned(),
        };
        self.dead_lettered.get_or_create(&labels).inc();
        if matches!(kind, "trap" | "timeout" | "memory") {
            self.plugin_failures.get_or_create(&labels).inc();
        }
    }

    /// The call-duration histogram of each stage, in order.
    pub fn call_histograms(&self, stages: &[String]) -> Vec<Histogram> {
        stages
            .iter()
            .map(|stage| {
                self.plugin_call_seconds.get_or_create_owned(&StageLabels {
                    pipeline: self.pipeline.clone(),
                    stage: stage.clone(),
                })
            })
            .collect()
    }
}
