//! Workers on separate hosts: each `idempipe worker` runs in a network namespace of its
//! own (a veth to this namespace, which runs PostgreSQL, the S3-compatible store and
//! the enhancement API), with a scratch directory no other worker can see, and shares
//! nothing with the others but the database and the bucket. Needs root (CI is).
//!
//! - three hosts finish one run, frame-identical to a one-process run;
//! - a host whose worker is SIGKILLed, then whose link is cut, mid-run: the run
//!   completes and no frame is enhanced twice at the API;
//! - the object store restarting mid-run costs retries, not frames;
//! - a worker that cannot reach the store fails its items with an error naming the
//!   store, stops taking work, and the items are done by the others.

#[path = "support/cluster.rs"]
mod cluster;

use std::process::Child;
use std::time::Duration;

use cluster::{Cluster, attempts, kill, reference_frames, start_api};
use idempipe_engine::{RunStatus, SharedStore};
use idempipe_enhance::server::ServerConfig;
use idempipe_testkit::netns::Host;

/// Frames in the sample.
const FRAMES: u64 = 120;

/// An API slow enough (per call) for a run to be caught mid-way.
fn slow_api() -> ServerConfig {
    ServerConfig {
        latency: Duration::from_millis(40),
        ..ServerConfig::default()
    }
}

async fn reference(cluster: &Cluster) -> Vec<String> {
    let (api, _state) = start_api("127.0.0.1".parse().unwrap(), ServerConfig::default()).await;
    reference_frames(&cluster.dir, Some(&api)).await
}

/// `n` hosts, host `i` running a worker named `host{i}`.
fn start_hosts(cluster: &Cluster, n: usize) -> (Vec<Host>, Vec<Child>) {
    let hosts: Vec<_> = (0..n).map(|_| cluster.net.host()).collect();
    let workers = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| cluster.worker(h, &format!("host{i}")))
        .collect();
    (hosts, workers)
}

/// A run submitted on a fresh cluster (an API slow enough to catch it mid-way), with the
/// frames a one-process run gives.
struct Submitted {
    cluster: Cluster,
    reference: Vec<String>,
    store: SharedStore,
    run_id: i64,
}

impl Submitted {
    async fn start() -> Self {
        let cluster = Cluster::start(slow_api()).await;
        let reference = reference(&cluster).await;
        let store = cluster.db.store().await;
        let run_id = cluster.submit();
        Self {
            cluster,
            reference,
            store,
            run_id,
        }
    }

    /// Waits up to `timeout` for the run to end and stops the workers; it must have
    /// completed (else `log_of`'s worker log is shown), with the reference's frames, each
    /// frame enhanced once at the API.
    async fn finish(&self, workers: &mut [Child], log_of: &str, timeout: Duration) {
        let cluster = &self.cluster;
        let status = cluster
            .wait_for_end(&self.store, self.run_id, timeout)
            .await;
        workers.iter_mut().for_each(kill);
        assert_eq!(
            status,
            RunStatus::Completed,
            "{}",
            cluster.worker_log(log_of)
        );
        assert_eq!(
            cluster.output_frames().await,
            self.reference,
            "frames differ"
        );
        let snapshot = cluster.api_state.stats().snapshot();
        assert_eq!(
            snapshot.enhance_calls, FRAMES,
            "frames enhanced other than once: {snapshot:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_finish_one_run_frame_identical_to_one_process() {
    let run = Submitted::start().await;
    let (_hosts, mut workers) = start_hosts(&run.cluster, 3);
    run.finish(&mut workers, "host0", Duration::from_secs(240))
        .await;
    // Every host did a share of the frames.
    let tries = attempts(&run.store, run.run_id).await;
    for i in 0..3 {
        let name = format!("host{i}");
        let frames = tries
            .iter()
            .filter(|(key, a)| key.starts_with("frame/") && a.worker.as_deref() == Some(&name))
            .count();
        assert!(frames > 0, "{name} enhanced no frame");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_mid_run_its_work_finishes_elsewhere_and_no_frame_is_enhanced_twice() {
    let run = Submitted::start().await;
    let (hosts, mut workers) = start_hosts(&run.cluster, 3);
    run.cluster
        .wait_for_frames(&run.store, run.run_id, 30)
        .await;
    kill(&mut workers[0]);
    hosts[0].cut_link();
    run.finish(&mut workers, "host1", Duration::from_secs(300))
        .await;
    // The killed host had work in hand; its leases expired and the others took it.
    let tries = attempts(&run.store, run.run_id).await;
    let rescued = tries
        .iter()
        .filter(|(_, a)| {
            a.worker.as_deref() == Some("host0")
                && a.error
                    .as_ref()
                    .is_some_and(|e| e["kind"] == "lease_expired")
        })
        .count();
    assert!(rescued > 0, "host0 held no item when it died");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_object_store_restarting_mid_run_costs_retries_not_frames() {
    let mut run = Submitted::start().await;
    let (_hosts, mut workers) = start_hosts(&run.cluster, 2);
    run.cluster
        .wait_for_frames(&run.store, run.run_id, 20)
        .await;
    run.cluster.s3.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.cluster.s3.restart();
    run.finish(&mut workers, "host0", Duration::from_secs(300))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_cannot_reach_the_store_fails_its_items_clearly_stops_and_others_do_them() {
    let cluster = Cluster::start(ServerConfig::default()).await;
    let store = cluster.db.store().await;
    let run_id = cluster.submit();
    let (cut_off, good) = (cluster.net.host(), cluster.net.host());
    // Nothing listens there: every request of this worker to the store fails.
    let nowhere = format!(
        "http://{}:{}",
        cluster.net.gateway(),
        idempipe_testkit::free_port()
    );
    let mut sick = cluster.worker_with_endpoint(&cut_off, "cut-off", &nowhere);
    // The cut-off worker takes the first items alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut good = cluster.worker(&good, "good");
    let status = cluster
        .wait_for_end(&store, run_id, Duration::from_secs(300))
        .await;
    kill(&mut good);
    // It stopped by itself once it found the store unreachable, saying why.
    let exit = sick.try_wait().unwrap();
    kill(&mut sick);
    let log = cluster.worker_log("cut-off");
    assert_eq!(exit.and_then(|e| e.code()), Some(1), "{log}");
    assert!(
        log.contains("this worker cannot reach the object store and stops"),
        "{log}"
    );
    assert_eq!(
        status,
        RunStatus::Completed,
        "{}",
        cluster.worker_log("good")
    );
    let tries = attempts(&store, run_id).await;
    let failed: Vec<_> = tries
        .iter()
        .filter(|(_, a)| a.worker.as_deref() == Some("cut-off"))
        .collect();
    assert!(!failed.is_empty(), "the cut-off worker tried nothing");
    for (key, a) in &failed {
        assert_eq!(a.outcome, "failed", "{key}: {a:?}");
        let error = a.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains(&format!("object store at {nowhere}")) && error.contains("s3://media/"),
            "{key}: the error should name the store and the object: {error}"
        );
    }
    // Each item the cut-off worker failed was then completed by the good one.
    for (key, _) in &failed {
        assert!(
            tries.iter().any(|(k, a)| k == key
                && a.outcome == "completed"
                && a.worker.as_deref() == Some("good")),
            "{key} was not done elsewhere"
        );
    }
}
