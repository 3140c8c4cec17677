//! One handler call: limiter permit, heartbeat, the call, the outcomes handed to the completer.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::handler::{HandlerError, ItemResult, Job};
use crate::limiter::LimiterFeedback;
use crate::model::NewItem;
use crate::store::{ClaimedItem, Outcome, OutcomeKind};
use crate::worker::fetcher::Unit;
use crate::worker::permit::{self, Held, acquire};
use crate::worker::{Shared, Stage};

/// How long a handler told to stop may take before it is aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Runs one batch of claimed items of `stage` to recorded outcomes.
pub(crate) async fn run(shared: Arc<Shared>, unit: Unit) {
    let Unit {
        stage,
        token,
        mut items,
        start,
    } = unit;
    if let Some(group) = start {
        // Claimed ahead of the slots: the attempt starts (and counts) only now.
        let started = group.started(&shared).await;
        items.retain(|i| started.contains(&i.id));
        if items.is_empty() {
            return;
        }
    }
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    let (lease_entry, cancel_rx) = shared
        .leases
        .register(ids.clone(), token, stage.policy.lease);
    let budget: Vec<i64> = items.iter().map(|i| i.budget_used).collect();
    let results = call(&shared, &stage, token, items, cancel_rx).await;
    // The lease entry stays until the outcomes commit (the completer forgets it), so an
    // outcome waiting for its commit keeps its lease.
    let (spawns, results): (Vec<Vec<NewItem>>, Vec<ItemResult>) = match results {
        Ok((jobs, results)) if shared.is_stopping() => {
            // Errors while shutting down are most likely the shutdown's doing (a killed
            // child, a closed pipe): give those items back instead of recording a failure,
            // unless an outside call started (its outcome is recorded as usual).
            let give_back: Vec<bool> = jobs
                .iter()
                .zip(&results)
                .map(|(job, result)| result.is_err() && !job.external.load(Ordering::SeqCst))
                .collect();
            let back: Vec<i64> = ids
                .iter()
                .zip(&give_back)
                .filter_map(|(id, back)| back.then_some(*id))
                .collect();
            // Renew only what is still ours once the rest is given back.
            shared.leases.forget(lease_entry);
            release(&shared, &stage, &back, token).await;
            let (mut kept_ids, mut spawns, mut kept, mut used) = (vec![], vec![], vec![], vec![]);
            for (i, result) in results.into_iter().enumerate() {
                if !give_back[i] {
                    kept_ids.push(ids[i]);
                    spawns.push(jobs[i].take_spawns());
                    kept.push(result);
                    used.push(budget[i]);
                }
            }
            let (lease_entry, _) =
                shared
                    .leases
                    .register(kept_ids.clone(), token, stage.policy.lease);
            record(
                &shared,
                &stage,
                token,
                lease_entry,
                kept_ids,
                spawns,
                kept,
                used,
            )
            .await;
            return;
        }
        Ok((jobs, results)) => (jobs.iter().map(Job::take_spawns).collect(), results),
        Err(Stopped::Cancelled) => {
            shared.leases.forget(lease_entry);
            tracing::info!(stage = %stage.policy.name, items = ?ids, "handler stopped: lease lost or run cancelled");
            return;
        }
        Err(Stopped::Interrupted) => {
            shared.leases.forget(lease_entry);
            release(&shared, &stage, &ids, token).await;
            return;
        }
        Err(Stopped::Deferred { until, limiter }) => {
            shared.leases.forget(lease_entry);
            let now = shared.clock.now();
            match shared.store.item_defer(&ids, token, until, now).await {
                Ok(_) => tracing::debug!(stage = %stage.policy.name, %limiter, items = ?ids,
                    in_ms = until - now, "limiter closed: items given back until it opens"),
                Err(e) => {
                    tracing::warn!(error = %e, items = ?ids, "could not give items back; their leases will expire")
                }
            }
            return;
        }
        Err(Stopped::Panicked(message)) => {
            let error = serde_json::json!({ "kind": "panic", "message": message });
            let results = ids
                .iter()
                .map(|_| Err(HandlerError::Transient(error.clone())))
                .collect();
            (vec![Vec::new(); ids.len()], results)
        }
    };
    record(
        &shared,
        &stage,
        token,
        lease_entry,
        ids,
        spawns,
        results,
        budget,
    )
    .await;
}

