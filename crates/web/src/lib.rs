//! The idempipe dashboard: see and steer runs from a browser, and scrape metrics.
//!
//! Server-rendered pages (maud) with an embedded stylesheet and script, a JSON API under
//! `/api` that the pages use too (docs/api.md), live updates by server-sent events, and
//! `/metrics` in Prometheus text format. Binds 127.0.0.1 by default; any other address
//! needs an access token ([`check_bind`]).
//!
//! # Layout
//! - [`state`]: [`AppState`], what handlers share; [`security`]: token, bind check,
//!   cross-site guard.
//! - [`view`]: what pages and API show, built from the store's read API.
//! - `api/`: one file per group of `/api` routes; `pages/`: one file per page.
//! - [`artifacts`]: files served only from inside the artifact roots; frames as PNG.
//! - [`metrics`]: the Prometheus recorder and `/metrics`.
//! - `timeout`: the per-request time limit; connection limits are
//!   [`idempipe_http::serve`]'s.

pub mod artifacts;
mod assets;
mod compare;
pub mod error;
pub mod metrics;
pub mod security;
pub mod state;
pub mod view;

mod api;
mod pages;
mod timeout;

use std::future::Future;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use tokio::net::TcpListener;

pub use error::{ApiError, WebError};
pub use metrics::{install_metrics_recorder, metrics_router, serve_metrics};
pub use security::check_bind;
pub use state::{AppState, AppStateBuilder};

/// Every route of the dashboard, behind the access guard.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .route("/metrics", get(metrics::dashboard_metrics))
        .route("/assets/{name}", get(assets::asset))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .layer(middleware::from_fn(error::json_rejections))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeout::limit,
        ))
        .with_state(state)
}

/// Serves the dashboard on `listener` until `shutdown` completes; live streams end then.
/// Refuses a non-loopback address without a token ([`check_bind`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let addr = listener.local_addr().map_err(|source| WebError::Io {
        addr: "listener".into(),
        source,
    })?;
    check_bind(addr, state.token())?;
    tracing::info!(%addr, token = state.token().is_some(), "dashboard serving on http://{addr}/");
    let closing = state.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let limits = state.limits();
    idempipe_http::serve(listener, router(state), limits, shutdown)
        .await
        .map_err(|source| WebError::Io {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!("dashboard stopped");
    Ok(())
}
