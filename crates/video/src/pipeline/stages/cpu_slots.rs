//! CPU slots: the decoding and encoding stages take one for their attempt.
//!
//! A worker runs more handler calls than it has cores, because a frame's call to an
//! enhancement API waits on the network, not on this machine. Decoding (`extract`) and
//! encoding (`encode`, with the local enhancement in its stream) keep cores busy for
//! seconds, so they run at most one per slot (by default one per core) and the other
//! handler slots stay free for frames: with as many handler slots as cores, an encode and
//! an extract took both and left a single frame, or none, in flight.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use tokio::sync::Semaphore;

/// A stage handler whose attempts run inside one of `slots`' permits.
pub(crate) struct CpuBound<H> {
    /// The stage's own handler.
    pub(crate) inner: H,
    /// The worker's CPU slots, shared by every CPU-heavy stage.
    pub(crate) slots: Arc<Semaphore>,
}

#[async_trait]
impl<H: Handler> Handler for CpuBound<H> {
    async fn handle(&self, job: &Job) -> ItemResult {
        // The engine drops the call when the worker stops or the run is cancelled, so a
        // call waiting here never holds anything up.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(HandlerError::transient)?;
        self.inner.handle(job).await
    }

    async fn limiter(&self, job: &Job) -> Result<Option<String>, HandlerError> {
        self.inner.limiter(job).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use idempipe_engine::store::RunCreate;
    use idempipe_engine::{NewItem, StagePolicy, Worker, WorkerConfig};
    use serde_json::json;
    use tokio::sync::Notify;

    use super::*;

    /// Counts the calls running at once, the most seen, and the calls finished.
    #[derive(Default)]
    struct Counting {
        running: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
        all_done: Notify,
    }

    const ITEMS: usize = 8;

    /// The stage's handler, counting into a shared [`Counting`].
    struct Counted(Arc<Counting>);

    #[async_trait]
    impl Handler for Counted {
        async fn handle(&self, _job: &Job) -> ItemResult {
            let c = &self.0;
            let now = c.running.fetch_add(1, Ordering::SeqCst) + 1;
            c.most.fetch_max(now, Ordering::SeqCst);
            // Long enough for the worker's other slots to start calls of their own.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            c.running.fetch_sub(1, Ordering::SeqCst);
            if c.done.fetch_add(1, Ordering::SeqCst) + 1 == ITEMS {
                c.all_done.notify_one();
            }
            Ok(json!({}))
        }
    }

    #[tokio::test]
    async fn a_stage_runs_at_most_one_call_per_cpu_slot_whatever_the_concurrency() {
        let db = idempipe_testkit::TestDb::sqlite();
        let store = db.store().await;
        let items = (0..ITEMS)
            .map(|i| NewItem::new("cpu", i.to_string(), json!(null)))
            .collect();
        let create = RunCreate {
            pipeline: "t".into(),
            fingerprint: "f".into(),
            input: "-".into(),
            params: json!({}),
            items,
        };
        let now = idempipe_engine::Clock::now(&idempipe_engine::SystemClock);
        store.run_create(&create, now).await.unwrap();
        let counting = Arc::new(Counting::default());
        let config = WorkerConfig {
            concurrency: 4,
            ..WorkerConfig::default()
        };
        let stage = CpuBound {
            inner: Counted(counting.clone()),
            slots: Arc::new(Semaphore::new(1)),
        };
        let worker = Worker::new(store.clone(), config).handler(StagePolicy::new("cpu"), stage);
        worker.run(counting.all_done.notified()).await.unwrap();
        assert_eq!(counting.done.load(Ordering::SeqCst), ITEMS);
        assert_eq!(
            counting.most.load(Ordering::SeqCst),
            1,
            "one slot: the calls ran one at a time although the worker had 4 slots"
        );
    }
}
