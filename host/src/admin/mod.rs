//! The admin HTTP API (axum): hot reload, rollback, version history, pause, dry-run, health,
//! readiness and Prometheus metrics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | the process is alive |
//! | GET | `/readyz` | every table is loaded and caught up, every pipeline consumes, dead-letter writes work |
//! | GET | `/metrics` | Prometheus (OpenMetrics text) |
//! | GET | `/api/v1/pipelines`, `/api/v1/pipelines/{p}` | state, stages and versions, routes, counters, lag |
//! | PUT | `/api/v1/pipelines/{p}/stages/{s}/plugin` | upload a component (body), optional `?config=<JSON object>` |
//! | POST | `/api/v1/pipelines/{p}/stages/{s}/rollback` | back to the previous version |
//! | GET | `/api/v1/pipelines/{p}/stages/{s}/versions` | active, rollback stack, history |
//! | POST | `/api/v1/pipelines/{p}/pause`, `/resume` | stop or restart consuming |
//! | POST | `/api/v1/pipelines/{p}/dry-run` | run sample records through the live chain; nothing is written |
//! | GET | `/api/v1/tables` | every enrichment table: rows, bytes, source, last update, last error, ready |
//! | POST | `/api/v1/tables/{t}/reload` | read a file table again (422 with the reason if it cannot be loaded; the old rows stay) |
//!
//! Every request other than GET needs `Authorization: Bearer <token>` when tokens are
//! configured (they must be on a non-loopback address). An upload is compiled, type-checked,
//! instantiated and its `init` run off the hot path; only then is it published, and the
//! answer comes once every worker runs it. Uploads to one stage are serialized. Each change
//! is logged as an audit line (target `switchyard::audit`).

use crate::control::{StageHistory, config_pairs};
use crate::metrics::{
    Metrics, PartitionLabels, PipelineLabels, PluginCounterLabels, ReloadLabels, StateLabels,
    VersionLabels,
};
use crate::pipeline::PipelineHandle;
use crate::plugin::sample::{self, SampleRecord};
use crate::plugin::{ChainRunner, ChainSpec, Destination, LoadError, PluginModule, StageSpec};
use crate::router::Source;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most records one dry run takes.
pub const DRY_RUN_MAX_RECORDS: usize = 10_000;
/// Largest dry-run body.
const DRY_RUN_MAX_BYTES: usize = 16 << 20;

/// What the handlers share.
pub struct AdminState {
    /// Every pipeline.
    pub pipelines: Vec<Arc<PipelineHandle>>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Bearer tokens by name; empty: changes need none (loopback only).
    pub tokens: BTreeMap<String, String>,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// Longest wait for every worker to switch.
    pub switch_timeout: Duration,
}

/// An error answer: a status and a sentence, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The API's routes.
pub fn router(state: Arc<AdminState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/pipelines", get(list_pipelines))
        .route("/api/v1/pipelines/{p}", get(show_pipeline))
        .route("/api/v1/pipelines/{p}/pause", post(pause))
        .route("/api/v1/pipelines/{p}/resume", post(resume))
        .route("/api/v1/pipelines/{p}/dry-run", post(dry_run))
        .route("/api/v1/pipelines/{p}/stages/{s}/plugin", put(upload))
        .route("/api/v1/pipelines/{p}/stages/{s}/rollback", post(rollback))
        .route("/api/v1/pipelines/{p}/stages/{s}/versions", get(versions))
        .route("/api/v1/tables", get(list_tables))
        .route("/api/v1/tables/{t}/reload", post(reload_table))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/pipelines, /api/v1/tables, /healthz, /readyz, /metrics",
            )
        })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The admin API running on a runtime; [`Serving::stop`] ends it.
pub struct Serving {
    /// The address it listens on.
    pub address: std::net::SocketAddr,
    stop: Arc<tokio::sync::Notify>,
}

