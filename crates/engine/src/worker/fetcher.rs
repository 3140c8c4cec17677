//! The fetcher: claims in the background, ahead of the slots, into a local queue.
//!
//! Claims run as tasks while handlers run (one per stage at a time, at most
//! [`MAX_CLAIMS_IN_FLIGHT`] at once), so a slot that frees finds its next unit already
//! claimed. Two kinds of claim:
//! - for free slots (slots neither running nor promised to a queued unit or a claim in
//!   flight): the attempt counts from the claim, as it always did;
//! - ahead of the slots, up to `prefetch` units: claimed under a negative lease token with
//!   a short lease. Such an item has not started: when a slot takes it, `item_start` moves
//!   it to the attempt's token and a full lease first ([`StartGroup`]). Units not started
//!   within `prefetch_ttl` go back (`item_release`, the attempt not counted), and on
//!   shutdown too; if the worker dies, their short lease lapses and maintenance gives them
//!   back without counting the attempt (`item_return_unstarted`).
//!
//! A stage whose claim came back short is not claimed again until new work may be due
//! (`Store::work_signal`), or its limiter's pause ends.
//!
//! A small worker without prefetch (at most [`RIDE_UP_TO`] slots) whose slots are all busy
//! leaves its next claim with the completer instead ([`ClaimOrder`]), where the store
//! commits claims with outcomes (`Store::claims_with_outcomes`): the flush that
//! commits the outcomes of the slots it frees claims their next items in the same
//! transaction. If a call ends without outcomes, the order is revoked and claims on its own.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::store::{ClaimParams, ClaimedItem};
use crate::worker::completer::ClaimOrder;
use crate::worker::{Shared, Stage, WorkerConfig};

/// Largest concurrency at which claims ride with the completer's flush: beyond it, slots
/// free often enough that claims in their own transactions batch well.
pub(crate) const RIDE_UP_TO: usize = 4;

/// Claims running at once, over all stages.
const MAX_CLAIMS_IN_FLIGHT: usize = 2;

/// Claims of one stage running at once: a second one would have to skip every row the
/// first holds locked (PostgreSQL) or wait for it (SQLite), so it only adds work.
const MAX_CLAIMS_PER_STAGE: usize = 1;

/// A handler call's worth of claimed items.
pub(crate) struct Unit {
    pub(crate) stage: Arc<Stage>,
    /// The attempt's lease token (positive).
    pub(crate) token: i64,
    pub(crate) items: Vec<ClaimedItem>,
    /// Set for units claimed ahead of the slots: they start through it.
    pub(crate) start: Option<Arc<StartGroup>>,
}

/// Units of one ahead claim that take their slots in the same round (see [`Fetcher::pop`]):
/// the first of them to run starts them all with one `item_start`.
pub(crate) struct StartGroup {
    ids: Vec<i64>,
    ahead_token: i64,
    token: i64,
    lease: Duration,
    started: OnceCell<HashSet<i64>>,
}

impl StartGroup {
    /// The ids whose start committed (the others were given back or cancelled meanwhile,
    /// or the store failed: their short lease then lapses and they come back uncounted).
    pub(crate) async fn started(&self, shared: &Shared) -> &HashSet<i64> {
        self.started
            .get_or_init(|| async {
                let expires = shared.clock.now() + self.lease.as_millis() as i64;
                match shared
                    .store
                    .item_start(&self.ids, self.ahead_token, self.token, expires)
                    .await
                {
                    Ok(ids) => ids.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, items = ?self.ids, "could not start prefetched items; they go back when their lease lapses");
                        HashSet::new()
                    }
                }
            })
            .await
    }
}

/// A queued unit, with what its claim was.
struct Queued {
    unit: Unit,
    /// Claimed ahead of the slots: its (negative) token, and when it goes back unstarted.
    ahead: Option<(i64, Instant)>,
}

