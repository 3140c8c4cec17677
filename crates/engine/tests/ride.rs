//! Claims that ride with outcomes (`Store::item_record_and_claim`: one commit per item at
//! concurrency 1) race plain claims, each racer on its own store and so its own sessions.
//! Every item completes exactly once, no transaction fails (on PostgreSQL a deadlock
//! aborts one: two sessions that shared a counter shard and took its rows in different
//! orders, a record then a claim against a plain claim, deadlocked here), and the
//! counters stay equal to a `GROUP BY` over the items, also after maintenance folds the
//! shards of sessions that ended. Half the riders' outcomes spawn items, so both ways a
//! backend may record and claim (one statement, or a transaction of several) race.

mod common;
#[path = "common/ledger.rs"]
mod ledger;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestDb, count, eventually, run_with_items};
use idempipe_engine::store::{ClaimParams, ClaimedItem, Outcome, OutcomeKind};
use idempipe_engine::{Maintenance, MaintenanceConfig, NewItem, Store};
use serde_json::json;

const ITEMS: usize = 3_000;
/// Racers of each kind; 24 sessions in all, more than the 16 shards the counters had
/// when a deadlock was possible.
const RIDERS: usize = 12;
const PLAIN: usize = 12;

fn params(worker: &str, limit: i64) -> ClaimParams {
    ClaimParams {
        stage: "s".into(),
        limit,
        worker: worker.into(),
        lease_token: fastrand::i64(1..i64::MAX),
        lease_expires_at: 60_000,
        now: 0,
        run_id: None,
    }
}

fn completed(item: &ClaimedItem, token: i64) -> Outcome {
    Outcome {
        item_id: item.id,
        lease_token: token,
        kind: OutcomeKind::Completed(json!(item.id)),
        spawns: vec![],
    }
}

/// As [`completed`], spawning an item of stage `t` (which nobody claims): an outcome with
/// spawns records in a transaction of several statements instead of one statement.
fn completed_spawning(item: &ClaimedItem, token: i64) -> Outcome {
    let mut outcome = completed(item, token);
    outcome.spawns = vec![NewItem::new("t", item.key.clone(), json!(null))];
    outcome
}

/// Claims one item, then records each item's outcome and claims the next in one call,
/// until nothing is left; returns the ids it completed. `spawn`: each outcome spawns.
async fn ride(store: &dyn Store, name: String, spawn: bool) -> Vec<i64> {
    let mut p = params(&name, 1);
    let mut current = store.item_claim(&p).await.unwrap();
    let mut done = Vec::new();
    while let Some(item) = current.first() {
        let outcome = if spawn {
            completed_spawning(item, p.lease_token)
        } else {
            completed(item, p.lease_token)
        };
        p = params(&name, 1);
        let (flags, next) = store
            .item_record_and_claim(&[outcome], 0, &p)
            .await
            .unwrap_or_else(|e| panic!("{name}: record and claim failed: {e}"));
        assert_eq!(flags, vec![true], "{name}: outcome not recorded");
        done.push(item.id);
        current = next;
    }
    done
}

/// Claims small batches and records them, each in its own statement.
async fn plain(store: &dyn Store, name: String) -> Vec<i64> {
    let mut done = Vec::new();
    loop {
        let p = params(&name, 4);
        let items = store
            .item_claim(&p)
            .await
            .unwrap_or_else(|e| panic!("{name}: claim failed: {e}"));
        if items.is_empty() {
            return done;
        }
        let outcomes: Vec<Outcome> = items.iter().map(|i| completed(i, p.lease_token)).collect();
        let flags = store
            .item_record(&outcomes, 0)
            .await
            .unwrap_or_else(|e| panic!("{name}: record failed: {e}"));
        assert!(flags.iter().all(|f| *f), "{name}: outcome not recorded");
        done.extend(items.iter().map(|i| i.id));
    }
}

async fn riders_race_plain_claims(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", ITEMS, 0).await;
    let mut racers = Vec::new();
    for r in 0..RIDERS + PLAIN {
        let own = db.store().await;
        racers.push(tokio::spawn(async move {
            if r < RIDERS {
                ride(&*own, format!("rider{r}"), r % 2 == 1).await
            } else {
                plain(&*own, format!("plain{r}")).await
            }
        }));
    }
    let mut seen = HashSet::new();
    for racer in racers {
        for id in racer.await.unwrap() {
            assert!(seen.insert(id), "item {id} completed twice");
        }
    }
    assert_eq!(seen.len(), ITEMS);
    assert_eq!(count(&*store, run, "completed").await, ITEMS as i64);
    ledger::assert_counters_match(&db, run, "after the race").await;
    // The racers' sessions end with their stores; maintenance folds their shards (once
    // the server has seen the sessions go).
    let maintenance = Maintenance::new(store.clone(), MaintenanceConfig::default());
    eventually(
        Duration::from_secs(30),
        "ended sessions' shards folded",
        || {
            let (db, maintenance) = (&db, &maintenance);
            async move {
                maintenance.finish_runs_once().await.unwrap();
                ended_shards(db).await <= 1
            }
        },
    )
    .await;
    ledger::assert_counters_match(&db, run, "after the fold").await;
}

/// Counter shards not written by a live session (shard 0 included): 1 once folded.
async fn ended_shards(db: &TestDb) -> i64 {
    if db.backend != "postgres" {
        return 1;
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let shards: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT shard) FROM stage_counts WHERE shard NOT IN \
         (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    shards
}

backend_tests!(riders_race_plain_claims);
