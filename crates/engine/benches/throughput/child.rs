//! The second worker process of a 2-process config: the bench binary re-run with
//! IDEMPIPE_BENCH_CHILD set. It connects, says `ready`, starts on `go` (a line on stdin),
//! prints its completed count every few milliseconds, and stops when stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::workload::{self, Variant};

const ENV: &str = "IDEMPIPE_BENCH_CHILD";

/// Whether this process is a child worker.
pub(crate) fn is_child() -> bool {
    std::env::var_os(ENV).is_some()
}

/// A running child worker; killed on drop if it has not stopped.
pub(crate) struct Child {
    process: std::process::Child,
    stdin: Mutex<Option<ChildStdin>>,
    completed: Arc<AtomicU64>,
}

/// Waits for a worker process's `ready` line on its stdout, then counts its
/// `completed N` lines in a thread: the count it last reported.
pub(crate) fn follow(process: &mut std::process::Child, what: &str) -> Arc<AtomicU64> {
    let mut lines = BufReader::new(process.stdout.take().expect("stdout is piped")).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => {}
        other => panic!("{what} did not start: {other:?}"),
    }
    let completed = Arc::new(AtomicU64::new(0));
    let count = completed.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("completed ").and_then(|n| n.parse().ok()) {
                count.store(n, Ordering::Relaxed);
            }
        }
    });
    completed
}

impl Child {
    /// Starts a child serving `url` and waits until it is connected.
    pub(crate) fn spawn(url: &str, variant: Variant, concurrency: usize, claim_batch: i64) -> Self {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .env(
                ENV,
                format!("{url}|{}|{concurrency}|{claim_batch}", variant.name()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the second worker process");
        let completed = follow(&mut process, "second worker process");
        Self {
            stdin: Mutex::new(process.stdin.take()),
            process,
            completed,
        }
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Tells it to start working.
    pub(crate) fn go(&self) {
        if let Some(stdin) = self.stdin.lock().unwrap().as_mut() {
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
        }
    }

    /// Items it completed so far.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Closing stdin asks it to stop; it drains and exits.
        self.stdin.lock().unwrap().take();
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

/// The child's main: serves until stdin closes.
pub(crate) async fn main() {
    let spec = std::env::var(ENV).unwrap();
    let parts: Vec<&str> = spec.split('|').collect();
    let [url, variant, concurrency, claim_batch] = parts[..] else {
        panic!("{ENV}: URL|VARIANT|CONCURRENCY|CLAIM_BATCH, got {spec:?}");
    };
    let variant = Variant::parse(variant).expect("variant");
    let store = idempipe_engine::connect(url).await.unwrap();
    let worker = workload::worker(
        store,
        variant,
        concurrency.parse().unwrap(),
        claim_batch.parse().unwrap(),
    );
    let stats = worker.stats();
    println!("ready");
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut lines = std::io::stdin().lock().lines();
        if matches!(lines.next(), Some(Ok(ref l)) if l == "go") {
            let _ = go_tx.send(());
        }
        for _ in lines.by_ref() {}
        let _ = eof_tx.send(());
    });
    if go_rx.await.is_err() {
        return;
    }
    let reporter = tokio::spawn(async move {
        loop {
            println!("completed {}", stats.snapshot()[1]);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    worker
        .run(async move {
            let _ = eof_rx.await;
        })
        .await
        .unwrap();
    reporter.abort();
}
