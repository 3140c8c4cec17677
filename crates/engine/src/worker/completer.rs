//! Commits outcomes from many handler calls in one transaction, off the handlers' slots.
//!
//! A batch task hands its outcomes over with [`Completer::submit`] and returns at once, so
//! its slot frees when the handler ends, not when the outcome commits: claims, handlers and
//! commits overlap. The completer takes whatever has queued up (up to `MAX_PER_COMMIT`) and
//! records it with one `Store::item_record` call, then counts the outcomes and stops
//! renewing their leases. Until then the heartbeat keeps renewing them, so an outcome
//! waiting here is never rescued from under its worker. Each item is still fenced by its
//! own lease token, so one lost lease never blocks the others' outcomes.
//!
//! Backpressure: at most `MAX_PENDING` outcomes wait; a batch task submitting more waits
//! (still holding its slot) until a commit makes room.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::clock::SharedClock;
use crate::store::{Outcome, OutcomeKind, SharedStore};
use crate::worker::WorkerStats;
use crate::worker::heartbeat::Leases;

/// Outcomes per transaction: large enough to amortise a commit, small enough to keep a
/// SQLite write lock short.
const MAX_PER_COMMIT: usize = 512;

/// Outcomes waiting to be committed before submitters wait.
const MAX_PENDING: usize = 4 * MAX_PER_COMMIT;

/// Outcomes of one handler call, waiting for their commit.
struct Submission {
    stage: String,
    lease_entry: u64,
    outcomes: Vec<Outcome>,
    _room: OwnedSemaphorePermit,
}

/// Handle to the completer task.
pub(crate) struct Completer {
    tx: Mutex<Option<mpsc::UnboundedSender<Submission>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    room: Arc<Semaphore>,
    leases: Arc<Leases>,
}

/// What the completer needs besides the store: where to count, whose leases to drop.
pub(crate) struct Sink {
    pub(crate) store: SharedStore,
    pub(crate) clock: SharedClock,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) leases: Arc<Leases>,
}

impl Completer {
    /// Starts the task.
    pub(crate) fn start(sink: Sink) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let leases = sink.leases.clone();
        let task = tokio::spawn(run(sink, rx));
        Self {
            tx: Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
            room: Arc::new(Semaphore::new(MAX_PENDING)),
            leases,
        }
    }

    /// Queues `outcomes` (of lease entry `lease_entry`) for the next commit. Waits only when
    /// `MAX_PENDING` outcomes are already waiting.
    pub(crate) async fn submit(&self, stage: &str, lease_entry: u64, outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            self.leases.forget(lease_entry);
            return;
        }
        let wanted = outcomes.len().clamp(1, MAX_PENDING) as u32;
        let Ok(room) = self.room.clone().acquire_many_owned(wanted).await else {
            unreachable!("the completer's semaphore is never closed");
        };
        let submission = Submission {
            stage: stage.to_string(),
            lease_entry,
            outcomes,
            _room: room,
        };
        let sent = match self.tx.lock().expect("completer sender").as_ref() {
            Some(tx) => tx.send(submission).map_err(|e| e.0),
            None => Err(submission),
        };
        if let Err(lost) = sent {
            let ids: Vec<i64> = lost.outcomes.iter().map(|o| o.item_id).collect();
            tracing::warn!(items = ?ids, "worker is shutting down: outcomes not recorded; leases will expire and items be rescued");
            self.leases.forget(lease_entry);
        }
    }

    /// Commits what is queued and stops the task.
    pub(crate) async fn close(&self) {
        self.tx.lock().expect("completer sender").take();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(sink: Sink, mut rx: mpsc::UnboundedReceiver<Submission>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].outcomes.len();
        while count < MAX_PER_COMMIT {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.outcomes.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let mut all: Vec<Outcome> = Vec::with_capacity(count);
        let mut kinds: Vec<&'static str> = Vec::with_capacity(count);
        let mut sizes: Vec<usize> = Vec::with_capacity(batch.len());
        for submission in &mut batch {
            kinds.extend(submission.outcomes.iter().map(|o| kind_name(&o.kind)));
            sizes.push(submission.outcomes.len());
            all.append(&mut submission.outcomes);
        }
        for submission in &batch {
            sink.leases.settling(submission.lease_entry);
        }
        match sink.store.item_record(&all, sink.clock.now()).await {
            Ok(flags) => {
                let mut flags = flags.into_iter().zip(kinds);
                for (submission, n) in batch.iter().zip(&sizes) {
                    for (recorded, kind) in flags.by_ref().take(*n) {
                        count_outcome(&sink.stats, &submission.stage, recorded, kind);
                    }
                }
            }
            Err(e) => {
                let ids: Vec<i64> = all.iter().map(|o| o.item_id).collect();
                tracing::warn!(error = %e, items = ?ids, "outcomes not recorded; leases will expire and items be rescued");
            }
        }
        for submission in &batch {
            sink.leases.forget(submission.lease_entry);
        }
    }
}

