//! The enhancement API server (contract: `docs/enhance-api.md`).
//!
//! Routes: `POST /v1/enhance`, `GET /healthz`, `GET /stats` (JSON [`StatsSnapshot`]) and,
//! with a key ledger, `GET /stats/keys` (JSON [`KeyLedgerSnapshot`]). Served by
//! [`idempipe_http::serve`] within [`ServerConfig::limits`]; with a
//! [`ServerConfig::token`] every route but `/healthz` needs it.

mod auth;
mod cache;
mod config;
mod error;
mod faults;
mod handler;
mod ledger;
mod limiter;
mod stats;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, http::StatusCode};

pub use config::{
    Burst429, ConfigError, DEFAULT_IDEMPOTENCY_CAPACITY, DEFAULT_IDEMPOTENCY_MAX_BYTES,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_REQUEST_TIMEOUT, MIN_TOKEN_LEN,
    ServeLimits, ServerConfig,
};
pub use error::{ApiError, ErrorBody};
pub use ledger::{KeyCount, KeyLedgerSnapshot};
pub use stats::{ServerStats, StatsSnapshot};

use cache::IdempotencyCache;
use faults::Faults;
use ledger::KeyLedger;
use limiter::TokenBucket;

/// The server's shared state: configuration, counters, rate limiter and caches.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    stats: Arc<ServerStats>,
    limiter: Option<TokenBucket>,
    faults: Faults,
    cache: IdempotencyCache,
    ledger: Option<KeyLedger>,
}

impl ServerState {
    /// Validates `config` and builds fresh state.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiter = (config.rate_limit > 0.0)
            .then(|| TokenBucket::new(config.rate_limit, config.rate_burst, Instant::now()));
        let faults = Faults::new(config.failure_rate, config.failure_seed, config.burst_429)
            .with_answer_faults(config.hang_rate, config.garbage_rate);
        let ledger = config.key_ledger.then(KeyLedger::default);
        let cache =
            IdempotencyCache::new(config.idempotency_capacity, config.idempotency_max_bytes);
        let inner = Inner {
            config,
            stats: Arc::default(),
            limiter,
            faults,
            cache,
            ledger,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.inner.stats.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}

/// The enhancement route.
const ENHANCE_PATH: &str = "/v1/enhance";

/// The API's routes over `state`.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route(ENHANCE_PATH, post(handler::enhance))
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats", get(stats_json))
        .route("/stats/keys", get(key_ledger_json))
        .fallback(|| async {
            let body = ErrorBody {
                error: "not_found".into(),
                message: "no such route; see POST /v1/enhance".into(),
            };
            (StatusCode::NOT_FOUND, Json(body))
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

async fn stats_json(State(state): State<ServerState>) -> Json<StatsSnapshot> {
    Json(state.inner.stats.snapshot())
}

async fn key_ledger_json(State(state): State<ServerState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.inner.ledger {
        Some(ledger) => Json(ledger.snapshot()).into_response(),
        None => {
            let body = ErrorBody {
                error: "not_found".into(),
                message: "no key ledger; start the server with --key-ledger".into(),
            };
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

/// Validates `config` and serves the API on `listener` until `shutdown` completes,
/// then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state =
        ServerState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    serve_with_state(listener, state, shutdown).await
}

/// Like [`serve`], with state built by the caller (to keep a handle on its stats).
pub async fn serve_with_state(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "enhancement API serving");
    let limits = state.inner.config.limits;
    idempipe_http::serve(listener, router(state), limits, shutdown).await?;
    tracing::info!("enhancement API stopped");
    Ok(())
}
