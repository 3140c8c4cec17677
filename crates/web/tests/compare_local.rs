//! The before/after view of a run enhanced in process (the `local` provider), which has
//! no frame items or frame files: both sides come from the segments while the run is in
//! flight and from the input and output videos once it is done.

mod common;

use std::time::Duration;

use common::{TempDir, get, send, text};
use idempipe_engine::{Maintenance, MaintenanceConfig, RunStatus, Worker, WorkerConfig, connect};
use idempipe_video::pipeline::{
    PipelineOptions, ProcessRequest, Settings, register, start_or_resume,
};
use idempipe_web::router;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_run_compares_frames_from_its_videos() {
    let dir = TempDir::new("compare-local");
    let store = connect(&dir.path().join("state.db").display().to_string())
        .await
        .unwrap();
    // The input lives under the served root: once the run is done, "before" is decoded
    // from it.
    let input = dir.path().join("in.mp4");
    std::fs::copy(idempipe_testkit::media("carphone_pristine.mp4"), &input).unwrap();
    let request = ProcessRequest {
        input,
        output: dir.path().join("out.mp4"),
        artifacts: dir.path().join("artifacts"),
        settings: Settings {
            preset: "ultrafast".into(),
            segment_secs: 1.0,
            ..Settings::default()
        },
    };
    assert!(request.settings.is_local());
    let run = start_or_resume(&store, &request).await.unwrap().run_id;
    let (stop, stopped) = watch::channel(false);
    let worker = register(
        Worker::new(store.clone(), WorkerConfig::default()),
        store.clone(),
        &PipelineOptions::default(),
    );
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let working = tokio::spawn(worker.run(until_stopped(stopped.clone())));
    // Maintenance finishes the run once its last item completes.
    let maintenance = Maintenance::new(
        store.clone(),
        MaintenanceConfig {
            interval: Duration::from_millis(100),
            retain: None,
        },
    );
    tokio::spawn(maintenance.run(until_stopped(stopped)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while store.run_get(run).await.unwrap().status == RunStatus::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send_replace(true);
    working.await.unwrap().unwrap();
    assert_eq!(
        store.run_get(run).await.unwrap().status,
        RunStatus::Completed
    );

    let app = router(common::state(&store, dir.path(), None));
    let mut sides = Vec::new();
    for side in ["before", "after"] {
        let (status, response) =
            send(&app, get(&format!("/api/runs/{run}/compare/30/{side}.png"))).await;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(status, 200, "{side}: {}", String::from_utf8_lossy(&body));
        let image = image::load_from_memory(&body).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (176, 144), "{side}");
        sides.push(image);
    }
    let differing = sides[0]
        .as_raw()
        .iter()
        .zip(sides[1].as_raw())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > 1000,
        "the enhanced frame differs from the original ({differing} bytes)"
    );
    // A frame past the end is a clear 404.
    let (status, response) = send(
        &app,
        get(&format!("/api/runs/{run}/compare/5000/before.png")),
    )
    .await;
    assert_eq!(status, 404);
    assert!(text(response).await.contains("frame 5000"));
}
