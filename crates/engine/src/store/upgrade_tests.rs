//! A database written by the previous schema (version 3: a row in `attempts` for every
//! attempt, successes included) migrates to the lean schema and keeps working: its history
//! reads the same, its counters match its items, and its leased items can still complete.

use serde_json::json;

use super::migrate::{CREATE_TABLE, INSERT_APPLIED, Migration};
use crate::model::ItemStatus;
use crate::store::{Outcome, OutcomeKind};

/// Rows as version 3 wrote them: a completed at its 2nd attempt (the 1st failed), b
/// completed at once, c failed, d waiting for c, e running under lease token 5.
const V3_ROWS: &str = "
INSERT INTO runs (pipeline, fingerprint, input, created_at) VALUES ('p', 'f', 'i', 1000);
INSERT INTO items (run_id, stage, key, status, attempts, next_attempt_at, worker, claimed_at,
                   completed_at, has_waiters, created_at, updated_at)
VALUES (1, 's', 'a', 'completed', 2, 0, 'w1', 3000, 4000, FALSE, 1000, 4000),
       (1, 's', 'b', 'completed', 1, 0, 'w1', 2000, 2500, FALSE, 1000, 2500),
       (1, 's', 'c', 'failed',    1, 9000, 'w1', 2000, NULL, TRUE, 1000, 2500);
INSERT INTO items (run_id, stage, key, status, attempts, waiting_on, next_attempt_at,
                   created_at, updated_at)
VALUES (1, 't', 'd', 'pending', 0, 1, 0, 1000, 1000);
INSERT INTO items (run_id, stage, key, status, attempts, next_attempt_at, lease_token,
                   lease_expires_at, worker, claimed_at, created_at, updated_at)
VALUES (1, 's', 'e', 'running', 1, 0, 5, 99000, 'w2', 5000, 1000, 5000);
INSERT INTO item_waits (input_id, waiter_id) VALUES (3, 4);
INSERT INTO attempts (item_id, run_id, attempt, worker, started_at, ended_at, outcome, error)
VALUES (1, 1, 1, 'w1', 2000, 2500, 'failed', '{\"kind\": \"boom\"}'),
       (1, 1, 2, 'w1', 3000, 4000, 'completed', NULL),
       (2, 1, 1, 'w1', 2000, 2500, 'completed', NULL),
       (3, 1, 1, 'w1', 2000, 2500, 'failed', '{\"kind\": \"boom\"}');
";

/// Applies migrations 1-3 and the version-3 rows through `exec` (one SQL script at a time).
fn v3_script(migrations: &[Migration]) -> Vec<String> {
    let mut script = vec![CREATE_TABLE.to_string()];
    for m in migrations.iter().filter(|m| m.version <= 3) {
        script.push(m.sql.to_string());
        script.push(
            INSERT_APPLIED
                .replace("$1", &m.version.to_string())
                .replace("$2", &format!("'{}'", m.name))
                .replace("$3", &m.checksum().to_string())
                .replace("$4", "0"),
        );
    }
    script.push(V3_ROWS.to_string());
    script
}

async fn upgraded_database_reads_its_history(db: idempipe_testkit::TestDb) {
    if db.backend == "postgres" {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        for sql in v3_script(super::postgres::MIGRATIONS) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    } else {
        let options: sqlx::sqlite::SqliteConnectOptions =
            format!("sqlite://{}", db.url).parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        for sql in v3_script(super::sqlite::MIGRATIONS) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }

    let store = crate::connect(&db.url)
        .await
        .expect("migrate from version 3");
    let history = |id: i64| {
        let store = store.clone();
        async move {
            store
                .attempt_list(id)
                .await
                .unwrap()
                .into_iter()
                .map(|a| (a.attempt, a.ended_at, a.outcome))
                .collect::<Vec<_>>()
        }
    };
    // The success rows version 3 stored are shown once, not again from the item row.
    assert_eq!(
        history(1).await,
        [(1, 2500, "failed".into()), (2, 4000, "completed".into())]
    );
    assert_eq!(history(2).await, [(1, 2500, "completed".to_string())]);
    assert_eq!(history(3).await, [(1, 2500, "failed".to_string())]);
    let counts: Vec<(String, String, i64)> = store
        .item_counts(1)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.stage, c.status, c.count))
        .collect();
    let expected = [
        ("s", "completed", 2),
        ("s", "failed", 1),
        ("s", "running", 1),
        ("t", "waiting", 1),
    ]
    .map(|(s, st, n)| (s.to_string(), st.to_string(), n));
    assert_eq!(counts, expected);
    let t = store.stage_throughput(1, "s", 10_000, 5_000).await.unwrap();
    assert_eq!((t.completed_in_window, t.remaining), (2, 2));

    // The leased item completes under its old lease, with the lean write.
    let done = store
        .item_record(
            &[Outcome {
                item_id: 5,
                lease_token: 5,
                kind: OutcomeKind::Completed(json!("ok")),
                spawns: Vec::new(),
            }],
            6_000,
        )
        .await
        .unwrap();
    assert_eq!(done, [true]);
    assert_eq!(history(5).await, [(1, 6000, "completed".to_string())]);
    let e = store.item_get(1, "s", "e").await.unwrap();
    assert_eq!(e.status, ItemStatus::Completed);
    assert_eq!(super::schema_version(), 5);
}

#[tokio::test]
async fn sqlite_database_of_version_3_upgrades() {
    upgraded_database_reads_its_history(idempipe_testkit::TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_database_of_version_3_upgrades() {
    upgraded_database_reads_its_history(idempipe_testkit::TestDb::postgres().await).await;
}
