//! Reads the database directly, bypassing the store, to check what the store keeps.
//! Included with `#[path]` by the tests that need it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use idempipe_testkit::TestDb;

/// (stage, status) -> items, `waiting` apart, as a `GROUP BY` over items.
pub type Counts = BTreeMap<(String, String), i64>;

/// What the tables say, read in one snapshot: the `GROUP BY` over items, the counters
/// (`stage_counts`), the completions per second from items, and `stage_completions`.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub items: Counts,
    pub counters: Counts,
    pub completed_by_second: Counts,
    pub completion_counters: Counts,
}

const ITEMS: &str = "SELECT stage, CASE WHEN status = 'pending' AND waiting_on > 0 THEN 'waiting' \
     ELSE status END, count(*) FROM items WHERE run_id = $1 GROUP BY 1, 2";
const COUNTERS: &str = "SELECT stage, status, CAST(sum(n) AS BIGINT) FROM stage_counts \
     WHERE run_id = $1 GROUP BY 1, 2 HAVING sum(n) <> 0";
const BY_SECOND: &str = "SELECT stage, CAST(completed_at / 1000 AS TEXT), count(*) FROM items \
     WHERE run_id = $1 AND status = 'completed' GROUP BY 1, 2";
const COMPLETIONS: &str = "SELECT stage, CAST(second AS TEXT), CAST(sum(n) AS BIGINT) \
     FROM stage_completions WHERE run_id = $1 GROUP BY 1, 2 HAVING sum(n) <> 0";

fn to_map(rows: Vec<(String, String, i64)>) -> Counts {
    rows.into_iter().map(|(a, b, n)| ((a, b), n)).collect()
}

/// Reads a [`Snapshot`] of `run` (one transaction, so one point in time).
pub async fn snapshot(db: &TestDb, run: i64) -> Snapshot {
    if db.backend == "postgres" {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut maps = Vec::new();
        for sql in [ITEMS, COUNTERS, BY_SECOND, COMPLETIONS] {
            let rows = sqlx::query_as(sql)
                .bind(run)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            maps.push(to_map(rows));
        }
        tx.rollback().await.unwrap();
        pool.close().await;
        into_snapshot(maps)
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.url))
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        let mut maps = Vec::new();
        for sql in [ITEMS, COUNTERS, BY_SECOND, COMPLETIONS] {
            let rows = sqlx::query_as(sql)
                .bind(run)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            maps.push(to_map(rows));
        }
        tx.rollback().await.unwrap();
        pool.close().await;
        into_snapshot(maps)
    }
}

fn into_snapshot(mut maps: Vec<Counts>) -> Snapshot {
    let completion_counters = maps.pop().unwrap();
    let completed_by_second = maps.pop().unwrap();
    let counters = maps.pop().unwrap();
    let items = maps.pop().unwrap();
    Snapshot {
        items,
        counters,
        completed_by_second,
        completion_counters,
    }
}

/// Asserts that the counters agree with the items in one snapshot of `run`.
pub async fn assert_counters_match(db: &TestDb, run: i64, when: &str) -> Snapshot {
    let s = snapshot(db, run).await;
    assert_eq!(
        s.counters, s.items,
        "stage_counts vs GROUP BY over items ({when})"
    );
    assert_eq!(
        s.completion_counters, s.completed_by_second,
        "stage_completions vs completed items per second ({when})"
    );
    s
}

/// Rows stored in the attempt table (not the view).
pub async fn stored_attempts(db: &TestDb, item_id: i64) -> i64 {
    let sql = "SELECT count(*) FROM attempt_log WHERE item_id = $1";
    if db.backend == "postgres" {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let n = sqlx::query_scalar(sql)
            .bind(item_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.url))
            .await
            .unwrap();
        let n = sqlx::query_scalar(sql)
            .bind(item_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}
