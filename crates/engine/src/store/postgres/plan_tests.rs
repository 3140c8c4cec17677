//! The hot statements that touch leased items stay on the primary key however many items
//! are leased, with or without statistics, as custom and as generic (prepared) plans.

use serde_json::json;
use sqlx::{Executor, PgPool, Row};

use super::QUERIES;
use crate::store::{Outcome, OutcomeKind};

/// Leased items in the test table: as many as many workers with large batches hold.
const LEASED: i64 = 10_000;
/// Rows in the test table. On a table of a few pages a sequential scan is cheaper than
/// 512 index probes, and the planner rightly takes it; this is a table where it is not.
const ROWS: i64 = 100_000;

async fn leased_table(db: &idempipe_testkit::TestDb) -> PgPool {
    crate::connect(&db.url).await.expect("migrate");
    let pool = PgPool::connect(&db.url).await.unwrap();
    pool.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO runs (pipeline, fingerprint, input, params, created_at) VALUES ('p', 'f', 'i', '{{}}', 0);
         INSERT INTO items (run_id, stage, key, payload, next_attempt_at, created_at, updated_at)
             SELECT (SELECT max(id) FROM runs), 's', g::text, 'null', 0, 0, 0 FROM generate_series(1, {n}) g;
         UPDATE items SET status = 'running', lease_token = 7, lease_expires_at = 100000, attempts = 1
             WHERE id <= {LEASED};
         UPDATE items SET status = 'completed', completed_at = 1 WHERE id > {LEASED} + 5000;",
        n = ROWS
    )))
    .await
    .unwrap();
    pool
}

/// The plan (text) of statement `name` as `bind` fills its parameters.
async fn plan(
    pool: &PgPool,
    mode: &str,
    name: &str,
    bind: impl FnOnce(super::Query<'static>) -> super::Query<'static>,
) -> String {
    let mut conn = pool.acquire().await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
        .await
        .unwrap();
    let sql = format!("EXPLAIN {}", QUERIES.get(name));
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn assert_pkey(pool: &PgPool, when: &str) {
    let ids: Vec<i64> = (1..=512).map(|i| i * 19).collect();
    let outcomes: Vec<Outcome> = ids
        .iter()
        .map(|&item_id| Outcome {
            item_id,
            lease_token: 7,
            kind: if item_id % 3 == 0 {
                OutcomeKind::Failed {
                    error: json!({ "kind": "x" }),
                    retry_at: 9,
                }
            } else {
                OutcomeKind::Completed(json!({ "ok": true }))
            },
            spawns: Vec::new(),
        })
        .collect();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let plans = [
            (
                "item_record_all",
                plan(pool, mode, "item_record_all", |q| {
                    super::bind_outcomes(q, &outcomes, 5)
                })
                .await,
            ),
            (
                "item_record",
                plan(pool, mode, "item_record", |q| {
                    super::bind_outcomes(q, &outcomes, 5)
                })
                .await,
            ),
            (
                "item_heartbeat",
                plan(pool, mode, "item_heartbeat", |q| {
                    super::bind_ids(q, &ids).bind(7i64).bind(200_000i64)
                })
                .await,
            ),
            (
                "item_release",
                plan(pool, mode, "item_release", |q| {
                    super::bind_ids(q, &ids).bind(7i64).bind(5i64)
                })
                .await,
            ),
            (
                "item_defer",
                plan(pool, mode, "item_defer", |q| {
                    super::bind_ids(q, &ids).bind(7i64).bind(9i64).bind(5i64)
                })
                .await,
            ),
        ];
        // The claim reads due items through their partial index, not the leased ones.
        let claim = plan(pool, mode, "item_claim", |q| {
            q.bind("s")
                .bind(5i64)
                .bind(512i64)
                .bind(8i64)
                .bind(30_005i64)
                .bind("w")
                .bind(None::<i64>)
        })
        .await;
        assert!(
            claim.contains("items_due") && !claim.contains("Seq Scan on items"),
            "item_claim ({mode}, {when}) must read the due index with {LEASED} leased: {claim}"
        );
        // Outcomes and the next claim in one statement: both paths as above.
        let both = plan(pool, mode, "item_record_claim", |q| {
            super::bind_outcomes(q, &outcomes, 5)
                .bind("s")
                .bind(512i64)
                .bind(8i64)
                .bind(30_005i64)
                .bind("w")
                .bind(None::<i64>)
        })
        .await;
        assert!(
            both.contains("items_pkey")
                && both.contains("items_due")
                && !both.contains("items_leased")
                && !both.contains("Seq Scan on items"),
            "item_record_claim ({mode}, {when}) must find outcomes by primary key and claim \
             through the due index with {LEASED} leased: {both}"
        );
        for (name, plan) in plans {
            assert!(
                plan.contains("items_pkey") && !plan.contains("items_leased"),
                "{name} ({mode}, {when}) must find its items by primary key with {LEASED} leased: {plan}"
            );
            assert!(
                !plan.contains("Seq Scan on items"),
                "{name} ({mode}, {when}) must not read the whole table: {plan}"
            );
        }
    }
}

#[tokio::test]
async fn hot_statements_use_the_primary_key_with_many_items_leased() {
    let db = idempipe_testkit::TestDb::postgres().await;
    let pool = leased_table(&db).await;
    // This server may run without autovacuum: plans must be right before any ANALYZE.
    assert_pkey(&pool, "no statistics").await;
    pool.execute("ANALYZE items").await.unwrap();
    assert_pkey(&pool, "analyzed").await;
}
