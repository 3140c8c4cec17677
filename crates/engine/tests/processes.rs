//! Claims that need real processes: a worker killed with SIGKILL mid-handler, and limiters
//! shared by two worker processes. The test binary re-runs itself as the child worker
//! (`child_worker` below does nothing unless the parent set IDEMPIPE_CHILD_URL).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, child_url, count, end_child_backends, eventually, run_with_items};
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{
    Backoff, Clock, Handler, HandlerError, ItemResult, ItemStatus, Job, LimiterConfig, Maintenance,
    MaintenanceConfig, RunStatus, StagePolicy, SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

const LEASE: Duration = Duration::from_millis(1500);

/// Sleeps, so a kill lands mid-handler.
struct Slow;

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, _job: &Job) -> ItemResult {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(json!({ "pid": std::process::id() }))
    }
}

/// Says when it was called; one item answers 429 on its first attempt.
struct Api;

#[async_trait]
impl Handler for Api {
    async fn handle(&self, job: &Job) -> ItemResult {
        let called_at = SystemClock.now();
        if job.stage == "throttled" && job.key == "item/00020" && job.attempt == 1 {
            return Err(HandlerError::retry_after(
                Duration::from_millis(1500),
                format!("429 at {called_at}"),
            ));
        }
        Ok(json!({ "pid": std::process::id(), "called_at": called_at }))
    }
}

fn quick_retry(policy: StagePolicy) -> StagePolicy {
    policy.lease(LEASE).backoff(Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(50),
        jitter: 0.0,
    })
}

/// The child worker process: serves every test stage until killed.
#[test]
fn child_worker() {
    let Ok(url) = std::env::var("IDEMPIPE_CHILD_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = idempipe_engine::connect(&url).await.unwrap();
        let config = WorkerConfig {
            name: format!("child-{}", std::process::id()),
            concurrency: 4,
            claim_batch: 4,
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(store.clone(), config)
            .handler(quick_retry(StagePolicy::new("slow")), Slow)
            .handler(
                quick_retry(StagePolicy::new("steady")).limiter("steady-api", 1.0),
                Api,
            )
            .handler(
                quick_retry(StagePolicy::new("throttled")).limiter("throttled-api", 1.0),
                Api,
            );
        let maintenance = Maintenance::new(
            store,
            MaintenanceConfig {
                interval: Duration::from_millis(100),
                retain: None,
            },
        );
        tokio::spawn(maintenance.run(std::future::pending()));
        worker.run(std::future::pending()).await.unwrap();
    });
}

