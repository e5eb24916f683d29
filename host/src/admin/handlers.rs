//! The handlers of health, pipelines, plugin changes and tables. Each one checks the
//! caller and the path, hands the work to its owner (the reloader, the tables, the pipeline's
//! flags) and shapes the answer from [`super::views`].

use super::error::{ApiError, ApiResult};
use super::guard::{Caller, require_no_body, require_type};
use super::views::{
    PipelineStateView, PipelineView, PipelinesView, ReadyView, SwitchedView, TablesView,
    VersionsView,
};
use super::{AdminState, blocking};
use crate::control::Reloader;
use crate::control::reload::audit;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(st): State<Arc<AdminState>>) -> Response {
    let mut problems = Vec::new();
    for table in st.tables.pending() {
        problems.push(format!("table {table}: catching up with its topic"));
    }
    for p in &st.pipelines {
        if !p.consuming.load(Ordering::Acquire) {
            problems.push(format!("pipeline {}: not consuming", p.name()));
        }
        if let Some(why) = p.status.health.fatal() {
            problems.push(format!("pipeline {}: {why}", p.name()));
        }
        if let Some(state) = crate::admin::views::StateView::of(p) {
            let restoring: Vec<String> = state
                .tasks
                .iter()
                .filter(|t| t.restoring)
                .map(|t| {
                    format!(
                        "{} ({} of {} records)",
                        t.task,
                        t.restored_records.unwrap_or(0),
                        t.restore_total.unwrap_or(0)
                    )
                })
                .collect();
            if !restoring.is_empty() {
                problems.push(format!(
                    "pipeline {}: restoring the state of tasks {} from {}",
                    p.name(),
                    restoring.join(", "),
                    state.changelog_topic
                ));
            }
        }
        if p.status.health.dead_letter_failing.load(Ordering::Acquire) {
            problems.push(format!(
                "pipeline {}: dead-letter writes are failing",
                p.name()
            ));
        }
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let ready = ReadyView {
        ready: problems.is_empty(),
        problems,
    };
    (status, Json(ready)).into_response()
}

pub(super) async fn list_tables(State(st): State<Arc<AdminState>>) -> Json<TablesView> {
    Json(TablesView {
        tables: st.tables.describe(),
    })
}

pub(super) async fn reload_table(
    State(st): State<Arc<AdminState>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    require_no_body(&headers)?;
    let tables = st.tables.clone();
    let (name, result) = blocking("table reload", move || {
        let known: Vec<String> = tables
            .describe()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        tables
            .reload(&name)
            .ok_or_else(|| no_table(&name, &known))
            .map(|r| (name, r))
    })
    .await?;
    match result {
        Ok(described) => {
            audit(&who, "table-reload", "", &name, "", "ok");
            Ok(Json(described))
        }
        Err(e) => {
            audit(&who, "table-reload", "", &name, "", "failed");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("table {name} keeps its rows: {e}"),
            ))
        }
    }
}

fn no_table(name: &str, known: &[String]) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no table {name:?} (tables: {})", known.join(", ")),
    )
}

pub(super) async fn list_pipelines(State(st): State<Arc<AdminState>>) -> Json<PipelinesView> {
    Json(PipelinesView {
        pipelines: st.pipelines.iter().map(|p| PipelineView::of(p)).collect(),
    })
}

pub(super) async fn show_pipeline(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<PipelineView>> {
    Ok(Json(PipelineView::of(st.pipeline(&name)?)))
}

pub(super) async fn pause(
    State(st): State<Arc<AdminState>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<PipelineStateView>> {
    set_paused(&st, &who, &name, &headers, true)
}

pub(super) async fn resume(
    State(st): State<Arc<AdminState>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<PipelineStateView>> {
    set_paused(&st, &who, &name, &headers, false)
}

fn set_paused(
    st: &AdminState,
    who: &str,
    name: &str,
    headers: &HeaderMap,
    paused: bool,
) -> ApiResult<Json<PipelineStateView>> {
    require_no_body(headers)?;
    let p = st.pipeline(name)?;
    p.paused.store(paused, Ordering::Release);
    let action = if paused { "pause" } else { "resume" };
    audit(who, action, name, "", "", "ok");
    Ok(Json(PipelineStateView {
        pipeline: name.to_owned(),
        state: p.state().to_owned(),
    }))
}

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    /// A JSON object of string values: the new config map. Absent: keep the current one.
    config: Option<String>,
    /// A stateful stage starts the new version with empty state (audited).
    #[serde(default)]
    reset_state: bool,
}

pub(super) async fn upload(
    State(st): State<Arc<AdminState>>,
    Extension(Caller(who)): Extension<Caller>,
    Path((pipeline, stage)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<SwitchedView>> {
    // Refused before a byte of the body is read: the wrong caller (the guard), the wrong
    // content type, the wrong stage, a declared size over the limit.
    require_type(&headers, &["application/wasm", "application/octet-stream"])?;
    let (p, index) = st.stage(&pipeline, &stage)?;
    Reloader::check_stage(&p, index)?;
    let limit = st.max_upload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than admin.max_upload_bytes ({limit} bytes)"),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large());
    }
    let config = match &query.config {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("config must be a JSON object of string values: {e}"),
                )
            })?,
        ),
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the upload: {e}"),
            )
        }
    })?;
    let mut history = p.stages[index].clone().lock_owned().await;
    let reloader = st.reloader.clone();
    blocking("upload", move || {
        let reset = query.reset_state;
        let switched =
            reloader.upload_with(&p, index, &mut history, &bytes, config, &who, reset)?;
        Ok(Json(switched.into()))
    })
    .await
}

pub(super) async fn rollback(
    State(st): State<Arc<AdminState>>,
    Extension(Caller(who)): Extension<Caller>,
    Path((pipeline, stage)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<SwitchedView>> {
    require_no_body(&headers)?;
    let (p, index) = st.stage(&pipeline, &stage)?;
    Reloader::check_stage(&p, index)?;
    let mut history = p.stages[index].clone().lock_owned().await;
    let reloader = st.reloader.clone();
    blocking("rollback", move || {
        let switched = reloader.rollback(&p, index, &mut history, &who)?;
        Ok(Json(switched.into()))
    })
    .await
}

pub(super) async fn versions(
    State(st): State<Arc<AdminState>>,
    Path((pipeline, stage)): Path<(String, String)>,
) -> ApiResult<Json<VersionsView>> {
    let (p, index) = st.stage(&pipeline, &stage)?;
    let history = p.stages[index].lock().await;
    Ok(Json(VersionsView::of(&history)))
}
