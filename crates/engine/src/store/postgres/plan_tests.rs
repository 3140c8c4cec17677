//! The hot statements that touch leased items stay on the primary key however many items
//! are leased, with or without statistics, as custom and as generic (prepared) plans.

use serde_json::json;
use sqlx::{Executor, PgPool};

use super::QUERIES;

/// Leased items in the test table: as many as many workers with large batches hold.
const LEASED: i64 = 10_000;

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
        n = 2 * LEASED
    )))
    .await
    .unwrap();
    pool
}

/// The plan (text) of statement `name` with `binds` (jsonb, then bigints).
async fn plan(
    pool: &PgPool,
    mode: &str,
    name: &str,
    first: serde_json::Value,
    rest: &[i64],
) -> String {
    let mut conn = pool.acquire().await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
        .await
        .unwrap();
    let sql = format!("EXPLAIN {}", QUERIES.get(name));
    let mut query =
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(first.to_string());
    for v in rest {
        query = query.bind(*v);
    }
    query.fetch_all(&mut *conn).await.unwrap().join("\n")
}

async fn assert_pkey(pool: &PgPool, when: &str) {
    let ids: Vec<i64> = (1..=64).map(|i| i * 100).collect();
    let outcomes: Vec<_> = ids
        .iter()
        .map(|id| json!({ "id": id, "token": 7, "status": "completed" }))
        .collect();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        for (name, first, rest) in [
            ("item_record_all", json!(outcomes), &[5i64][..]),
            ("item_record", json!(outcomes), &[5][..]),
            ("item_heartbeat", json!(ids), &[7, 200_000][..]),
            ("item_release", json!(ids), &[7, 5][..]),
        ] {
            let plan = plan(pool, mode, name, first, rest).await;
            assert!(
                plan.contains("items_pkey") && !plan.contains("items_leased"),
                "{name} ({mode}, {when}) must find its items by primary key with {LEASED} leased: {plan}"
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