fn spawn_child(url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
        .env("IDEMPIPE_CHILD_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Kills on drop, so a failing test leaves no worker behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Invariant 2 with SIGKILL: the killed worker's items are rescued after their lease and
/// completed by another process; none is lost and none completes twice.
async fn sigkill_mid_handler_loses_nothing(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "slow", 60, SystemClock.now()).await;
    let mut first = Killed(spawn_child(&child_url(&db, "first")));
    eventually(
        Duration::from_secs(60),
        "first worker completed some items",
        || {
            let store = store.clone();
            async move { count(&*store, run, "completed").await >= 8 }
        },
    )
    .await;
    // "Completed" moves when an outcome batch commits, the moment the worker may hold
    // nothing until its next claim commits: wait until it holds items again (a handler
    // lasts 150 ms), so that the kill lands mid-handler.
    eventually(Duration::from_secs(60), "first worker holds items", || {
        let store = store.clone();
        async move { count(&*store, run, "running").await > 0 }
    })
    .await;
    let held_before_kill = count(&*store, run, "running").await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    // A record-and-claim statement the child had sent may still commit: the items
    // left running are the orphans once its backends are gone.
    end_child_backends(&db, "first").await;
    let orphaned: Vec<i64> = store
        .item_list(&ItemFilter {
            run_id: run,
            statuses: vec![ItemStatus::Running],
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert!(
        held_before_kill > 0 && !orphaned.is_empty(),
        "the kill should land mid-handler"
    );
    let _second = Killed(spawn_child(&db.url));
    eventually(
        Duration::from_secs(60),
        "run completed by the second worker",
        || {
            let store = store.clone();
            async move { store.run_get(run).await.unwrap().status == RunStatus::Completed }
        },
    )
    .await;
    let items = store
        .item_list(&ItemFilter {
            run_id: run,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(items.len(), 60);
    assert!(items.iter().all(|i| i.status == ItemStatus::Completed));
    for item in &items {
        let attempts = store.attempt_list(item.id).await.unwrap();
        let completions = attempts.iter().filter(|a| a.outcome == "completed").count();
        assert_eq!(
            completions, 1,
            "item {} completed {completions} times",
            item.key
        );
        if orphaned.contains(&item.id) {
            assert_eq!(
                attempts[0].error.as_ref().unwrap()["kind"],
                "lease_expired",
                "{attempts:?}"
            );
            assert_ne!(
                item.worker, attempts[0].worker,
                "finished by the other process"
            );
        }
    }
}

/// A limiter of R/s holds within 10% across two processes, both of which make calls; a
/// 429 seen by one pauses both until its Retry-After.
async fn limiter_is_shared_across_processes(db: TestDb) {
    const RATE: f64 = 20.0;
    let store = db.store().await;
    let now = SystemClock.now();
    store
        .limiter_define(&LimiterConfig::new("steady-api", RATE).burst(1.0), now)
        .await
        .unwrap();
    store
        .limiter_define(&LimiterConfig::new("throttled-api", RATE).burst(1.0), now)
        .await
        .unwrap();
    let _a = Killed(spawn_child(&db.url));
    let _b = Killed(spawn_child(&db.url));

    let steady = run_with_items(&*store, "steady", 100, SystemClock.now()).await;
    wait_completed(&store, steady).await;
    let calls = call_times(&store, steady).await;
    let pids: std::collections::HashSet<_> = calls.iter().map(|c| c.1).collect();
    assert_eq!(pids.len(), 2, "both processes made calls");
    let span = (calls.last().unwrap().0 - calls[0].0) as f64 / 1000.0;
    let measured = (calls.len() - 1) as f64 / span;
    assert!(
        (measured - RATE).abs() <= RATE * 0.10,
        "measured {measured:.2}/s against a limit of {RATE}/s"
    );

    let throttled = run_with_items(&*store, "throttled", 60, SystemClock.now()).await;
    wait_completed(&store, throttled).await;
    let item = store
        .item_get(throttled, "throttled", "item/00020")
        .await
        .unwrap();
    let attempts = store.attempt_list(item.id).await.unwrap();
    let message = attempts[0].error.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    let t429: i64 = message.trim_start_matches("429 at ").parse().unwrap();
    let calls = call_times(&store, throttled).await;
    let in_pause: Vec<_> = calls
        .iter()
        .filter(|(t, _)| *t > t429 + 100 && *t < t429 + 1500)
        .collect();
    assert!(in_pause.is_empty(), "calls during the pause: {in_pause:?}");
    // Both processes were serving this run (so the silence above covers both of them),
    // and work went on after the pause.
    let pids: std::collections::HashSet<_> = calls.iter().map(|c| c.1).collect();
    assert_eq!(
        pids.len(),
        2,
        "both processes made calls in the throttled run"
    );
    assert!(
        calls.iter().any(|(t, _)| *t >= t429 + 1500),
        "calls resumed after the pause"
    );
    assert_eq!(
        store.limiter_get("throttled-api").await.unwrap().throttles,
        1
    );
}

async fn wait_completed(store: &idempipe_engine::SharedStore, run: i64) {
    eventually(Duration::from_secs(60), "run completed", || {
        let store = store.clone();
        async move {
            count(&*store, run, "completed").await
                == store
                    .item_list(&ItemFilter {
                        run_id: run,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .len() as i64
        }
    })
    .await;
}

/// (called_at, pid) of every completed item, by time.
async fn call_times(store: &idempipe_engine::SharedStore, run: i64) -> Vec<(i64, u64)> {
    let items = store
        .item_list(&ItemFilter {
            run_id: run,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut calls: Vec<(i64, u64)> = items
        .iter()
        .map(|i| {
            let r = i.result.as_ref().unwrap();
            (r["called_at"].as_i64().unwrap(), r["pid"].as_u64().unwrap())
        })
        .collect();
    calls.sort();
    calls
}

backend_tests!(
    sigkill_mid_handler_loses_nothing,
    limiter_is_shared_across_processes
);
