//! Graphile Worker on the same PostgreSQL in the same run (IDEMPIPE_BENCH_GRAPHILE=1): the
//! queue a user would pick instead, draining the same number of no-op jobs with the same
//! concurrency and processes, its completion batching and local queue on. Needs `node` and
//! `npm` (the package is installed into `benches/graphile/node_modules` on first use).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cpu;

/// Its items/s and CPU per job: (jobs/s, node us/job, PostgreSQL us/job).
pub(crate) struct Figures {
    pub(crate) jobs_per_s: f64,
    pub(crate) node_us: f64,
    pub(crate) pg_us: Option<f64>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/graphile")
}

/// Installs the pinned package once.
fn install() {
    if dir().join("node_modules/graphile-worker").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir())
        .status()
        .expect("npm (IDEMPIPE_BENCH_GRAPHILE=1 needs node and npm)");
    assert!(status.success(), "npm install graphile-worker failed");
}

/// One Graphile worker process.
struct Node {
    process: std::process::Child,
    completed: Arc<AtomicU64>,
}

impl Node {
    fn spawn(url: &str, schema: &str, concurrency: usize) -> Self {
        let mut process = Command::new("node")
            .args(["bench.mjs", "work", url, schema, &concurrency.to_string()])
            .current_dir(dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let completed = super::child::follow(&mut process, "graphile worker");
        Self { process, completed }
    }

    fn go(&mut self) {
        let stdin = self.process.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.process.stdin.take());
        for _ in 0..200 {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Drains `jobs` no-op jobs with `processes` Graphile processes of `concurrency` each, in
/// schema `schema` of the database at `url`; `pg_cpu` reads PostgreSQL's CPU (us).
pub(crate) async fn run(
    url: &str,
    schema: &str,
    jobs: usize,
    concurrency: usize,
    processes: usize,
    pg_cpu: impl AsyncFn() -> Option<u64>,
) -> Figures {
    install();
    let status = Command::new("node")
        .args(["bench.mjs", "setup", url, schema, &jobs.to_string()])
        .current_dir(dir())
        .status()
        .expect("node");
    assert!(status.success(), "graphile setup failed");
    let mut nodes: Vec<Node> = (0..processes)
        .map(|_| Node::spawn(url, schema, concurrency))
        .collect();
    let node_cpu = |nodes: &[Node]| -> Option<u64> {
        nodes
            .iter()
            .map(|n| cpu::process_us(&n.process.id().to_string()))
            .sum()
    };
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let pg_before = pg_cpu().await;
    let node_before = node_cpu(&nodes);
    let started = Instant::now();
    for n in &mut nodes {
        n.go();
    }
    let done = || {
        nodes
            .iter()
            .map(|n| n.completed.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while done() < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Handlers returned; wait for the batched completions to commit (Graphile deletes
    // completed jobs).
    let left = format!("SELECT count(*) FROM {schema}._private_jobs");
    while sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(left.clone()))
        .fetch_one(&pool)
        .await
        .unwrap()
        > 0
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let node_after = node_cpu(&nodes);
    let pg_after = pg_cpu().await;
    drop(nodes);
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await;
    pool.close().await;
    let per_job = |us: u64| us as f64 / jobs as f64;
    Figures {
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        node_us: node_before
            .zip(node_after)
            .map_or(f64::NAN, |(a, b)| per_job(b - a)),
        pg_us: pg_before.zip(pg_after).map(|(a, b)| per_job(b - a)),
    }
}
