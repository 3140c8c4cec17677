//! Redoing finished work of a run (`item_redo`) and replacing its parameters
//! (`run_set_params`), against every backend: what a settings change on an existing run
//! relies on.

mod common;

use common::{TestDb, claim};
use idempipe_engine::store::{Outcome, OutcomeKind, RunCreate, record_one};
use idempipe_engine::{ItemStatus, NewItem, RunStatus, Store, StoreError};
use serde_json::json;

/// frame/0..2 (group `frames`) -> encode (waits for `frames`, in group `encodes`) ->
/// thumb (waits for `encodes`) -> asm (waits for item thumb): the video pipeline's shape.
async fn pipeline_run(store: &dyn Store) -> i64 {
    let mut items: Vec<NewItem> = (0..3)
        .map(|i| NewItem::new("frame", format!("frame/{i}"), json!({ "i": i })).in_group("frames"))
        .collect();
    items.push(
        NewItem::new("encode", "0", json!({}))
            .after_group("frames")
            .in_group("encodes"),
    );
    items.push(NewItem::new("thumb", "thumb", json!({})).after_group("encodes"));
    items.push(NewItem::new("asm", "asm", json!({})).after_item("thumb", "thumb"));
    store
        .run_create(
            &RunCreate {
                pipeline: "test".into(),
                fingerprint: "/out.mp4".into(),
                input: "in".into(),
                params: json!({ "preset": "slow" }),
                items,
            },
            0,
        )
        .await
        .unwrap()
}

/// Claims every due item of `stage` and records `kind` for each; returns how many.
async fn finish(store: &dyn Store, stage: &str, now: i64, kind: OutcomeKind) -> usize {
    let (token, items) = claim(store, stage, 100, now, 60_000).await;
    for item in &items {
        let outcome = Outcome {
            item_id: item.id,
            lease_token: token,
            kind: kind.clone(),
            spawns: vec![],
        };
        record_one(store, outcome, now).await.unwrap();
    }
    items.len()
}

fn done() -> OutcomeKind {
    OutcomeKind::Completed(json!({ "ok": true }))
}

async fn status(store: &dyn Store, run: i64, stage: &str, key: &str) -> (ItemStatus, i64) {
    let item = store.item_get(run, stage, key).await.unwrap();
    (item.status, item.waiting_on)
}

async fn run_status(store: &dyn Store, run: i64, now: i64) -> RunStatus {
    store.run_finish_ready(now).await.unwrap();
    store.run_get(run).await.unwrap().status
}

/// A completed run: redoing encode, thumb and asm reopens the run, makes encode due at
/// once (its frames are done), makes thumb and asm wait again for their inputs, leaves
/// the frames alone, keeps the attempt history, and the run completes again.
async fn redo_reopens_a_completed_run_and_respects_waits(db: TestDb) {
    let store = db.store().await;
    let run = pipeline_run(&*store).await;
    for (stage, n) in [("frame", 3), ("encode", 1), ("thumb", 1), ("asm", 1)] {
        assert_eq!(finish(&*store, stage, 10, done()).await, n, "{stage}");
    }
    assert_eq!(run_status(&*store, run, 20).await, RunStatus::Completed);

    let stages = ["encode", "thumb", "asm"].map(String::from);
    assert_eq!(store.item_redo(run, &stages, 30).await.unwrap(), 3);
    assert_eq!(store.run_get(run).await.unwrap().status, RunStatus::Running);
    assert_eq!(run_status(&*store, run, 31).await, RunStatus::Running);
    for i in 0..3 {
        let (s, _) = status(&*store, run, "frame", &format!("frame/{i}")).await;
        assert_eq!(s, ItemStatus::Completed, "frames are kept");
    }
    assert_eq!(
        status(&*store, run, "encode", "0").await,
        (ItemStatus::Pending, 0)
    );
    assert_eq!(
        status(&*store, run, "thumb", "thumb").await,
        (ItemStatus::Pending, 1)
    );
    assert_eq!(
        status(&*store, run, "asm", "asm").await,
        (ItemStatus::Pending, 1)
    );
    let encode = store.item_get(run, "encode", "0").await.unwrap();
    assert_eq!(encode.result, None, "the old result is cleared");

    // Waits hold: nothing downstream runs before its input is done again.
    assert_eq!(finish(&*store, "thumb", 40, done()).await, 0);
    assert_eq!(finish(&*store, "asm", 40, done()).await, 0);
    assert_eq!(finish(&*store, "frame", 40, done()).await, 0);
    assert_eq!(finish(&*store, "encode", 40, done()).await, 1);
    assert_eq!(finish(&*store, "asm", 41, done()).await, 0);
    assert_eq!(finish(&*store, "thumb", 41, done()).await, 1);
    assert_eq!(finish(&*store, "asm", 42, done()).await, 1);
    assert_eq!(run_status(&*store, run, 50).await, RunStatus::Completed);

    let history = store.attempt_list(encode.id).await.unwrap();
    assert_eq!(history.len(), 2, "both encodes are in the history");
    assert_eq!(encode.attempts, 1);
    assert_eq!(
        store.item_get(run, "encode", "0").await.unwrap().attempts,
        2
    );
}

