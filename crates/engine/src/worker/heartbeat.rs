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
        };
        self.entries.lock().expect("lease map").insert(n, entry);
        (n, rx)
    }

    /// Whether batch `n` is still renewed.
    #[cfg(test)]
    pub(crate) fn contains(&self, n: u64) -> bool {
        self.entries.lock().expect("lease map").contains_key(&n)
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
                        tracing::warn!(
                            lost = ids.len() - held.len(),
                            "lease lost or run cancelled; stopping handler"
                        );
                        if let Some(e) = self.entries.lock().expect("lease map").get(&n) {
                            let _ = e.cancel.send(true);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying next tick"),
                }
            }
        }
    }
}
