//! Limiter tokens leased to this worker in chunks, so calls through a shared limiter do
//! not each write the limiter's row.
//!
//! A call takes its units from the worker's local pool of that limiter. When the pool is
//! empty (or its units are older than [`LOCAL_TTL_MS`]) one caller leases the next chunk
//! with [`Store::limiter_lease`](crate::store::Store::limiter_lease), which also reports
//! the successes counted since the previous chunk: one write per chunk instead of an
//! acquire and a release per call. The chunk is sized from the demand seen during the
//! previous chunk (twice it, to grow), never more than the limiter's burst or what its
//! current rate yields in [`LOCAL_TTL_MS`], so the rate holds across processes as
//! exactly as per-call permits do (a slow limiter leases one unit at a time). Units a
//! chunk leaves unused (they expired, or are too few for the next call) go back to the
//! limiter with the next lease, unless a 429 or an open circuit came since: a worker
//! whose demand is below its chunk does not waste the shared rate other workers wait
//! for.
//!
//! A 429 or a transient failure is written at once (with the successes before it) and
//! empties the local pool, so the worker asks the limiter before its next call; the other
//! workers stop within [`LOCAL_TTL_MS`], when their units expire and their next lease finds
//! the limiter paused (or its circuit open). A limiter that caps
//! concurrency, or whose circuit is half-open, needs per-call permits (a slot, the one
//! probe): the lease says so and the pool sends its callers to the per-call path for
//! [`PER_CALL_RECHECK_MS`] before asking again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Millis;
use crate::error::StoreResult;
use crate::limiter::{LimiterFeedback, Permit, Unused};
use crate::store::Store;

/// How long leased units stay usable: bounds how long a worker keeps calling after another
/// worker's 429 paused the limiter.
pub(crate) const LOCAL_TTL_MS: Millis = 50;

/// How long a limiter that needs per-call permits is not asked for a chunk again.
const PER_CALL_RECHECK_MS: Millis = 1_000;

/// What a caller got from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Units taken from the local pool: call now, report with [`Pools::feedback`].
    Granted,
    /// Units taken, usable after `ms` (the chunk reserved the limiter's next tokens).
    Reserved {
        /// Milliseconds to wait.
        ms: Millis,
    },
    /// The limiter holds calls back (as [`Permit::Wait`]).
    Wait(Permit),
    /// Take a per-call permit (`limiter_acquire`/`limiter_release`) instead.
    PerCall,
}

/// One limiter's local pool.
#[derive(Default)]
struct Local {
    /// Units left.
    units: f64,
    /// They may be used from then (a reserved chunk)...
    usable_from: Millis,
    /// ...until then.
    valid_until: Millis,
    /// Units taken since the last lease (the demand the next chunk is sized by).
    used: f64,
    /// Largest chunk: the burst, or the rate over [`LOCAL_TTL_MS`] (learned per lease).
    cap: f64,
    /// Successful calls not yet reported.
    successes: u32,
    /// When the units held were leased.
    leased_at: Millis,
    /// Callers use per-call permits until then.
    per_call_until: Millis,
}

impl Local {
    /// Takes `cost` units if the pool holds them now.
    fn take_local(&mut self, cost: f64, now: Millis) -> Option<Take> {
        if now >= self.valid_until || self.units + 1e-9 < cost {
            return None;
        }
        self.units -= cost;
        self.used += cost;
        Some(if self.usable_from > now {
            Take::Reserved {
                ms: self.usable_from - now,
            }
        } else {
            Take::Granted
        })
    }

    /// The next chunk's size for a call of `cost`.
    fn chunk(&self, cost: f64) -> f64 {
        (2.0 * self.used).min(self.cap).max(cost)
    }

    /// Empties the pool before a new lease: the units it still holds (expired, or too
    /// few for the call) go back to the limiter with that lease.
    fn leftover(&mut self) -> Unused {
        Unused {
            units: std::mem::take(&mut self.units),
            leased_at: self.leased_at,
        }
    }
}

/// A limiter's pool and the lock its refills take (one lease at a time per limiter).
#[derive(Default)]
struct Pool {
    local: Mutex<Local>,
    refill: tokio::sync::Mutex<()>,
}

/// The local pools of one worker, by limiter name.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Chunks leased (the limiter writes the pool made).
    leases: std::sync::atomic::AtomicU64,
}

