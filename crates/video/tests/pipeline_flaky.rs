//! A flaky API (20% 503 and bursts of 429 with Retry-After): the run still finishes,
//! every frame completes exactly once, and the server enhances each frame once.

#[path = "support/pipeline.rs"]
mod support;

use std::time::Duration;

use idempipe_engine::{RunStatus, connect};
use idempipe_enhance::ServerConfig;
use idempipe_enhance::server::Burst429;
use support::{
    TempDir, assert_each_frame_completed_once, process, request, sample, settings, start_server,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_api_still_enhances_every_frame_once() {
    let dir = TempDir::new("flaky");
    let (api, state) = start_server(ServerConfig {
        failure_rate: 0.2,
        failure_seed: 7,
        burst_429: Some(Burst429 {
            every: 40,
            length: 4,
            retry_after: Duration::from_secs(1),
        }),
        ..ServerConfig::default()
    })
    .await;
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let req = request(&sample("carphone_pristine.mp4"), dir.path(), settings(&api));
    let (start, run) = process(&store, &req, 4).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);

    let frames = assert_each_frame_completed_once(&store, run.id).await as u64;
    assert_eq!(frames, 120);
    let stats = state.stats().snapshot();
    assert!(stats.status(503) > 0 && stats.status(429) > 0, "{stats:?}");
    assert_eq!(stats.enhance_calls, frames, "{stats:?}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&start.params.report).unwrap()).unwrap();
    // Every frame attempt marked its outside call; the failures are the 503s and 429s.
    assert_eq!(report["api_calls"], report["provider_calls"]);
    assert_eq!(report["api_calls"], stats.requests);
    assert_eq!(
        report["failures"].as_array().unwrap().len() as u64,
        stats.requests - frames
    );
}