impl Serving {
    /// Stops serving (requests in progress finish).
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// Binds `config.listen` and serves the API for `pipelines` on `runtime`. The bind happens
/// now, so a taken port fails here, naming the key.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::AdminConfig,
    pipelines: Vec<Arc<PipelineHandle>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Serving> {
    use anyhow::Context as _;
    let address = config.address()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("admin.listen: cannot listen on {address}"))?;
    let address = listener.local_addr().unwrap_or(address);
    let state = Arc::new(AdminState {
        pipelines,
        metrics,
        tokens: config.tokens.clone(),
        max_upload_bytes: config.max_upload_bytes,
        switch_timeout: Duration::from_millis(config.switch_timeout_ms),
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let notified = stop.clone();
    runtime.spawn(async move {
        let shutdown = async move { notified.notified().await };
        if let Err(e) = serve(listener, state, shutdown).await {
            tracing::error!(error = %format!("{e:#}"), "The admin API stopped.");
        }
    });
    Ok(Serving { address, stop })
}

impl AdminState {
    fn pipeline(&self, name: &str) -> ApiResult<&Arc<PipelineHandle>> {
        self.pipelines
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.pipelines.iter().map(|p| p.name()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no pipeline {name:?} (pipelines: {})", names.join(", ")),
                )
            })
    }