/// What a claim task returns.
pub(crate) struct Claimed {
    stage: usize,
    token: i64,
    ahead: bool,
    limit: i64,
    units: usize,
    /// When an ahead claim's units go back if not started.
    stale_at: Instant,
    items: crate::error::StoreResult<Vec<ClaimedItem>>,
}

/// The fetcher's state; owned by the worker loop.
pub(crate) struct Fetcher {
    stages: Vec<Arc<Stage>>,
    concurrency: usize,
    prefetch: usize,
    ttl: Duration,
    claim_batch: i64,
    worker: String,
    run: Option<i64>,
    queue: VecDeque<Queued>,
    claims: JoinSet<Claimed>,
    /// Units promised to slots / to the prefetch by the claims in flight.
    in_flight: (usize, usize),
    /// Stages whose last claim came back short, until new work may be due.
    dry: Vec<bool>,
    /// Claims in flight per stage.
    claiming_stage: Vec<usize>,
    next_stage: usize,
    /// Claims ride with the completer's flushes (see the module doc).
    ride: bool,
    /// Set on shutdown: a revoked order then claims nothing.
    draining: Arc<AtomicBool>,
}

impl Fetcher {
    /// A fetcher for `stages` under `config`; `ride`: the store commits claims with
    /// outcomes.
    pub(crate) fn new(stages: Vec<Arc<Stage>>, config: &WorkerConfig, ride: bool) -> Self {
        let dry = vec![false; stages.len()];
        let claiming_stage = vec![0; stages.len()];
        Self {
            stages,
            concurrency: config.concurrency,
            prefetch: config.prefetch,
            ttl: config.prefetch_ttl,
            claim_batch: config.claim_batch,
            worker: config.name.clone(),
            run: config.run,
            queue: VecDeque::new(),
            claims: JoinSet::new(),
            in_flight: (0, 0),
            dry,
            claiming_stage,
            next_stage: 0,
            ride: ride && config.prefetch == 0 && config.concurrency <= RIDE_UP_TO,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// New work may be due: claim from every stage again.
    pub(crate) fn wake(&mut self) {
        self.dry.iter_mut().for_each(|d| *d = false);
    }

    /// Whether claims are running.
    pub(crate) fn claiming(&self) -> bool {
        !self.claims.is_empty()
    }

    /// Starts claims while there is room: first for free slots (`running` units run now),
    /// then ahead of them up to `prefetch` units.
    pub(crate) fn claim(&mut self, shared: &Arc<Shared>, running: usize) {
        while self.claims.len() < MAX_CLAIMS_IN_FLIGHT {
            let queued_for_slots = self.queue.iter().filter(|q| q.ahead.is_none()).count();
            let queued_ahead = self.queue.len() - queued_for_slots;
            let free = self
                .concurrency
                .saturating_sub(running + queued_for_slots + self.in_flight.0);
            let ahead_room = self
                .prefetch
                .saturating_sub(queued_ahead + self.in_flight.1);
            // Claim in batches: wait for a quarter of the room unless idle.
            let idle = running == 0 && self.queue.is_empty() && self.claims.is_empty();
            let (units, ahead) = if free >= (self.concurrency / 4).max(1) || (idle && free > 0) {
                (free, false)
            } else if ahead_room >= (self.prefetch / 4).max(1) {
                (ahead_room, true)
            } else {
                if self.ride && self.queue.is_empty() && self.claims.is_empty() {
                    self.order(shared);
                }
                return;
            };
            let Some(stage_index) = self.next_claimable(shared) else {
                return;
            };
            self.start_claim(shared, stage_index, units, ahead);
        }
    }

    /// The next stage to claim from: not dry, not held back by its limiter.
    fn next_claimable(&mut self, shared: &Shared) -> Option<usize> {
        let now = shared.clock.now();
        let blocked = shared.blocked.lock().expect("blocked map");
        for i in 0..self.stages.len() {
            let index = (self.next_stage + i) % self.stages.len();
            let name = &self.stages[index].policy.name;
            if !self.dry[index]
                && self.claiming_stage[index] < MAX_CLAIMS_PER_STAGE
                && blocked.get(name).is_none_or(|t| *t <= now)
            {
                self.next_stage = index + 1;
                return Some(index);
            }
        }
        None
    }

    fn start_claim(&mut self, shared: &Arc<Shared>, stage_index: usize, units: usize, ahead: bool) {
        let stage = &self.stages[stage_index];
        let batch = stage.policy.batch_size;
        let limit = ((units * batch) as i64).min(self.claim_batch).max(1);
        let units = (limit as usize).div_ceil(batch);
        let token = fastrand::i64(1..i64::MAX);
        let now = shared.clock.now();
        let lease = if ahead {
            self.ahead_lease(stage)
        } else {
            stage.policy.lease
        };
        let params = ClaimParams {
            stage: stage.policy.name.clone(),
            limit,
            worker: self.worker.clone(),
            lease_token: if ahead { -token } else { token },
            lease_expires_at: now + lease.as_millis() as i64,
            now,
            run_id: self.run,
        };
        if ahead {
            self.in_flight.1 += units;
        } else {
            self.in_flight.0 += units;
        }
        self.claiming_stage[stage_index] += 1;
        let stale_at = Instant::now() + self.ttl.min(lease / 2);
        let store = shared.store.clone();
        self.claims.spawn(async move {
            Claimed {
                stage: stage_index,
                token,
                ahead,
                limit,
                units,
                stale_at,
                items: store.item_claim(&params).await,
            }
        });
    }

    /// Leaves the next claim with the completer (every slot is busy, nothing is queued or
    /// claiming): the flush of the slots that free claims for them. The order counts as a
    /// claim in flight for every slot, so no other claim starts until it is answered.
    fn order(&mut self, shared: &Arc<Shared>) {
        let Some(stage_index) = self.next_claimable(shared) else {
            return;
        };
        let stage = &self.stages[stage_index];
        let token = fastrand::i64(1..i64::MAX);
        let lease = stage.policy.lease;
        let per_slot = stage.policy.batch_size as i64;
        let params = ClaimParams {
            stage: stage.policy.name.clone(),
            limit: per_slot.min(self.claim_batch).max(1),
            worker: self.worker.clone(),
            lease_token: token,
            lease_expires_at: 0,
            now: 0,
            run_id: self.run,
        };
        let (reply, answer) = oneshot::channel();
        shared.completer.order(ClaimOrder {
            params: params.clone(),
            lease,
            per_slot,
            max: self.claim_batch,
            reply,
        });
        let units = self.concurrency;
        self.in_flight.0 += units;
        self.claiming_stage[stage_index] += 1;
        let store = shared.store.clone();
        let clock = shared.clock.clone();
        let draining = self.draining.clone();
        self.claims.spawn(async move {
            let (limit, items) = match answer.await {
                Ok(answer) => answer,
                // Revoked: no flush was coming. Claim on its own, unless stopping.
                Err(_) if draining.load(Ordering::SeqCst) => (params.limit, Ok(Vec::new())),
                Err(_) => {
                    let mut params = params;
                    params.now = clock.now();
                    params.lease_expires_at = params.now + lease.as_millis() as i64;
                    (params.limit, store.item_claim(&params).await)
                }
            };
            Claimed {
                stage: stage_index,
                token,
                ahead: false,
                limit,
                units,
                stale_at: Instant::now(),
                items,
            }
        });
    }

    /// The lease of an ahead claim: long enough to outlive the time-to-live, short enough
    /// that a dead worker's prefetched items come back soon.
    fn ahead_lease(&self, stage: &Stage) -> Duration {
        stage.policy.lease.min(self.ttl * 2)
    }

    /// Waits for the next claim in flight to finish.
    pub(crate) async fn next_claim(&mut self) -> Option<Claimed> {
        let done = self.claims.join_next().await?;
        // Claim tasks are never aborted and do not panic: a failure here is a bug.
        Some(done.expect("claim task"))
    }

    /// Queues the units of a finished claim.
    pub(crate) fn accept(&mut self, shared: &Shared, c: Claimed) {
        self.claiming_stage[c.stage] -= 1;
        if c.ahead {
            self.in_flight.1 -= c.units;
        } else {
            self.in_flight.0 -= c.units;
        }
        let stage = self.stages[c.stage].clone();
        let items = match c.items {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(stage = %stage.policy.name, error = %e, "claim failed; will retry");
                self.dry[c.stage] = true;
                return;
            }
        };
        self.dry[c.stage] = (items.len() as i64) < c.limit;
        if items.is_empty() {
            return;
        }
        shared
            .stats
            .claimed
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("idempipe_claimed_total", "stage" => stage.policy.name.clone())
            .increment(items.len() as u64);
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<ClaimedItem> = items.by_ref().take(stage.policy.batch_size).collect();
            self.queue.push_back(Queued {
                unit: Unit {
                    stage: stage.clone(),
                    token: c.token,
                    items: chunk,
                    start: None,
                },
                ahead: c.ahead.then_some((-c.token, c.stale_at)),
            });
        }
    }

