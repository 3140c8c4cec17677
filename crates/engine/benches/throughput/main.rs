//! Items through claim -> run -> complete: items/s, CPU per item and claim-to-complete
//! latency, per backend and config, one table row and one JSON line each.
//!
//! `cargo bench -p idempipe-engine --bench throughput`
//!
//! Environment:
//! - IDEMPIPE_BENCH_ITEMS: items per config (default 100000);
//! - IDEMPIPE_BENCH_BACKENDS: default "sqlite,postgres";
//! - IDEMPIPE_BENCH_CONFIGS: comma-separated `[frames:]CONCURRENCYxCLAIM_BATCH[xPROCESSES]`
//!   (default [`DEFAULT_CONFIGS`]); `frames:` runs the frame stage's shape (fan-in group,
//!   limiter permit, external-call mark) instead of no-op items;
//! - IDEMPIPE_BENCH_PREFETCH: units each worker claims ahead of its slots
//!   (`WorkerConfig::prefetch`, default 0);
//! - IDEMPIPE_BENCH_GRAPHILE=1: after each no-op PostgreSQL config, Graphile Worker (the
//!   queue a user would pick instead) drains as many jobs with the same concurrency and
//!   processes on the same PostgreSQL, and the ratio is printed (needs node and npm);
//! - IDEMPIPE_TEST_PG: a PostgreSQL to use instead of the private cluster the bench starts
//!   (initdb in a temporary directory, default settings, a port of its own).
//!
//! With PROCESSES = 2 the bench starts a second worker process (itself, re-run as a child);
//! both drain the same run and items/s counts both. CPU per item is user + system time from
//! `/proc`: `cpu us/item` of the bench's worker processes, `pg us/item` of PostgreSQL (the
//! whole private cluster: backends, WAL writer, checkpointer; with IDEMPIPE_TEST_PG only
//! the backends serving the bench, when the server runs on this machine). `total` is their
//! sum. p50/p99 are claim-to-committed-completion times read from the items (ms).

mod child;
mod cluster;
mod cpu;
mod graphile;
mod workload;

use std::time::{Duration, Instant};

use idempipe_engine::connect;
use serde_json::json;
use workload::Variant;

/// The configs run by default.
const DEFAULT_CONFIGS: &str =
    "1x1,64x64,512x256,1024x1000,2048x1000,2048x1000x2,frames:2048x1000x2";

/// One config.
#[derive(Debug, Clone, Copy)]
struct Config {
    variant: Variant,
    concurrency: usize,
    claim_batch: i64,
    processes: usize,
}

fn bad_config(s: &str) -> ! {
    panic!("IDEMPIPE_BENCH_CONFIGS: {s:?} is not [frames:]CONCURRENCYxCLAIM_BATCH[xPROCESSES]")
}

fn parse_config(s: &str) -> Config {
    let (variant, rest) = match s.split_once(':') {
        Some((v, rest)) => (
            Variant::parse(v.trim()).unwrap_or_else(|| bad_config(s)),
            rest,
        ),
        None => (Variant::Noop, s),
    };
    let n: Vec<usize> = rest
        .split('x')
        .map(|p| p.trim().parse().unwrap_or_else(|_| bad_config(s)))
        .collect();
    if !(2..=3).contains(&n.len()) || n.contains(&0) {
        bad_config(s);
    }
    Config {
        variant,
        concurrency: n[0],
        claim_batch: n[1] as i64,
        processes: n.get(2).copied().unwrap_or(1),
    }
}

/// Where PostgreSQL configs run, and how its CPU is read.
struct Postgres {
    admin: String,
    /// The private cluster (None: IDEMPIPE_TEST_PG).
    cluster: Option<cluster::Cluster>,
}

impl Postgres {
    fn open() -> Self {
        match std::env::var("IDEMPIPE_TEST_PG") {
            Ok(admin) => Self {
                admin,
                cluster: None,
            },
            Err(_) => {
                let cluster = cluster::Cluster::start();
                Self {
                    admin: cluster.url.clone(),
                    cluster: Some(cluster),
                }
            }
        }
    }

    /// CPU spent by PostgreSQL for the bench so far (us), if readable here.
    async fn cpu_us(&self, url: &str) -> Option<u64> {
        match &self.cluster {
            Some(c) => cpu::cluster_us(c.postmaster()?),
            None => backends_cpu(url).await,
        }
    }
}

/// The `application_name` of the bench's PostgreSQL connections, to find their backends.
fn app_name() -> String {
    format!("idempipe-bench-{}", std::process::id())
}

