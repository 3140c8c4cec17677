//! One heartbeat task per worker: extends the leases of every batch in flight.
//!
//! A batch registers its items when its handler starts and leaves when its outcomes have
//! committed (or it was stopped). Every tick
//! the task renews the leases that reached a third of their length, so short handlers cost
//! nothing and long ones keep their items. A batch whose lease was lost (or whose run was
//! cancelled) is told to stop through its cancel channel.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::store::SharedStore;

/// A batch whose leases are kept alive.
struct Entry {
    ids: Vec<i64>,
    token: i64,
    lease: Duration,
    due: Instant,
    cancel: watch::Sender<bool>,
    /// Its outcomes are being committed: items that stop being held are settling, not lost.
    settling: bool,
}

/// The batches in flight, by batch number.
#[derive(Default)]
pub(crate) struct Leases {
    entries: Mutex<HashMap<u64, Entry>>,
    next: std::sync::atomic::AtomicU64,
}

impl Leases {
    /// Registers a batch; returns its number and the receiver its handler watches.
    pub(crate) fn register(
        &self,
        ids: Vec<i64>,
        token: i64,
        lease: Duration,
    ) -> (u64, watch::Receiver<bool>) {
        let (cancel, rx) = watch::channel(false);
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = Entry {
            ids,
            token,
            lease,
            due: Instant::now() + lease / 3,
            cancel,
            settling: false,
        };
        self.entries.lock().expect("lease map").insert(n, entry);
        (n, rx)
    }

    /// Whether batch `n` is still renewed.
    #[cfg(test)]
    pub(crate) fn contains(&self, n: u64) -> bool {
        self.entries.lock().expect("lease map").contains_key(&n)
    }

    /// Marks batch `n` as committing its outcomes: it is still renewed until
    /// [`forget`](Self::forget), but its items leaving the running state is expected (a
    /// lease lost meanwhile is counted by the commit as `lease_lost`).
    pub(crate) fn settling(&self, n: u64) {
        if let Some(e) = self.entries.lock().expect("lease map").get_mut(&n) {
            e.settling = true;
        }
    }

    /// Forgets a finished batch.
    pub(crate) fn forget(&self, n: u64) {
        self.entries.lock().expect("lease map").remove(&n);
    }

    /// Renews due leases; runs until aborted.
    pub(crate) async fn run(&self, store: SharedStore, clock: SharedClock, tick: Duration) {
        loop {
            tokio::time::sleep(tick).await;
            let now = Instant::now();
            let due: Vec<(u64, Vec<i64>, i64, Duration)> = self
                .entries
                .lock()
                .expect("lease map")
                .iter_mut()
                .filter(|(_, e)| e.due <= now)
                .map(|(n, e)| {
                    e.due = now + e.lease / 3;
                    (*n, e.ids.clone(), e.token, e.lease)
                })
                .collect();
            for (n, ids, token, lease) in due {
                let expires = clock.now() + lease.as_millis() as i64;
                match store.item_heartbeat(&ids, token, expires).await {
                    Ok(held) if held.len() == ids.len() => {}
                    Ok(held) => {
                        let entries = self.entries.lock().expect("lease map");
                        // Gone or settling: the outcomes committed between the snapshot
                        // and the renewal; the handler has finished, nothing is lost.
                        if let Some(e) = entries.get(&n).filter(|e| !e.settling) {
                            tracing::warn!(
                                lost = ids.len() - held.len(),
                                "lease lost or run cancelled; stopping handler"
                            );
                            let _ = e.cancel.send(true);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying next tick"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::store::{Outcome, OutcomeKind};

    /// A batch whose items stopped being held because its own outcomes committed
    /// (settling) is left alone; a batch whose items were taken from it is told to stop.
    async fn settling_batch_is_not_a_lost_lease(db: idempipe_testkit::TestDb) {
        let token = 7;
        let (store, _run, claimed) =
            super::super::test_setup::claimed(&db, &["a", "b"], token).await;
        let clock = crate::clock::system_clock();
        let now = clock.now();
        let leases = Arc::new(Leases::default());
        let lease = Duration::from_millis(30);
        let (settled, mut settled_rx) = leases.register(vec![claimed[0].id], token, lease);
        let (_taken, mut taken_rx) = leases.register(vec![claimed[1].id], token, lease);
        // Both items leave `running` under this token: both outcomes commit; only the
        // first batch was committing them itself.
        let done = |i: usize| Outcome {
            item_id: claimed[i].id,
            lease_token: token,
            kind: OutcomeKind::Completed(json!("done")),
            spawns: Vec::new(),
        };
        leases.settling(settled);
        store.item_record(&[done(0), done(1)], now).await.unwrap();
        let beat = {
            let (leases, store) = (leases.clone(), store.clone());
            tokio::spawn(async move { leases.run(store, clock, Duration::from_millis(5)).await })
        };
        tokio::time::timeout(Duration::from_secs(10), taken_rx.wait_for(|c| *c))
            .await
            .expect("the batch whose lease was taken is told to stop")
            .unwrap();
        // A few more ticks, so that the settling batch has been renewed since.
        tokio::time::sleep(Duration::from_millis(100)).await;
        beat.abort();
        assert!(
            !*settled_rx.borrow_and_update(),
            "a batch committing its own outcomes is not stopped"
        );
    }

    #[tokio::test]
    async fn sqlite_settling_batch_is_not_a_lost_lease() {
        settling_batch_is_not_a_lost_lease(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_settling_batch_is_not_a_lost_lease() {
        settling_batch_is_not_a_lost_lease(idempipe_testkit::TestDb::postgres().await).await
    }
}
