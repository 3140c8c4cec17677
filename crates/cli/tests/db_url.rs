//! `--db` mistakes, run as the real binary: a mistyped URL is refused and creates
//! nothing, read-only commands never create a database, an unreachable PostgreSQL fails
//! fast saying why once, and `idempipe runs | head -1` ends quietly.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use idempipe_engine::connect;
use idempipe_engine::store::RunCreate;
use idempipe_testkit::TempDir;
use serde_json::json;

fn idempipe_in(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args(args)
        .current_dir(dir.path())
        .env("IDEMPIPE_LOG", "warn")
        .env_remove("IDEMPIPE_DB")
        .output()
        .unwrap()
}

fn entries(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn mistyped_database_urls_are_refused_and_create_nothing() {
    let input = idempipe_testkit::media("bikes.mp4").display().to_string();
    for url in ["postgres:/bad", "postgresql:bad", "mysql://x", "notes.txt"] {
        let dir = TempDir::new("cli-db-typo");
        for args in [
            vec!["runs", "--db", url],
            vec![
                "process",
                &input,
                "-o",
                "out.mp4",
                "--captions",
                "off",
                "--db",
                url,
            ],
        ] {
            let run = idempipe_in(&dir, &args);
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("unsupported database {url:?}"))
                    && stderr.contains("postgres://")
                    && stderr.contains("sqlite://PATH"),
                "{args:?}: {stderr}"
            );
            assert_eq!(
                entries(&dir),
                Vec::<String>::new(),
                "{args:?} created files"
            );
        }
    }
}

#[test]
fn read_only_and_control_commands_never_create_a_database() {
    let dir = TempDir::new("cli-db-missing");
    for args in [
        &["runs", "--db", "missing.db"][..],
        &["status", "1", "--db", "missing.db"],
        &["failures", "1", "--db", "missing.db"],
        &["retry", "1", "--db", "missing.db"],
        &["cancel", "1", "--db", "missing.db"],
        &["prune", "--older-than", "1", "--db", "missing.db"],
    ] {
        let run = idempipe_in(&dir, args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no database at missing.db") && stderr.contains("idempipe process"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            entries(&dir),
            Vec::<String>::new(),
            "{args:?} created files"
        );
    }
}

#[test]
fn an_unreachable_postgres_fails_within_seconds_saying_why_once() {
    let port = idempipe_testkit::free_port();
    let dir = TempDir::new("cli-db-refused");
    let url = format!("postgres://postgres@127.0.0.1:{port}/x");
    let mut child = Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args(["runs", "--db", &url])
        .current_dir(dir.path())
        .env("IDEMPIPE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(8) {
            let _ = child.kill();
            panic!("`idempipe runs --db {url}` still runs after 8 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert_eq!(
        stderr.to_lowercase().matches("connection refused").count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn runs_into_a_closed_pipe_ends_quietly() {
    let dir = TempDir::new("cli-db-pipe");
    let db = dir.join("state.db").display().to_string();
    let store = connect(&db).await.unwrap();
    for i in 0..3 {
        store
            .run_create(
                &RunCreate {
                    pipeline: "video".into(),
                    fingerprint: format!("/out{i}.mp4"),
                    input: format!("/in{i}.mp4"),
                    params: json!({}),
                    items: vec![],
                },
                1_000,
            )
            .await
            .unwrap();
    }
    drop(store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args(["runs", "--db", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -0`: the reader is gone before the first line is written.
    drop(child.stdout.take());
    let run = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(run.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "", "a closed pipe is not an error to report");
}
