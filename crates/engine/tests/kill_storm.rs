//! The run counters (`stage_counts`, `stage_completions`) stay equal to a `GROUP BY` over
//! the items while worker processes are killed with SIGKILL again and again, and after the
//! run completes. The test binary re-runs itself as the child worker (`storm_worker` does
//! nothing unless the parent set IDEMPIPE_STORM_URL). Every other child has one slot: on
//! SQLite it claims in the transaction of its outcomes, so kills land on those too.

mod common;
#[path = "common/ledger.rs"]
mod ledger;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, eventually};
use idempipe_engine::store::RunCreate;
use idempipe_engine::{
    Backoff, Clock, Handler, HandlerError, ItemResult, Job, Maintenance, MaintenanceConfig,
    NewItem, RunStatus, StagePolicy, SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

/// Groups of members, each group awaited by one `sink` item.
const GROUPS: usize = 20;
const MEMBERS: usize = 20;

/// Sleeps a little, fails one call in five, and spawns an `echo` item from every tenth key.
struct Stormy;

#[async_trait]
impl Handler for Stormy {
    async fn handle(&self, job: &Job) -> ItemResult {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..200))).await;
        if fastrand::u8(..5) == 0 {
            return Err(HandlerError::transient("unlucky"));
        }
        if job.stage == "member" && job.key.ends_with('0') {
            job.spawn(NewItem::new("echo", job.key.clone(), json!(null)));
        }
        Ok(json!({ "pid": std::process::id() }))
    }
}

fn policy(stage: &str) -> StagePolicy {
    StagePolicy::new(stage)
        .lease(Duration::from_millis(1200))
        .max_attempts(1000)
        .backoff(Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(20),
            jitter: 0.0,
        })
}

/// The child worker process: serves the storm's stages until killed.
#[test]
fn storm_worker() {
    let Ok(url) = std::env::var("IDEMPIPE_STORM_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = idempipe_engine::connect(&url).await.unwrap();
        let concurrency =
            std::env::var("IDEMPIPE_STORM_CONCURRENCY").map_or(8, |c| c.parse().unwrap());
        let config = WorkerConfig {
            name: format!("storm-{}", std::process::id()),
            concurrency,
            claim_batch: 8,
            poll_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(store.clone(), config)
            .handler(policy("member"), Stormy)
            .handler(policy("sink"), Stormy)
            .handler(policy("echo"), Stormy);
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

/// Kills on drop, so a failing test leaves no worker behind.
struct Killed(Child);

impl Killed {
    /// The `n`th child: odd ones have 1 slot, even ones 8.
    fn spawn(url: &str, n: usize) -> Self {
        let concurrency = if n % 2 == 1 { 1 } else { 8 };
        Self(
            Command::new(std::env::current_exe().unwrap())
                .args(["storm_worker", "--exact", "--nocapture", "--test-threads=1"])
                .env("IDEMPIPE_STORM_URL", url)
                .env("IDEMPIPE_STORM_CONCURRENCY", concurrency.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn sigkill(mut self) {
        self.0.kill().unwrap(); // SIGKILL
        self.0.wait().unwrap();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn counters_match_items_through_a_kill_storm(db: TestDb) {
    let store = db.store().await;
    let mut items = Vec::new();
    for g in 0..GROUPS {
        for m in 0..MEMBERS {
            items.push(
                NewItem::new("member", format!("m/{g:02}/{m:02}"), json!(null))
                    .in_group(format!("g{g:02}")),
            );
        }
        items.push(
            NewItem::new("sink", format!("s/{g:02}"), json!(null)).after_group(format!("g{g:02}")),
        );
    }
    let run = store
        .run_create(
            &RunCreate {
                pipeline: "storm".into(),
                fingerprint: "storm".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    ledger::assert_counters_match(&db, run, "after the run was created").await;

    let mut workers: Vec<Killed> = (0..3).map(|n| Killed::spawn(&db.url, n)).collect();
    let mut kills = 0;
    while kills < 8 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(250..700))).await;
        let victim = workers.swap_remove(fastrand::usize(..workers.len()));
        victim.sigkill();
        kills += 1;
        ledger::assert_counters_match(&db, run, &format!("after kill {kills}")).await;
        workers.push(Killed::spawn(&db.url, 3 + kills));
    }
    eventually(Duration::from_secs(120), "the run completed", || {
        let store = store.clone();
        async move { store.run_get(run).await.unwrap().status == RunStatus::Completed }
    })
    .await;
    drop(workers);
    let end = ledger::assert_counters_match(&db, run, "after the run completed").await;
    let total: i64 = end.items.values().sum();
    let echoes = (GROUPS * MEMBERS / 10) as i64;
    assert_eq!(
        total,
        (GROUPS * MEMBERS + GROUPS) as i64 + echoes,
        "{end:?}"
    );
    assert_eq!(
        end.items.get(&("echo".into(), "completed".into())),
        Some(&echoes)
    );
    // The store's own reads come from the counters.
    let reported: std::collections::BTreeMap<(String, String), i64> = store
        .item_counts(run)
        .await
        .unwrap()
        .into_iter()
        .map(|c| ((c.stage, c.status), c.count))
        .collect();
    assert_eq!(reported, end.items);
    // The kills landed mid-work: some attempts died with their worker and were rescued.
    let items = store
        .item_list(&idempipe_engine::store::ItemFilter {
            run_id: run,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut rescued = 0;
    for item in &items {
        let history = store.attempt_list(item.id).await.unwrap();
        assert_eq!(
            history.iter().filter(|a| a.outcome == "completed").count(),
            1,
            "{item:?}: {history:?}"
        );
        rescued += history
            .iter()
            .filter(|a| {
                a.error
                    .as_ref()
                    .is_some_and(|e| e["kind"] == "lease_expired")
            })
            .count();
    }
    assert!(rescued > 0, "no kill landed on an attempt in flight");
}

backend_tests!(counters_match_items_through_a_kill_storm);
