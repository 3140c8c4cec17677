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

    // An object put at the output since (by anyone else) is no longer the run's: its
    // entity tag and size are not the ones the run recorded.
    let output = s3.url("out/carphone.mp4");
    storage
        .put_bytes(Path::new(&output), b"replaced".to_vec())
        .await
        .unwrap();
    let (code, _, err) = run(
        &mut process_to_s3(&s3, &dir.join("s3.db"), &scratch),
        Duration::from_secs(180),
    );
    assert_eq!(code, 2, "refused: {err}");
    assert!(
        err.contains(&format!(
            "{output}: already there and not written by this run"
        )),
        "{err}"
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

/// `submit IN -o OUTPUT` to `s3`, artifacts in `s3://media/jobs`, state in `db`, with
/// `extra` arguments (no API: nothing here runs the run).
fn submit_to_s3(s3: &S3Server, db: &Path, output: &str, extra: &[&str]) -> (i32, String, String) {
    let mut cmd = idempipe(
        &[
            "submit",
            input().to_str().unwrap(),
            "-o",
            &s3.url(output),
            "--artifacts",
            &s3.url("jobs"),
            "--db",
            db.to_str().unwrap(),
        ],
        Some(s3),
    );
    run(cmd.args(SETTINGS).args(extra), Duration::from_secs(120))
}

/// `idempipe ARGS --db DB --json` with the object store's environment, parsed.
fn json_of(s3: &S3Server, db: &Path, args: &[&str]) -> serde_json::Value {
    let mut cmd = idempipe(args, Some(s3));
    cmd.args(["--db", db.to_str().unwrap(), "--json"]);
    let (code, out, err) = run(&mut cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The artifact directory of run 1 of `db`, from `runs --json`.
fn run_dir(s3: &S3Server, db: &Path) -> String {
    let runs = json_of(s3, db, &["runs"]);
    let uid = runs[0]["params"]["uid"].as_str().unwrap().to_owned();
    s3.url(&format!("jobs/run-{uid}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_already_at_an_s3_output_is_replaced_only_when_asked() {
    let dir = TempDir::new("s3-overwrite");
    let s3 = S3Server::start("media");
    let storage = storage_of(&s3, &dir.join("test-scratch"));
    let taken = s3.url("out/taken.mp4");
    storage
        .put_bytes(Path::new(&taken), b"someone else's video".to_vec())
        .await
        .unwrap();
    let db = dir.join("state.db");
    let (code, _, err) = submit_to_s3(&s3, &db, "out/taken.mp4", &[]);
    assert_eq!(code, 2, "refused: {err}");
    assert!(
        err.contains(&taken)
            && err.contains("not written by this run")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        storage.get_bytes(Path::new(&taken)).await.unwrap().unwrap(),
        b"someone else's video",
        "the object is untouched"
    );
    // A report next to a free output is protected too.
    let report = s3.url("out/free.report.json");
    storage
        .put_bytes(Path::new(&report), b"{}".to_vec())
        .await
        .unwrap();
    let (code, _, err) = submit_to_s3(&s3, &db, "out/free.mp4", &[]);
    assert_eq!(code, 2, "refused: {err}");
    assert!(err.contains(&report), "{err}");
    let (code, out, err) = submit_to_s3(&s3, &db, "out/taken.mp4", &["--overwrite"]);
    assert_eq!(code, 0, "--overwrite: {err}");
    assert!(out.trim().parse::<i64>().is_ok(), "a run id: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encoder_setting_change_deletes_stale_encoded_segments_in_the_bucket() {
    let dir = TempDir::new("s3-preset");
    let s3 = S3Server::start("media");
    let storage = storage_of(&s3, &dir.join("test-scratch"));
    let db = dir.join("state.db");
    let (code, _, err) = submit_to_s3(&s3, &db, "out/preset.mp4", &[]);
    assert_eq!(code, 0, "submit: {err}");
    let root = run_dir(&s3, &db);
    // An encode attempt that died before its completion committed left its segment
    // (made with the old crf); the segments of the input stay.
    let stale = format!("{root}/encoded/seg_00000.mp4");
    let segment = format!("{root}/segments/seg_00000.mp4");
    for key in [&stale, &segment] {
        storage
            .put_bytes(Path::new(key), b"bytes".to_vec())
            .await
            .unwrap();
    }
    let (code, _, err) = submit_to_s3(&s3, &db, "out/preset.mp4", &["--crf", "30"]);
    assert_eq!(code, 0, "submit with a new crf: {err}");
    assert!(err.contains("crf") && err.contains("-> 30"), "{err}");
    assert!(
        !storage.exists(Path::new(&stale)).await.unwrap(),
        "the segment encoded with the old crf is still in the bucket"
    );
    assert!(storage.exists(Path::new(&segment)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_and_prune_measure_and_remove_s3_artifact_directories() {
    let dir = TempDir::new("s3-prune");
    let s3 = S3Server::start("media");
    let storage = storage_of(&s3, &dir.join("test-scratch"));
    let db = dir.join("state.db");
    let (code, _, err) = submit_to_s3(&s3, &db, "out/prune.mp4", &[]);
    assert_eq!(code, 0, "submit: {err}");
    let root = run_dir(&s3, &db);
    let files = [
        (format!("{root}/segments/seg_00000.mp4"), 1000),
        (format!("{root}/frames/00000/000000.orig.rgb"), 300),
        (format!("{root}/frames/00000/000001.orig.rgb"), 300),
    ];
    for (key, len) in &files {
        storage
            .put_bytes(Path::new(key), vec![7; *len])
            .await
            .unwrap();
    }
    let mut expected = 0;
    for key in storage.list(Path::new(&root)).await.unwrap() {
        expected += storage.size(&key).await.unwrap().unwrap();
    }
    assert!(expected >= 1600, "{expected}");
    let runs = json_of(&s3, &db, &["runs"]);
    assert_eq!(runs[0]["artifacts_bytes"], expected, "{runs}");

    // A cancelled run's frames go with --keep-failed; its segments stay.
    let (code, _, err) = run(
        &mut idempipe(&["cancel", "1", "--db", db.to_str().unwrap()], Some(&s3)),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "cancel: {err}");
    let pruned = json_of(&s3, &db, &["prune", "--keep-failed", "0"]);
    assert_eq!(
        pruned["removed_frame_dirs"][0],
        format!("{root}/frames"),
        "{pruned}"
    );
    assert_eq!(pruned["bytes_freed"], 600, "{pruned}");
    assert!(
        storage
            .list(Path::new(&format!("{root}/frames")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(storage.exists(Path::new(&files[0].0)).await.unwrap());

    // A directory with a marker no database knows is an orphan; other prefixes (the
    // uploaded inputs) are never touched.
    let orphan = s3.url(&format!("jobs/run-{}", "ab".repeat(16)));
    let marker = serde_json::json!({
        "uid": "ab".repeat(16), "run_id": 9, "input": "/in.mp4", "output": "/out.mp4",
    });
    storage
        .put_bytes(
            Path::new(&format!("{orphan}/run.json")),
            marker.to_string().into_bytes(),
        )
        .await
        .unwrap();
    storage
        .put_bytes(
            Path::new(&format!("{orphan}/segments/seg_00000.mp4")),
            vec![1; 50],
        )
        .await
        .unwrap();
    let pruned = json_of(
        &s3,
        &db,
        &["prune", "--orphans", "--artifacts", &s3.url("jobs")],
    );
    assert_eq!(
        pruned["removed_orphans"],
        serde_json::json!([orphan]),
        "{pruned}"
    );
    assert!(storage.list(Path::new(&orphan)).await.unwrap().is_empty());
    assert!(
        storage.exists(Path::new(&files[0].0)).await.unwrap(),
        "run 1 is no orphan"
    );

    // --older-than deletes the finished run and its whole directory.
    let pruned = json_of(&s3, &db, &["prune", "--older-than", "0"]);
    assert_eq!(pruned["pruned_runs"], 1, "{pruned}");
    assert_eq!(
        pruned["removed_run_dirs"],
        serde_json::json!([root]),
        "{pruned}"
    );
    assert!(storage.list(Path::new(&root)).await.unwrap().is_empty());
    let inputs = storage
        .list(Path::new(&s3.url("jobs/inputs")))
        .await
        .unwrap();
    assert_eq!(inputs.len(), 1, "the uploaded input stays: {inputs:?}");
}
