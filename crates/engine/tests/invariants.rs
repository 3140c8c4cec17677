//! The invariants of docs/design.md, each against every backend.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, claim, count, eventually, run_with_items, stopper};
use idempipe_engine::store::{Outcome, OutcomeKind, RetryParams, record_one};
use idempipe_engine::{
    Handler, HandlerError, ItemResult, ItemStatus, Job, Maintenance, MaintenanceConfig,
    ManualClock, StagePolicy, StoreError, Worker, WorkerConfig,
};
use serde_json::json;

/// Counts calls per key.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<HashMap<String, u32>>>);

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, job: &Job) -> ItemResult {
        *self.0.lock().unwrap().entry(job.key.clone()).or_default() += 1;
        Ok(json!({ "key": job.key }))
    }
}

fn fast_worker(name: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        name: name.into(),
        concurrency,
        claim_batch: 32,
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Invariants 1 and 3 under load: 8 workers, each with its own connection pool, race on
/// 10,000 items; every item completes, and every handler call happens exactly once.
async fn eight_workers_race_on_10k_items(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "race", 10_000, 0).await;
    let calls = Counting::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = db.store().await;
        let worker = Worker::new(store, fast_worker(&format!("w{w}"), 4))
            .handler(StagePolicy::new("race"), calls.clone());
        let mut rx = stop_rx.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    eventually(
        Duration::from_secs(120),
        "all 10,000 items completed",
        || {
            let store = store.clone();
            async move { count(&*store, run, "completed").await == 10_000 }
        },
    )
    .await;
    stop_tx.send(true).unwrap();
    let mut claimed_by_workers = 0;
    for w in workers {
        let stats = w.await.unwrap().unwrap();
        claimed_by_workers += stats.snapshot()[0];
        assert_eq!(stats.snapshot()[4], 0, "no outcome lost its lease");
    }
    let calls = calls.0.lock().unwrap();
    assert_eq!(calls.len(), 10_000);
    assert!(calls.values().all(|n| *n == 1), "some item ran twice");
    assert_eq!(claimed_by_workers, 10_000, "each item claimed exactly once");
}

/// Invariant 1: a completed item is never handed out again, by a claim, a rescue or a retry.
async fn done_is_done(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 3, 0).await;
    let (token, items) = claim(&*store, "s", 10, 0, 1_000).await;
    assert_eq!(items.len(), 3);
    for item in &items {
        let outcome = Outcome {
            item_id: item.id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!(1)),
            spawns: vec![],
        };
        record_one(&*store, outcome, 10).await.unwrap();
    }
    let retried = store
        .item_retry(
            &RetryParams {
                run_id: run,
                stage: None,
                statuses: ItemStatus::ALL.to_vec(),
            },
            20,
        )
        .await
        .unwrap();
    assert_eq!(retried, 0, "retry must not touch completed items");
    let rescue = store.item_rescue_expired(1_000_000).await.unwrap();
    assert_eq!(rescue.retried + rescue.dead + rescue.unknown, 0);
    let (_, again) = claim(&*store, "s", 10, 1_000_000, 1_000).await;
    assert!(again.is_empty(), "completed items were claimed again");
    // A worker started on the finished run calls no handler.
    let calls = Counting::default();
    let worker = Worker::new(store.clone(), fast_worker("late", 2))
        .handler(StagePolicy::new("s"), calls.clone());
    worker
        .run(tokio::time::sleep(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(calls.0.lock().unwrap().is_empty());
}

/// Invariant 3: a stale worker's late outcome is rejected with a typed error and does not
/// overwrite the newer attempt; neither can it mark an outside call.
async fn stale_worker_is_fenced(db: TestDb) {
    let store = db.store().await;
    let clock = ManualClock::new(1_000);
    let run = run_with_items(&*store, "s", 1, clock.now_ms()).await;
    let (stale, items) = claim(&*store, "s", 1, 1_000, 500).await;
    let item = items[0].id;
    let maintenance = Maintenance::new(store.clone(), MaintenanceConfig::default())
        .with_clock(Arc::new(clock.clone()));
    clock.advance(600);
    assert_eq!(maintenance.rescue_once().await.unwrap().retried, 1);
    clock.advance(120_000); // past any backoff
    let (fresh, again) = claim(&*store, "s", 1, clock.now_ms(), 500).await;
    assert_eq!(again[0].id, item);
    assert_eq!(again[0].attempt, 2);
    let late = Outcome {
        item_id: item,
        lease_token: stale,
        kind: OutcomeKind::Completed(json!("stale")),
        spawns: vec![],
    };
    let err = record_one(&*store, late, clock.now_ms()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { item_id } if item_id == item),
        "{err}"
    );
    let err = store
        .item_mark_external(item, stale, clock.now_ms())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }));
    let current = Outcome {
        item_id: item,
        lease_token: fresh,
        kind: OutcomeKind::Completed(json!("fresh")),
        spawns: vec![],
    };
    record_one(&*store, current, clock.now_ms()).await.unwrap();
    let row = store.item_get(run, "s", "item/00000").await.unwrap();
    assert_eq!(row.result, Some(json!("fresh")));
    let attempts = store.attempt_list(item).await.unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "completed"]);
    assert_eq!(attempts[0].error.as_ref().unwrap()["kind"], "lease_expired");
}

