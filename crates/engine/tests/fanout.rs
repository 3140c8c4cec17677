//! Invariant 5 (atomic fan-out and results) and counted fan-in, against every backend.

mod common;

use common::{TestDb, claim, count, run_with_items};
use idempipe_engine::store::{Outcome, OutcomeKind, RunCreate, record_one};
use idempipe_engine::{ItemStatus, NewItem, StoreError};
use serde_json::json;

const CHILDREN: usize = 10_000;

fn children() -> Vec<NewItem> {
    (0..CHILDREN)
        .map(|i| NewItem::new("child", format!("c/{i:05}"), json!({ "i": i })).in_group("kids"))
        .chain([NewItem::new("join", "all", json!(null)).after_group("kids")])
        .collect()
}

/// A fan-out of 10,000 children commits all or nothing: a failed attempt and a stale
/// (fenced) completion create none; the completion that commits creates all of them and
/// the waiter, atomically with the parent's result.
async fn fan_out_of_10k_is_all_or_nothing(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "parent", 1, 0).await;
    let (t1, parent) = claim(&*store, "parent", 1, 0, 1_000).await;
    let parent = parent[0].id;
    // A failed attempt's spawns are discarded.
    let failed = Outcome {
        item_id: parent,
        lease_token: t1,
        kind: OutcomeKind::Failed {
            error: json!("boom"),
            retry_at: 0,
        },
        spawns: children(),
    };
    record_one(&*store, failed, 1).await.unwrap();
    assert_eq!(count(&*store, run, "pending").await, 0);
    // A completion whose lease was lost spawns nothing either.
    let (t2, _) = claim(&*store, "parent", 1, 2, 1_000).await;
    let stale = Outcome {
        item_id: parent,
        lease_token: t1,
        kind: OutcomeKind::Completed(json!(1)),
        spawns: children(),
    };
    assert!(matches!(
        record_one(&*store, stale, 3).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        store
            .item_counts(run)
            .await
            .unwrap()
            .iter()
            .filter(|c| c.stage != "parent")
            .count(),
        0
    );
    // The real completion commits all 10,001 items with the result.
    let done = Outcome {
        item_id: parent,
        lease_token: t2,
        kind: OutcomeKind::Completed(json!(2)),
        spawns: children(),
    };
    record_one(&*store, done, 4).await.unwrap();
    assert_eq!(count(&*store, run, "pending").await, CHILDREN as i64);
    assert_eq!(count(&*store, run, "waiting").await, 1);
    assert_eq!(
        store
            .item_get(run, "parent", "item/00000")
            .await
            .unwrap()
            .result,
        Some(json!(2))
    );
}

/// Counted fan-in: the waiter is released exactly when its last input completes, no
/// earlier, and failing or dead inputs keep it waiting (visibly).
async fn waiter_released_exactly_at_last_input(db: TestDb) {
    let store = db.store().await;
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "test".into(),
                fingerprint: "fanin".into(),
                input: "-".into(),
                params: json!({}),
                items: children(),
            },
            0,
        )
        .await
        .unwrap();
    let mut now = 10;
    let mut completed = 0;
    let mut last: Option<(i64, i64)> = None;
    loop {
        let (token, batch) = claim(&*store, "child", 1_000, now, 60_000).await;
        if batch.is_empty() {
            break;
        }
        let mut outcomes: Vec<Outcome> = batch
            .iter()
            .map(|c| Outcome {
                item_id: c.id,
                lease_token: token,
                kind: OutcomeKind::Completed(json!(null)),
                spawns: vec![],
            })
            .collect();
        if completed + outcomes.len() == CHILDREN {
            let held_back = outcomes.pop().unwrap();
            last = Some((held_back.item_id, token));
        }
        completed += outcomes.len();
        store.item_record(&outcomes, now).await.unwrap();
        now += 1;
    }
    assert_eq!(completed, CHILDREN - 1);
    let join = store.item_get(run, "join", "all").await.unwrap();
    assert_eq!((join.status, join.waiting_on), (ItemStatus::Pending, 1));
    assert!(
        claim(&*store, "join", 1, now, 1_000).await.1.is_empty(),
        "released too early"
    );
    // The last input fails once: still waiting.
    let (id, token) = last.unwrap();
    let fail = Outcome {
        item_id: id,
        lease_token: token,
        kind: OutcomeKind::Failed {
            error: json!("x"),
            retry_at: now,
        },
        spawns: vec![],
    };
    record_one(&*store, fail, now).await.unwrap();
    assert!(claim(&*store, "join", 1, now, 1_000).await.1.is_empty());
    let (token, again) = claim(&*store, "child", 1, now, 1_000).await;
    assert_eq!(again[0].id, id);
    let ok = Outcome {
        item_id: id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns: vec![],
    };
    record_one(&*store, ok, now).await.unwrap();
    let (_, released) = claim(&*store, "join", 1, now, 1_000).await;
    assert_eq!(released.len(), 1, "released by the last input's completion");
}

