//! External-call marks of many handler calls written together.
//!
//! [`Job::begin_external_call`](crate::Job::begin_external_call) must commit its mark
//! before the outside call starts, so each caller waits for its own mark; but the marks of
//! calls starting at the same moment share one statement (and one commit): the task takes
//! whatever has queued while the previous statement ran. If a shared statement fails, each
//! mark of it is retried on its own, so every caller gets its own answer.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::error::{StoreError, StoreResult};
use crate::store::SharedStore;

/// Marks per statement.
const MAX_PER_STATEMENT: usize = 1000;

/// A mark waiting for its statement: (item id, lease token, answer).
type Request = (i64, i64, oneshot::Sender<StoreResult<()>>);

/// Handle to the marking task of a worker; the task ends when the last handle is dropped.
pub(crate) struct Marks {
    tx: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Marks")
    }
}

impl Marks {
    /// Starts the task.
    pub(crate) fn start(store: SharedStore, clock: SharedClock) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, clock, rx));
        Arc::new(Self { tx })
    }

    /// Marks the start of an outside call of `item_id`'s attempt holding `lease_token`;
    /// returns once the mark is committed.
    pub(crate) async fn mark(&self, item_id: i64, lease_token: i64) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        if self.tx.send((item_id, lease_token, answer)).is_err() {
            return Err(StoreError::LeaseLost { item_id });
        }
        answered
            .await
            .unwrap_or(Err(StoreError::LeaseLost { item_id }))
    }
}

async fn run(store: SharedStore, clock: SharedClock, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::new();
    while rx.recv_many(&mut batch, MAX_PER_STATEMENT).await > 0 {
        let marks: Vec<(i64, i64)> = batch.iter().map(|(id, token, _)| (*id, *token)).collect();
        let now = clock.now();
        match store.item_mark_external_many(&marks, now).await {
            Ok(marked) => {
                let marked: std::collections::HashSet<i64> = marked.into_iter().collect();
                for (item_id, _, answer) in batch.drain(..) {
                    let _ = answer.send(if marked.contains(&item_id) {
                        Ok(())
                    } else {
                        Err(StoreError::LeaseLost { item_id })
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, marks = marks.len(), "external-call marks failed together; retrying one by one");
                for (item_id, token, answer) in batch.drain(..) {
                    let _ = answer.send(store.item_mark_external(item_id, token, now).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks made at once are written together; each caller learns its own answer (a stale
    /// token is refused), and marked attempts are the ones a release leaves running.
    async fn concurrent_marks_each_get_their_answer(db: idempipe_testkit::TestDb) {
        let token = 42;
        let (store, _run, claimed) =
            super::super::test_setup::claimed(&db, &["a", "b", "c"], token).await;
        let clock = crate::clock::system_clock();
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let marks = Marks::start(store.clone(), clock);
        let (a, b, c) = tokio::join!(
            marks.mark(ids[0], token),
            marks.mark(ids[1], token),
            marks.mark(ids[2], token + 1),
        );
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert!(
            matches!(c, Err(StoreError::LeaseLost { item_id }) if item_id == ids[2]),
            "{c:?}"
        );
        let released = store.item_release(&ids, token, clock_now()).await.unwrap();
        assert_eq!(released, 1, "only the unmarked attempt goes back");
    }

    fn clock_now() -> i64 {
        crate::clock::Clock::now(&crate::clock::SystemClock)
    }

    #[tokio::test]
    async fn sqlite_concurrent_marks_each_get_their_answer() {
        concurrent_marks_each_get_their_answer(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_concurrent_marks_each_get_their_answer() {
        concurrent_marks_each_get_their_answer(idempipe_testkit::TestDb::postgres().await).await
    }
}
