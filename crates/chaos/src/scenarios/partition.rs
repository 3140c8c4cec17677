//! A worker partitioned from PostgreSQL (and the API) while it holds leases: it runs in a
//! network namespace whose veth link goes down until its leases have expired and another
//! worker has taken its items over. Healed, its late writes must be refused.

use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::env::{free_port, sigterm, spawn_logged};
use crate::netns::{HOST_ADDR, NAMESPACE, Netns};
use crate::report::Row;

use super::pg_restart::wait_progress;
use super::{Backend, CONCURRENCY, Case, LEASE_SECS, RUN_TIMEOUT, Suite, refused_writes};

/// Longest partition: the other worker must have redone the cut-off worker's items by then.
const MAX_PARTITION: Duration = Duration::from_secs(60);

/// Runs the scenario on `backend` (PostgreSQL only).
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let ns = Netns::create().await?;
    let port = free_port()?;
    let listen = format!("0.0.0.0:{port}");
    let case = Case::with_api(
        suite,
        "partition",
        backend,
        &["--latency-ms", "50"],
        &listen,
        HOST_ADDR,
    )
    .await?;
    let remote_db = suite.pg.url(HOST_ADDR, suite.pg.port, &case.db_name);
    let watch = case.submit().await?;
    let inside_log = case.dir.join("partitioned.log");
    let mut inside_args = vec!["netns", "exec", NAMESPACE]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    inside_args.push(suite.env.bin.to_string_lossy().into_owned());
    inside_args.extend(case.worker_args(&remote_db, "partitioned"));
    let mut inside = spawn_logged(Command::new("ip"), &inside_args, &inside_log)?;
    let mut outside = suite.env.spawn(
        &case.worker_args(&remote_db, "outside"),
        &case.dir.join("outside.log"),
    )?;
    let frames = suite.reference.frame_hashes.len() as i64;
    let mut held = Vec::new();
    let mut taken_over = None;
    let mut cut_for = Duration::ZERO;
    if wait_progress(&watch, frames / 5).await {
        held = wait_held(&watch).await?;
        ns.set_link(false).await?;
        let cut = Instant::now();
        // Healed once its leases expired (3 leases at least) and the other worker redid
        // its items, so that everything it writes afterwards is late.
        let at_least = cut + Duration::from_secs_f64(LEASE_SECS * 3.0);
        let at_most = cut + MAX_PARTITION;
        while Instant::now() < at_most && (taken_over.is_none() || Instant::now() < at_least) {
            if taken_over.is_none() && watch.completed_among(&held).await? {
                taken_over = Some(cut.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ns.set_link(true).await?;
        cut_for = cut.elapsed();
    }
    let status = watch.wait_end(RUN_TIMEOUT).await;
    // Give the healed worker time to try its late writes, then stop it cleanly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&mut inside, Duration::from_secs(40)).await;
    sigterm(&mut outside, Duration::from_secs(10)).await;
    let refused = refused_writes(&std::fs::read_to_string(&inside_log).unwrap_or_default());
    let faults = format!(
        "partitioned {:.0} s holding {} item(s)",
        cut_for.as_secs_f64(),
        held.len()
    );
    let mut row = case
        .finish(
            Some(&watch),
            status,
            faults,
            taken_over,
            held.len() as u64 + 2 * CONCURRENCY,
        )
        .await?;
    if held.is_empty() {
        row.problems
            .push("the partitioned worker held no lease when cut".into());
    } else if taken_over.is_none() {
        row.problems
            .push("its items were not taken over while it was cut off".into());
    }
    if refused == 0 {
        row.problems
            .push("no late write of the partitioned worker was seen refused".into());
    }
    row.faults
        .push_str(&format!(", {refused} late write(s) refused"));
    drop(ns);
    Ok(row)
}

/// Waits until the partitioned worker holds leases; returns the items.
async fn wait_held(watch: &crate::watch::Watch) -> anyhow::Result<Vec<i64>> {
    for _ in 0..200 {
        let held = watch.held_items("partitioned").await?;
        if !held.is_empty() {
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Vec::new())
}
