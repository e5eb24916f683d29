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
//! # Who may ask what
//!
//! - Every change (any method but GET) needs `Authorization: Bearer <token>`, always. The
//!   tokens are `admin.tokens` (and `SWITCHYARD_ADMIN_TOKEN`); with none configured the router
//!   makes one, named `local`, in `<state_dir>/admin-token` (mode 0600, kept across restarts;
//!   its path is logged, never the token), and the command line finds it by itself ([`token`]).
//! - Every request, reads included, must name this API in its `Host`: the listen address,
//!   `localhost` or a loopback address, with the port, or one of `admin.allowed_hosts`. A web
//!   page that re-points its own name at this machine (DNS rebinding) is refused (403).
//! - A change from a web page of another site (an `Origin` other than this API's address) is
//!   refused (403), and a change's body must have its content type (415 otherwise): an upload
//!   `application/wasm` or `application/octet-stream`, a dry run `application/json`; the other
//!   changes take no body. A browser cannot send such a request to another site unasked.
//! - Reads of `/api/v1` (which show stages' config) need a token too when the API listens on
//!   a non-loopback address; `/healthz`, `/readyz` and `/metrics` never do (probes and
//!   Prometheus).
//!
//! A stage's config is shown as written: `${NAME}` from the config file stays unexpanded (see
//! [`crate::control::versions`]), so a secret from the environment is never in an answer.
//!
//! An upload is compiled, type-checked, instantiated and its `init` run off the hot path;
//! only then is it published, and the answer comes once every worker runs it. Uploads to one
//! stage are serialized. Each change is logged as an audit line (target `switchyard::audit`).
//!
//! This module is HTTP only: the reload sequence, its errors and its bookkeeping belong to
//! [`crate::control::reload`]; here a request is checked (caller, path, size), handed over,
//! and its answer or error shaped.
//!
//! - `guard`: the checks every request passes first (host, origin, token), and content types.
//! - [`token`]: the generated token, its file, and how the command line finds it.
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
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use error::ApiResult;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod dry_run;
pub mod error;
pub(crate) mod guard;
mod handlers;
mod metrics;
pub mod token;
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
    /// Bearer tokens by name: the configured ones, or the generated one (`local`); empty:
    /// every change is refused.
    pub tokens: BTreeMap<String, String>,
    /// The address the API listens on (its port is the one a `Host` must name).
    pub address: SocketAddr,
    /// `Host` values accepted besides the listen address and loopback names.
    pub allowed_hosts: Vec<String>,
    /// Largest upload.
    pub max_upload_bytes: usize,
    /// Uploads and rollbacks.
    pub reloader: Arc<Reloader>,
    /// The gauges read from the pipelines on each scrape.
    scraped: Registry,
}

impl AdminState {
    /// The state of an API on `address` over `pipelines` and `tables`, configured by
    /// `config` (its tokens as configured: see [`start`] for the generated one).
    pub fn new(
        config: &AdminConfig,
        address: SocketAddr,
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
            address,
            allowed_hosts: config.allowed_hosts.clone(),
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
    let guard = axum::middleware::from_fn_with_state(state.clone(), guard::guard);
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
        .layer(guard)
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
    /// The note of the generated token's file for the command line, removed when dropped.
    _published: Option<token::Published>,
}

impl Serving {
    /// Stops serving (requests in progress finish).
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// Binds `config.listen` and serves the API for `pipelines` and `tables` on `runtime`. The
/// bind happens now, so a taken port fails here, naming the key. With no token configured,
/// the generated one is read or made now (see [`token`]); a token file that cannot be used
/// fails here, naming it.
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
    let mut state = AdminState::new(config, address, pipelines, tables, metrics);
    let mut published = None;
    if state.tokens.is_empty() {
        match &config.state_dir {
            Some(dir) => {
                let (local, file) = token::ensure(dir)?;
                tracing::info!(
                    file = %file.display(),
                    "No admin token is configured: changes need the one in this file (switchyard finds it by itself)."
                );
                state.tokens.insert(token::TOKEN_NAME.into(), local);
                published = token::publish(address.port(), &file);
            }
            None => tracing::warn!(
                "No admin token is configured and there is no state directory to make one in: every change is refused."
            ),
        }
    }
    let state = Arc::new(state);
    let stop = Arc::new(tokio::sync::Notify::new());
    let notified = stop.clone();
    runtime.spawn(async move {
        let shutdown = async move { notified.notified().await };
        if let Err(e) = serve(listener, state, shutdown).await {
            tracing::error!(error = %format!("{e:#}"), "The admin API stopped.");
        }
    });
    Ok(Serving {
        address,
        stop,
        _published: published,
    })
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