/// Gives items back without an outcome: the attempt does not count (see `item_release`).
async fn release(shared: &Arc<Shared>, stage: &Stage, ids: &[i64], token: i64) {
    if ids.is_empty() {
        return;
    }
    match shared
        .store
        .item_release(ids, token, shared.clock.now())
        .await
    {
        Ok(n) => {
            tracing::info!(stage = %stage.policy.name, items = ?ids, "stopped by shutdown; items given back");
            shared.stats.released.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, items = ?ids, "could not give items back; their leases will expire")
        }
    }
}

/// Hands the outcomes of a batch to the completer, which commits them and then stops
/// renewing lease entry `lease_entry`. Returns as soon as they are queued.
#[allow(clippy::too_many_arguments)]
async fn record(
    shared: &Arc<Shared>,
    stage: &Stage,
    token: i64,
    lease_entry: u64,
    ids: Vec<i64>,
    spawns: Vec<Vec<NewItem>>,
    results: Vec<ItemResult>,
    budget: Vec<i64>,
) {
    let now = shared.clock.now();
    let outcomes: Vec<Outcome> = ids
        .iter()
        .zip(spawns)
        .zip(results)
        .zip(budget)
        .map(|(((id, spawns), result), used)| Outcome {
            item_id: *id,
            lease_token: token,
            kind: outcome_kind(stage, result, used, now),
            spawns,
        })
        .collect();
    shared
        .completer
        .submit(&stage.policy.name, lease_entry, outcomes)
        .await;
}

/// Maps a handler result to what is stored, applying the stage's retry policy.
fn outcome_kind(stage: &Stage, result: ItemResult, budget_used: i64, now: i64) -> OutcomeKind {
    let exhausted = budget_used >= stage.policy.max_attempts;
    match result {
        Ok(value) => OutcomeKind::Completed(value),
        Err(HandlerError::Permanent(error)) => OutcomeKind::Dead(error),
        Err(e) if exhausted => OutcomeKind::Dead(e.detail().clone()),
        Err(HandlerError::Transient(error)) => OutcomeKind::Failed {
            error,
            retry_at: now + stage.policy.backoff.delay_ms(budget_used),
        },
        Err(HandlerError::RetryAfter(after, error)) => OutcomeKind::Failed {
            error,
            retry_at: now + after.as_millis() as i64,
        },
    }
}

/// Why a handler call produced no results.
pub(crate) enum Stopped {
    /// The engine told it to stop (lease lost, run cancelled): nothing to record.
    Cancelled,
    /// The worker is shutting down and the call started no outside call: it was stopped
    /// at once and its items are given back.
    Interrupted,
    /// It panicked: each item records a transient failure with the panic message.
    Panicked(String),
    /// The job's own limiter is closed until `until`: the items go back, due then.
    Deferred {
        /// When the limiter may let calls through again.
        until: i64,
        /// Its name.
        limiter: String,
    },
}