/// Invariant 2: nothing is lost. Items with expired leases are rescued and then completed
/// by another worker; items end completed, dead (with a reason) or visibly waiting.
async fn expired_leases_are_rescued_and_finished(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 20, 0).await;
    // A "worker" claims 20 items and vanishes.
    let (_, items) = claim(&*store, "s", 20, common_now(), 200).await;
    assert_eq!(items.len(), 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let maintenance = Maintenance::new(
        store.clone(),
        MaintenanceConfig {
            interval: Duration::from_millis(50),
            retain: None,
        },
    );
    let policy = StagePolicy::new("s").backoff(idempipe_engine::Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: 0.0,
    });
    let calls = Counting::default();
    let worker =
        Worker::new(store.clone(), fast_worker("rescuer", 4)).handler(policy, calls.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut rx2 = stop_rx.clone();
    let m = tokio::spawn(maintenance.run(async move {
        let _ = rx2.wait_for(|s| *s).await;
    }));
    let w = tokio::spawn(worker.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    eventually(Duration::from_secs(30), "run finished", || {
        let store = store.clone();
        async move { store.run_get(run).await.unwrap().status == idempipe_engine::RunStatus::Completed }
    })
    .await;
    stop_tx.send(true).unwrap();
    w.await.unwrap().unwrap();
    m.await.unwrap();
    assert_eq!(count(&*store, run, "completed").await, 20);
    assert_eq!(calls.0.lock().unwrap().len(), 20);
}

fn common_now() -> i64 {
    idempipe_engine::Clock::now(&idempipe_engine::SystemClock)
}

/// Handler errors follow the policy: transient -> failed and due after backoff; exhausted
/// or permanent -> dead; retry-after honoured; a person's retry revives only failed, dead
/// and unknown items, and gives them a fresh attempt budget.
async fn retries_follow_policy(db: TestDb) {
    let store = db.store().await;
    let now = 1_000_000;
    let run = run_with_items(&*store, "s", 4, now).await;
    let (token, items) = claim(&*store, "s", 4, now, 10_000).await;
    let by_key: HashMap<_, _> = items.iter().map(|i| (i.key.clone(), i.id)).collect();
    let out = |key: &str, kind| Outcome {
        item_id: by_key[key],
        lease_token: token,
        kind,
        spawns: vec![],
    };
    let outcomes = vec![
        out("item/00000", OutcomeKind::Completed(json!("ok"))),
        out(
            "item/00001",
            OutcomeKind::Failed {
                error: json!({"kind": "transient"}),
                retry_at: now + 5_000,
            },
        ),
        out(
            "item/00002",
            OutcomeKind::Dead(json!({"kind": "permanent", "message": "bad input"})),
        ),
        out(
            "item/00003",
            OutcomeKind::Failed {
                error: json!({"kind": "retry_after"}),
                retry_at: now + 30_000,
            },
        ),
    ];
    assert_eq!(
        store.item_record(&outcomes, now).await.unwrap(),
        vec![true; 4]
    );
    let (_, early) = claim(&*store, "s", 10, now + 4_999, 1_000).await;
    assert!(early.is_empty(), "nothing is due before its time");
    let (t2, due) = claim(&*store, "s", 10, now + 5_000, 1_000).await;
    assert_eq!(
        due.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["item/00001"]
    );
    let (_, later) = claim(&*store, "s", 10, now + 30_000, 1_000).await;
    assert_eq!(
        later.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["item/00003"]
    );
    record_one(
        &*store,
        Outcome {
            item_id: due[0].id,
            lease_token: t2,
            kind: OutcomeKind::Dead(json!("x")),
            spawns: vec![],
        },
        now + 5_001,
    )
    .await
    .unwrap();
    // Retry only dead items of the run: exactly the two dead ones come back.
    let n = store
        .item_retry(
            &RetryParams {
                run_id: run,
                stage: Some("s".into()),
                statuses: vec![ItemStatus::Dead],
            },
            now + 40_000,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let (_, revived) = claim(&*store, "s", 10, now + 40_000, 1_000).await;
    let mut keys: Vec<_> = revived.iter().map(|i| i.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["item/00001", "item/00002"]);
    assert!(
        revived.iter().all(|i| i.budget_used == 1),
        "a manual retry restores the budget"
    );
}

/// Through a real worker: a permanent error goes dead after one call, a transient one is
/// retried up to max_attempts, and the run ends failed listing them.
async fn worker_applies_attempt_limits(db: TestDb) {
    struct Failing;
    #[async_trait]
    impl Handler for Failing {
        async fn handle(&self, job: &Job) -> ItemResult {
            match job.key.as_str() {
                "item/00000" => Err(HandlerError::permanent("corrupt frame")),
                "item/00001" => Err(HandlerError::transient(format!(
                    "503 on attempt {}",
                    job.attempt
                ))),
                _ => Ok(json!(null)),
            }
        }
    }
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 3, common_now()).await;
    let policy = StagePolicy::new("s")
        .max_attempts(3)
        .backoff(idempipe_engine::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            jitter: 0.0,
        });
    let worker = Worker::new(store.clone(), fast_worker("w", 2)).handler(policy, Failing);
    let maintenance = Maintenance::new(store.clone(), MaintenanceConfig::default());
    let (stop, stopped) = stopper();
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(20), "two dead items", || {
        let store = store.clone();
        async move {
            count(&*store, run, "dead").await == 2 && count(&*store, run, "completed").await == 1
        }
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    maintenance.finish_runs_once().await.unwrap();
    assert_eq!(
        store.run_get(run).await.unwrap().status,
        idempipe_engine::RunStatus::Failed
    );
    let permanent = store.item_get(run, "s", "item/00000").await.unwrap();
    assert_eq!(store.attempt_list(permanent.id).await.unwrap().len(), 1);
    assert_eq!(permanent.last_error.unwrap()["message"], "corrupt frame");
    let transient = store.item_get(run, "s", "item/00001").await.unwrap();
    let attempts = store.attempt_list(transient.id).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        ["failed", "failed", "dead"]
    );
    assert_eq!(transient.last_error.unwrap()["message"], "503 on attempt 3");
}

