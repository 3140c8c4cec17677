//! The run lifecycle through the real binary on real media: `process` serves only its own
//! run, runs nobody serves read `interrupted`, Ctrl-C stops cleanly without using an
//! attempt (twice: at once), and the refusals (`--workers 0`, finished runs, unknown stages).

#[path = "support/cluster.rs"]
mod cluster;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use idempipe_engine::store::{ClaimParams, ItemFilter, Outcome, OutcomeKind, RunCreate};
use idempipe_engine::{Clock, ItemStatus, NewItem, SystemClock, connect};
use idempipe_testkit::{TempDir, media};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_idempipe");

fn db_url(dir: &TempDir) -> String {
    dir.join("state.db").display().to_string()
}

/// Runs the binary to completion, failing the test if it takes longer than `limit` (a
/// hang must fail, not block the suite).
fn idempipe(dir: &TempDir, args: &[&str], limit: Duration) -> (i32, String, String) {
    cluster::run(
        Command::new(BIN)
            .args(args)
            .args(["--db", &db_url(dir)])
            .env("IDEMPIPE_LOG", "warn"),
        limit,
    )
}

fn json_of(dir: &TempDir, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = idempipe(dir, &all, Duration::from_secs(60));
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: invalid JSON ({e}): {out}"))
}

/// Sends `SIG` to `target` (a pid, or `-pgid` for a whole process group) with kill(1).
fn signal(target: &str, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {target} failed");
}

/// `idempipe process` started in its own process group, like a foreground job in a
/// terminal: a Ctrl-C there reaches every process of the group. SIGKILLed on drop.
struct Job {
    child: Child,
}

