//! No-op items through claim -> run -> complete: items/s and claim-to-complete latency.
//!
//! `cargo bench -p idempipe-engine --bench throughput`
//! Environment: IDEMPIPE_BENCH_ITEMS (default 100000), IDEMPIPE_BENCH_BACKENDS
//! (default "sqlite,postgres"), IDEMPIPE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use idempipe_engine::store::RunCreate;
use idempipe_engine::{
    Handler, ItemResult, Job, NewItem, StagePolicy, Worker, WorkerConfig, connect,
};
use serde_json::json;

struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn handle(&self, _job: &Job) -> ItemResult {
        Ok(serde_json::Value::Null)
    }
}

/// A fresh database: (store URL, how to read latencies).
async fn fresh(backend: &str, tag: &str) -> (String, Option<std::path::PathBuf>) {
    if backend == "sqlite" {
        let dir = std::env::temp_dir().join(format!("idempipe-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (dir.join("bench.db").display().to_string(), Some(dir))
    } else {
        let admin = std::env::var("IDEMPIPE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("bench_{}_{tag}", std::process::id());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("PostgreSQL for the bench");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let sep = if admin.contains('?') { '&' } else { '?' };
        (
            format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
            None,
        )
    }
}

async fn latencies(url: &str) -> Vec<i64> {
    let q = "SELECT ended_at - started_at FROM attempts";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(q).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
            .await
            .unwrap();
        sqlx::query_scalar(q).fetch_all(&pool).await.unwrap()
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn one(backend: &str, items: usize, concurrency: usize, claim_batch: i64) {
    let tag = format!("{concurrency}_{claim_batch}");
    let (url, dir) = fresh(backend, &tag).await;
    let store = connect(&url).await.unwrap();
    let new_items: Vec<NewItem> = (0..items)
        .map(|i| NewItem::new("noop", format!("{i:07}"), json!(null)))
        .collect();
    let run = RunCreate {
        pipeline: "bench".into(),
        fingerprint: tag.clone(),
        input: "-".into(),
        params: json!({}),
        items: new_items,
    };
    store
        .run_create(
            &run,
            idempipe_engine::Clock::now(&idempipe_engine::SystemClock),
        )
        .await
        .unwrap();
    let config = WorkerConfig {
        name: "bench".into(),
        concurrency,
        claim_batch,
        poll_interval: Duration::from_millis(5),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(store.clone(), config).handler(StagePolicy::new("noop"), Noop);
    let stats = worker.stats();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    while stats.snapshot()[1] < items as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    stop_tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let mut lat = latencies(&url).await;
    lat.sort_unstable();
    println!(
        "{backend:<9} {concurrency:>11} {claim_batch:>11} {items:>9} {:>10.0} {:>8} {:>8}",
        items as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::main]
async fn main() {
    let items: usize = std::env::var("IDEMPIPE_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let backends =
        std::env::var("IDEMPIPE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    println!(
        "{:<9} {:>11} {:>11} {:>9} {:>10} {:>8} {:>8}",
        "backend", "concurrency", "claim_batch", "items", "items/s", "p50 ms", "p99 ms"
    );
    for backend in backends.split(',') {
        for concurrency in [1, 8, 64] {
            for claim_batch in [1, 64] {
                one(backend, items, concurrency, claim_batch).await;
            }
        }
    }
}
