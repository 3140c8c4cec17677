//! The half-open circuit breaker of limiters, through the store with explicit times,
//! against every backend: after the cool-down exactly one probe call goes through while
//! the others wait; a failed probe reopens the circuit for twice as long (capped); a
//! successful one closes it at once. Also: per-job limiters, so a stage's calls for
//! different endpoints never share a breaker.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, count, eventually, run_with_items};
use idempipe_engine::limiter::WaitReason;
use idempipe_engine::{
    Clock, Handler, HandlerError, ItemResult, Job, LimiterConfig, LimiterFeedback, Permit,
    StagePolicy, SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

const HOLD: i64 = 60_000;

async fn acquire(store: &dyn idempipe_engine::Store, holder: i64, now: i64) -> Permit {
    store
        .limiter_acquire("api", 1.0, holder, now + HOLD, now)
        .await
        .unwrap()
}

async fn release(store: &dyn idempipe_engine::Store, holder: i64, fb: LimiterFeedback, now: i64) {
    store.limiter_release("api", holder, fb, now).await.unwrap();
}

fn waits(p: Permit, why: WaitReason) -> bool {
    matches!(p, Permit::Wait { reason, .. } if reason == why)
}

/// Open, half-open with one probe, reopen for longer (capped), close on success.
async fn half_open_circuit_probes_once_and_backs_off(db: TestDb) {
    let store = db.store().await;
    let s = &*store;
    s.limiter_define(
        &LimiterConfig::new("api", 1000.0)
            .circuit(2, Duration::from_secs(2))
            .max_cooldown(Duration::from_secs(8)),
        0,
    )
    .await
    .unwrap();
    for holder in [1, 2] {
        assert_eq!(acquire(s, holder, 1_000).await, Permit::Granted);
    }
    release(s, 1, LimiterFeedback::Failure, 1_000).await;
    release(s, 2, LimiterFeedback::Failure, 1_000).await;
    let state = s.limiter_get("api").await.unwrap();
    assert_eq!(
        (state.circuit_open_until, state.open_streak),
        (3_000, 1),
        "opened for the base cool-down"
    );
    assert!(waits(acquire(s, 3, 2_000).await, WaitReason::CircuitOpen));

    // Half-open: the first caller is the probe, everyone else waits for its verdict.
    assert_eq!(acquire(s, 10, 3_000).await, Permit::Granted);
    assert!(waits(acquire(s, 11, 3_000).await, WaitReason::Probing));
    assert!(waits(acquire(s, 12, 3_100).await, WaitReason::Probing));
    // A straggler's failure (its call started before the circuit opened) changes nothing.
    release(s, 99, LimiterFeedback::Failure, 3_050).await;
    assert_eq!(
        s.limiter_get("api").await.unwrap().circuit_open_until,
        3_000
    );

    // The probe fails: open twice as long; the next probe fails: capped at 8 s.
    release(s, 10, LimiterFeedback::Failure, 3_200).await;
    assert_eq!(
        s.limiter_get("api").await.unwrap().circuit_open_until,
        7_200
    );
    assert!(waits(acquire(s, 11, 5_000).await, WaitReason::CircuitOpen));
    assert_eq!(acquire(s, 11, 7_200).await, Permit::Granted);
    release(s, 11, LimiterFeedback::Failure, 7_300).await;
    assert_eq!(
        s.limiter_get("api").await.unwrap().circuit_open_until,
        15_300
    );

    // The resource is back: the probe succeeds and everyone goes at once.
    assert_eq!(acquire(s, 12, 15_300).await, Permit::Granted);
    assert!(waits(acquire(s, 13, 15_300).await, WaitReason::Probing));
    release(s, 12, LimiterFeedback::Success, 15_400).await;
    for holder in [13, 14, 15] {
        assert_eq!(acquire(s, holder, 15_400).await, Permit::Granted);
    }
    let state = s.limiter_get("api").await.unwrap();
    assert_eq!((state.open_streak, state.circuit_opens), (0, 3));
}

/// A probe whose call ends without a verdict (cancelled, permanent error) frees the turn
/// at once; one whose worker died frees it when its hold ends.
async fn a_probe_without_verdict_frees_the_turn(db: TestDb) {
    let store = db.store().await;
    let s = &*store;
    s.limiter_define(
        &LimiterConfig::new("api", 1000.0).circuit(1, Duration::from_secs(1)),
        0,
    )
    .await
    .unwrap();
    assert_eq!(acquire(s, 1, 0).await, Permit::Granted);
    release(s, 1, LimiterFeedback::Failure, 0).await;
    assert_eq!(acquire(s, 2, 1_000).await, Permit::Granted);
    release(s, 2, LimiterFeedback::Neutral, 1_100).await;
    assert_eq!(acquire(s, 3, 1_200).await, Permit::Granted, "next probe");
    // Holder 3 dies: its turn lasts until its hold time.
    assert!(waits(
        acquire(s, 4, 1_200 + HOLD - 1).await,
        WaitReason::Probing
    ));
    assert_eq!(acquire(s, 4, 1_200 + HOLD).await, Permit::Granted);
}

/// Fails for items whose payload names the `down` endpoint; counts calls per endpoint.
#[derive(Clone, Default)]
struct TwoEndpoints {
    down_calls: Arc<AtomicUsize>,
    up_calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for TwoEndpoints {
    async fn handle(&self, job: &Job) -> ItemResult {
        if job.payload["endpoint"] == "down" {
            self.down_calls.fetch_add(1, Ordering::SeqCst);
            Err(HandlerError::transient("503 service unavailable"))
        } else {
            self.up_calls.fetch_add(1, Ordering::SeqCst);
            Ok(json!(null))
        }
    }

    async fn limiter(&self, job: &Job) -> Result<Option<String>, HandlerError> {
        Ok(Some(format!(
            "api-{}",
            job.payload["endpoint"].as_str().unwrap()
        )))
    }
}

/// A stage whose handler picks a limiter per job: the endpoint that is down opens its
/// own circuit, and the other endpoint's items all complete meanwhile.
async fn per_job_limiters_keep_breakers_apart(db: TestDb) {
    let store = db.store().await;
    let now = SystemClock.now();
    for name in ["api-down", "api-up"] {
        store
            .limiter_define(
                &LimiterConfig::new(name, 1000.0).circuit(3, Duration::from_secs(60)),
                now,
            )
            .await
            .unwrap();
    }
    let down = run_with_items(&*store, "call", 0, now).await;
    let up = run_with_items(&*store, "call", 0, now).await;
    for (run, endpoint) in [(down, "down"), (up, "up")] {
        let items: Vec<idempipe_engine::NewItem> = (0..20)
            .map(|i| {
                idempipe_engine::NewItem::new(
                    "call",
                    format!("{endpoint}/{i:03}"),
                    json!({ "endpoint": endpoint }),
                )
            })
            .collect();
        store.item_insert(run, &items, now).await.unwrap();
    }
    let handler = TwoEndpoints::default();
    let policy = StagePolicy::new("call")
        .limiter("api", 1.0)
        .max_attempts(10);
    let worker = Worker::new(
        store.clone(),
        WorkerConfig {
            concurrency: 2,
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
    )
    .handler(policy, handler.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    eventually(
        Duration::from_secs(30),
        "the healthy endpoint's items complete",
        || {
            let store = store.clone();
            async move { count(&*store, up, "completed").await == 20 }
        },
    )
    .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let down_calls = handler.down_calls.load(Ordering::SeqCst);
    // 3 failures open it; a call granted just before the third failed may still be made.
    assert!(
        (3..=4).contains(&down_calls),
        "the down endpoint's circuit opened after 3 failures: {down_calls} calls"
    );
    assert_eq!(handler.up_calls.load(Ordering::SeqCst), 20);
    let open = store.limiter_get("api-down").await.unwrap();
    assert!(open.circuit_open_until > SystemClock.now());
    let closed = store.limiter_get("api-up").await.unwrap();
    assert_eq!((closed.circuit_opens, closed.open_streak), (0, 0));
    assert_eq!(count(&*store, down, "dead").await, 0);
}

backend_tests!(
    half_open_circuit_probes_once_and_backs_off,
    a_probe_without_verdict_frees_the_turn,
    per_job_limiters_keep_breakers_apart,
);