fn kind_name(kind: &OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Completed(_) => "completed",
        OutcomeKind::Failed { .. } => "failed",
        OutcomeKind::Dead(_) => "dead",
    }
}

/// Counts one committed (or lease-lost) outcome in the stats and metrics.
fn count_outcome(stats: &WorkerStats, stage: &str, recorded: bool, kind: &'static str) {
    let outcome = if recorded { kind } else { "lease_lost" };
    metrics::counter!("idempipe_outcomes_total", "stage" => stage.to_string(), "outcome" => outcome)
        .increment(1);
    let counter = match (recorded, kind) {
        (false, _) => &stats.lease_lost,
        (true, "completed") => &stats.completed,
        (true, "dead") => &stats.dead,
        (true, _) => &stats.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::model::ItemStatus;

    /// An outcome handed to the completer keeps its lease renewed until it commits; then
    /// the completer counts it (a stale token as lease lost) and stops renewing.
    async fn outcome_keeps_its_lease_until_committed(db: idempipe_testkit::TestDb) {
        let token = 42;
        let (store, run, claimed) =
            super::super::test_setup::claimed(&db, &["a", "b"], token).await;
        let clock = crate::clock::system_clock();
        let leases = Arc::new(Leases::default());
        let stats = Arc::new(WorkerStats::default());
        let completer = Completer::start(Sink {
            store: store.clone(),
            clock: clock.clone(),
            stats: stats.clone(),
            leases: leases.clone(),
        });
        let (entry, _cancel) = leases.register(
            claimed.iter().map(|c| c.id).collect(),
            token,
            Duration::from_secs(30),
        );
        let outcome = |item: usize, lease_token: i64| Outcome {
            item_id: claimed[item].id,
            lease_token,
            kind: OutcomeKind::Completed(json!("done")),
            spawns: Vec::new(),
        };
        // Item b's outcome carries a stale token: fencing must refuse it.
        completer
            .submit("s", entry, vec![outcome(0, token), outcome(1, token + 1)])
            .await;
        // The test runs on one thread: the completer has not run yet.
        assert!(
            leases.contains(entry),
            "a queued outcome's lease must stay renewed until it commits"
        );
        completer.close().await;
        assert!(!leases.contains(entry), "committed outcomes stop renewing");
        let [_, completed, failed, dead, lease_lost, _] = stats.snapshot();
        assert_eq!((completed, failed, dead, lease_lost), (1, 0, 0, 1));
        let a = store.item_get(run, "s", &claimed[0].key).await.unwrap();
        let b = store.item_get(run, "s", &claimed[1].key).await.unwrap();
        assert_eq!(a.status, ItemStatus::Completed);
        assert_eq!(a.result, Some(json!("done")));
        assert_eq!(
            b.status,
            ItemStatus::Running,
            "a stale outcome changes nothing"
        );
    }

    #[tokio::test]
    async fn sqlite_outcome_keeps_its_lease_until_committed() {
        outcome_keeps_its_lease_until_committed(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_outcome_keeps_its_lease_until_committed() {
        outcome_keeps_its_lease_until_committed(idempipe_testkit::TestDb::postgres().await).await
    }
}
