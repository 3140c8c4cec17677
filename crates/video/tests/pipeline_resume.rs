//! Resume after SIGKILL: a child process (this test binary re-run) processes a video
//! through the enhancement server (or the local provider) and is killed mid-run; a second
//! child resumes the same run. No completed frame (or, locally, segment) is done again
//! and the output is byte-identical to an uninterrupted run's.

#[path = "support/pipeline.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idempipe_engine::{RunStatus, SharedStore, connect};
use idempipe_enhance::ServerConfig;
use idempipe_video::pipeline::{PIPELINE, stage};
use support::{
    TempDir, assert_each_frame_completed_once, process, request, sample, settings, stage_attempts,
    start_server,
};

/// Set by the parent: `DB|DIR|API` for the child to process bikes.mp4 (`API` may be
/// `local`).
const CHILD_ENV: &str = "IDEMPIPE_PIPELINE_CHILD";

/// The child: processes the video until done (or killed). A no-op in a normal test run.
#[test]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = connect(parts[0]).await.unwrap();
        let req = request(&sample("bikes.mp4"), parts[1].as_ref(), settings(parts[2]));
        let (_, run) = process(&store, &req, 3).await;
        assert_eq!(run.status, RunStatus::Completed);
    });
}

fn spawn_child(db: &str, dir: &std::path::Path, api: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{db}|{}|{api}", dir.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Frame items completed and running now, once the run exists.
async fn frame_counts(store: &SharedStore) -> (i64, i64) {
    stage_counts(store, stage::FRAME).await
}

/// Items of `stage_name` completed and running now, once the run exists.
async fn stage_counts(store: &SharedStore, stage_name: &str) -> (i64, i64) {
    let Ok(runs) = store.run_list(1).await else {
        return (0, 0);
    };
    let Some(run) = runs.first().filter(|r| r.pipeline == PIPELINE) else {
        return (0, 0);
    };
    let counts = store.item_counts(run.id).await.unwrap();
    let get = |status: &str| {
        counts
            .iter()
            .filter(|c| c.stage == stage_name && c.status == status)
            .map(|c| c.count)
            .sum()
    };
    (get("completed"), get("running"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_rerun_sends_no_completed_frame_twice() {
    let dir = TempDir::new("resume");
    let latency = ServerConfig {
        latency: Duration::from_millis(30),
        ..ServerConfig::default()
    };
    let (api, state) = start_server(latency.clone()).await;
    let db = dir.join("state.db").display().to_string();
    let store = connect(&db).await.unwrap();

    let mut child = spawn_child(&db, dir.path(), &api);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progressed = false;
    while Instant::now() < deadline {
        if frame_counts(&store).await.0 >= 80 {
            progressed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(progressed, "child made no progress");
    let (done_at_kill, running_at_kill) = frame_counts(&store).await;
    assert!(
        done_at_kill < 250,
        "killed too late: {done_at_kill} frames done"
    );
    let calls_at_kill = state.stats().enhance_calls();

    let status = spawn_child(&db, dir.path(), &api).wait().unwrap();
    assert!(status.success(), "rerun failed: {status}");

    let run = store.run_list(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.id, 1, "the rerun resumed the same run");
    let frames = assert_each_frame_completed_once(&store, run.id).await as u64;
    assert_eq!(frames, 250);
    let calls = state.stats().enhance_calls();
    // Frames completed before the kill are never sent again; only those in flight at the
    // kill (whose completion did not commit) may be, and the server's idempotency cache
    // answers those from memory.
    assert!(
        calls <= frames + running_at_kill as u64,
        "{calls} calls for {frames} frames"
    );
    assert!(calls_at_kill >= done_at_kill as u64);

    // The same video, uninterrupted, in another database against another server.
    let reference = TempDir::new("resume-ref");
    let (api2, _) = start_server(latency).await;
    let ref_store = connect(&reference.join("state.db").display().to_string())
        .await
        .unwrap();
    let ref_req = request(&sample("bikes.mp4"), reference.path(), settings(&api2));
    let (_, ref_run) = process(&ref_store, &ref_req, 3).await;
    assert_eq!(ref_run.status, RunStatus::Completed);
    let a = std::fs::read(dir.join("out.mp4")).unwrap();
    let b = std::fs::read(&ref_req.output).unwrap();
    assert!(a == b, "outputs differ ({} vs {} bytes)", a.len(), b.len());
}

/// The local provider enhances inside each segment's encode, frames only in memory: a
/// run killed after some segments are encoded resumes without encoding them again, and
/// its output is byte-identical to an uninterrupted run's (segment encodes are
/// deterministic: fixed encoder threads, bitexact flags, a pure enhancement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_local_run_then_rerun_encodes_no_segment_twice() {
    let dir = TempDir::new("resume-local");
    let db = dir.join("state.db").display().to_string();
    let store = connect(&db).await.unwrap();

    let mut child = spawn_child(&db, dir.path(), "local");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progressed = false;
    while Instant::now() < deadline {
        if stage_counts(&store, stage::ENCODE).await.0 >= 1 {
            progressed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(progressed, "child made no progress");
    let (done_at_kill, _) = stage_counts(&store, stage::ENCODE).await;

    let status = spawn_child(&db, dir.path(), "local").wait().unwrap();
    assert!(status.success(), "rerun failed: {status}");
    let run = store.run_list(1).await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.id, 1, "the rerun resumed the same run");
    let encodes = stage_attempts(&store, run.id, stage::ENCODE).await;
    assert!(
        (done_at_kill as usize) < encodes.len(),
        "killed too late: {done_at_kill} of {} segments done",
        encodes.len()
    );
    for (key, done, _) in &encodes {
        assert_eq!(*done, 1, "encode {key} completed {done} times");
    }

    let reference = TempDir::new("resume-local-ref");
    let ref_store = connect(&reference.join("state.db").display().to_string())
        .await
        .unwrap();
    let ref_req = request(&sample("bikes.mp4"), reference.path(), settings("local"));
    let (_, ref_run) = process(&ref_store, &ref_req, 3).await;
    assert_eq!(ref_run.status, RunStatus::Completed);
    let a = std::fs::read(dir.join("out.mp4")).unwrap();
    let b = std::fs::read(&ref_req.output).unwrap();
    assert!(a == b, "outputs differ ({} vs {} bytes)", a.len(), b.len());
}
