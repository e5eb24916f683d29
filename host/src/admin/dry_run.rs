//! `POST /api/v1/pipelines/{p}/dry-run`: sample records through the live chain and router,
//! answered with each record's verdicts and outputs; nothing is written to Kafka.

use super::error::{ApiError, ApiResult};
use super::guard::require_type;
use super::{AdminState, blocking};
use crate::pipeline::PipelineHandle;
use crate::plugin::sample::{self, SampleRecord};
use crate::plugin::{ChainRunner, Destination};
use crate::router::Source;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most records one dry run takes.
pub const DRY_RUN_MAX_RECORDS: usize = 10_000;
/// Largest dry-run body.
const DRY_RUN_MAX_BYTES: usize = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunRequest {
    records: Vec<SampleRecord>,
}

pub(super) async fn dry_run(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    // The caller was checked by the guard.
    require_type(&headers, &["application/json"])?;
    let p = st.pipeline(&name)?.clone();
    let bytes = axum::body::to_bytes(body, DRY_RUN_MAX_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request (at most {DRY_RUN_MAX_BYTES} bytes): {e}"),
            )
        })?;
    let request: DryRunRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"records\": [{{\"key\": .., \"value\": .., \"headers\": {{..}}}}]}}: {e}"),
        )
    })?;
    if request.records.len() > DRY_RUN_MAX_RECORDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("at most {DRY_RUN_MAX_RECORDS} records per dry run"),
        ));
    }
    blocking("dry run", move || run_dry(&p, request)).await
}

fn run_dry(p: &PipelineHandle, request: DryRunRequest) -> ApiResult<Json<Value>> {
    let active = p.control.current();
    let topic = request
        .records
        .first()
        .and_then(|r| r.topic.clone())
        .or_else(|| p.config.topics().first().cloned())
        .unwrap_or_else(|| "dry-run".into());
    let partition = request.records.first().map_or(0, |r| r.partition);
    let records = request
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.into_input(i as i64)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("records[{i}].{e}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let unavailable = |e: crate::plugin::StageLoadError| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    };
    let mut runner = ChainRunner::new(p.engine.clone(), active.spec.clone(), p.services.clone())
        .map_err(unavailable)?;
    let explained = sample::explain(&mut runner, &active.spec, &topic, partition, records)
        .map_err(unavailable)?;
    let now = crate::kafka::now_ms();
    let source = Source {
        topic: &topic,
        partition,
    };
    let out: Vec<Value> = explained
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let mut outputs = Vec::new();
            let mut dead_letter = Value::Null;
            for d in e.deliveries {
                let (route, dead) = match &d.destination {
                    Destination::Route { route, .. } => {
                        (Some(active.spec.route_name(*route).to_owned()), None)
                    }
                    Destination::DeadLetter(dead) => (
                        None,
                        Some(json!({
                            "stage": dead.stage_name, "kind": dead.error.kind.as_str(),
                            "reason": dead.error.message, "version": dead.version.0,
                        })),
                    ),
                };
                let o = active.router.route(source, d.destination, now);
                let record = json!({
                    "route": route,
                    "topic": &*o.topic,
                    "key": o.key.as_deref().map(sample::bytes_json),
                    "value": o.value.as_deref().map(sample::bytes_json),
                    "headers": sample::headers_json(&o.headers),
                });
                match dead {
                    Some(mut dead) => {
                        dead["record"] = record;
                        dead_letter = dead;
                    }
                    None => outputs.push(record),
                }
            }
            json!({
                "index": index, "stages": e.stages, "outputs": outputs, "dead_letter": dead_letter,
            })
        })
        .collect();
    Ok(Json(json!({
        "pipeline": p.name(),
        "versions": active.spec.stages().iter().map(|s| json!({"stage": s.name, "version": s.module.version.0})).collect::<Vec<_>>(),
        "written": false,
        "records": out,
    })))
}