/// Outcome unknown: an attempt that died after marking an outside call is parked as
/// unknown when the stage says so, and retried (same idempotency key) when it says retry;
/// one that died before the mark is simply retried.
async fn unknown_outcome_follows_stage_policy(db: TestDb) {
    use idempipe_engine::OnUnknown;
    let store = db.store().await;
    let clock = ManualClock::new(1_000);
    store
        .stage_register(
            &[
                StagePolicy::new("pay").on_unknown(OnUnknown::Park),
                StagePolicy::new("frame"),
            ],
            0,
        )
        .await
        .unwrap();
    let run_pay = run_with_items(&*store, "pay", 2, 0).await;
    let run_frame = run_with_items(&*store, "frame", 1, 0).await;
    let (pay_token, pay) = claim(&*store, "pay", 2, 1_000, 100).await;
    let (frame_token, frame) = claim(&*store, "frame", 1, 1_000, 100).await;
    store
        .item_mark_external(pay[0].id, pay_token, 1_010)
        .await
        .unwrap();
    store
        .item_mark_external(frame[0].id, frame_token, 1_010)
        .await
        .unwrap();
    clock.advance(1_000);
    let maintenance =
        Maintenance::new(store.clone(), MaintenanceConfig::default()).with_clock(Arc::new(clock));
    let report = maintenance.rescue_once().await.unwrap();
    assert_eq!((report.unknown, report.retried), (1, 2));
    let parked = store.item_get(run_pay, "pay", &pay[0].key).await.unwrap();
    assert_eq!(parked.status, ItemStatus::Unknown);
    assert_eq!(parked.last_error.unwrap()["external_call_started"], true);
    let safe = store.item_get(run_pay, "pay", &pay[1].key).await.unwrap();
    assert_eq!(
        safe.status,
        ItemStatus::Failed,
        "no outside call started: plain retry"
    );
    let frame_row = store
        .item_get(run_frame, "frame", "item/00000")
        .await
        .unwrap();
    assert_eq!(
        frame_row.status,
        ItemStatus::Failed,
        "frames retry with the same key"
    );
    // Unknown items come back only when a person asks for them.
    let n = store
        .item_retry(
            &RetryParams {
                run_id: run_pay,
                stage: None,
                statuses: vec![ItemStatus::Unknown],
            },
            10_000_000,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (_, again) = claim(&*store, "pay", 10, 10_000_000, 100).await;
    assert_eq!(again.len(), 2);
}

trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> i64 {
        idempipe_engine::Clock::now(self)
    }
}

