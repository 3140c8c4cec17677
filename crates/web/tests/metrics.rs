//! `/metrics`: item counts and limiter state from the store, and the process's own
//! facade metrics (histograms of `*_seconds` with the configured buckets).

mod common;

use axum::http::StatusCode;
use common::{TOKEN, TestDb, fixture, get, send, state, text};
use idempipe_engine::{Clock, LimiterConfig, LimiterFeedback, SystemClock};
use idempipe_web::{AppState, install_metrics_recorder, metrics_router, router};

async fn metrics_render_store_and_facade_series(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let now = SystemClock.now();
    store
        .limiter_define(&LimiterConfig::new("enhance-api", 50.0), now)
        .await
        .unwrap();
    store
        .limiter_release(
            "enhance-api",
            1,
            LimiterFeedback::Throttled {
                until: now + 30_000,
            },
            now,
        )
        .await
        .unwrap();
    let handle = install_metrics_recorder();
    assert_eq!(
        handle.render(),
        install_metrics_recorder().render(),
        "installing twice is harmless"
    );
    // Both backends' tests share the process's recorder: each uses its own stage label.
    let stage = if db.url.starts_with("postgres") {
        "frame-pg"
    } else {
        "frame-sqlite"
    };
    metrics::counter!("idempipe_outcomes_total", "stage" => stage, "outcome" => "completed")
        .increment(3);
    metrics::histogram!("idempipe_handler_duration_seconds", "stage" => stage).record(0.2);

    let app = router(
        AppState::builder(store.clone())
            .metrics(handle.clone())
            .build()
            .unwrap(),
    );
    let (status, response) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = text(response).await;
    let run = fx.run;
    for line in [
        "# TYPE idempipe_items gauge".to_string(),
        format!(
            "idempipe_items{{run=\"{run}\",pipeline=\"video\",stage=\"frame\",status=\"completed\"}} 5"
        ),
        format!(
            "idempipe_items{{run=\"{run}\",pipeline=\"video\",stage=\"frame\",status=\"dead\"}} 1"
        ),
        "idempipe_runs{status=\"running\"} 1".to_string(),
        "idempipe_limiter_rate_ceiling{limiter=\"enhance-api\"} 50".to_string(),
        "idempipe_limiter_paused{limiter=\"enhance-api\"} 1".to_string(),
        "idempipe_limiter_circuit_open{limiter=\"enhance-api\"} 0".to_string(),
        "idempipe_limiter_throttles_total{limiter=\"enhance-api\"} 1".to_string(),
        format!("idempipe_outcomes_total{{stage=\"{stage}\",outcome=\"completed\"}} 3"),
        format!("idempipe_handler_duration_seconds_bucket{{stage=\"{stage}\",le=\"0.25\"}} 1"),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    let rate: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("idempipe_limiter_rate{limiter=\"enhance-api\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate < 50.0, "a 429 lowers the rate: {rate}");

    // The worker's router serves the same, and the dashboard's /metrics needs the token.
    let worker = metrics_router(handle, store.clone());
    let (status, response) = send(&worker, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(response).await.contains("idempipe_items{"));
    let guarded = router(state(&store, db.dir.path(), Some(TOKEN)));
    assert_eq!(
        send(&guarded, get("/metrics")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

backend_tests!(metrics_render_store_and_facade_series);