/// CPU (us) of the backends serving this bench on a shared server, if they run here.
async fn backends_cpu(url: &str) -> Option<u64> {
    let pool = sqlx::PgPool::connect(url).await.ok()?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(app_name())
    .fetch_all(&pool)
    .await
    .ok()?;
    pool.close().await;
    let cpu: Vec<u64> = pids
        .iter()
        .filter_map(|pid| cpu::process_us(&pid.to_string()))
        .collect();
    (!cpu.is_empty()).then(|| cpu.iter().sum())
}

/// A fresh database for one config: its URL, and the SQLite directory to delete after.
async fn fresh(
    backend: &str,
    pg: Option<&Postgres>,
    tag: &str,
) -> (String, Option<std::path::PathBuf>) {
    if backend == "sqlite" {
        let dir = std::env::temp_dir().join(format!("idempipe-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        return (dir.join("bench.db").display().to_string(), Some(dir));
    }
    let admin = &pg.expect("PostgreSQL").admin;
    let schema = schema_name(tag);
    let pool = sqlx::PgPool::connect(admin)
        .await
        .expect("PostgreSQL for the bench");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let sep = if admin.contains('?') { '&' } else { '?' };
    (
        format!(
            "{admin}{sep}options=-c%20search_path%3D{schema}&application_name={}",
            app_name()
        ),
        None,
    )
}

fn schema_name(tag: &str) -> String {
    format!("bench_{}_{tag}", std::process::id())
}

/// Claim-to-completion times (ms) of the completed items of `stage`, sorted.
async fn latencies(url: &str, stage: &str) -> Vec<i64> {
    let q = "SELECT completed_at - claimed_at FROM items WHERE stage = $1 AND status = 'completed'";
    let mut lat: Vec<i64> = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(q)
            .bind(stage)
            .fetch_all(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
            .await
            .unwrap();
        sqlx::query_scalar(q)
            .bind(stage)
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    lat.sort_unstable();
    lat
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs one config; returns its items/s.
async fn one(backend: &str, pg: Option<&Postgres>, items: usize, c: Config) -> f64 {
    let tag = format!(
        "{}_{}_{}_{}",
        c.variant.name(),
        c.concurrency,
        c.claim_batch,
        c.processes
    );
    let (url, dir) = fresh(backend, pg, &tag).await;
    let store = connect(&url).await.unwrap();
    workload::create_run(&store, c.variant, items, &tag).await;
    let children: Vec<child::Child> = (1..c.processes)
        .map(|_| child::Child::spawn(&url, c.variant, c.concurrency, c.claim_batch))
        .collect();
    let worker = workload::worker(store.clone(), c.variant, c.concurrency, c.claim_batch);
    let stats = worker.stats();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let pg_before = match pg {
        Some(pg) if backend == "postgres" => pg.cpu_us(&url).await,
        _ => None,
    };
    let cpu_before: Vec<Option<u64>> = std::iter::once(cpu::process_us("self"))
        .chain(
            children
                .iter()
                .map(|ch| cpu::process_us(&ch.pid().to_string())),
        )
        .collect();
    let started = Instant::now();
    for ch in &children {
        ch.go();
    }
    let handle = tokio::spawn(worker.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let completed = || stats.snapshot()[1] + children.iter().map(|ch| ch.completed()).sum::<u64>();
    while completed() < items as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let cpu_after: Vec<Option<u64>> = std::iter::once(cpu::process_us("self"))
        .chain(
            children
                .iter()
                .map(|ch| cpu::process_us(&ch.pid().to_string())),
        )
        .collect();
    let per_item = |us: u64| us as f64 / items as f64;
    let cpu = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(a, b)| Some(b.as_ref()? - a.as_ref()?))
        .sum::<Option<u64>>()
        .map(per_item);
    let pg_cpu = match (pg, pg_before) {
        (Some(pg), Some(before)) => pg
            .cpu_us(&url)
            .await
            .map(|after| per_item(after.saturating_sub(before))),
        _ => None,
    };
    stop_tx.send(true).unwrap();
    handle.await.unwrap().unwrap();
    drop(children);
    let lat = latencies(&url, c.variant.stage()).await;
    let rate = items as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let total = cpu.map(|c| c + pg_cpu.unwrap_or(0.0));
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{backend:<9} {:<7} {:>5} {:>6} {:>6} {items:>8} {rate:>9.0} {:>8} {:>8} {:>8} {p50:>6} {p99:>6}",
        c.variant.name(),
        c.processes,
        c.concurrency,
        c.claim_batch,
        show(cpu),
        show(pg_cpu),
        show(total),
    );
    // Keys in the order (serde_json sorts object keys), then the breakdown.
    let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{:.1}", v));
    println!(
        "{{\"backend\": {}, \"processes\": {}, \"concurrency\": {}, \"claim_batch\": {}, \"items_per_s\": {:.0}, \"cpu_us_per_item\": {}, \"p50_ms\": {p50}, \"p99_ms\": {p99}, \"variant\": {}, \"items\": {items}, \"worker_cpu_us_per_item\": {}, \"pg_cpu_us_per_item\": {}, \"prefetch\": {}}}",
        json!(backend),
        c.processes,
        c.concurrency,
        c.claim_batch,
        rate,
        num(total),
        json!(c.variant.name()),
        num(cpu),
        num(pg_cpu),
        workload::prefetch(),
    );
    drop(store);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Some(pg) = pg {
        drop_schema(&pg.admin, &tag).await;
    }
    rate
}

/// Graphile Worker with config `c`'s concurrency and processes on the same PostgreSQL, and
/// idempipe's items/s (`ours`) as a ratio of its jobs/s.
async fn graphile_side_by_side(pg: &Postgres, items: usize, c: Config, ours: f64) {
    let schema = format!(
        "gw_{}_{}_{}",
        std::process::id(),
        c.concurrency,
        c.processes
    );
    let pg_cpu = async || pg.cpu_us(&pg.admin).await;
    let g = graphile::run(
        &pg.admin,
        &schema,
        items,
        c.concurrency,
        c.processes,
        pg_cpu,
    )
    .await;
    let total = g.node_us + g.pg_us.unwrap_or(0.0);
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<9} {:<7} {:>5} {:>6} {:>6} {items:>8} {:>9.0} {:>8.1} {:>8} {:>8.1} {:>6} {:>6}   idempipe/graphile = {:.2}",
        "graphile",
        "noop",
        c.processes,
        c.concurrency,
        "-",
        g.jobs_per_s,
        g.node_us,
        show(g.pg_us),
        total,
        "-",
        "-",
        ours / g.jobs_per_s,
    );
    println!(
        "{{\"backend\": \"graphile-worker\", \"processes\": {}, \"concurrency\": {}, \"items_per_s\": {:.0}, \"cpu_us_per_item\": {:.1}, \"worker_cpu_us_per_item\": {:.1}, \"pg_cpu_us_per_item\": {}, \"idempipe_ratio\": {:.2}}}",
        c.processes,
        c.concurrency,
        g.jobs_per_s,
        total,
        g.node_us,
        show(g.pg_us).replace('-', "null"),
        ours / g.jobs_per_s,
    );
}

/// Drops config `tag`'s PostgreSQL schema, so that runs leave nothing behind.
async fn drop_schema(admin: &str, tag: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            schema_name(tag)
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
}

/// The 1-minute load average, to print with the figures.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".into())
}

