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
//!
//! A small worker whose slots are all busy leaves a claim order here ([`Completer::order`]):
//! the next flush claims the items of the slots it frees in the same transaction as their
//! outcomes (`Store::item_record_and_claim`), so at concurrency 1 an item costs one commit
//! and one round trip to the writer, not two.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::store::{ClaimParams, ClaimedItem, Outcome, OutcomeKind, SharedStore};
use crate::worker::WorkerStats;
use crate::worker::heartbeat::Leases;

/// Outcomes per transaction: large enough to amortise a commit, small enough to keep a
/// SQLite write lock short.
const MAX_PER_COMMIT: usize = 512;

/// Outcomes waiting to be committed before submitters wait.
const MAX_PENDING: usize = 4 * MAX_PER_COMMIT;

/// Delays before each retry of a failed flush; after the last one its items are left to
/// lease expiry and rescue.
const FLUSH_RETRY_MS: [u64; 3] = [100, 500, 2_000];

/// Outcomes of one handler call, waiting for their commit.
struct Submission {
    stage: String,
    lease_entry: u64,
    outcomes: Vec<Outcome>,
    _room: OwnedSemaphorePermit,
}

/// A claim that rides with the next flush: it claims, in the flush's transaction, up to
/// `per_slot` items for each handler call whose outcomes the flush commits (at most
/// `max`), with a lease of `lease` from the flush's time.
pub(crate) struct ClaimOrder {
    /// The claim; `limit`, `now` and `lease_expires_at` are set by the flush.
    pub(crate) params: ClaimParams,
    pub(crate) lease: Duration,
    pub(crate) per_slot: i64,
    pub(crate) max: i64,
    /// The claim's limit and items, once the flush committed (or failed).
    pub(crate) reply: oneshot::Sender<OrderAnswer>,
}

/// What a [`ClaimOrder`] gets back: the claim's limit, and its items.
pub(crate) type OrderAnswer = (i64, StoreResult<Vec<ClaimedItem>>);

/// The order waiting for a flush, and the submissions queued for one.
#[derive(Default)]
struct Rider {
    order: Option<ClaimOrder>,
    queued: usize,
}