/// Waiting on a single item, including one that already completed.
async fn item_dependencies(db: TestDb) {
    let store = db.store().await;
    let items = vec![
        NewItem::new("a", "first", json!(1)),
        NewItem::new("b", "second", json!(2)).after_item("a", "first"),
    ];
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "t".into(),
                fingerprint: "d".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    assert!(claim(&*store, "b", 1, 0, 1_000).await.1.is_empty());
    let (token, a) = claim(&*store, "a", 1, 0, 1_000).await;
    let spawn_late = NewItem::new("c", "third", json!(3)).after_item("a", "first");
    let outcome = Outcome {
        item_id: a[0].id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns: vec![],
    };
    record_one(&*store, outcome, 1).await.unwrap();
    assert_eq!(claim(&*store, "b", 1, 1, 1_000).await.1.len(), 1);
    // An item added after its input completed does not wait at all.
    store.item_insert(run, &[spawn_late], 2).await.unwrap();
    assert_eq!(claim(&*store, "c", 1, 2, 1_000).await.1.len(), 1);
    // A dependency on an item that does not exist is an error naming it.
    let bad = NewItem::new("d", "x", json!(null)).after_item("nope", "missing");
    let err = store
        .item_insert(run, &[bad], 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope/missing"), "{err}");
}

/// A completion spawns the video pipeline's shape: an extract, frames waiting for it in
/// a group, an encode waiting for the group. The frames wait for an input spawned with
/// them, the encode for members that themselves wait; a spawn naming a missing input
/// fails the whole completion, which leaves nothing behind.
async fn spawned_waiters_link_to_inputs_spawned_with_them(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "split", 1, 0).await;
    let (token, split) = claim(&*store, "split", 1, 0, 1_000).await;
    let frames = |extra: Option<NewItem>| {
        let mut items = vec![NewItem::new("extract", "seg", json!(null))];
        items.extend((0..3).map(|i| {
            NewItem::new("frame", format!("f{i}"), json!(i))
                .after_item("extract", "seg")
                .in_group("frames")
        }));
        items.push(NewItem::new("encode", "seg", json!(null)).after_group("frames"));
        items.extend(extra);
        items
    };
    let outcome = |spawns| Outcome {
        item_id: split[0].id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns,
    };
    let bad = NewItem::new("frame", "bad", json!(null)).after_item("nope", "missing");
    let err = record_one(&*store, outcome(frames(Some(bad))), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope/missing"), "{err}");
    assert_eq!(count(&*store, run, "pending").await, 0, "nothing spawned");
    assert_eq!(
        count(&*store, run, "running").await,
        1,
        "split not recorded"
    );
    record_one(&*store, outcome(frames(None)), 1).await.unwrap();
    assert!(claim(&*store, "frame", 10, 1, 1_000).await.1.is_empty());
    let (t, extract) = claim(&*store, "extract", 1, 1, 1_000).await;
    let done = |item_id, lease_token| Outcome {
        item_id,
        lease_token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns: vec![],
    };
    record_one(&*store, done(extract[0].id, t), 2)
        .await
        .unwrap();
    let (t, frames) = claim(&*store, "frame", 10, 2, 1_000).await;
    assert_eq!(frames.len(), 3, "released by their input");
    for (i, frame) in frames.iter().enumerate() {
        assert!(claim(&*store, "encode", 1, 3, 1_000).await.1.is_empty());
        record_one(&*store, done(frame.id, t), 3 + i as i64)
            .await
            .unwrap();
    }
    assert_eq!(claim(&*store, "encode", 1, 6, 1_000).await.1.len(), 1);
}

/// A dependency named twice is waited for once: the waiter runs when its input completes.
async fn a_dependency_named_twice_is_waited_for_once(db: TestDb) {
    let store = db.store().await;
    let items = vec![
        NewItem::new("a", "first", json!(1)),
        NewItem::new("b", "second", json!(2))
            .after_item("a", "first")
            .after_item("a", "first"),
    ];
    store
        .run_create(
            &RunCreate {
                pipeline: "t".into(),
                fingerprint: "twice".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    assert!(claim(&*store, "b", 1, 0, 1_000).await.1.is_empty());
    let (token, a) = claim(&*store, "a", 1, 0, 1_000).await;
    let outcome = Outcome {
        item_id: a[0].id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns: vec![],
    };
    record_one(&*store, outcome, 1).await.unwrap();
    assert_eq!(claim(&*store, "b", 1, 1, 1_000).await.1.len(), 1);
}

/// Spawned items link whatever their order in the list: a waiter listed before its
/// group's members counts all of them, and a member listed before its input finds it.
async fn spawned_waiters_link_whatever_the_order(db: TestDb) {
    let store = db.store().await;
    run_with_items(&*store, "split", 1, 0).await;
    let (token, split) = claim(&*store, "split", 1, 0, 1_000).await;
    let mut spawns = vec![NewItem::new("encode", "seg", json!(null)).after_group("frames")];
    spawns.extend((0..3).map(|i| {
        NewItem::new("frame", format!("f{i}"), json!(i))
            .after_item("extract", "seg")
            .in_group("frames")
    }));
    spawns.push(NewItem::new("extract", "seg", json!(null)));
    let done = |item_id, lease_token, spawns| Outcome {
        item_id,
        lease_token,
        kind: OutcomeKind::Completed(json!(null)),
        spawns,
    };
    record_one(&*store, done(split[0].id, token, spawns), 1)
        .await
        .unwrap();
    assert!(
        claim(&*store, "encode", 1, 1, 1_000).await.1.is_empty(),
        "encode waits for the frames listed after it"
    );
    assert!(claim(&*store, "frame", 10, 1, 1_000).await.1.is_empty());
    let (t, extract) = claim(&*store, "extract", 1, 1, 1_000).await;
    record_one(&*store, done(extract[0].id, t, vec![]), 2)
        .await
        .unwrap();
    let (t, frames) = claim(&*store, "frame", 10, 2, 1_000).await;
    assert_eq!(frames.len(), 3, "released by the input listed after them");
    for (i, frame) in frames.iter().enumerate() {
        assert!(claim(&*store, "encode", 1, 3, 1_000).await.1.is_empty());
        record_one(&*store, done(frame.id, t, vec![]), 3 + i as i64)
            .await
            .unwrap();
    }
    assert_eq!(claim(&*store, "encode", 1, 6, 1_000).await.1.len(), 1);
}

/// A waiter blocked by a dead input does not keep its run running forever: the run ends
/// failed; a retry of the dead input reopens it, and the waiter then runs.
async fn dead_input_fails_the_run_and_retry_resumes_it(db: TestDb) {
    use idempipe_engine::store::RetryParams;
    use idempipe_engine::{Maintenance, MaintenanceConfig, RunStatus};
    let store = db.store().await;
    let items = vec![
        NewItem::new("frame", "1", json!(null)).in_group("frames"),
        NewItem::new("frame", "2", json!(null)).in_group("frames"),
        NewItem::new("encode", "seg", json!(null)).after_group("frames"),
    ];
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "t".into(),
                fingerprint: "dead".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    let maintenance = Maintenance::new(store.clone(), MaintenanceConfig::default());
    let (token, frames) = claim(&*store, "frame", 2, 0, 1_000).await;
    let outcomes = vec![
        Outcome {
            item_id: frames[0].id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!(1)),
            spawns: vec![],
        },
        Outcome {
            item_id: frames[1].id,
            lease_token: token,
            kind: OutcomeKind::Dead(json!({"message": "400"})),
            spawns: vec![],
        },
    ];
    store.item_record(&outcomes, 1).await.unwrap();
    assert_eq!(
        maintenance.finish_runs_once().await.unwrap(),
        vec![(run, RunStatus::Failed)]
    );
    let n = store
        .item_retry(
            &RetryParams {
                run_id: run,
                stage: None,
                statuses: vec![ItemStatus::Dead],
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.run_get(run).await.unwrap().status, RunStatus::Running);
    let (token, again) = claim(&*store, "frame", 2, 2, 1_000).await;
    let ok = Outcome {
        item_id: again[0].id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(2)),
        spawns: vec![],
    };
    record_one(&*store, ok, 3).await.unwrap();
    assert!(
        maintenance.finish_runs_once().await.unwrap().is_empty(),
        "the encode is ready now"
    );
    assert_eq!(claim(&*store, "encode", 1, 3, 1_000).await.1.len(), 1);
}

/// A waiter released by an item and by a group in the same recorded batch gets both
/// decrements (PostgreSQL records a batch in one statement).
async fn item_and_group_release_in_one_batch(db: TestDb) {
    let store = db.store().await;
    let items = vec![
        NewItem::new("a", "1", json!(null)).in_group("g"),
        NewItem::new("a", "2", json!(null)).in_group("g"),
        NewItem::new("b", "w", json!(null))
            .after_item("a", "1")
            .after_group("g"),
    ];
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "t".into(),
                fingerprint: "both".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(store.item_get(run, "b", "w").await.unwrap().waiting_on, 2);
    let (token, claimed) = claim(&*store, "a", 2, 0, 1_000).await;
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .map(|c| Outcome {
            item_id: c.id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!(null)),
            spawns: vec![],
        })
        .collect();
    assert_eq!(
        store.item_record(&outcomes, 1).await.unwrap(),
        vec![true, true]
    );
    assert_eq!(store.item_get(run, "b", "w").await.unwrap().waiting_on, 0);
    assert_eq!(claim(&*store, "b", 1, 1, 1_000).await.1.len(), 1);
    for c in &claimed {
        assert_eq!(
            store.attempt_list(c.id).await.unwrap().len(),
            1,
            "one attempt row per outcome"
        );
    }
}

backend_tests!(
    fan_out_of_10k_is_all_or_nothing,
    waiter_released_exactly_at_last_input,
    item_dependencies,
    spawned_waiters_link_to_inputs_spawned_with_them,
    spawned_waiters_link_whatever_the_order,
    a_dependency_named_twice_is_waited_for_once,
    dead_input_fails_the_run_and_retry_resumes_it,
    item_and_group_release_in_one_batch,
);
