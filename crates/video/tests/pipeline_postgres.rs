//! Two workers with their own connections share one run on PostgreSQL; each frame is
//! enhanced once.

#[path = "support/pipeline.rs"]
mod support;

use std::collections::HashSet;

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{RunStatus, connect};
use idempipe_enhance::ServerConfig;
use idempipe_video::pipeline::{DriveOutcome, drive, start_or_resume};
use support::{
    TempDir, assert_each_frame_completed_once, drive_options, request, sample, settings,
    start_server,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_run_and_enhance_each_frame_once() {
    let dir = TempDir::new("pg");
    let db = idempipe_testkit::TestDb::postgres().await;
    let url = db.url.clone();
    let (api, state) = start_server(ServerConfig::default()).await;
    let (a, b) = (connect(&url).await.unwrap(), connect(&url).await.unwrap());
    let req = request(&sample("carphone_pristine.mp4"), dir.path(), settings(&api));
    let start = start_or_resume(&a, &req).await.unwrap();
    let options = drive_options(2);
    let (ra, rb) = tokio::join!(
        drive(a.clone(), start.run_id, &options, std::future::pending()),
        drive(b.clone(), start.run_id, &options, std::future::pending()),
    );
    for r in [ra, rb] {
        let DriveOutcome::Finished(run) = r.unwrap() else {
            unreachable!()
        };
        assert_eq!(run.status, RunStatus::Completed);
    }
    let frames = assert_each_frame_completed_once(&a, start.run_id).await as u64;
    assert_eq!(frames, 120);
    assert_eq!(state.stats().enhance_calls(), frames);

    let items = a
        .item_list(&ItemFilter {
            run_id: start.run_id,
            limit: 10_000,
            ..ItemFilter::default()
        })
        .await
        .unwrap();
    let workers: HashSet<_> = items.iter().filter_map(|i| i.worker.clone()).collect();
    assert!(workers.len() >= 2, "one worker did everything: {workers:?}");
    drop((a, b));
}
