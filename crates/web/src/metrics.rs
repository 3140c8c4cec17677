//! `/metrics` in Prometheus text format: item counts and limiter state read from the
//! store at scrape time, plus whatever the process recorded through the `metrics` facade.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use idempipe_engine::{Clock, RunStatus, SharedStore, SystemClock};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::state::AppState;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of every histogram named `*_seconds`: from a 5 ms cached API answer to a
/// minute-long segment encode.
pub const SECONDS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Runs whose items are exported: running ones and those finished this recently
/// (a dashboard sees the end of a run; old runs do not bloat every scrape).
pub const RECENT_FINISHED_MS: i64 = 3_600_000;

/// Newest runs looked at per scrape.
const RUNS_SCANNED: i64 = 200;

/// How often histogram samples are folded and idle series expire.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and starts its upkeep thread. Call it before anything records metrics.
pub fn install_metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .expect("buckets are not empty");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                Err(e) => {
                    // Another recorder is installed: keep ours private so rendering works.
                    tracing::warn!(error = %e, "a metrics recorder is already installed; facade metrics will not appear");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

/// A router with only `GET /metrics`, for a worker process.
pub fn metrics_router(handle: PrometheusHandle, store: SharedStore) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |State((handle, store)): State<(PrometheusHandle, SharedStore)>| async move {
                    respond(&store, Some(&handle)).await
                },
            ),
        )
        .with_state((handle, store))
}

/// Serves [`metrics_router`] on `listener` until `shutdown` completes (a worker's
/// `--metrics-listen`). It has no token: bind it to loopback or a private network.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    store: SharedStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::WebError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "listener".to_string(), |a| a.to_string());
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    axum::serve(listener, metrics_router(handle, store))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| crate::WebError::Io { addr, source })
}

/// `GET /metrics` of the dashboard.
pub(crate) async fn dashboard_metrics(State(state): State<AppState>) -> Response {
    respond(state.store(), state.metrics()).await
}

async fn respond(store: &SharedStore, handle: Option<&PrometheusHandle>) -> Response {
    match render(store, handle).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The whole scrape: store series, then the recorder's.
pub async fn render(
    store: &SharedStore,
    handle: Option<&PrometheusHandle>,
) -> Result<String, ApiError> {
    let mut out = String::new();
    render_items(store, &mut out).await?;
    render_limiters(store, &mut out).await?;
    if let Some(h) = handle {
        out.push_str(&h.render());
    }
    Ok(out)
}

async fn render_items(store: &SharedStore, out: &mut String) -> Result<(), ApiError> {
    let now = SystemClock.now();
    head(
        out,
        "idempipe_items",
        "gauge",
        "Items by run, stage and status (running runs and runs finished in the last hour).",
    );
    let mut runs_by_status = std::collections::BTreeMap::<&str, i64>::new();
    for run in store.run_list(RUNS_SCANNED).await? {
        let recent = run
            .finished_at
            .is_some_and(|f| now - f <= RECENT_FINISHED_MS);
        if run.status != RunStatus::Running && !recent {
            continue;
        }
        *runs_by_status.entry(run.status.as_str()).or_default() += 1;
        for c in store.item_counts(run.id).await? {
            let labels = [
                ("run", run.id.to_string()),
                ("pipeline", run.pipeline.clone()),
                ("stage", c.stage),
                ("status", c.status),
            ];
            sample(out, "idempipe_items", &labels, c.count as f64);
        }
    }
    head(
        out,
        "idempipe_runs",
        "gauge",
        "Runs exported above, by status.",
    );
    for (status, n) in runs_by_status {
        sample(out, "idempipe_runs", &[("status", status.into())], n as f64);
    }
    Ok(())
}

async fn render_limiters(store: &SharedStore, out: &mut String) -> Result<(), ApiError> {
    let now = SystemClock.now();
    let limiters = store.limiter_list().await?;
    type Get = fn(&idempipe_engine::LimiterState, i64) -> f64;
    let series: [(&str, &str, &str, Get); 7] = [
        (
            "idempipe_limiter_rate",
            "gauge",
            "Current rate (units/s) after adapting to throttling.",
            |l, _| l.current_rate,
        ),
        (
            "idempipe_limiter_rate_ceiling",
            "gauge",
            "Configured rate (units/s).",
            |l, _| l.config.rate,
        ),
        (
            "idempipe_limiter_paused",
            "gauge",
            "1 while a 429's Retry-After pauses every worker.",
            |l, now| f64::from(u8::from(l.paused_until > now)),
        ),
        (
            "idempipe_limiter_circuit_open",
            "gauge",
            "1 while the circuit is open after repeated failures.",
            |l, now| f64::from(u8::from(l.circuit_open_until > now)),
        ),
        (
            "idempipe_limiter_in_flight",
            "gauge",
            "Concurrency slots held.",
            |l, _| l.in_flight as f64,
        ),
        (
            "idempipe_limiter_throttles_total",
            "counter",
            "429 answers seen.",
            |l, _| l.throttles as f64,
        ),
        (
            "idempipe_limiter_circuit_opens_total",
            "counter",
            "Times the circuit opened.",
            |l, _| l.circuit_opens as f64,
        ),
    ];
    for (name, kind, help, get) in series {
        head(out, name, kind, help);
        for l in &limiters {
            sample(
                out,
                name,
                &[("limiter", l.config.name.clone())],
                get(l, now),
            );
        }
    }
    Ok(())
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, String)], value: f64) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_escaped() {
        let mut s = String::new();
        sample(&mut s, "m", &[("a", "x\"y\\z\n".into())], 2.0);
        assert_eq!(s, "m{a=\"x\\\"y\\\\z\\n\"} 2\n");
    }
}
