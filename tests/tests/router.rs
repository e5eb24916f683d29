//! The route table of a chain: every route the chain declares needs a topic, and the
//! provenance header names each stage's compiled plugin version. (The router's cases, which
//! need no plugin, are unit tests in `host/src/router.rs`.)

use std::collections::BTreeMap;
use switchyard::config::DeadLetterFormat;
use switchyard::plugin::{ChainSpec, Destination, Header, InputRecord, RouteId};
use switchyard::router::{RouteError, Router, Source};
use switchyard_tests::{module, stage};

fn spec() -> ChainSpec {
    ChainSpec::new(
        "orders",
        vec!["standard".into(), "urgent".into()],
        "standard",
        vec![stage("validate", "noop", &[]), stage("route", "route", &[])],
    )
    .expect("valid chain")
}

fn topics() -> BTreeMap<String, String> {
    [("standard", "orders-standard"), ("urgent", "orders-urgent")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn the_provenance_header_names_each_stages_version() {
    let router = Router::for_chain(&spec(), &topics(), "orders-dlq", DeadLetterFormat::Headers)
        .expect("router");
    let record = InputRecord {
        offset: 1,
        timestamp_ms: None,
        key: None,
        value: None,
        headers: Vec::new(),
    };
    let source = Source {
        topic: "orders",
        partition: 0,
    };
    let destination = Destination::Route {
        route: RouteId(1),
        record,
    };
    let out = router.route(source, destination, 0);
    assert_eq!(&*out.topic, "orders-urgent");
    let versions = format!(
        "validate={},route={}",
        module("noop").version,
        module("route").version
    );
    let header = |key: &str| -> Option<Vec<u8>> {
        out.headers
            .iter()
            .find(|h: &&Header| h.key == key)
            .and_then(|h| h.value.clone())
    };
    assert_eq!(header("switchyard-versions"), Some(versions.into_bytes()));
    assert_eq!(header("switchyard-pipeline"), Some(b"orders".to_vec()));
}

#[test]
fn every_route_needs_a_topic() {
    let mut partial = topics();
    partial.remove("urgent");
    let e = Router::for_chain(&spec(), &partial, "dlq", DeadLetterFormat::Headers).unwrap_err();
    assert_eq!(
        e,
        RouteError::NoTopic {
            route: "urgent".into()
        }
    );
    assert_eq!(e.to_string(), "route `urgent` has no topic");
}
