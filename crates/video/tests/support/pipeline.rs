//! Helpers shared by the `pipeline_*` tests (included with `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Backoff, SharedStore};
use idempipe_enhance::server::{ServerConfig, ServerState, serve_with_state};
use idempipe_video::pipeline::{
    DriveOptions, DriveOutcome, PipelineOptions, ProcessRequest, ProgressStyle, RunStart, Settings,
    drive, start_or_resume,
};

/// A sample video from the shared media folder.
pub fn sample(name: &str) -> PathBuf {
    idempipe_testkit::media(name)
}

pub use idempipe_testkit::TempDir;

/// The project's enhancement server on 127.0.0.1:0; returns its base URL and state.
pub async fn start_server(config: ServerConfig) -> (String, ServerState) {
    let state = ServerState::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(async move {
        serve_with_state(listener, served, std::future::pending())
            .await
            .unwrap()
    });
    (url, state)
}

/// Fast settings that still give several segments.
pub fn settings(provider: &str) -> Settings {
    Settings {
        provider: provider.into(),
        preset: "ultrafast".into(),
        segment_secs: 1.0,
        window: 2,
        ..Settings::default()
    }
}

/// Short leases and backoffs, so kills and failures resolve within seconds.
pub fn pipeline_options() -> PipelineOptions {
    PipelineOptions {
        frame_lease: Duration::from_secs(3),
        lease: Duration::from_secs(5),
        frame_backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
            jitter: 0.5,
        },
        ..PipelineOptions::default()
    }
}

/// Drive options for tests: `workers` handlers at once, no progress output.
pub fn drive_options(workers: usize) -> DriveOptions {
    DriveOptions {
        concurrency: workers,
        progress: ProgressStyle::Quiet,
        maintenance_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        pipeline: pipeline_options(),
        serve_all_runs: false,
    }
}

/// A request for `input` -> `dir/out.mp4` with artifacts in `dir/artifacts`.
pub fn request(input: &Path, dir: &Path, settings: Settings) -> ProcessRequest {
    ProcessRequest {
        input: input.to_owned(),
        output: dir.join("out.mp4"),
        artifacts: dir.join("artifacts"),
        settings,
    }
}

/// Starts or resumes the run for `request` and drives it to its end in process.
pub async fn process(
    store: &SharedStore,
    request: &ProcessRequest,
    workers: usize,
) -> (RunStart, idempipe_engine::Run) {
    let start = start_or_resume(store, request).await.unwrap();
    let outcome = drive(
        store.clone(),
        start.run_id,
        &drive_options(workers),
        std::future::pending(),
    )
    .await
    .unwrap();
    match outcome {
        DriveOutcome::Finished(run) => (start, run),
        DriveOutcome::Interrupted => unreachable!("never interrupted"),
    }
}

/// Per frame item: (key, completed attempts, all attempts).
pub async fn frame_attempts(store: &SharedStore, run_id: i64) -> Vec<(String, usize, usize)> {
    stage_attempts(store, run_id, "frame").await
}

/// Per item of `stage`: (key, completed attempts, all attempts).
pub async fn stage_attempts(
    store: &SharedStore,
    run_id: i64,
    stage: &str,
) -> Vec<(String, usize, usize)> {
    let items = store
        .item_list(&ItemFilter {
            run_id,
            stage: Some(stage.into()),
            limit: 100_000,
            ..ItemFilter::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for item in items {
        let attempts = store.attempt_list(item.id).await.unwrap();
        let done = attempts.iter().filter(|a| a.outcome == "completed").count();
        out.push((item.key, done, attempts.len()));
    }
    out
}

/// Asserts every frame item completed exactly once; returns the frame count.
pub async fn assert_each_frame_completed_once(store: &SharedStore, run_id: i64) -> usize {
    let frames = frame_attempts(store, run_id).await;
    for (key, done, _) in &frames {
        assert_eq!(*done, 1, "{key} completed {done} times");
    }
    frames.len()
}

/// Decides, per request, whether the front server answers 400 itself: given the
/// `Idempotency-Key` and the number of requests forwarded so far.
pub type Refuse = std::sync::Arc<dyn Fn(&str, u64) -> bool + Send + Sync>;

/// A front server that answers 400 (permanent) when `refuse` says so and forwards every
/// other request to the enhancement server at `backend`; returns its base URL.
pub async fn start_front(backend: String, refuse: Refuse) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use std::sync::atomic::AtomicU64;

    let forwarded = std::sync::Arc::new(AtomicU64::new(0));
    idempipe_enhance::provider::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, backend, refuse, forwarded) = (
            client.clone(),
            backend.clone(),
            refuse.clone(),
            forwarded.clone(),
        );
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let json = [("content-type", "application/json".to_owned())];
            if uri.path() == "/v1/enhance" && refuse(&key, forwarded.load(Ordering::SeqCst)) {
                let body = r#"{"error":"bad_image","message":"refused by the test front server"}"#;
                return (StatusCode::BAD_REQUEST, json, Bytes::from(body));
            }
            let url = format!(
                "{backend}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let mut req = if uri.path() == "/v1/enhance" {
                client.post(url)
            } else {
                client.get(url)
            };
            for name in ["content-type", "idempotency-key"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v.as_bytes());
                }
            }
            let resp = req.body(body).send().await.unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let bytes = resp.bytes().await.unwrap();
            if status == StatusCode::OK && uri.path() == "/v1/enhance" {
                forwarded.fetch_add(1, Ordering::SeqCst);
            }
            (status, [("content-type", ct)], bytes)
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The frame number in an idempotency key `idempipe:RUN:frame:frame/000123`.
pub fn frame_number(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}