impl Pools {
    fn pool(&self, name: &str) -> Arc<Pool> {
        self.pools
            .lock()
            .expect("limiter pools")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Takes `cost` units of limiter `name`, leasing a chunk if the pool is short.
    pub(crate) async fn take(
        &self,
        store: &dyn Store,
        name: &str,
        cost: f64,
        now: impl Fn() -> Millis,
    ) -> StoreResult<Take> {
        let pool = self.pool(name);
        {
            let mut local = pool.local.lock().expect("limiter pool");
            if local.per_call_until > now() {
                return Ok(Take::PerCall);
            }
            if let Some(take) = local.take_local(cost, now()) {
                return Ok(take);
            }
        }
        let _refill = pool.refill.lock().await;
        let at = now();
        let (want, successes, unused) = {
            let mut local = pool.local.lock().expect("limiter pool");
            // Another caller may have leased while this one waited for the lock.
            if let Some(take) = local.take_local(cost, at) {
                return Ok(take);
            }
            (
                local.chunk(cost),
                std::mem::take(&mut local.successes),
                local.leftover(),
            )
        };
        self.leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let leased = store.limiter_lease(name, want, successes, unused, at).await;
        let mut local = pool.local.lock().expect("limiter pool");
        let (permit, state) = match leased {
            Ok(done) => done,
            Err(e) => {
                // Nothing was written: the successes are reported with the next lease (the
                // unused units are not: they expired here).
                local.successes += successes;
                return Err(e);
            }
        };
        local.leased_at = at;
        local.cap = state
            .config
            .burst
            .min(state.current_rate * LOCAL_TTL_MS as f64 / 1000.0)
            .max(1.0);
        local.used = 0.0;
        local.units = 0.0;
        match permit {
            None => {
                local.per_call_until = at + PER_CALL_RECHECK_MS;
                Ok(Take::PerCall)
            }
            Some(Permit::Granted) => {
                local.units = want;
                local.usable_from = at;
                local.valid_until = at + LOCAL_TTL_MS;
                Ok(local.take_local(cost, at).unwrap_or(Take::Granted))
            }
            Some(Permit::Reserved { ms }) => {
                local.units = want;
                local.usable_from = at + ms;
                local.valid_until = at + ms + LOCAL_TTL_MS;
                Ok(local.take_local(cost, at).unwrap_or(Take::Reserved { ms }))
            }
            Some(wait @ Permit::Wait { .. }) => Ok(Take::Wait(wait)),
        }
    }

    /// Reports how a call made with pooled units went: successes are counted and sent with
    /// the next lease; a 429 or a failure is written now (a 429 also empties the pool).
    pub(crate) async fn feedback(
        &self,
        store: &dyn Store,
        name: &str,
        feedback: LimiterFeedback,
        now: Millis,
    ) -> StoreResult<()> {
        let pool = self.pool(name);
        let successes = {
            let mut local = pool.local.lock().expect("limiter pool");
            match feedback {
                LimiterFeedback::Neutral => return Ok(()),
                LimiterFeedback::Success => {
                    local.successes += 1;
                    return Ok(());
                }
                // A 429 pauses the limiter, a failure may open its circuit: either way this
                // worker stops using what it holds and asks the limiter again.
                LimiterFeedback::Throttled { .. } | LimiterFeedback::Failure => {
                    local.units = 0.0;
                    local.valid_until = 0;
                }
            }
            std::mem::take(&mut local.successes)
        };
        if successes > 0 {
            // The successes happened before this failure: the failure streak must see them.
            store
                .limiter_lease(name, 0.0, successes, Unused::default(), now)
                .await?;
        }
        store.limiter_release(name, 0, feedback, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::LimiterConfig;

    /// Calls through a fast limiter lease their units in chunks: far fewer limiter writes
    /// than calls, each call still taking exactly its units, and a 429 stops the pool at
    /// once (the next take finds the limiter paused).
    async fn calls_lease_units_in_chunks(db: idempipe_testkit::TestDb) {
        let store = crate::connect(&db.url).await.unwrap();
        let now = || crate::clock::Clock::now(&crate::clock::SystemClock);
        store
            .limiter_define(&LimiterConfig::new("api", 100_000.0), now())
            .await
            .unwrap();
        let pools = Pools::default();
        let started = now();
        for _ in 0..500 {
            let take = pools.take(&*store, "api", 1.0, now).await.unwrap();
            assert_eq!(take, Take::Granted);
            pools
                .feedback(&*store, "api", LimiterFeedback::Success, now())
                .await
                .unwrap();
        }
        // Chunks double up to the cap (a dozen leases), then one lease per expiry of the
        // units (LOCAL_TTL_MS): a slow, loaded machine takes longer and leases more, per
        // call it would be 500.
        let leases = pools.leases.load(std::sync::atomic::Ordering::Relaxed);
        let expiries = (now() - started) / LOCAL_TTL_MS;
        assert!(
            leases <= 12 + expiries as u64,
            "500 calls made {leases} limiter writes in {expiries} expiries of the units"
        );
        let until = now() + 60_000;
        pools
            .feedback(&*store, "api", LimiterFeedback::Throttled { until }, now())
            .await
            .unwrap();
        let take = pools.take(&*store, "api", 1.0, now).await.unwrap();
        assert!(
            matches!(
                take,
                Take::Wait(Permit::Wait {
                    reason: crate::limiter::WaitReason::Paused,
                    ..
                })
            ),
            "{take:?}"
        );
    }

    #[tokio::test]
    async fn sqlite_calls_lease_units_in_chunks() {
        calls_lease_units_in_chunks(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_calls_lease_units_in_chunks() {
        calls_lease_units_in_chunks(idempipe_testkit::TestDb::postgres().await).await
    }

    /// Units a chunk leaves unused go back with the next lease: the limiter's bucket ends
    /// where it would have been had they never been leased (explicit times, 40 units/s).
    async fn unused_units_go_back_with_the_next_lease(db: idempipe_testkit::TestDb) {
        let store = crate::connect(&db.url).await.unwrap();
        store
            .limiter_define(&LimiterConfig::new("api", 40.0).burst(100.0), 0)
            .await
            .unwrap();
        let tokens_at = |t: Millis| {
            let store = store.clone();
            async move {
                let (_, state) = store
                    .limiter_lease("api", 0.0, 0, Unused::default(), t)
                    .await
                    .unwrap();
                state.tokens
            }
        };
        // Empty the bucket, so no refill is clipped by the burst below.
        store
            .limiter_lease("api", 100.0, 0, Unused::default(), 0)
            .await
            .unwrap();
        let pools = Pools::default();
        let at = |t: Millis| move || t;
        // 100 ms: 4 units; one call leases one.
        assert_eq!(
            pools.take(&*store, "api", 1.0, at(100)).await.unwrap(),
            Take::Granted
        );
        // The next leases twice the demand: two units, one used, one left.
        assert_eq!(
            pools.take(&*store, "api", 1.0, at(101)).await.unwrap(),
            Take::Granted
        );
        let left = tokens_at(101).await;
        assert!((left - 1.04).abs() < 1e-9, "{left}");
        // 200 ms: the left unit expired; the next lease gives it back and takes two.
        assert_eq!(
            pools.take(&*store, "api", 1.0, at(200)).await.unwrap(),
            Take::Granted
        );
        let now = tokens_at(200).await;
        assert!(
            (now - (1.04 + 0.099 * 40.0 + 1.0 - 2.0)).abs() < 1e-9,
            "tokens {now}: the unused unit was not given back"
        );
    }

    #[tokio::test]
    async fn sqlite_unused_units_go_back_with_the_next_lease() {
        unused_units_go_back_with_the_next_lease(idempipe_testkit::TestDb::sqlite()).await
    }

    #[tokio::test]
    async fn postgres_unused_units_go_back_with_the_next_lease() {
        unused_units_go_back_with_the_next_lease(idempipe_testkit::TestDb::postgres().await).await
    }

    #[test]
    fn chunks_follow_demand_within_the_cap() {
        let mut local = Local {
            cap: 100.0,
            ..Local::default()
        };
        assert_eq!(local.chunk(1.0), 1.0, "first lease: just the call");
        local.used = 30.0;
        assert_eq!(local.chunk(1.0), 60.0, "twice the last chunk's demand");
        local.used = 500.0;
        assert_eq!(local.chunk(1.0), 100.0, "never above the cap");
        local.cap = 1.0;
        assert_eq!(
            local.chunk(3.0),
            3.0,
            "a call costing more than the cap leases its cost"
        );
    }

    #[test]
    fn local_units_expire_and_reserved_ones_wait() {
        let mut local = Local {
            units: 2.0,
            usable_from: 100,
            valid_until: 150,
            ..Local::default()
        };
        assert_eq!(local.take_local(1.0, 40), Some(Take::Reserved { ms: 60 }));
        assert_eq!(local.take_local(1.0, 120), Some(Take::Granted));
        assert_eq!(local.take_local(1.0, 120), None, "empty");
        local.units = 5.0;
        assert_eq!(local.take_local(1.0, 150), None, "expired");
    }
}
