//! The scrape-time gauges: the same text as registered gauge families give, and every
//! concurrent scrape sees all of them.
//!
//! The pipeline here has one built-in stage (a JSON Schema validator), so no plugin and no
//! broker is needed: a pipeline is loaded, never run.

use super::*;
use crate::config::Config;
use crate::control::VersionStore;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::plugin::{EngineConfig, PluginEngine};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Loads one pipeline (not run) with one partition assigned: 1 record in flight, some lag.
fn state() -> Arc<AdminState> {
    static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-scrape-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("event.schema.json"), r#"{"type": "object"}"#).expect("schema");
    let text = r#"
        [kafka]
        brokers = "127.0.0.1:9"
        [[pipeline]]
        name = "events"
        topics = ["events"]
        default_route = "standard"
        dead_letter_topic = "events-dlq"
        [pipeline.routes]
        standard = "events-out"
        [[pipeline.stage]]
        name = "schema"
        json_schema = "event.schema.json"
    "#;
    let config = Config::parse(text, &dir, &|_| None).expect("config");
    let engine = PluginEngine::new(&EngineConfig::default()).expect("engine");
    let metrics = Arc::new(Metrics::new());
    let shared = pipeline::Shared::start(&config).expect("tables");
    let store = VersionStore::memory();
    let pipelines = pipeline::load(&config, engine, &metrics, &store, &shared).expect("load");
    let handles: Vec<_> = pipelines.iter().map(pipeline::Pipeline::handle).collect();
    let tracker = &handles[0].status.tracker;
    tracker.assign("events", 0);
    tracker.track("events", 0, 10).expect("assigned");
    tracker.set_high_watermark("events", 0, 42);
    Arc::new(AdminState::new(
        &config.admin,
        std::net::SocketAddr::from(([127, 0, 0, 1], 9644)),
        handles,
        shared.tables.clone(),
        metrics,
    ))
}

/// The gauges as registered families used to encode them, filled from the same pipelines.
fn as_families(st: &AdminState) -> String {
    let g = Gauges::read(&st.pipelines);
    let mut registry = Registry::with_prefix(Metrics::PREFIX);
    fn register<L>(registry: &mut Registry, name: &str, help: &str, series: Vec<(L, i64)>)
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family = Family::<L, Gauge>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).set(value);
        }
        registry.register(name, help, family);
    }
    register(
        &mut registry,
        "consumer_lag_records",
        "Records between the first unfinished one and the end of the partition",
        g.consumer_lag,
    );
    register(
        &mut registry,
        "in_flight_records",
        "Records taken from Kafka and not yet finished",
        g.in_flight,
    );
    register(
        &mut registry,
        "plugin_info",
        "The active plugin version of each stage (value 1)",
        g.plugin_info,
    );
    register(
        &mut registry,
        "pipeline_state",
        "The pipeline's state (value 1)",
        g.pipeline_state,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &registry).expect("encodes");
    out
}

#[test]
fn the_gauges_read_as_registered_families_did() {
    let st = state();
    let scraped = st.scrape();
    let families = as_families(&st);
    assert!(families.contains("switchyard_consumer_lag_records{"));
    assert!(
        scraped.contains(&families),
        "scrape:\n{scraped}\nfamilies:\n{families}"
    );
    let chain = st.pipelines[0].control.current();
    let version = &chain.spec.stages()[0].module.version.0;
    let lag = st.pipelines[0].status.tracker.partitions()[0]
        .lag
        .expect("a high watermark is known");
    for line in [
        "# HELP switchyard_consumer_lag_records Records between the first unfinished one and the end of the partition.",
        "# TYPE switchyard_consumer_lag_records gauge",
        &format!(
            r#"switchyard_consumer_lag_records{{pipeline="events",topic="events",partition="0"}} {lag}"#
        ),
        r#"switchyard_in_flight_records{pipeline="events"} 1"#,
        &format!(
            r#"switchyard_plugin_info{{pipeline="events",stage="schema",version="{version}"}} 1"#
        ),
        r#"switchyard_pipeline_state{pipeline="events",state="stopped"} 1"#,
    ] {
        assert!(scraped.lines().any(|l| l == line), "{line}\n{scraped}");
    }
    // No counter was ever added: the family is left out, as an empty registered one is.
    assert!(!scraped.contains("switchyard_plugin_counter"), "{scraped}");
    assert_eq!(scraped.matches("# EOF").count(), 1);
    assert!(scraped.ends_with("# EOF\n"));
}

/// Scrapes at once, from several threads, each see every gauge (clearing and refilling
/// shared families made a scrape that encoded while another one had just cleared them miss
/// series).
#[test]
fn concurrent_scrapes_each_see_every_gauge() {
    let st = state();
    let expected: Vec<String> = st
        .scrape()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            ["lag", "in_flight", "plugin_info", "pipeline_state"]
                .iter()
                .any(|g| l.contains(g))
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(expected.len(), 4, "{expected:?}");
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let st = st.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let text = st.scrape();
                    for line in &expected {
                        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
                    }
                }
            })
        })
        .collect();
    for scraper in scrapers {
        scraper.join().expect("every scrape saw every gauge");
    }
}

/// A plugin's counter name is a label value: quotes, newlines and backslashes in it are
/// escaped, so it cannot end a sample line early or forge another series; names dropped past
/// a stage's limit are counted in their own family.
#[test]
fn plugin_counter_names_cannot_break_the_scrape_and_drops_are_counted() {
    use crate::plugin::host_api::{MAX_COUNTER_NAMES, PendingCounters, Tags};
    let st = state();
    let tags = Tags {
        pipeline: "events".into(),
        stage: "schema".into(),
    };
    let mut pending = PendingCounters::default();
    pending.add("quote\"} 1\nforged{x=\"y\\".into(), 2);
    // 99 more names fill the stage's 100; the last is dropped.
    for i in 0..MAX_COUNTER_NAMES {
        pending.add(format!("n{i}"), 1);
    }
    st.pipelines[0].services.counters.fold(&tags, &mut pending);
    let scraped = st.scrape();
    let escaped = r#"switchyard_plugin_counter{pipeline="events",stage="schema",name="quote\"} 1\nforged{x=\"y\\"} 2"#;
    assert!(scraped.lines().any(|l| l == escaped), "{scraped}");
    assert!(
        !scraped.lines().any(|l| l.starts_with("forged")),
        "{scraped}"
    );
    assert!(
        scraped.lines().any(|l| l
            == r#"switchyard_plugin_counter_names_dropped_total{pipeline="events",stage="schema"} 1"#),
        "{scraped}"
    );
    assert!(scraped.contains("# TYPE switchyard_plugin_counter_names_dropped counter"));
}
