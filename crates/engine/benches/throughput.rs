//! No-op items through claim -> run -> complete: items/s, CPU per item and claim-to-complete
//! latency.
//!
//! `cargo bench -p idempipe-engine --bench throughput`
//! Environment: IDEMPIPE_BENCH_ITEMS (default 100000), IDEMPIPE_BENCH_BACKENDS
//! (default "sqlite,postgres"), IDEMPIPE_BENCH_CONFIGS (concurrency x claim batch, default
//! "1x1,1x64,8x1,8x64,64x1,64x64,512x256"), IDEMPIPE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test).
//!
//! CPU per item is read from `/proc` (Linux): `cpu us/item` is this process (user + system),
//! `pg us/item` the PostgreSQL backends serving the bench's connections (only when the server
//! runs on this machine; `-` otherwise). Each config also prints one JSON line.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use idempipe_engine::store::RunCreate;
use idempipe_engine::{
    Handler, ItemResult, Job, NewItem, StagePolicy, Worker, WorkerConfig, connect,
};
use serde_json::json;

/// Concurrency x claim batch of each config (override: IDEMPIPE_BENCH_CONFIGS).
const DEFAULT_CONFIGS: &str = "1x1,1x64,8x1,8x64,64x1,64x64,512x256";

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
            format!(
                "{admin}{sep}options=-c%20search_path%3D{schema}&application_name={}",
                app_name()
            ),
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

/// The `application_name` of the bench's PostgreSQL connections, to find their backends.
fn app_name() -> String {
    format!("idempipe-bench-{}", std::process::id())
}

/// User + system CPU of process `pid` ("self" for this one) in microseconds, from `/proc`.
fn cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10_000)
}

/// CPU (us) of each PostgreSQL backend serving this bench, by pid; None if not readable here.
async fn pg_backends_cpu(url: &str) -> Option<std::collections::HashMap<i32, u64>> {
    let pool = sqlx::PgPool::connect(url).await.ok()?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(app_name())
    .fetch_all(&pool)
    .await
    .ok()?;
    pool.close().await;
    let cpu: std::collections::HashMap<i32, u64> = pids
        .into_iter()
        .filter_map(|pid| Some((pid, cpu_us(&pid.to_string())?)))
        .collect();
    (!cpu.is_empty()).then_some(cpu)
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
    let pg_before = if backend == "postgres" {
        pg_backends_cpu(&url).await
    } else {
        None
    };
    let cpu_before = cpu_us("self");
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    while stats.snapshot()[1] < items as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(cpu_us("self"))
        .map(|(a, b)| (b - a) as f64 / items as f64);
    let pg_cpu = match (pg_before, pg_backends_cpu(&url).await) {
        (Some(before), Some(after)) => Some(
            after
                .iter()
                .map(|(pid, us)| us - before.get(pid).copied().unwrap_or(0).min(*us))
                .sum::<u64>() as f64
                / items as f64,
        ),
        _ => None,
    };
    stop_tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let mut lat = latencies(&url).await;
    lat.sort_unstable();
    let rate = items as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{backend:<9} {concurrency:>11} {claim_batch:>11} {items:>9} {rate:>10.0} {:>12} {:>11} {p50:>8} {p99:>8}",
        show(cpu),
        show(pg_cpu),
    );
    println!(
        "{}",
        json!({
            "backend": backend, "processes": 1, "concurrency": concurrency,
            "claim_batch": claim_batch, "items": items, "items_per_s": rate.round(),
            "cpu_us_per_item": cpu, "pg_cpu_us_per_item": pg_cpu,
            "p50_ms": p50, "p99_ms": p99,
        })
    );
    drop(store);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        drop_schema(&tag).await;
    }
}

/// Drops the PostgreSQL schema of config `tag`, so that runs leave nothing behind.
async fn drop_schema(tag: &str) {
    let admin = std::env::var("IDEMPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
        let schema = format!("bench_{}_{tag}", std::process::id());
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&pool)
        .await;
        pool.close().await;
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
    let configs: Vec<(usize, i64)> = std::env::var("IDEMPIPE_BENCH_CONFIGS")
        .unwrap_or_else(|_| DEFAULT_CONFIGS.into())
        .split(',')
        .map(|c| {
            let (conc, batch) = c
                .split_once('x')
                .expect("IDEMPIPE_BENCH_CONFIGS: CONCURRENCYxCLAIM_BATCH,...");
            (conc.trim().parse().unwrap(), batch.trim().parse().unwrap())
        })
        .collect();
    println!(
        "{:<9} {:>11} {:>11} {:>9} {:>10} {:>12} {:>11} {:>8} {:>8}",
        "backend",
        "concurrency",
        "claim_batch",
        "items",
        "items/s",
        "cpu us/item",
        "pg us/item",
        "p50 ms",
        "p99 ms"
    );
    for backend in backends.split(',') {
        for &(concurrency, claim_batch) in &configs {
            one(backend, items, concurrency, claim_batch).await;
        }
    }
}