    /// Takes up to `n` units to run now. Units claimed ahead get their start group: those
    /// of one claim taken together start with one `item_start`.
    pub(crate) fn pop(&mut self, n: usize) -> Vec<(Unit, Option<i64>)> {
        let mut out: Vec<(Unit, Option<i64>)> = Vec::new();
        while out.len() < n {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            out.push((q.unit, q.ahead.map(|a| a.0)));
        }
        // One start group per ahead token among the units taken.
        let mut tokens: Vec<i64> = out.iter().filter_map(|(_, a)| *a).collect();
        tokens.sort_unstable();
        tokens.dedup();
        for ahead_token in tokens {
            let members: Vec<usize> = (0..out.len())
                .filter(|i| out[*i].1 == Some(ahead_token))
                .collect();
            let stage = out[members[0]].0.stage.clone();
            let group = Arc::new(StartGroup {
                ids: members
                    .iter()
                    .flat_map(|i| out[*i].0.items.iter().map(|it| it.id))
                    .collect(),
                ahead_token,
                token: -ahead_token,
                lease: stage.policy.lease,
                started: OnceCell::new(),
            });
            for i in members {
                out[i].0.start = Some(group.clone());
            }
        }
        out
    }

    /// Units claimed ahead and queued longer than the time-to-live: (ahead token, ids).
    pub(crate) fn take_stale(&mut self) -> Vec<(i64, Vec<i64>)> {
        let now = Instant::now();
        let mut stale = Vec::new();
        self.queue.retain(|q| match q.ahead {
            Some((token, at)) if at <= now => {
                stale.push((token, q.unit.items.iter().map(|i| i.id).collect()));
                false
            }
            _ => true,
        });
        stale
    }

    /// When the oldest ahead unit goes stale, if any.
    pub(crate) fn next_stale_at(&self) -> Option<Instant> {
        self.queue
            .iter()
            .filter_map(|q| q.ahead.map(|(_, at)| at))
            .min()
    }

    /// Stops claiming: waits for claims in flight and returns every queued unit's
    /// (lease token as claimed, ids), to give back.
    pub(crate) async fn drain(&mut self, shared: &Shared) -> Vec<(i64, Vec<i64>)> {
        self.draining.store(true, Ordering::SeqCst);
        shared.completer.revoke_if_idle();
        while let Some(c) = self.next_claim().await {
            self.accept(shared, c);
        }
        self.queue
            .drain(..)
            .map(|q| {
                let token = q.ahead.map_or(q.unit.token, |a| a.0);
                (token, q.unit.items.iter().map(|i| i.id).collect())
            })
            .collect()
    }
}