/// A run failed at encode (dead after its attempts): redoing encode revives it with a
/// fresh budget and reopens the run; the frames stay completed.
async fn redo_revives_dead_items_of_the_stages_only(db: TestDb) {
    let store = db.store().await;
    let run = pipeline_run(&*store).await;
    assert_eq!(finish(&*store, "frame", 10, done()).await, 3);
    let dead = OutcomeKind::Dead(json!({ "kind": "permanent", "message": "invalid preset" }));
    assert_eq!(finish(&*store, "encode", 11, dead).await, 1);
    assert_eq!(run_status(&*store, run, 12).await, RunStatus::Failed);

    let stages = ["encode", "thumb", "asm"].map(String::from);
    assert_eq!(store.item_redo(run, &stages, 20).await.unwrap(), 1);
    assert_eq!(store.run_get(run).await.unwrap().status, RunStatus::Running);
    assert_eq!(
        status(&*store, run, "thumb", "thumb").await,
        (ItemStatus::Pending, 1),
        "thumb still waits for the encodes"
    );
    assert_eq!(finish(&*store, "encode", 21, done()).await, 1);
    assert_eq!(finish(&*store, "thumb", 22, done()).await, 1);
    assert_eq!(finish(&*store, "asm", 23, done()).await, 1);
    assert_eq!(run_status(&*store, run, 30).await, RunStatus::Completed);
    for i in 0..3 {
        let frame = store
            .item_get(run, "frame", &format!("frame/{i}"))
            .await
            .unwrap();
        assert_eq!(frame.attempts, 1, "frames were not redone");
    }
}

/// Nothing to redo changes nothing (and does not reopen the run); a cancelled run and a
/// missing run are refused.
async fn redo_refuses_cancelled_runs(db: TestDb) {
    let store = db.store().await;
    let run = pipeline_run(&*store).await;
    assert_eq!(
        store
            .item_redo(run, &["encode".to_string()], 5)
            .await
            .unwrap(),
        0
    );
    store.run_cancel(run, 6).await.unwrap();
    let e = store
        .item_redo(run, &["encode".to_string()], 7)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert!(matches!(
        store.item_redo(run + 100, &["encode".to_string()], 7).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Parameters can be replaced; a missing run is named.
async fn set_params_replaces_them(db: TestDb) {
    let store = db.store().await;
    let run = pipeline_run(&*store).await;
    let params = json!({ "preset": "medium", "nested": { "api": "http://b:1" } });
    store.run_set_params(run, &params).await.unwrap();
    assert_eq!(store.run_get(run).await.unwrap().params, params);
    let e = store.run_set_params(run + 100, &params).await.unwrap_err();
    assert!(e.to_string().contains(&format!("run {}", run + 100)), "{e}");
}

backend_tests!(
    redo_reopens_a_completed_run_and_respects_waits,
    redo_revives_dead_items_of_the_stages_only,
    redo_refuses_cancelled_runs,
    set_params_replaces_them,
);
