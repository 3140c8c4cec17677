//! The inspection and control commands, run as the real binary against a store prepared
//! through the engine: a run with completed, failed and dead items.

use std::process::Command;

use idempipe_engine::store::{ClaimParams, Outcome, OutcomeKind, RunCreate};
use idempipe_engine::{NewItem, connect};
use serde_json::{Value, json};

struct Db {
    url: String,
    _dir: std::path::PathBuf,
}

/// A SQLite file with run 1: frame/0 completed, frame/1 failed (503), frame/2 dead (400),
/// frame/3 pending.
async fn prepared() -> Db {
    let dir = std::env::temp_dir().join(format!(
        "idempipe-cli-{}-{}",
        std::process::id(),
        fastrand_u32()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = dir.join("state.db").display().to_string();
    let store = connect(&url).await.unwrap();
    let items = (0..4)
        .map(|i| NewItem::new("frame", format!("frame/{i}"), json!({ "i": i })))
        .collect();
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "video".into(),
                fingerprint: "/out.mp4".into(),
                input: "/in.mp4".into(),
                params: json!({}),
                items,
            },
            1_000,
        )
        .await
        .unwrap();
    let claimed = store
        .item_claim(&ClaimParams {
            stage: "frame".into(),
            limit: 3,
            worker: "w1".into(),
            lease_token: 7,
            lease_expires_at: 100_000,
            now: 1_000,
            run_id: None,
        })
        .await
        .unwrap();
    let kinds = [
        OutcomeKind::Completed(json!({"score": 1})),
        OutcomeKind::Failed {
            error: json!({"kind": "transient", "status": 503, "message": "unavailable"}),
            retry_at: 9_000_000_000_000,
        },
        OutcomeKind::Dead(json!({"kind": "permanent", "status": 400, "message": "not an image"})),
    ];
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .zip(kinds)
        .map(|(c, kind)| Outcome {
            item_id: c.id,
            lease_token: 7,
            kind,
            spawns: vec![],
        })
        .collect();
    store.item_record(&outcomes, 2_000).await.unwrap();
    assert_eq!(run, 1);
    Db { url, _dir: dir }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn idempipe(db: &Db, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args(args)
        .args(["--db", &db.url])
        .env("IDEMPIPE_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json_of(db: &Db, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = idempipe(db, &all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}): {out}"))
}

#[tokio::test]
async fn runs_status_failures_attempts() {
    let db = prepared().await;
    let runs = json_of(&db, &["runs"]);
    assert_eq!(runs[0]["id"], 1);
    assert_eq!(
        (
            runs[0]["items_total"].as_i64(),
            runs[0]["items_completed"].as_i64()
        ),
        (Some(4), Some(1))
    );

    let status = json_of(&db, &["status", "1"]);
    let counts = &status["stages"][0]["counts"];
    assert_eq!(
        (
            counts["completed"].as_i64(),
            counts["failed"].as_i64(),
            counts["dead"].as_i64(),
            counts["pending"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(1))
    );
    let kinds: Vec<&str> = status["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"permanent (HTTP 400)") && kinds.contains(&"transient (HTTP 503)"),
        "{kinds:?}"
    );

    let (code, text, _) = idempipe(&db, &["failures", "1"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("frame/2") && text.contains("HTTP 400: not an image"),
        "{text}"
    );
    assert!(
        text.contains("frame/1") && text.contains("due again"),
        "{text}"
    );
    assert!(
        !text.contains("frame/0"),
        "completed items are not failures: {text}"
    );

    let history = json_of(&db, &["attempts", "1", "frame/2"]);
    assert_eq!(history["attempts"][0]["outcome"], "dead");
    assert_eq!(history["attempts"][0]["worker"], "w1");
    let (code, _, err) = idempipe(&db, &["attempts", "1", "frame/99"]);
    assert_eq!(code, 2);
    assert!(err.contains("no item with key \"frame/99\""), "{err}");
}

#[tokio::test]
async fn control_commands_say_what_they_changed() {
    let db = prepared().await;
    let (code, out, _) = idempipe(&db, &["retry", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 item(s)") && out.contains("failed/dead"),
        "{out}"
    );
    let (_, out, _) = idempipe(&db, &["retry", "1"]);
    assert!(
        out.contains("2 item(s)"),
        "failed items stay retryable until they run: {out}"
    );
    let (_, out, _) = idempipe(&db, &["pause", "1", "--stage", "frame"]);
    assert!(out.contains("stage frame paused"), "{out}");
    let (_, out, _) = idempipe(&db, &["resume", "1"]);
    assert!(out.contains("run 1: resumed"), "{out}");
    let cancelled = json_of(&db, &["cancel", "1"]);
    assert_eq!(
        cancelled["cancelled_items"], 3,
        "the completed item stays completed"
    );
    let (_, out, _) = idempipe(&db, &["prune", "--older-than", "0"]);
    assert!(
        out.contains("deleted 1 finished run"),
        "the cancelled run is finished: {out}"
    );
    let (code, _, err) = idempipe(&db, &["status", "42"]);
    assert_eq!(code, 2);
    assert!(err.contains("run 42 not found"), "{err}");
}

#[test]
fn help_describes_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "runs",
        "status",
        "failures",
        "attempts",
        "retry",
        "cancel",
        "pause",
        "resume",
        "enhance-server",
    ] {
        assert!(help.contains(cmd), "--help lacks {cmd}: {help}");
    }
}
