//! A call's limiter permit: units from the worker's local pool (see `limiter_pool`), or a
//! per-call permit when the limiter needs one (a concurrency cap, a half-open circuit).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::limiter::{LimiterFeedback, Permit, WaitReason};
use crate::worker::batch::{Stopped, cancelled};
use crate::worker::limiter_pool::Take;
use crate::worker::{Shared, Stage};

/// Longest single sleep while waiting for a limiter, so cancellation is noticed.
const LIMITER_MAX_SLEEP: Duration = Duration::from_millis(500);

/// A per-job limiter closed for longer than this gives the items back (due when it opens)
/// rather than holding worker slots that other endpoints' items could use.
const DEFER_AFTER: Duration = Duration::from_secs(1);

/// A limiter permit taken for one call.
pub(crate) struct Held {
    /// The limiter.
    name: String,
    /// Who holds a per-call permit (a concurrency slot, a half-open probe).
    holder: i64,
    /// Whether it is the stage policy's limiter (so a pause or open circuit holds back the
    /// stage's claims), not one chosen per job.
    stage_wide: bool,
    /// Whether the units came from the local pool (else: a per-call permit).
    pooled: bool,
}

impl Held {
    /// A permit of limiter `name`, not taken yet.
    pub(crate) fn new(name: String, stage_wide: bool) -> Self {
        Self {
            name,
            // Unique per call (a claim's lease token is shared by its batches), so a
            // half-open circuit lets exactly one call through.
            holder: fastrand::i64(1..i64::MAX),
            stage_wide,
            pooled: false,
        }
    }
}

/// Waits for a permit of `held.name` worth `cost` units.
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
    stage: &Arc<Stage>,
    held: &mut Held,
    cost: f64,
    cancel: &mut watch::Receiver<bool>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let mut per_call = false;
    loop {
        let now = shared.clock.now();
        let permit = if per_call {
            let hold_until = now + stage.policy.lease.as_millis() as i64;
            shared
                .store
                .limiter_acquire(&held.name, cost, held.holder, hold_until, now)
                .await
        } else {
            let clock = shared.clock.clone();
            match shared
                .permits
                .take(&*shared.store, &held.name, cost, move || clock.now())
                .await
            {
                Ok(Take::Granted) => Ok(Permit::Granted),
                Ok(Take::Reserved { ms }) => Ok(Permit::Reserved { ms }),
                Ok(Take::Wait(wait)) => Ok(wait),
                Ok(Take::PerCall) => {
                    per_call = true;
                    continue;
                }
                Err(e) => Err(e),
            }
        };
        held.pooled = !per_call;
        match permit {
            Ok(Permit::Granted) => return Ok(()),
            Ok(Permit::Reserved { ms }) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms as u64)) => return Ok(()),
                    _ = cancelled(cancel) => return Err(Stopped::Cancelled),
                    _ = cancelled(stopping) => {
                        release(shared, Some(held), LimiterFeedback::Neutral).await;
                        return Err(Stopped::Interrupted);
                    }
                }
            }
            Ok(Permit::Wait { ms, reason }) => {
                metrics::counter!("idempipe_limiter_waits_total", "limiter" => held.name.clone(),
                    "reason" => format!("{reason:?}").to_lowercase())
                .increment(1);
                let closed = matches!(reason, WaitReason::Paused | WaitReason::CircuitOpen);
                if closed && held.stage_wide {
                    shared
                        .blocked
                        .lock()
                        .expect("blocked map")
                        .insert(stage.policy.name.clone(), now + ms);
                } else if closed && ms >= DEFER_AFTER.as_millis() as i64 {
                    return Err(Stopped::Deferred {
                        until: now + ms,
                        limiter: held.name.clone(),
                    });
                }
                let nap = Duration::from_millis(ms.max(1) as u64).min(LIMITER_MAX_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = cancelled(cancel) => return Err(Stopped::Cancelled),
                    _ = cancelled(stopping) => return Err(Stopped::Interrupted),
                }
            }
            Err(e) => {
                tracing::warn!(limiter = %held.name, error = %e, "limiter unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(LIMITER_MAX_SLEEP) => {}
                    _ = cancelled(cancel) => return Err(Stopped::Cancelled),
                    _ = cancelled(stopping) => return Err(Stopped::Interrupted),
                }
            }
        }
    }
}

/// Gives the permit back and tells the limiter how the call went.
pub(crate) async fn release(shared: &Arc<Shared>, held: Option<&Held>, fb: LimiterFeedback) {
    let Some(held) = held else {
        return;
    };
    let now = shared.clock.now();
    let done = if held.pooled {
        shared
            .permits
            .feedback(&*shared.store, &held.name, fb, now)
            .await
    } else {
        shared
            .store
            .limiter_release(&held.name, held.holder, fb, now)
            .await
    };
    if let Err(e) = done {
        tracing::warn!(limiter = %held.name, error = %e, "limiter release failed; the slot expires with the lease");
    }
}
