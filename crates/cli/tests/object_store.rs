//! `process` with its artifacts and output in S3-compatible object storage (a real
//! s3rver process): the output is frame-identical to a run with local artifacts, the
//! local input was uploaded once, the run's artifacts are gone from the bucket at the
//! end, the scratch directory is left empty, and a SIGKILLed run resumes from what it
//! had published.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::time::Duration;

use cluster::{SETTINGS, frame_md5s, idempipe, input, reference_frames, run, storage_of};
use idempipe_testkit::TempDir;
use idempipe_testkit::s3::S3Server;

/// `process` of the sample to `s3://media/out/carphone.mp4`, artifacts in
/// `s3://media/work`, with state in `db` and scratch in `scratch`.
fn process_to_s3(s3: &S3Server, db: &Path, scratch: &Path) -> std::process::Command {
    let mut cmd = idempipe(
        &[
            "process",
            input().to_str().unwrap(),
            "-o",
            &s3.url("out/carphone.mp4"),
            "--artifacts",
            &s3.url("jobs"),
            "--db",
            db.to_str().unwrap(),
            "--scratch",
            scratch.to_str().unwrap(),
        ],
        Some(s3),
    );
    cmd.args(SETTINGS);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn process_with_s3_artifacts_and_output_matches_a_local_run() {
    let dir = TempDir::new("s3-process");
    let reference = reference_frames(&dir, None).await;
    let s3 = S3Server::start("media");
    let scratch = dir.join("scratch");
    let (code, out, err) = run(
        &mut process_to_s3(&s3, &dir.join("s3.db"), &scratch),
        Duration::from_secs(180),
    );
    assert_eq!(code, 0, "process: {err}");
    assert_eq!(out.trim(), s3.url("out/carphone.mp4"));

    let storage = storage_of(&s3, &dir.join("test-scratch"));
    let output = storage
        .fetch(Path::new(&s3.url("out/carphone.mp4")))
        .await
        .unwrap();
    assert_eq!(frame_md5s(output.path()), reference, "frames differ");
    for side in ["out/carphone.thumb.jpg", "out/carphone.report.json"] {
        assert!(
            storage.exists(Path::new(&s3.url(side))).await.unwrap(),
            "{side} missing"
        );
    }
    // Only the uploaded input is left under the artifacts: the run removed its own.
    let left = storage.list(Path::new(&s3.url("jobs"))).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].to_str().unwrap().contains("/jobs/inputs/"),
        "{left:?}"
    );
    // Every local copy was removed once used.
    let scratch_left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(scratch_left.is_empty(), "{scratch_left:?}");

    // The same command again uploads nothing and finds the finished run.
    let puts_before = s3.log().matches("PUT /media/jobs/inputs/").count();
    let (code, _, err) = run(
        &mut process_to_s3(&s3, &dir.join("s3.db"), &scratch),
        Duration::from_secs(180),
    );
    assert_eq!(code, 0, "second process: {err}");
    assert!(err.contains("run 1 already produced"), "{err}");
    assert_eq!(
        s3.log().matches("PUT /media/jobs/inputs/").count(),
        puts_before,
        "the input was uploaded again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_with_s3_artifacts_resumes_to_the_same_output() {
    let dir = TempDir::new("s3-resume");
    let reference = reference_frames(&dir, None).await;
    let s3 = S3Server::start("media");
    let db = dir.join("s3.db");
    let scratch = dir.join("scratch");
    let mut child = process_to_s3(&s3, &db, &scratch)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some frames are enhanced and published.
    let store = idempipe_engine::connect(db.to_str().unwrap()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(store) = &store
            && let Ok(p) = idempipe_video::pipeline::frame_progress(store, 1).await
            && p.done >= 30
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, _, err) = run(
        &mut process_to_s3(&s3, &db, &scratch),
        Duration::from_secs(180),
    );
    assert_eq!(code, 0, "resumed process: {err}");
    assert!(err.contains("resuming run 1"), "{err}");
    let storage = storage_of(&s3, &dir.join("test-scratch"));
    let output = storage
        .fetch(Path::new(&s3.url("out/carphone.mp4")))
        .await
        .unwrap();
    assert_eq!(frame_md5s(output.path()), reference, "frames differ");
}