    fn stage(&self, pipeline: &str, stage: &str) -> ApiResult<(Arc<PipelineHandle>, usize)> {
        let p = self.pipeline(pipeline)?;
        let index = p
            .config
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| {
                let names: Vec<&str> = p.config.stages.iter().map(|s| s.name.as_str()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "pipeline {pipeline} has no stage {stage:?} (stages: {})",
                        names.join(", ")
                    ),
                )
            })?;
        Ok((p.clone(), index))
    }

    /// The tables every pipeline shares.
    fn tables(&self) -> Option<Arc<crate::tables::TableSet>> {
        self.pipelines.first().map(|p| p.tables.clone())
    }

    /// A stage that runs a plugin: built-in stages take no upload or rollback.
    fn plugin_stage(&self, pipeline: &str, stage: &str) -> ApiResult<(Arc<PipelineHandle>, usize)> {
        let (p, index) = self.stage(pipeline, stage)?;
        if let crate::config::StageCode::JsonSchema(schema) = &p.config.stages[index].code {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "stage {stage} of pipeline {pipeline} is the built-in json-schema validator \
                     (schema file {}); it takes no plugin: change the schema file and restart",
                    schema.display()
                ),
            ));
        }
        Ok((p, index))
    }

    /// Who is asking: the name of the token presented. Without configured tokens, anyone on
    /// the loopback address (`anonymous`).
    fn authorize(&self, headers: &HeaderMap) -> ApiResult<String> {
        if self.tokens.is_empty() {
            return Ok("anonymous".into());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs an Authorization: Bearer <token> header",
                )
            })?;
        self.tokens
            .iter()
            .find(|(_, token)| constant_time_eq(token.as_bytes(), presented.as_bytes()))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "the bearer token is not valid"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn audit(who: &str, action: &str, pipeline: &str, stage: &str, version: &str, result: &str) {
    tracing::info!(
        target: "switchyard::audit",
        who, action, pipeline, stage, version, result, "Audit."
    );
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<AdminState>>) -> Response {
    let mut problems = Vec::new();
    if let Some(tables) = st.tables() {
        for table in tables.pending() {
            problems.push(format!("table {table}: catching up with its topic"));
        }
    }
    for p in &st.pipelines {
        if !p.consuming.load(Ordering::Acquire) {
            problems.push(format!("pipeline {}: not consuming", p.name()));
        }
        if let Some(why) = p.status.health.fatal() {
            problems.push(format!("pipeline {}: {why}", p.name()));
        }
        if p.status.health.dead_letter_failing.load(Ordering::Acquire) {
            problems.push(format!(
                "pipeline {}: dead-letter writes are failing",
                p.name()
            ));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

async fn list_tables(State(st): State<Arc<AdminState>>) -> Json<Value> {
    let tables = st.tables().map(|t| t.describe()).unwrap_or_default();
    Json(json!({ "tables": tables }))
}

async fn reload_table(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let who = st.authorize(&headers)?;
    let tables = st.tables().ok_or_else(|| no_table(&name, &[]))?;
    let result = blocking("table reload", move || {
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
    let (name, result) = result;
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

async fn metrics(State(st): State<Arc<AdminState>>) -> Response {
    let m = &st.metrics;
    m.consumer_lag.clear();
    m.plugin_info.clear();
    m.pipeline_state.clear();
    m.plugin_counters.clear();
    let mut seen_counters: Vec<&Arc<crate::plugin::PluginCounters>> = Vec::new();
    for p in &st.pipelines {
        // Pipelines usually share one set of plugin counters: report each set once.
        if !seen_counters
            .iter()
            .any(|c| Arc::ptr_eq(c, &p.services.counters))
        {
            seen_counters.push(&p.services.counters);
            for (key, total) in p.services.counters.snapshot() {
                m.plugin_counters
                    .get_or_create(&PluginCounterLabels {
                        pipeline: key.pipeline,
                        stage: key.stage,
                        name: key.name,
                    })
                    .set(i64::try_from(total).unwrap_or(i64::MAX));
            }
        }
    }
    for p in &st.pipelines {
        let pipeline = p.name().to_owned();
        m.in_flight
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.clone(),
            })
            .set(p.status.tracker.in_flight() as i64);
        for part in p.status.tracker.partitions() {
            if let Some(lag) = part.lag {
                m.consumer_lag
                    .get_or_create(&PartitionLabels {
                        pipeline: pipeline.clone(),
                        topic: part.topic.clone(),
                        partition: part.partition.to_string(),
                    })
                    .set(lag);
            }
        }
        for stage in p.control.current().spec.stages() {
            m.plugin_info
                .get_or_create(&VersionLabels {
                    pipeline: pipeline.clone(),
                    stage: stage.name.clone(),
                    version: stage.module.version.0.clone(),
                })
                .set(1);
        }
        m.pipeline_state
            .get_or_create(&StateLabels {
                pipeline,
                state: p.state().into(),
            })
            .set(1);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn list_pipelines(State(st): State<Arc<AdminState>>) -> Json<Value> {
    let mut out = Vec::new();
    for p in &st.pipelines {
        out.push(describe(p).await);
    }
    Json(json!({ "pipelines": out }))
}

async fn show_pipeline(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(describe(st.pipeline(&name)?).await))
}

async fn describe(p: &PipelineHandle) -> Value {
    let active = p.control.current();
    let mut stages = Vec::new();
    for (stage, history) in active.spec.stages().iter().zip(&p.stages) {
        let mut entry = json!({
            "name": stage.name,
            "version": stage.module.version.0,
            "size_bytes": stage.module.size,
        });
        if let Some(kind) = stage.module.builtin() {
            entry["builtin"] = json!(kind);
        }
        match history.try_lock() {
            Ok(h) => {
                entry["loaded_at_ms"] = json!(h.active.loaded_at_ms);
                entry["loaded_by"] = json!(h.active.by);
                entry["origin"] = json!(h.active.origin);
                entry["config"] = json!(h.active.config);
                entry["rollback_to"] = json!(h.previous.last().map(|r| &r.version));
            }
            Err(_) => entry["change_in_progress"] = json!(true),
        }
        stages.push(entry);
    }
    let counters = p.status.counters.snapshot();
    let partitions: Vec<Value> = p
        .status
        .tracker
        .partitions()
        .into_iter()
        .map(|s| {
            json!({
                "topic": s.topic, "partition": s.partition, "in_flight": s.in_flight,
                "committed": s.committed, "position": s.position,
                "high_watermark": s.high_watermark, "lag": s.lag,
            })
        })
        .collect();
    json!({
        "name": p.name(),
        "state": p.state(),
        "problem": p.status.health.fatal(),
        "dead_letter_failing": p.status.health.dead_letter_failing.load(Ordering::Acquire),
        "group": p.config.group(),
        "topics": p.config.topics(),
        "topic_pattern": p.config.topic_pattern(),
        "routes": p.config.routes,
        "default_route": p.config.default_route,
        "dead_letter_topic": p.config.dead_letter_topic,
        "chain_generation": active.generation,
        "workers": p.control.live_workers(),
        "stages": stages,
        "counters": {
            "consumed": counters.consumed, "dropped": counters.dropped,
            "routed": counters.routed, "dead_lettered": counters.dead_lettered,
            "undeliverable": counters.undeliverable, "produce_retries": counters.produce_retries,
        },
        "in_flight": p.status.tracker.in_flight(),
        "partitions": partitions,
    })
}

async fn pause(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    set_paused(&st, &name, &headers, true)
}

async fn resume(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    set_paused(&st, &name, &headers, false)
}

fn set_paused(
    st: &AdminState,
    name: &str,
    headers: &HeaderMap,
    paused: bool,
) -> ApiResult<Json<Value>> {
    let who = st.authorize(headers)?;
    let p = st.pipeline(name)?;
    p.paused.store(paused, Ordering::Release);
    let action = if paused { "pause" } else { "resume" };
    audit(&who, action, name, "", "", "ok");
    Ok(Json(json!({ "pipeline": name, "state": p.state() })))
}

#[derive(Deserialize)]
struct UploadQuery {
    /// A JSON object of string values: the new config map. Absent: keep the current one.
    config: Option<String>,
}

async fn upload(
    State(st): State<Arc<AdminState>>,
    Path((pipeline, stage)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    // Refused before a byte of the body is read: the wrong caller, the wrong stage, a
    // declared size over the limit.
    let who = st.authorize(&headers)?;
    let (p, index) = st.plugin_stage(&pipeline, &stage)?;
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
    let history = p.stages[index].clone().lock_owned().await;
    let timeout = st.switch_timeout;
    let metrics = st.metrics.clone();
    blocking("upload", move || {
        let mut history = history;
        let started = Instant::now();
        let result = apply_upload(&p, index, &mut history, &bytes, config, &who, timeout);
        let version = crate::plugin::PluginVersion::of(&bytes).0;
        record_outcome(&metrics, &mut history, &who, "upload", &version, &result);
        result.map(|previous| switched(&p, &history, &version, &previous, started))
    })
    .await
}

/// Runs `f` on a blocking thread (compiles and switches never run on the async workers).
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} task failed: {e}"),
        )
    })?
}

/// The answer to a change that every worker has taken.
fn switched(
    p: &PipelineHandle,
    history: &StageHistory,
    version: &str,
    previous: &str,
    started: Instant,
) -> Json<Value> {
    Json(json!({
        "pipeline": p.name(), "stage": history.stage(), "version": version,
        "previous": previous, "workers": p.control.live_workers(),
        "switched_in_ms": started.elapsed().as_millis() as u64,
    }))
}

fn record_outcome(
    metrics: &Metrics,
    history: &mut StageHistory,
    who: &str,
    action: &str,
    version: &str,
    result: &ApiResult<String>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            history.rejected(who, action, version, &e.message);
            format!("rejected: {}", e.message)
        }
    };
    audit(
        who,
        action,
        history.pipeline(),
        history.stage(),
        version,
        &outcome,
    );
    metrics
        .reloads
        .get_or_create(&ReloadLabels {
            pipeline: history.pipeline().to_owned(),
            stage: history.stage().to_owned(),
            result: if result.is_ok() { "ok" } else { "rejected" }.into(),
        })
        .inc();
}

