//! Artifacts that cannot be confused: an encoded segment is trusted only when its
//! manifest matches (this run's uid, size, hash), and the assembled output is checked
//! against the input before it is moved into place. On SQLite and PostgreSQL.

#[path = "support/pipeline.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use idempipe_engine::{RunStatus, SharedStore};
use idempipe_testkit::TestDb;
use idempipe_video::media::probe;
use idempipe_video::pipeline::disk::{self, write_manifest};
use idempipe_video::pipeline::{DriveOutcome, RunStart, drive, stage, start_or_resume};
use idempipe_video::storage::{Scratch, Storage};
use support::{TempDir, drive_options, request, sample, settings};

/// A storage for local files (no scratch needed).
fn local_storage() -> Storage {
    Storage::new(Scratch::unchecked(std::env::temp_dir()))
}

/// Where the run's encoded segment `seg` goes (`ARTIFACTS/run-<uid>/encoded/seg_NNNNN.mp4`).
fn encoded(start: &RunStart, seg: u32) -> PathBuf {
    disk::run_dir(&start.params.artifacts, start.run_id, &start.params.uid)
        .join("encoded")
        .join(format!("seg_{seg:05}.mp4"))
}

async fn drive_to_end(store: &SharedStore, run_id: i64) -> idempipe_engine::Run {
    match drive(
        store.clone(),
        run_id,
        &drive_options(2),
        std::future::pending(),
    )
    .await
    .unwrap()
    {
        DriveOutcome::Finished(run) => run,
        DriveOutcome::Interrupted => unreachable!("never interrupted"),
    }
}

/// carphone_pristine.mp4 (176x144, 120 frames) re-encoded whole, `1 + loops` times
/// over: a real H.264 file of the run's size that is not the run's segment 0.
fn carphone_as_segment(path: &Path, loops: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-stream_loop",
            &loops.to_string(),
            "-i",
        ])
        .arg(sample("carphone_pristine.mp4"))
        .args([
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Segment 0 was encoded, its manifest written, then the file was cut short (as by a
/// disk fault or a stray copy): the encode stage sees the mismatch and encodes it again,
/// and the output is the input's 120 frames at 176x144.
async fn truncated_segment_is_redone(db: TestDb) {
    let dir = TempDir::new("tampered");
    let store = db.store().await;
    let req = request(
        &sample("carphone_pristine.mp4"),
        dir.path(),
        settings("local"),
    );
    let start = start_or_resume(&store, &req).await.unwrap();
    let seg0 = encoded(&start, 0);
    carphone_as_segment(&seg0, 0);
    write_manifest(&local_storage(), &seg0, &seg0, &start.params.uid)
        .await
        .unwrap();
    let bytes = std::fs::read(&seg0).unwrap();
    std::fs::write(&seg0, &bytes[..bytes.len() / 2]).unwrap();

    let run = drive_to_end(&store, start.run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);
    let out = probe(&req.output).await.unwrap();
    assert_eq!(out.frame_count, 120);
    assert_eq!(out.display_size(), (176, 144));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_segment_is_redone_sqlite() {
    truncated_segment_is_redone(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_segment_is_redone_postgres() {
    truncated_segment_is_redone(TestDb::postgres().await).await;
}

/// A forged segment 0 with a valid manifest (the whole input twice, 240 frames, instead
/// of the segment's own) passes the manifest check, but the assembled output has more frames than the
/// input: the run fails with a permanent error naming both counts, and nothing is
/// written at the output.
async fn output_mismatch_fails_the_run(db: TestDb) {
    let dir = TempDir::new("forged");
    let store = db.store().await;
    let req = request(
        &sample("carphone_pristine.mp4"),
        dir.path(),
        settings("local"),
    );
    let start = start_or_resume(&store, &req).await.unwrap();
    let seg0 = encoded(&start, 0);
    carphone_as_segment(&seg0, 1);
    write_manifest(&local_storage(), &seg0, &seg0, &start.params.uid)
        .await
        .unwrap();

    let run = drive_to_end(&store, start.run_id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let split = store
        .item_get(start.run_id, stage::SPLIT, "split")
        .await
        .unwrap();
    let seg0_frames = split.result.unwrap()["segments"][0]["frame_count"]
        .as_u64()
        .unwrap();
    let actual = 240 + 120 - seg0_frames;
    let assemble = store
        .item_get(start.run_id, stage::ASSEMBLE, "assemble")
        .await
        .unwrap();
    assert_eq!(assemble.status.as_str(), "dead", "a permanent failure");
    let error = assemble.last_error.unwrap().to_string();
    assert!(
        error.contains(&format!("frame count {actual}")) && error.contains("input has 120"),
        "{error}"
    );
    assert!(!req.output.exists(), "a mismatched output is never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_mismatch_fails_the_run_sqlite() {
    output_mismatch_fails_the_run(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_mismatch_fails_the_run_postgres() {
    output_mismatch_fails_the_run(TestDb::postgres().await).await;
}
