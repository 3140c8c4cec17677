//! PostgreSQL unreachable for 30 s (10 s with --quick): the workers reach it through a
//! proxy that refuses new connections and closes open ones, then lets them through again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::env::{free_port, sigterm};
use crate::proxy::Proxy;
use crate::report::Row;

use super::pg_restart::wait_progress;
use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// Workers serving the run.
const WORKERS: usize = 2;

/// Runs the scenario on `backend` (PostgreSQL only).
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let outage = Duration::from_secs(if suite.env.quick { 10 } else { 30 });
    let case = Case::new(suite, "pg-unreachable", backend, &["--latency-ms", "20"]).await?;
    let proxy_port = free_port()?;
    let proxy = Proxy::start(
        proxy_port,
        SocketAddr::from(([127, 0, 0, 1], suite.pg.port)),
    )
    .await?;
    let via_proxy = suite.pg.url("127.0.0.1", proxy_port, &case.db_name);
    let watch = case.submit().await?;
    let mut workers = (0..WORKERS)
        .map(|i| {
            let name = format!("w{i}");
            case.suite.env.spawn(
                &case.worker_args(&via_proxy, &name),
                &case.dir.join(format!("{name}.log")),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let frames = suite.reference.frame_hashes.len() as i64;
    let mut healed = None;
    if wait_progress(&watch, frames / 4).await {
        proxy.cut().await;
        tokio::time::sleep(outage).await;
        proxy.restore().await?;
        healed = Some(Instant::now());
    }
    let status = watch.wait_end(RUN_TIMEOUT).await;
    let ended = Instant::now();
    for worker in &mut workers {
        sigterm(worker, Duration::from_secs(10)).await;
    }
    let recover = healed.and_then(|h| watch.recovery(h, Some(ended)));
    let faults = match healed {
        Some(_) => format!("unreachable {} s", outage.as_secs()),
        None => "none (the run ended first)".into(),
    };
    let bound = WORKERS as u64 * 2 * CONCURRENCY;
    case.finish(Some(&watch), status, faults, recover, bound)
        .await
}