/// Takes the limiter permit (if any), runs the handler, gives the permit back with
/// feedback. Returns None when the handler was told to stop.
async fn call(
    shared: &Arc<Shared>,
    stage: &Arc<Stage>,
    token: i64,
    items: Vec<ClaimedItem>,
    mut cancel: watch::Receiver<bool>,
) -> Result<(Vec<Job>, Vec<ItemResult>), Stopped> {
    let n = items.len();
    let mut stopping = shared.stopping.subscribe();
    let jobs: Vec<Job> = items
        .into_iter()
        .map(|item| Job {
            id: item.id,
            run_id: item.run_id,
            stage: stage.policy.name.clone(),
            key: item.key,
            payload: item.payload,
            attempt: item.attempt,
            budget_used: item.budget_used,
            lease_token: token,
            spawns: Mutex::new(Vec::new()),
            cancel: cancel.clone(),
            external: Arc::new(AtomicBool::new(false)),
            marks: shared.marks.clone(),
        })
        .collect();
    let external: Vec<Arc<AtomicBool>> = jobs.iter().map(|j| j.external.clone()).collect();
    let permit = match &stage.policy.limiter {
        Some(limiter) => match stage.handler.limiter(&jobs).await {
            Ok(name) => {
                let name = name.unwrap_or_else(|| limiter.name.clone());
                let mut held = Held::new(name.clone(), name == limiter.name);
                acquire(
                    shared,
                    stage,
                    &mut held,
                    limiter.cost_per_item * n as f64,
                    &mut cancel,
                    &mut stopping,
                )
                .await?;
                Some(held)
            }
            Err(e) => {
                let results = (0..n).map(|_| Err(e.clone())).collect();
                return Ok((jobs, results));
            }
        },
        None => None,
    };
    let handler = stage.handler.clone();
    let started = std::time::Instant::now();
    // The handler runs in its own task so that a panic becomes a failed attempt.
    let mut running = tokio::spawn(async move {
        let results = handler.handle_batch(&jobs).await;
        (jobs, results)
    });
    let mut watch_stopping = true;
    let joined = loop {
        tokio::select! {
            joined = &mut running => break joined,
            _ = cancelled(&mut cancel) => {
                // The handler saw the signal too (Job::cancelled); give it a moment to wind down.
                if tokio::time::timeout(CANCEL_GRACE, &mut running).await.is_err() {
                    running.abort();
                }
                permit::release(shared, permit.as_ref(), LimiterFeedback::Neutral).await;
                return Err(Stopped::Cancelled);
            }
            _ = cancelled(&mut stopping), if watch_stopping => {
                if external.iter().any(|e| e.load(Ordering::SeqCst)) {
                    // An outside call is under way: let it finish within the grace period.
                    watch_stopping = false;
                    continue;
                }
                // Dropping the handler kills the programs it started (kill_on_drop).
                running.abort();
                let _ = (&mut running).await;
                permit::release(shared, permit.as_ref(), LimiterFeedback::Neutral).await;
                return Err(Stopped::Interrupted);
            }
        }
    };
    let (jobs, mut results) = match joined {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(stage = %stage.policy.name, error = %e, "handler panicked");
            permit::release(shared, permit.as_ref(), LimiterFeedback::Neutral).await;
            return Err(Stopped::Panicked(e.to_string()));
        }
    };
    metrics::histogram!("idempipe_handler_duration_seconds", "stage" => stage.policy.name.clone())
        .record(started.elapsed().as_secs_f64());
    if results.len() != n {
        let msg = format!("handler returned {} results for {n} items", results.len());
        results = (0..n).map(|_| Err(HandlerError::transient(&msg))).collect();
    }
    permit::release(
        shared,
        permit.as_ref(),
        feedback(&results, shared.clock.now()),
    )
    .await;
    Ok((jobs, results))
}

/// Resolves once the engine asks the handler to stop.
pub(crate) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// What the limiter learns from a call's results.
fn feedback(results: &[ItemResult], now: i64) -> LimiterFeedback {
    let throttled = results.iter().filter_map(|r| match r {
        Err(HandlerError::RetryAfter(d, _)) => Some(now + d.as_millis() as i64),
        _ => None,
    });
    if let Some(until) = throttled.max() {
        LimiterFeedback::Throttled { until }
    } else if results
        .iter()
        .any(|r| matches!(r, Err(e @ HandlerError::Transient(_)) if !e.is_local()))
    {
        LimiterFeedback::Failure
    } else if results
        .iter()
        .any(|r| r.as_ref().map_or_else(HandlerError::is_local, |_| true))
    {
        LimiterFeedback::Success
    } else {
        LimiterFeedback::Neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn feedback_prefers_throttle_then_failure() {
        let ok: ItemResult = Ok(json!(1));
        let t = Err(HandlerError::transient("x"));
        let r = Err(HandlerError::retry_after(Duration::from_secs(2), "429"));
        assert_eq!(
            feedback(&[ok.clone(), t.clone(), r], 1000),
            LimiterFeedback::Throttled { until: 3000 }
        );
        assert_eq!(feedback(&[ok.clone(), t], 0), LimiterFeedback::Failure);
        assert_eq!(feedback(&[ok], 0), LimiterFeedback::Success);
        // A full disk after a good answer is not the resource's failure.
        let local = Err(HandlerError::local("No space left on device"));
        assert_eq!(feedback(&[local], 0), LimiterFeedback::Success);
        assert_eq!(
            feedback(&[Err(HandlerError::permanent("bad"))], 0),
            LimiterFeedback::Neutral
        );
    }
}