/// Load, check, publish, wait. Returns the version it replaced.
fn apply_upload(
    p: &PipelineHandle,
    index: usize,
    history: &mut StageHistory,
    bytes: &[u8],
    config: Option<BTreeMap<String, String>>,
    who: &str,
    timeout: Duration,
) -> ApiResult<String> {
    let module = p.engine.load(bytes).map_err(|e| {
        let status = match e {
            LoadError::NotWasm | LoadError::CoreModule => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    })?;
    let config = config.unwrap_or_else(|| history.active.config.clone());
    switch_stage(p, index, module.clone(), &config, timeout)?;
    let previous = history.active.version.clone();
    if let Err(e) = history.activated(module, Some(bytes), config, who) {
        tracing::warn!(pipeline = %p.name(), error = %format!("{e:#}"), "The new version runs but could not be persisted.");
    }
    Ok(previous)
}

async fn rollback(
    State(st): State<Arc<AdminState>>,
    Path((pipeline, stage)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let who = st.authorize(&headers)?;
    let (p, index) = st.plugin_stage(&pipeline, &stage)?;
    let history = p.stages[index].clone().lock_owned().await;
    let timeout = st.switch_timeout;
    let metrics = st.metrics.clone();
    blocking("rollback", move || {
        let mut history = history;
        let started = Instant::now();
        let current = history.active.version.clone();
        let result = (|| {
            let (target, module) = history
                .rollback_target(&p.engine)
                .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
            switch_stage(&p, index, module.clone(), &target.config, timeout)?;
            history
                .rolled_back(module, &who)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
            Ok(target.version)
        })();
        let version = result.as_ref().map_or(String::new(), Clone::clone);
        record_outcome(&metrics, &mut history, &who, "rollback", &version, &result);
        result.map(|version| switched(&p, &history, &version, &current, started))
    })
    .await
}

/// Runs the stage's `init` with the new module and config on a throwaway instance, then
/// publishes the new chain and waits for every worker; puts the old chain back if a worker
/// cannot switch.
fn switch_stage(
    p: &PipelineHandle,
    index: usize,
    module: Arc<PluginModule>,
    config: &BTreeMap<String, String>,
    timeout: Duration,
) -> ApiResult<()> {
    let current = p.control.current();
    let unprocessable = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let mut stages: Vec<StageSpec> = current.spec.stages().to_vec();
    let Some(stage) = stages.get_mut(index) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such stage"));
    };
    stage.module = module;
    stage.config = config_pairs(config);
    let trial = ChainSpec::new(
        p.name(),
        current.spec.routes().to_vec(),
        current.spec.route_name(current.spec.default_route()),
        vec![stage.clone()],
    )
    .map_err(unprocessable)?;
    ChainRunner::new(p.engine.clone(), Arc::new(trial), p.services.clone())
        .map_err(|e| unprocessable(e.error.to_string()))?;
    let spec = ChainSpec::new(
        p.name(),
        current.spec.routes().to_vec(),
        current.spec.route_name(current.spec.default_route()),
        stages,
    )
    .map_err(unprocessable)?;
    let spec = Arc::new(spec);
    let router = p
        .router_for(&spec)
        .map_err(|e| unprocessable(format!("{e:#}")))?;
    let generation = p.control.publish(spec, router);
    if let Err(e) = p.control.wait_for(generation, timeout) {
        let back = p
            .control
            .publish(current.spec.clone(), current.router.clone());
        let restored = p.control.wait_for(back, timeout);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not every worker switched ({e}); the previous version was put back{}",
                match restored {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (and that did not finish either: {e})"),
                }
            ),
        ));
    }
    Ok(())
}

async fn versions(
    State(st): State<Arc<AdminState>>,
    Path((pipeline, stage)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (p, index) = st.stage(&pipeline, &stage)?;
    let history = p.stages[index].lock().await;
    Ok(Json(json!({
        "pipeline": pipeline,
        "stage": stage,
        "active": history.active,
        "rollback_stack": history.previous,
        "history": history.history,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunRequest {
    records: Vec<SampleRecord>,
}

async fn dry_run(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    st.authorize(&headers)?;
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
