//! What a stage's code implements, and what it receives.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::model::{NewItem, idempotency_key};

/// How a failed attempt continues.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerError {
    /// May succeed later: retried after the stage's backoff.
    Transient(Value),
    /// Cannot succeed: the item goes dead at once.
    Permanent(Value),
    /// Retry no earlier than after the duration (a remote 429 / Retry-After); if the stage
    /// has a limiter, it is paused for every worker until then.
    RetryAfter(Duration, Value),
}

impl HandlerError {
    /// A transient error with a message.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Self::Transient(json!({ "kind": "transient", "message": message.to_string() }))
    }

    /// A transient failure of the worker's own machine (a full disk) after the outside
    /// call succeeded: retried like any transient error, but not held against the stage's
    /// limiter, whose circuit breaker counts only the resource's own failures.
    pub fn local(message: impl std::fmt::Display) -> Self {
        Self::Transient(json!({ "kind": "local", "message": message.to_string() }))
    }

    /// Whether this is a [`local`](Self::local) failure.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Transient(v) if v["kind"] == "local")
    }

    /// A permanent error with a message.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self::Permanent(json!({ "kind": "permanent", "message": message.to_string() }))
    }

    /// A retry-after error with a message.
    pub fn retry_after(after: Duration, message: impl std::fmt::Display) -> Self {
        Self::RetryAfter(
            after,
            json!({ "kind": "retry_after", "after_ms": after.as_millis() as u64,
                    "message": message.to_string() }),
        )
    }

    /// The JSON detail stored on the attempt.
    pub fn detail(&self) -> &Value {
        match self {
            Self::Transient(v) | Self::Permanent(v) | Self::RetryAfter(_, v) => v,
        }
    }
}

/// What a handler returns for one item.
pub type ItemResult = Result<Value, HandlerError>;

/// One claimed item as a handler sees it, with its context.
#[derive(Debug)]
pub struct Job {
    /// Item id.
    pub id: i64,
    /// Run id.
    pub run_id: i64,
    /// Stage name.
    pub stage: String,
    /// Key within run and stage.
    pub key: String,
    /// Handler input.
    pub payload: Value,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Attempts counted against the stage's `max_attempts`, this one included (a person's
    /// retry starts the count again): the call is the last try when it reaches the limit.
    pub budget_used: i64,
    pub(crate) lease_token: i64,
    pub(crate) spawns: Mutex<Vec<NewItem>>,
    pub(crate) cancel: watch::Receiver<bool>,
    /// Set by [`Job::begin_external_call`]: such a call may finish during shutdown.
    pub(crate) external: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Writes the external-call marks of the worker's calls together.
    pub(crate) marks: std::sync::Arc<crate::worker::Marks>,
}

impl Job {
    /// The item's stable idempotency key; send it to outside APIs as `Idempotency-Key`.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(self.run_id, &self.stage, &self.key)
    }

    /// Adds an item that is created if, and only if, this item's completion commits.
    pub fn spawn(&self, item: NewItem) {
        self.spawns.lock().expect("spawn list poisoned").push(item);
    }

    /// Records that an outside call with effects starts now. If the attempt dies after this
    /// mark, the stage's outcome-unknown policy applies instead of a plain retry.
    pub async fn begin_external_call(&self) -> Result<(), crate::error::StoreError> {
        self.external
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.marks.mark(self.id, self.lease_token).await
    }

    /// Whether the engine asks the handler to stop (run cancelled or lease lost).
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves when the engine asks the handler to stop.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        let _ = rx.wait_for(|c| *c).await.map(|_| ());
    }

    pub(crate) fn take_spawns(&self) -> Vec<NewItem> {
        std::mem::take(&mut *self.spawns.lock().expect("spawn list poisoned"))
    }
}

/// Code for a stage that handles one item per call.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one item.
    async fn handle(&self, job: &Job) -> ItemResult;

    /// The limiter this job's call takes its permit from, when it depends on the job (one
    /// limiter per outside endpoint, say): `Ok(None)` uses the stage policy's, an error
    /// fails the attempt without a call. Asked only if the stage policy has a limiter.
    async fn limiter(&self, _job: &Job) -> Result<Option<String>, HandlerError> {
        Ok(None)
    }
}

/// Code for a stage that handles up to `batch_size` items per call (one request for many
/// frames); each item still completes or fails on its own.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles the items; returns one result per job, in order.
    async fn handle_batch(&self, jobs: &[Job]) -> Vec<ItemResult>;

    /// The limiter this call takes its permit from, when it depends on the jobs (see
    /// [`Handler::limiter`]); `Ok(None)` uses the stage policy's.
    async fn limiter(&self, _jobs: &[Job]) -> Result<Option<String>, HandlerError> {
        Ok(None)
    }
}

/// Adapts a per-item handler to the batch interface the worker drives.
pub(crate) struct Single<H>(pub(crate) H);

#[async_trait]
impl<H: Handler> BatchHandler for Single<H> {
    async fn handle_batch(&self, jobs: &[Job]) -> Vec<ItemResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.0.handle(job).await);
        }
        out
    }

    async fn limiter(&self, jobs: &[Job]) -> Result<Option<String>, HandlerError> {
        match jobs.first() {
            Some(job) => self.0.limiter(job).await,
            None => Ok(None),
        }
    }
}