/// Handle to the completer task.
pub(crate) struct Completer {
    tx: Mutex<Option<mpsc::UnboundedSender<Submission>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    room: Arc<Semaphore>,
    leases: Arc<Leases>,
    rider: Arc<Mutex<Rider>>,
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
        let rider = Arc::new(Mutex::new(Rider::default()));
        let task = tokio::spawn(run(sink, rx, rider.clone()));
        Self {
            tx: Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
            room: Arc::new(Semaphore::new(MAX_PENDING)),
            leases,
            rider,
        }
    }

    /// Leaves a claim for the next flush (replacing none: the fetcher has one at a time).
    pub(crate) fn order(&self, order: ClaimOrder) {
        self.rider.lock().expect("rider").order = Some(order);
    }

    /// Drops the order if no flush is coming to take it (nothing is queued): a handler
    /// call ended without outcomes. Its claim then runs on its own.
    pub(crate) fn revoke_if_idle(&self) {
        let mut rider = self.rider.lock().expect("rider");
        if rider.queued == 0 {
            rider.order = None;
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
        // Counted before the send, under the rider's lock: a flush that takes an order
        // always sees the submissions it will carry.
        let sent = {
            let mut rider = self.rider.lock().expect("rider");
            let sent = match self.tx.lock().expect("completer sender").as_ref() {
                Some(tx) => tx.send(submission).map_err(|e| e.0),
                None => Err(submission),
            };
            if sent.is_ok() {
                rider.queued += 1;
            }
            sent
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

async fn run(sink: Sink, mut rx: mpsc::UnboundedReceiver<Submission>, rider: Arc<Mutex<Rider>>) {
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
        let order = {
            let mut rider = rider.lock().expect("rider");
            rider.queued -= batch.len();
            rider.order.take()
        };
        let now = sink.clock.now();
        let mut recorded = match order {
            None => sink
                .store
                .item_record(&all, now)
                .await
                .map_err(|e| e.to_string()),
            Some(order) => ride(&sink, &all, batch.len(), order, now).await,
        };
        // A failed flush is tried again (the leases stay renewed meanwhile): a connection
        // that died (a partition, a server restart) fails once, and a flush whose commit
        // was lost applies once (`items.last_token`), so the retry is safe.
        for delay_ms in FLUSH_RETRY_MS {
            let Err(e) = &recorded else { break };
            tracing::warn!(error = %e, retry_in_ms = delay_ms, "outcomes not recorded; retrying");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            recorded = sink
                .store
                .item_record(&all, sink.clock.now())
                .await
                .map_err(|e| e.to_string());
        }
        match recorded {
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

/// Records `all` (of `calls` handler calls) and runs `order`'s claim in one transaction;
/// answers the order and returns the outcomes' flags.
async fn ride(
    sink: &Sink,
    all: &[Outcome],
    calls: usize,
    order: ClaimOrder,
    now: i64,
) -> Result<Vec<bool>, String> {
    let ClaimOrder {
        mut params,
        lease,
        per_slot,
        max,
        reply,
    } = order;
    params.limit = (per_slot * calls as i64).min(max).max(1);
    params.now = now;
    params.lease_expires_at = now + lease.as_millis() as i64;
    match sink.store.item_record_and_claim(all, now, &params).await {
        Ok((flags, claimed)) => {
            let _ = reply.send((params.limit, Ok(claimed)));
            Ok(flags)
        }
        Err(e) => {
            let why = e.to_string();
            let _ = reply.send((params.limit, Err(e)));
            Err(why)
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

    fn start(store: &SharedStore) -> (Completer, Arc<Leases>) {
        let leases = Arc::new(Leases::default());
        let completer = Completer::start(Sink {
            store: store.clone(),
            clock: crate::clock::system_clock(),
            stats: Arc::new(WorkerStats::default()),
            leases: leases.clone(),
        });
        (completer, leases)
    }

    /// An order for the next flush's claim, by worker `w2` under token 8 (30 s leases).
    fn order() -> (ClaimOrder, oneshot::Receiver<OrderAnswer>) {
        let (reply, answer) = oneshot::channel();
        let params = ClaimParams {
            stage: "s".into(),
            limit: 0,
            worker: "w2".into(),
            lease_token: 8,
            lease_expires_at: 0,
            now: 0,
            run_id: None,
        };
        let order = ClaimOrder {
            params,
            lease: Duration::from_secs(30),
            per_slot: 1,
            max: 10,
            reply,
        };
        (order, answer)
    }

    /// A claim order rides with the next flush: the flush records the outcomes and claims
    /// one call's worth of items for the one call it carries, both at the same time (in
    /// one transaction on SQLite), and answers the order with them.
    async fn a_claim_order_rides_with_the_flush(db: idempipe_testkit::TestDb) {
        let token = 7;
        let (store, run, claimed) = super::super::test_setup::claimed(&db, &["a"], token).await;
        let now = crate::clock::system_clock().now();
        let more = ["b", "c"].map(|k| crate::model::NewItem::new("s", k, json!(null)));
        store.item_insert(run, &more, now).await.unwrap();
        let (completer, leases) = start(&store);
        let (order, answer) = order();
        completer.order(order);
        let (entry, _cancel) = leases.register(vec![claimed[0].id], token, Duration::from_secs(30));
        let done = Outcome {
            item_id: claimed[0].id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!("done")),
            spawns: Vec::new(),
        };
        completer.submit("s", entry, vec![done]).await;
        let (limit, next) = answer.await.expect("the flush answers the order");
        let next = next.unwrap();
        assert_eq!(limit, 1, "one call's outcomes free one slot");
        assert_eq!(next.len(), 1);
        completer.close().await;
        let a = store.item_get(run, "s", "a").await.unwrap();
        assert_eq!(a.status, ItemStatus::Completed);
        let b = store.item_get(run, "s", &next[0].key).await.unwrap();
        assert_eq!(b.status, ItemStatus::Running);
        assert_eq!(b.worker.as_deref(), Some("w2"));
        assert_eq!(
            b.lease_expires_at,
            a.completed_at.map(|t| t + 30_000),
            "claimed at the time its predecessor completed"
        );
    }

    /// An order that no flush will take (nothing queued: the call ended without outcomes)
    /// is revoked; one with outcomes queued stays for their flush.
    async fn an_order_without_a_flush_coming_is_revoked(db: idempipe_testkit::TestDb) {
        let token = 7;
        let (store, _run, claimed) = super::super::test_setup::claimed(&db, &["a"], token).await;
        let (completer, leases) = start(&store);
        let (first, revoked) = order();
        completer.order(first);
        completer.revoke_if_idle();
        assert!(revoked.await.is_err(), "revoked: its claim runs on its own");
        let (second, answer) = order();
        completer.order(second);
        let (entry, _cancel) = leases.register(vec![claimed[0].id], token, Duration::from_secs(30));
        let done = Outcome {
            item_id: claimed[0].id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!(null)),
            spawns: Vec::new(),
        };
        completer.submit("s", entry, vec![done]).await;
        completer.revoke_if_idle();
        let (_, claimed) = answer.await.expect("a flush is coming: the order stays");
        assert!(claimed.unwrap().is_empty(), "nothing else is due");
        completer.close().await;
    }

    #[tokio::test]
    async fn sqlite_a_claim_order_rides_with_the_flush() {
        a_claim_order_rides_with_the_flush(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_a_claim_order_rides_with_the_flush() {
        a_claim_order_rides_with_the_flush(idempipe_testkit::TestDb::postgres().await).await
    }

    #[tokio::test]
    async fn sqlite_an_order_without_a_flush_coming_is_revoked() {
        an_order_without_a_flush_coming_is_revoked(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_an_order_without_a_flush_coming_is_revoked() {
        an_order_without_a_flush_coming_is_revoked(idempipe_testkit::TestDb::postgres().await).await
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