impl Job {
    fn start(dir: &TempDir, args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt;
        let child = Command::new(BIN)
            .args(args)
            .args(["--db", &db_url(dir)])
            .env("IDEMPIPE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        Self { child }
    }

    /// What a terminal's Ctrl-C does: SIGINT to the whole foreground process group.
    fn ctrl_c(&self) {
        signal(&format!("-{}", self.child.id()), "INT");
    }

    /// Waits for the exit, failing the test after `limit`; returns status and stderr.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "idempipe process did not exit within {limit:?} of the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `status --json` of run 1 until an extract or encode (an ffmpeg child) runs.
fn wait_for_ffmpeg_stage(dir: &TempDir, job: &mut Job) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            job.child.try_wait().unwrap().is_none(),
            "process ended before an extract or encode was seen running"
        );
        let (code, out, _) = idempipe(dir, &["status", "1", "--json"], Duration::from_secs(30));
        if code == 0 {
            let status: Value = serde_json::from_str(&out).unwrap();
            let busy = status["stages"].as_array().unwrap().iter().any(|s| {
                matches!(s["stage"].as_str(), Some("extract" | "encode"))
                    && s["counts"]["running"].as_i64().unwrap_or(0) > 0
            });
            if busy {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no extract or encode seen running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 16 s test clip: eight segments, so extracts and encodes run for a while.
fn clip(dir: &TempDir) -> String {
    let path = dir.join("clip.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=480x270:rate=25")
        .args(["-t", "16", "-pix_fmt", "yuv420p", "-g", "25"])
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not generate the clip");
    path.display().to_string()
}

/// ffmpeg processes whose command line names this test's directory.
fn ffmpeg_left(dir: &TempDir) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", &dir.path().display().to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ffmpeg"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ctrl_c_gives_work_back_and_a_rerun_completes() {
    let dir = TempDir::new("cli-ctrl-c");
    let input = clip(&dir);
    let out = dir.join("out.mp4").display().to_string();
    let artifacts = dir.join("artifacts").display().to_string();
    let args = [
        "process",
        &input,
        "-o",
        &out,
        "--artifacts",
        &artifacts,
        "--captions",
        "off",
        "--workers",
        "2",
        "--preset",
        "veryslow",
    ];
    let mut job = Job::start(&dir, &args);
    wait_for_ffmpeg_stage(&dir, &mut job);
    job.ctrl_c();
    let (status, err) = job.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopping: press Ctrl-C again to quit at once"),
        "{err}"
    );

    // No failed attempt, no used attempt: completed items used one, the others none.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = connect(&db_url(&dir)).await.unwrap();
        let items = store
            .item_list(&ItemFilter {
                run_id: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(items.len() > 10, "{items:?}");
        for item in &items {
            assert_ne!(item.status, ItemStatus::Running, "{item:?}");
            assert_ne!(item.status, ItemStatus::Failed, "{item:?}");
            let used = i64::from(item.status == ItemStatus::Completed);
            assert_eq!(item.attempts, used, "{} {}: {item:?}", item.stage, item.key);
            for attempt in store.attempt_list(item.id).await.unwrap() {
                assert_eq!(attempt.outcome, "completed", "{attempt:?}");
            }
        }
    });
    let failures = json_of(&dir, &["status", "1"]);
    assert_eq!(failures["failures"], json!([]), "{failures}");
    let runs = json_of(&dir, &["runs"]);
    assert_eq!(runs[0]["activity"], "interrupted", "{runs}");
    assert!(ffmpeg_left(&dir).is_empty(), "{}", ffmpeg_left(&dir));

    // The rerun resumes and completes.
    let (code, _, err) = idempipe(&dir, &args, Duration::from_secs(900));
    assert_eq!(code, 0, "{err}");
    assert!(std::path::Path::new(&out).is_file());
    let status = json_of(&dir, &["status", "1"]);
    assert_eq!(status["run"]["status"], "completed", "{status}");
    assert_eq!(status["activity"], Value::Null, "{status}");
}

/// Killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames enhanced by an API that takes 60 s per call: the first Ctrl-C lets those outside
/// calls run on within the grace period (nothing else is left to stop), and a second
/// Ctrl-C quits at once.
#[test]
fn a_second_ctrl_c_quits_at_once() {
    let dir = TempDir::new("cli-ctrl-c-twice");
    let port = idempipe_testkit::free_port();
    let server = Server(
        Command::new(BIN)
            .args(["enhance-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--latency-ms", "60000"])
            .env("IDEMPIPE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "enhance-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let input = media("carphone_pristine.mp4").display().to_string();
    let out = dir.join("out.mp4").display().to_string();
    let artifacts = dir.join("artifacts").display().to_string();
    let api = format!("http://127.0.0.1:{port}");
    let mut job = Job::start(
        &dir,
        &[
            "process",
            &input,
            "-o",
            &out,
            "--artifacts",
            &artifacts,
            "--captions",
            "off",
            "--api",
            &api,
            "--workers",
            "2",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            job.child.try_wait().unwrap().is_none(),
            "process ended early"
        );
        let (code, out, _) = idempipe(&dir, &["status", "1", "--json"], Duration::from_secs(30));
        if code == 0 {
            let status: Value = serde_json::from_str(&out).unwrap();
            let frames =
                status["stages"].as_array().unwrap().iter().any(|s| {
                    s["stage"] == "frame" && s["counts"]["running"].as_i64().unwrap_or(0) > 0
                });
            if frames {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no frame call seen running");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the calls reach the server (their outside-call mark comes right after the claim).
    std::thread::sleep(Duration::from_millis(500));
    job.ctrl_c();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        job.child.try_wait().unwrap().is_none(),
        "the first Ctrl-C lets outside calls finish within the grace period"
    );
    job.ctrl_c();
    let (status, err) = job.wait(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopping: press Ctrl-C again to quit at once"),
        "{err}"
    );
    assert!(err.contains("quitting at once"), "{err}");
    assert!(ffmpeg_left(&dir).is_empty(), "{}", ffmpeg_left(&dir));
    drop(server);
}

#[test]
fn process_serves_only_its_own_run() {
    let dir = TempDir::new("cli-own-run");
    let artifacts = dir.join("artifacts").display().to_string();
    let other_in = media("carphone_pristine.mp4").display().to_string();
    let other_out = dir.join("other.mp4").display().to_string();
    let (code, id, err) = idempipe(
        &dir,
        &[
            "submit",
            &other_in,
            "-o",
            &other_out,
            "--artifacts",
            &artifacts,
            "--captions",
            "off",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(id.trim(), "1");
    // Interrupt it cleanly after its first claim: the ingest item is given back unused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = connect(&db_url(&dir)).await.unwrap();
        let now = SystemClock.now();
        let held = store
            .item_claim(&ClaimParams {
                stage: "ingest".into(),
                limit: 10,
                worker: "gone".into(),
                lease_token: 5,
                lease_expires_at: now + 60_000,
                now,
                run_id: Some(1),
            })
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        let ids: Vec<i64> = held.iter().map(|h| h.id).collect();
        assert_eq!(store.item_release(&ids, 5, now).await.unwrap(), 1);
    });
    let (_, text, _) = idempipe(&dir, &["runs"], Duration::from_secs(30));
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(
        line.contains("interrupted") && !line.contains("running"),
        "{text}"
    );

    let input = media("bikes.mp4").display().to_string();
    let out = dir.join("out.mp4").display().to_string();
    let (code, _, err) = idempipe(
        &dir,
        &[
            "process",
            &input,
            "-o",
            &out,
            "--artifacts",
            &artifacts,
            "--captions",
            "off",
            "--preset",
            "ultrafast",
        ],
        Duration::from_secs(900),
    );
    assert_eq!(code, 0, "{err}");

    rt.block_on(async {
        let store = connect(&db_url(&dir)).await.unwrap();
        let items = store
            .item_list(&ItemFilter {
                run_id: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].status, ItemStatus::Pending);
        assert_eq!(items[0].attempts, 0, "the other run was not touched");
        assert!(store.attempt_list(items[0].id).await.unwrap().is_empty());
    });
    let runs = json_of(&dir, &["runs"]);
    let by_id = |id: i64| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(1)["status"], "running");
    assert_eq!(by_id(1)["activity"], "interrupted");
    assert_eq!(by_id(2)["status"], "completed");
    let (_, text, _) = idempipe(&dir, &["status", "1"], Duration::from_secs(30));
    assert!(
        text.lines().next().unwrap().contains("interrupted"),
        "{text}"
    );
    assert!(text.contains("no worker serves this run"), "{text}");
}

#[test]
fn zero_workers_are_refused_at_once() {
    let dir = TempDir::new("cli-zero");
    let input = media("bikes.mp4").display().to_string();
    let out = dir.join("out.mp4").display().to_string();
    let (code, _, err) = idempipe(
        &dir,
        &["process", &input, "-o", &out, "--workers", "0"],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 1"), "{err}");
    assert!(!dir.join("state.db").exists(), "refused before any work");
    let (code, _, err) = idempipe(
        &dir,
        &["worker", "--concurrency", "0"],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 1"), "{err}");
}

/// Run 1 (video pipeline) cancelled, run 2 completed, run 3 failed, run 4 running.
async fn finished_runs(dir: &TempDir) {
    let store = connect(&db_url(dir)).await.unwrap();
    let create = |n: usize| RunCreate {
        pipeline: "video".into(),
        fingerprint: format!("fp-{n}"),
        input: format!("/in-{n}.mp4"),
        params: json!({}),
        items: vec![NewItem::new("frame", format!("frame/{n}"), json!({}))],
    };
    for n in 1..=4 {
        store.run_create(&create(n), 1_000).await.unwrap();
    }
    store.run_cancel(1, 2_000).await.unwrap();
    for (run, kind) in [
        (2, OutcomeKind::Completed(json!({}))),
        (
            3,
            OutcomeKind::Dead(json!({"kind": "permanent", "message": "bad"})),
        ),
    ] {
        let held = store
            .item_claim(&ClaimParams {
                stage: "frame".into(),
                limit: 1,
                worker: "w".into(),
                lease_token: run,
                lease_expires_at: 100_000,
                now: 3_000,
                run_id: Some(run),
            })
            .await
            .unwrap();
        store
            .item_record(
                &[Outcome {
                    item_id: held[0].id,
                    lease_token: run,
                    kind,
                    spawns: vec![],
                }],
                4_000,
            )
            .await
            .unwrap();
    }
    store.run_finish_ready(5_000).await.unwrap();
    assert_eq!(
        store.run_get(3).await.unwrap().status,
        idempipe_engine::RunStatus::Failed
    );
}

#[tokio::test]
async fn finished_runs_and_unknown_stages_are_refused() {
    let dir = TempDir::new("cli-refuse");
    finished_runs(&dir).await;
    let limit = Duration::from_secs(30);
    for (run, status) in [("1", "cancelled"), ("2", "completed"), ("3", "failed")] {
        for cmd in ["pause", "resume", "cancel"] {
            let (code, _, err) = idempipe(&dir, &[cmd, run], limit);
            assert_eq!(code, 2, "{cmd} {run}: {err}");
            assert!(
                err.contains(&format!("run {run} is {status}")),
                "{cmd} {run}: {err}"
            );
        }
    }
    let (_, _, err) = idempipe(&dir, &["pause", "3"], limit);
    assert!(err.contains("idempipe retry 3"), "{err}");
    let runs = json_of(&dir, &["runs"]);
    let status: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["running", "failed", "completed", "cancelled"],
        "nothing changed"
    );

    let (code, _, err) = idempipe(&dir, &["pause", "4", "--stage", "bogus"], limit);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no stage \"bogus\"") && err.contains("extract") && err.contains("frame"),
        "{err}"
    );
    let (code, _, err) = idempipe(&dir, &["resume", "4", "--stage", "bogus"], limit);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = idempipe(&dir, &["pause", "4", "--stage", "encode"], limit);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stage encode paused"), "{out}");
}