#[tokio::main]
async fn main() {
    if child::is_child() {
        return child::main().await;
    }
    let items: usize = std::env::var("IDEMPIPE_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let backends =
        std::env::var("IDEMPIPE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let configs: Vec<Config> = std::env::var("IDEMPIPE_BENCH_CONFIGS")
        .unwrap_or_else(|_| DEFAULT_CONFIGS.into())
        .split(',')
        .map(parse_config)
        .collect();
    let pg = backends
        .split(',')
        .any(|b| b == "postgres")
        .then(Postgres::open);
    println!(
        "# load average before: {}; PostgreSQL: {}",
        load(),
        match &pg {
            Some(Postgres {
                cluster: Some(_), ..
            }) => "private cluster, default settings",
            Some(_) => "IDEMPIPE_TEST_PG",
            None => "-",
        }
    );
    println!(
        "{:<9} {:<7} {:>5} {:>6} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "backend",
        "variant",
        "procs",
        "conc",
        "batch",
        "items",
        "items/s",
        "cpu us",
        "pg us",
        "total us",
        "p50ms",
        "p99ms"
    );
    let graphile = std::env::var("IDEMPIPE_BENCH_GRAPHILE").is_ok_and(|v| v == "1");
    for backend in backends.split(',') {
        for &c in &configs {
            let ours = one(backend, pg.as_ref(), items, c).await;
            if let Some(pg) = pg.as_ref().filter(|_| graphile && backend == "postgres")
                && c.variant == Variant::Noop
            {
                graphile_side_by_side(pg, items, c, ours).await;
            }
        }
    }
    println!("# load average after: {}", load());
}
