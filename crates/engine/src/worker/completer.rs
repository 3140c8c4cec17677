//! Commits outcomes from many handler calls in one transaction.
//!
//! Batch tasks send their outcomes here and wait for the answer; the completer takes
//! whatever has queued up (up to `MAX_PER_COMMIT`) and records it with one
//! `Store::item_record` call. Each item is still fenced by its own lease token, so one
//! lost lease never blocks the others' outcomes.

use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::error::StoreResult;
use crate::store::{Outcome, SharedStore};

/// Outcomes per transaction: large enough to amortise a commit, small enough to keep a
/// SQLite write lock short.
const MAX_PER_COMMIT: usize = 512;

type Request = (Vec<Outcome>, oneshot::Sender<StoreResult<Vec<bool>>>);

/// Handle to the completer task.
pub(crate) struct Completer {
    tx: tokio::sync::Mutex<Option<mpsc::UnboundedSender<Request>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Completer {
    /// Starts the task.
    pub(crate) fn start(store: SharedStore, clock: SharedClock) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, clock, rx));
        Self {
            tx: tokio::sync::Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// Records `outcomes`; returns per outcome whether it was recorded.
    pub(crate) async fn record(&self, outcomes: Vec<Outcome>) -> StoreResult<Vec<bool>> {
        let (answer, rx) = oneshot::channel();
        let sent = match self.tx.lock().await.as_ref() {
            Some(tx) => tx.send((outcomes, answer)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(crate::error::StoreError::Config(
                "worker is shutting down".into(),
            ));
        }
        rx.await
            .unwrap_or_else(|_| Err(crate::error::StoreError::Config("completer stopped".into())))
    }

    /// Flushes what is queued and stops the task.
    pub(crate) async fn close(&self) {
        self.tx.lock().await.take();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(store: SharedStore, clock: SharedClock, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut requests = vec![first];
        let mut count = requests[0].0.len();
        while count < MAX_PER_COMMIT {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.0.len();
                    requests.push(req);
                }
                Err(_) => break,
            }
        }
        let all: Vec<Outcome> = requests
            .iter()
            .flat_map(|(o, _)| o.iter().cloned())
            .collect();
        match store.item_record(&all, clock.now()).await {
            Ok(flags) => {
                let mut flags = flags.into_iter();
                for (outcomes, answer) in requests {
                    let mine = flags.by_ref().take(outcomes.len()).collect();
                    let _ = answer.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, outcomes = all.len(), "recording outcomes failed");
                let message = e.to_string();
                for (_, answer) in requests {
                    let _ = answer.send(Err(crate::error::StoreError::Config(format!(
                        "recording outcomes failed: {message}"
                    ))));
                }
            }
        }
    }
}
