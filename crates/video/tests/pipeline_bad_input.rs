//! Bad inputs and environments fail with a message naming the problem; a run whose
//! provider broke keeps its completed frames, and a retry redoes only the failed ones.

#[path = "support/pipeline.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idempipe_engine::store::RetryParams;
use idempipe_engine::{Clock, ItemStatus, RunStatus, SystemClock, connect};
use idempipe_enhance::ServerConfig;
use idempipe_video::pipeline::{
    DriveOutcome, check_api, check_output_dir, drive, failed_items, start_or_resume,
};
use support::{
    TempDir, assert_each_frame_completed_once, drive_options, process, request, sample, settings,
    start_front, start_server,
};

/// Runs `input` to its end; returns the run's dead items as "stage key: message".
async fn failures_for(input: &std::path::Path) -> Vec<String> {
    let dir = TempDir::new("bad");
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let (_, run) = process(&store, &request(input, dir.path(), settings("local")), 2).await;
    assert_eq!(run.status, RunStatus::Failed);
    failed_items(&store, run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| format!("{} {}: {}", f.stage, f.key, f.error))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_the_run_at_once_naming_the_file() {
    let files = TempDir::new("bad-files");
    let text = files.join("notes.txt");
    std::fs::write(&text, "not a video\n").unwrap();
    let empty = files.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let truncated = files.join("truncated.mp4");
    let bbb = std::fs::read(sample("bigbuckbunny.mp4")).unwrap();
    std::fs::write(&truncated, &bbb[..bbb.len() * 3 / 10]).unwrap();

    for (path, needle) in [
        (&text, "not a readable video file"),
        (&empty, "file is empty"),
        (&truncated, "truncated.mp4"),
    ] {
        let failures = failures_for(path).await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("ingest ingest: "), "{failures:?}");
        assert!(
            failures[0].contains(&path.display().to_string()),
            "{failures:?}"
        );
        assert!(failures[0].contains(needle), "{failures:?}");
    }
}

#[tokio::test]
async fn missing_input_unwritable_output_and_unreachable_api_are_named() {
    let dir = TempDir::new("bad-env");
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let missing = dir.join("nope.mp4");
    let err = start_or_resume(&store, &request(&missing, dir.path(), settings("local")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("nope.mp4: file not found"),
        "{err}"
    );
    assert!(store.run_list(10).await.unwrap().is_empty());

    std::fs::write(dir.join("file"), "x").unwrap();
    let err = check_output_dir(&dir.join("file/out.mp4"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    let err = check_output_dir(&dir.join("missing/out.mp4"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    check_output_dir(&dir.join("out.mp4")).await.unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = check_api(&url).await.unwrap_err();
    assert!(
        err.to_string().contains(&url) && err.to_string().contains("unreachable"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_provider_keeps_completed_frames_and_retry_redoes_only_the_failed() {
    let dir = TempDir::new("broken");
    let (backend, state) = start_server(ServerConfig::default()).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    // After 40 enhanced frames the API refuses everything (400) until fixed.
    let refuse = move |_: &str, forwarded: u64| forwarded >= 40 && !f.load(Ordering::SeqCst);
    let front = start_front(backend, Arc::new(refuse)).await;
    let store = connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let req = request(
        &sample("carphone_pristine.mp4"),
        dir.path(),
        settings(&front),
    );
    let (start, run) = process(&store, &req, 2).await;
    assert_eq!(run.status, RunStatus::Failed);
    let failed = failed_items(&store, run.id).await.unwrap();
    let done_before = state.stats().enhance_calls();
    assert!(done_before >= 40 && !failed.is_empty());
    assert!(
        failed
            .iter()
            .all(|f| f.stage == "frame" && f.error.contains("refused by the test front server"))
    );

    fixed.store(true, Ordering::SeqCst);
    // what `idempipe retry RUN` does
    let retried = store
        .item_retry(
            &RetryParams {
                run_id: run.id,
                stage: None,
                statuses: vec![ItemStatus::Dead, ItemStatus::Failed],
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(retried, failed.len() as u64);
    let again = start_or_resume(&store, &req).await.unwrap();
    assert_eq!(again.run_id, start.run_id);
    let outcome = drive(
        store.clone(),
        run.id,
        &drive_options(2),
        std::future::pending(),
    )
    .await;
    let DriveOutcome::Finished(run) = outcome.unwrap() else {
        unreachable!()
    };
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(assert_each_frame_completed_once(&store, run.id).await, 120);
    assert_eq!(
        state.stats().enhance_calls(),
        120,
        "completed frames were not redone"
    );
}