/// Invariant 2 against prefetch: an item claimed ahead of the slots (negative token) whose
/// lease lapsed is not a lapsed attempt. Rescuing expired leases leaves it alone even when
/// it runs before the pass gives unstarted items back (the order a lease lapsing between
/// the two statements of a pass produces); it then goes back with its attempt uncounted.
async fn lapsed_prefetch_is_never_rescued_as_an_attempt(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 2, 1_000).await;
    let (_, started) = claim(&*store, "s", 1, 1_000, 500).await;
    let ahead = store
        .item_claim(&idempipe_engine::store::ClaimParams {
            stage: "s".into(),
            limit: 1,
            worker: "test".into(),
            lease_token: -7,
            lease_expires_at: 1_500,
            now: 1_000,
            run_id: None,
        })
        .await
        .unwrap();
    assert_eq!((started.len(), ahead.len()), (1, 1));
    let rescued = store.item_rescue_expired(2_000).await.unwrap();
    assert_eq!(
        (rescued.retried, rescued.dead, rescued.unknown),
        (1, 0, 0),
        "only the started attempt is rescued"
    );
    let held = store.item_get(run, "s", &ahead[0].key).await.unwrap();
    assert_eq!(held.status, ItemStatus::Running, "{held:?}");
    assert!(store.attempt_list(ahead[0].id).await.unwrap().is_empty());
    assert_eq!(store.item_return_unstarted(2_000).await.unwrap(), 1);
    let back = store.item_get(run, "s", &ahead[0].key).await.unwrap();
    assert_eq!(
        (back.status, back.attempts),
        (ItemStatus::Pending, 0),
        "{back:?}"
    );
    assert!(store.attempt_list(ahead[0].id).await.unwrap().is_empty());
}

backend_tests!(
    eight_workers_race_on_10k_items,
    done_is_done,
    stale_worker_is_fenced,
    expired_leases_are_rescued_and_finished,
    lapsed_prefetch_is_never_rescued_as_an_attempt,
    retries_follow_policy,
    worker_applies_attempt_limits,
    unknown_outcome_follows_stage_policy,
);
