//! The hot statements that touch leased items stay on the primary key however many items
//! are leased, with or without statistics, as custom and as generic (prepared) plans.

use serde_json::json;
use sqlx::{Executor, PgPool, Row};

use super::QUERIES;
use crate::store::{Outcome, OutcomeKind};

/// Leased items in the test table: as many as many workers with large batches hold.
const LEASED: i64 = 10_000;
/// The one run of the test table (the first identity value of a fresh schema).
const RUN: i64 = 1;
/// Due items in the test tables (the rest are completed): a run nearly done, and one with
/// most of its items still to do. Without statistics the planner sizes the table by its
/// pages, so the two get different plans.
const DUE: [i64; 2] = [5_000, 80_000];
/// Rows in the test table. On a table of a few pages a sequential scan is cheaper than
/// 512 index probes, and the planner rightly takes it; this is a table where it is not.
const ROWS: i64 = 100_000;

async fn leased_table(db: &idempipe_testkit::TestDb, due: i64) -> PgPool {
    crate::connect(&db.url).await.expect("migrate");
    let pool = PgPool::connect(&db.url).await.unwrap();
    pool.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO runs (pipeline, fingerprint, input, params, created_at) VALUES ('p', 'f', 'i', '{{}}', 0);
         INSERT INTO items (run_id, stage, key, payload, next_attempt_at, created_at, updated_at)
             SELECT (SELECT max(id) FROM runs), 's', g::text, 'null', 0, 0, 0 FROM generate_series(1, {n}) g;
         UPDATE items SET status = 'running', lease_token = 7, lease_expires_at = 100000, attempts = 1
             WHERE id <= {LEASED};
         UPDATE items SET status = 'completed', completed_at = 1 WHERE id > {LEASED} + {due};",
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

/// The hot statements' plans that break the rules, as messages naming statement and plan.
async fn bad_plans(pool: &PgPool, when: &str) -> Vec<String> {
    let mut bad = Vec::new();
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
                "item_start",
                plan(pool, mode, "item_start", |q| {
                    super::bind_ids(q, &ids)
                        .bind(-7i64)
                        .bind(8i64)
                        .bind(200_000i64)
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
        // The claim reads due items through their partial index, not the leased ones,
        // for a worker of every run and for one serving a single run (`idempipe process`):
        // a run bound as a constant once made the planner expect a single unpaused item
        // and sort a scan of the whole table on every claim.
        for run in [None, Some(RUN)] {
            let claim = plan(pool, mode, "item_claim", |q| {
                q.bind("s")
                    .bind(5i64)
                    .bind(512i64)
                    .bind(8i64)
                    .bind(30_005i64)
                    .bind("w")
                    .bind(run)
            })
            .await;
            if !claim.contains("items_due") || claim.contains("Seq Scan on items") {
                bad.push(format!(
                "item_claim ({mode}, {when}, run {run:?}) must read the due index with {LEASED} leased: {claim}"
                ));
            }
            // Outcomes and the next claim in one statement: both paths as above.
            let both = plan(pool, mode, "item_record_claim", |q| {
                super::bind_outcomes(q, &outcomes, 5)
                    .bind("s")
                    .bind(512i64)
                    .bind(8i64)
                    .bind(30_005i64)
                    .bind("w")
                    .bind(run)
            })
            .await;
            if !both.contains("items_pkey")
                || !both.contains("items_due")
                || both.contains("items_leased")
                || both.contains("Seq Scan on items")
            {
                bad.push(format!(
                "item_record_claim ({mode}, {when}, run {run:?}) must find outcomes by primary key \
                 and claim through the due index with {LEASED} leased: {both}"
                ));
            }
        }
        for (name, plan) in plans {
            if !plan.contains("items_pkey")
                || plan.contains("items_leased")
                || plan.contains("Seq Scan on items")
            {
                bad.push(format!(
                    "{name} ({mode}, {when}) must find its items by primary key, without reading \
                     the whole table or every leased item ({LEASED} leased): {plan}"
                ));
            }
        }
    }
    bad
}

#[tokio::test]
async fn hot_statements_use_the_primary_key_with_many_items_leased() {
    let mut bad = Vec::new();
    for due in DUE {
        let db = idempipe_testkit::TestDb::postgres().await;
        let pool = leased_table(&db, due).await;
        // This server may run without autovacuum: plans must be right before any ANALYZE.
        bad.extend(bad_plans(&pool, &format!("{due} due, no statistics")).await);
        pool.execute("ANALYZE items").await.unwrap();
        bad.extend(bad_plans(&pool, &format!("{due} due, analyzed")).await);
    }
    assert!(
        bad.is_empty(),
        "{} bad plans:\n\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}
