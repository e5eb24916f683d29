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
//!
//! This module is HTTP only: the reload sequence, its errors and its bookkeeping belong to
//! [`crate::control::reload`]; here a request is checked (caller, path, size), handed over,
//! and its answer or error shaped.
//!
//! - `handlers`: health, pipelines, plugin changes, tables.
//! - `dry_run`: the dry run.
//! - `metrics`: `/metrics`, with the gauges read from the pipelines on each scrape.
//! - [`views`]: every answer as a type (the command line's client reads the same types).
//! - [`error`]: the one error answer, and the status of each refused reload.

use crate::config::AdminConfig;
use crate::control::Reloader;
use crate::metrics::Metrics;
use crate::pipeline::PipelineHandle;
use crate::tables::TableSet;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use error::ApiResult;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod dry_run;
pub mod error;
mod handlers;
mod metrics;
pub mod views;

pub use dry_run::DRY_RUN_MAX_RECORDS;
pub use error::ApiError;

/// What the handlers share.
pub struct AdminState {
    /// Every pipeline.
    pub pipelines: Vec<Arc<PipelineHandle>>,
    /// The enrichment tables every pipeline shares.
    pub tables: Arc<TableSet>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Bearer tokens by name; empty: changes need none (loopback only).
    pub tokens: BTreeMap<String, String>,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// Uploads and rollbacks.
    pub reloader: Arc<Reloader>,
    /// The gauges read from the pipelines on each scrape.
    scraped: Registry,
}

impl AdminState {
    /// The state of an API over `pipelines` and `tables`, configured by `config`.
    pub fn new(
        config: &AdminConfig,
        pipelines: Vec<Arc<PipelineHandle>>,
        tables: Arc<TableSet>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let switch_timeout = Duration::from_millis(config.switch_timeout_ms);
        AdminState {
            scraped: metrics::scrape_registry(pipelines.clone()),
            reloader: Arc::new(Reloader::new(metrics.clone(), switch_timeout)),
            pipelines,
            tables,
            metrics,
            tokens: config.tokens.clone(),
            max_upload_bytes: config.max_upload_bytes,
        }
    }

    /// The OpenMetrics text of every metric, with the pipelines' state read now.
    pub fn scrape(&self) -> String {
        self.metrics.encode_with(&self.scraped)
    }
}

/// The API's routes.
pub fn router(state: Arc<AdminState>) -> axum::Router {
    use handlers::*;
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/pipelines", get(list_pipelines))
        .route("/api/v1/pipelines/{p}", get(show_pipeline))
        .route("/api/v1/pipelines/{p}/pause", post(pause))
        .route("/api/v1/pipelines/{p}/resume", post(resume))
        .route("/api/v1/pipelines/{p}/dry-run", post(dry_run::dry_run))
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

/// Binds `config.listen` and serves the API for `pipelines` and `tables` on `runtime`. The
/// bind happens now, so a taken port fails here, naming the key.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    config: &AdminConfig,
    pipelines: Vec<Arc<PipelineHandle>>,
    tables: Arc<TableSet>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Serving> {
    use anyhow::Context as _;
    let address = config.address()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .with_context(|| format!("admin.listen: cannot listen on {address}"))?;
    let address = listener.local_addr().unwrap_or(address);
    let state = Arc::new(AdminState::new(config, pipelines, tables, metrics));
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

/// Runs `f` on a blocking thread (compiles, switches and table reloads never run on the
/// async workers).
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(what, e))?
}
