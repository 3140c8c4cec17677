//! `keep-original`: frames the API refuses for good (400) keep their original pixels;
//! the output is complete and the report lists them.

#[path = "support/pipeline.rs"]
mod support;

use std::sync::Arc;

use idempipe_engine::{RunStatus, connect};
use idempipe_enhance::ServerConfig;
use idempipe_video::media::probe;
use idempipe_video::pipeline::OnFrameFailure;
use support::{
    TempDir, frame_number, process, request, sample, settings, start_front, start_server,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_frames_keep_their_original() {
    let dir = TempDir::new("keep");
    let (backend, state) = start_server(ServerConfig::default()).await;
    let refused = |key: &str, _: u64| frame_number(key).is_some_and(|n| n % 10 == 3);
    let front = start_front(backend, Arc::new(refused)).await;
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let mut s = settings(&front);
    s.on_frame_failure = OnFrameFailure::KeepOriginal;
    let input = sample("carphone_pristine.mp4");
    let req = request(&input, dir.path(), s);
    let (start, run) = process(&store, &req, 3).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(probe(&req.output).await.unwrap().frame_count, 120);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&start.params.report).unwrap()).unwrap();
    let kept: Vec<&str> = report["kept_original"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..120u64)
        .filter(|n| n % 10 == 3)
        .map(|n| format!("frame/{n:06}"))
        .collect();
    assert_eq!(kept, expected);
    assert_eq!(report["frames"]["enhanced"], 120 - expected.len());
    assert!(
        report["kept_original"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused by the test front server")
    );
    // Refused frames were never enhanced by the server.
    assert_eq!(state.stats().enhance_calls(), 120 - expected.len() as u64);
}
