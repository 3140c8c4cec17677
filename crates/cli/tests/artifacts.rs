//! Integrity in everyday use, through the real binary: artifacts are per run uid (two
//! databases sharing a root, ids reused after prune), the input and unrelated files are
//! never overwritten, the extension picks the container, and prune gives the disk back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use idempipe_engine::store::RunCreate;
use idempipe_engine::{NewItem, SharedStore, connect};
use idempipe_testkit::{TempDir, TestDb, media};
use serde_json::{Value, json};

fn idempipe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idempipe"));
    cmd.env_remove("IDEMPIPE_DB").env("RUST_LOG", "warn");
    cmd
}

/// `process INPUT -o OUTPUT --db DB` with fast settings and artifacts in `root`.
fn process(input: &Path, output: &Path, db: &str, root: &Path, extra: &[&str]) -> Command {
    let mut cmd = idempipe();
    cmd.arg("process")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--db", db, "--artifacts"])
        .arg(root)
        .args(["--preset", "ultrafast", "--segment-seconds", "1"])
        .args(["--captions", "off", "--workers", "2"])
        .args(extra);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "{:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (width, height, frames, format_name) of a video, from ffprobe.
fn video_facts(path: &Path) -> (u64, u64, u64, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-count_packets"])
        .args(["-select_streams", "v:0", "-show_streams", "-show_format"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", path.display());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &j["streams"][0];
    (
        s["width"].as_u64().unwrap(),
        s["height"].as_u64().unwrap(),
        s["nb_read_packets"].as_str().unwrap().parse().unwrap(),
        j["format"]["format_name"].as_str().unwrap().to_owned(),
    )
}

/// Completed `encode` items of the newest run in the SQLite file `db` (0 until it exists).
async fn encoded_segments(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let Ok(store) = connect(&db.display().to_string()).await else {
        return 0;
    };
    let Some(run) = store
        .run_list(1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
    else {
        return 0;
    };
    let counts = store.item_counts(run.id).await.unwrap_or_default();
    counts
        .iter()
        .filter(|c| c.stage == "encode" && c.status == "completed")
        .map(|c| c.count)
        .sum()
}

/// Waits until `child` has encoded `n` segments, then SIGKILLs it.
async fn kill_after_encodes(mut child: Child, db: &Path, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while encoded_segments(db).await < n {
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn run_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Run A (bikes, 640x272, 250 frames) is killed after encoding segments; run B
/// (carphone, 176x144, 120 frames) in another database, also run 1, with the same
/// artifact root, makes its own video from its own frames and leaves A's files alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_share_an_artifact_root() {
    let dir = TempDir::new("two-dbs");
    let root = dir.join("artifacts");
    let (a_db, b_db) = (dir.join("a.db"), dir.join("b.db"));
    let child = process(
        &media("bikes.mp4"),
        &dir.join("a.mp4"),
        &a_db.display().to_string(),
        &root,
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    kill_after_encodes(child, &a_db, 2).await;
    let a_dirs = run_dirs(&root);
    assert_eq!(a_dirs.len(), 1, "{a_dirs:?}");

    let b = dir.join("b.mp4");
    let out = run(&mut process(
        &media("carphone_pristine.mp4"),
        &b,
        &b_db.display().to_string(),
        &root,
        &[],
    ));
    assert!(out.status.success());
    assert!(stderr(&out).contains("starting run 1"));
    let (w, h, frames, _) = video_facts(&b);
    assert_eq!((w, h, frames), (176, 144, 120), "B's video, not A's frames");
    assert!(
        a_dirs[0].join("encoded").exists(),
        "A's files are left alone"
    );
}

/// A cancelled run's files are removed by prune (bytes reported); the next run in the
/// same database gets the pruned run's id but not its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_frees_the_disk_and_the_next_run_starts_clean() {
    let dir = TempDir::new("prune-reuse");
    let root = dir.join("artifacts");
    let db = dir.join("state.db");
    let url = db.display().to_string();
    let child = process(&media("bikes.mp4"), &dir.join("a.mp4"), &url, &root, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_encodes(child, &db, 1).await;
    assert!(
        run(idempipe().args(["cancel", "1", "--db", &url]))
            .status
            .success()
    );
    let a_dir = run_dirs(&root).remove(0);
    assert!(a_dir.join("encoded").exists());

    let out = run(idempipe().args(["prune", "--older-than", "0", "--json", "--db", &url]));
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["pruned_runs"], 1);
    assert!(j["bytes_freed"].as_u64().unwrap() > 0, "{j}");
    assert!(!a_dir.exists(), "prune removed the run's directory");

    let b = dir.join("b.mp4");
    let out = run(&mut process(
        &media("carphone_pristine.mp4"),
        &b,
        &url,
        &root,
        &[],
    ));
    assert!(out.status.success());
    let (w, h, frames, _) = video_facts(&b);
    assert_eq!((w, h, frames), (176, 144, 120));
}

/// The output is the input itself, a symlink to it or a hard link to it: refused with
/// exit 2 before any work (no database, no artifacts), the input unchanged.
#[test]
fn the_input_is_never_the_output() {
    let dir = TempDir::new("same-file");
    let input = dir.join("in.mp4");
    std::fs::copy(media("carphone_pristine.mp4"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let symlink = dir.join("link.mp4");
    std::os::unix::fs::symlink(&input, &symlink).unwrap();
    let hard = dir.join("hard.mp4");
    std::fs::hard_link(&input, &hard).unwrap();
    let db = dir.join("state.db");
    let root = dir.join("artifacts");
    for output in [&input, &symlink, &hard] {
        let out = run(&mut process(
            &input,
            output,
            &db.display().to_string(),
            &root,
            &["--overwrite"],
        ));
        assert_eq!(out.status.code(), Some(2), "{}", output.display());
        assert!(stderr(&out).contains("is the input"), "{}", stderr(&out));
        assert_eq!(std::fs::read(&input).unwrap(), original);
    }
    assert!(!db.exists() && !root.exists(), "no work was done");
}

/// A file at -o that no run wrote is refused (exit 2, unchanged) unless --overwrite;
/// rerunning the completed command is fine; a stray thumbnail is refused too.
#[test]
fn unrelated_files_at_the_output_are_refused() {
    let dir = TempDir::new("unrelated");
    let url = dir.join("state.db").display().to_string();
    let root = dir.join("artifacts");
    let input = media("carphone_pristine.mp4");
    let output = dir.join("out.mp4");
    std::fs::write(&output, b"my holiday video").unwrap();

    let out = run(&mut process(&input, &output, &url, &root, &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&output).unwrap(), b"my holiday video");

    let out = run(&mut process(&input, &output, &url, &root, &["--overwrite"]));
    assert!(out.status.success());
    assert_eq!(video_facts(&output).2, 120);

    let out = run(&mut process(&input, &output, &url, &root, &[]));
    assert!(out.status.success(), "the run's own output is not refused");
    assert!(
        stderr(&out).contains("already produced"),
        "{}",
        stderr(&out)
    );

    let other = dir.join("other.mp4");
    std::fs::write(dir.join("other.thumb.jpg"), b"not ours").unwrap();
    let out = run(&mut process(
        &input,
        &other,
        &url,
        &root,
        &["-y", "--crf", "20"],
    ));
    assert!(out.status.success(), "-y replaces it");
    std::fs::write(dir.join("third.report.json"), b"{}").unwrap();
    let out = run(&mut process(
        &input,
        &dir.join("third.mp4"),
        &url,
        &root,
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(dir.join("third.report.json")).unwrap(), b"{}");
}

/// `-o x.mkv` writes Matroska; an extension naming no supported container is refused.
#[test]
fn the_extension_picks_the_container() {
    let dir = TempDir::new("mkv");
    let url = dir.join("state.db").display().to_string();
    let root = dir.join("artifacts");
    let input = media("carphone_pristine.mp4");
    let mkv = dir.join("out.mkv");
    let out = run(&mut process(&input, &mkv, &url, &root, &[]));
    assert!(out.status.success());
    let (w, h, frames, format) = video_facts(&mkv);
    assert!(format.contains("matroska"), "{format}");
    assert_eq!((w, h, frames), (176, 144, 120));

    let out = run(&mut process(&input, &dir.join("out.avi"), &url, &root, &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(".mkv"), "{}", stderr(&out));
    assert!(!dir.join("out.avi").exists());
}

/// A run row whose params name artifact dir `root/run-<uid>`.
async fn create_run(store: &SharedStore, uid: &str, root: &Path) -> i64 {
    let params = json!({ "uid": uid, "artifacts": root });
    let create = RunCreate {
        pipeline: "video".into(),
        fingerprint: format!("/out-{uid}.mp4"),
        input: "/in.mp4".into(),
        params,
        items: vec![NewItem::new("ingest", "ingest", json!({}))],
    };
    store.run_create(&create, 1_000).await.unwrap()
}

/// `root/run-<uid>` with a marker naming `marker_uid` and a `bytes`-byte frame file.
fn run_dir(root: &Path, uid: &str, marker_uid: Option<&str>, bytes: usize) -> PathBuf {
    let dir = root.join(format!("run-{uid}"));
    std::fs::create_dir_all(dir.join("frames/00000")).unwrap();
    std::fs::write(dir.join("frames/00000/000000.orig.rgb"), vec![7u8; bytes]).unwrap();
    if let Some(m) = marker_uid {
        let marker = json!({ "uid": m, "run_id": 1, "input": "/in.mp4", "output": "/out.mp4" });
        std::fs::write(dir.join("run.json"), marker.to_string()).unwrap();
    }
    dir
}

fn uid(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

/// `prune --orphans` removes a run directory no database knows and leaves alone: a live
/// run's, one known to another database (--also-db), a `run-<uid>` without a marker, one
/// whose marker names another uid, and an unrelated directory.
async fn prune_orphans(db: TestDb) {
    let dir = TempDir::new("orphans");
    let root = dir.join("artifacts");
    let store = db.store().await;
    let other = TestDb::sqlite();
    create_run(&store, &uid(1), &root).await;
    create_run(&other.store().await, &uid(5), &root).await;
    let live = run_dir(&root, &uid(1), Some(&uid(1)), 100);
    let orphan = run_dir(&root, &uid(2), Some(&uid(2)), 3000);
    let unmarked = run_dir(&root, &uid(3), None, 100);
    let mismatched = run_dir(&root, &uid(4), Some(&uid(9)), 100);
    let elsewhere = run_dir(&root, &uid(5), Some(&uid(5)), 100);
    let unrelated = root.join("holiday");
    std::fs::create_dir_all(&unrelated).unwrap();
    std::fs::write(unrelated.join("run.json"), b"{}").unwrap();
    let orphan_bytes = std::fs::metadata(orphan.join("run.json")).unwrap().len() + 3000;

    let out = run(idempipe()
        .args([
            "prune",
            "--orphans",
            "--json",
            "--db",
            &db.url,
            "--also-db",
            &other.url,
        ])
        .arg("--artifacts")
        .arg(&root));
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["removed_orphans"], json!([orphan]));
    assert_eq!(j["bytes_freed"], orphan_bytes);
    assert!(!orphan.exists());
    for kept in [&live, &unmarked, &mismatched, &elsewhere, &unrelated] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_orphans_sqlite() {
    prune_orphans(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_orphans_postgres() {
    prune_orphans(TestDb::postgres().await).await;
}

/// `runs` shows each run's artifact size (exact in --json, readable in text).
async fn runs_show_artifact_sizes(db: TestDb) {
    let dir = TempDir::new("runs-size");
    let root = dir.join("artifacts");
    let store = db.store().await;
    create_run(&store, &uid(1), &root).await;
    run_dir(&root, &uid(1), None, 5120);
    let out = run(idempipe().args(["runs", "--json", "--db", &db.url]));
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["artifacts_bytes"], 5120);
    let out = run(idempipe().args(["runs", "--db", &db.url]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("artifacts") && text.contains("5.0 KiB"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_artifact_sizes_sqlite() {
    runs_show_artifact_sizes(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_artifact_sizes_postgres() {
    runs_show_artifact_sizes(TestDb::postgres().await).await;
}

/// `prune --keep-failed 0` deletes the frames of a cancelled run, keeps its row and the
/// rest of its directory, and leaves a running run's frames alone.
async fn keep_failed_deletes_only_given_up_frames(db: TestDb) {
    let dir = TempDir::new("keep-failed");
    let root = dir.join("artifacts");
    let store = db.store().await;
    let cancelled = create_run(&store, &uid(1), &root).await;
    create_run(&store, &uid(2), &root).await;
    store.run_cancel(cancelled, 2_000).await.unwrap();
    let gave_up = run_dir(&root, &uid(1), Some(&uid(1)), 4000);
    std::fs::create_dir_all(gave_up.join("encoded")).unwrap();
    let running = run_dir(&root, &uid(2), Some(&uid(2)), 4000);

    let out = run(idempipe().args(["prune", "--keep-failed", "0", "--json", "--db", &db.url]));
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bytes_freed"], 4000);
    assert_eq!(j["removed_frame_dirs"], json!([gave_up.join("frames")]));
    assert!(!gave_up.join("frames").exists());
    assert!(gave_up.join("encoded").exists() && gave_up.join("run.json").exists());
    assert!(running.join("frames/00000/000000.orig.rgb").exists());
    assert_eq!(store.run_list(10).await.unwrap().len(), 2, "the runs stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_failed_deletes_only_given_up_frames_sqlite() {
    keep_failed_deletes_only_given_up_frames(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_failed_deletes_only_given_up_frames_postgres() {
    keep_failed_deletes_only_given_up_frames(TestDb::postgres().await).await;
}
