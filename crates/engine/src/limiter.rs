//! Limiters: a budget for an outside resource shared by every worker through the database.
//!
//! A token bucket (units per second, with a burst) plus an optional cap on concurrent
//! calls. It adapts to the resource (additive increase, multiplicative decrease): a 429
//! pauses it for everyone until the Retry-After time and lowers its rate; each success
//! raises the rate back toward the configured ceiling. Repeated transient failures open a
//! circuit for a cool-down, so items stay pending instead of burning their attempts.
//!
//! When the cool-down ends the circuit is half-open: exactly one caller (the probe) gets
//! through while the others keep waiting. A successful probe closes the circuit at once;
//! a failed one reopens it for twice as long as before, up to `max_cooldown`. So a
//! recovered resource is used again within seconds, and a dead one costs one call per
//! cool-down instead of a burst.
//!
//! The arithmetic lives here, in pure functions tested with explicit times; the store
//! reads the row, applies them and writes it back in one transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::error::StoreError;

/// The burst of [`LimiterConfig::new`], in seconds of its rate.
pub const DEFAULT_BURST_SECONDS: f64 = 0.25;

/// Configuration of a limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterConfig {
    /// Name stages refer to.
    pub name: String,
    /// Ceiling rate in units per second (the rate it returns to after throttling).
    pub rate: f64,
    /// Units that may be taken at once after an idle period.
    pub burst: f64,
    /// Concurrent calls allowed (0 = no cap).
    pub max_concurrent: i64,
    /// Lowest rate a 429 can push it down to.
    pub min_rate: f64,
    /// Rate regained per successful call (units/s).
    pub increase: f64,
    /// Factor applied to the rate on a 429.
    pub decrease: f64,
    /// Consecutive transient failures that open the circuit (0 = never).
    pub failure_threshold: i64,
    /// How long the circuit stays open the first time (doubling on each failed probe).
    pub cooldown: Duration,
    /// Longest the circuit stays open after repeated failed probes.
    #[serde(default = "default_max_cooldown")]
    pub max_cooldown: Duration,
}

fn default_max_cooldown() -> Duration {
    Duration::from_secs(60)
}

impl LimiterConfig {
    /// A limiter of `rate` units/s with a quarter-second burst (at least one unit), no
    /// concurrency cap, halving on 429, regaining 5% of the ceiling per success, and a
    /// circuit that opens after 10 consecutive transient failures for 2 s, then 4 s,
    /// 8 s... up to 60 s while its probes keep failing.
    ///
    /// Why a quarter second: an API that enforces the same rate typically does so with a
    /// bucket of about a second's calls. A limiter bursting that whole second drains the
    /// API's bucket, and from then on any call that reaches the API a little sooner after
    /// its predecessor than its permit did (network and scheduling jitter) is a 429, which
    /// pauses every worker for the whole Retry-After (a second or more). Spending only a
    /// quarter of it leaves the API three quarters of a second of slack for that jitter.
    pub fn new(name: impl Into<String>, rate: f64) -> Self {
        Self {
            name: name.into(),
            rate,
            burst: (rate * DEFAULT_BURST_SECONDS).max(1.0),
            max_concurrent: 0,
            min_rate: (rate / 20.0).max(0.1),
            increase: (rate / 20.0).max(0.01),
            decrease: 0.5,
            failure_threshold: 10,
            cooldown: Duration::from_secs(2),
            max_cooldown: default_max_cooldown(),
        }
    }

    /// Sets the burst.
    pub fn burst(mut self, burst: f64) -> Self {
        self.burst = burst;
        self
    }

    /// Caps concurrent calls.
    pub fn max_concurrent(mut self, n: i64) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Sets the circuit breaker: it opens after `failure_threshold` consecutive failures
    /// for `cooldown` (doubling per failed probe up to `max_cooldown`, which is raised to
    /// `cooldown` if lower).
    pub fn circuit(mut self, failure_threshold: i64, cooldown: Duration) -> Self {
        self.failure_threshold = failure_threshold;
        self.cooldown = cooldown;
        self.max_cooldown = self.max_cooldown.max(cooldown);
        self
    }

    /// Sets the longest cool-down after repeated failed probes.
    pub fn max_cooldown(mut self, max: Duration) -> Self {
        self.max_cooldown = max;
        self
    }

    /// How long the circuit stays open after its `opens`-th consecutive opening (1-based).
    pub fn cooldown_for(&self, opens: i64) -> Duration {
        let cap = self.max_cooldown.max(self.cooldown);
        let factor = 2u32.saturating_pow(opens.clamp(1, 31) as u32 - 1);
        self.cooldown.saturating_mul(factor).min(cap)
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let bad = |m: &str| Err(StoreError::Config(format!("limiter {:?}: {m}", self.name)));
        if !positive(self.rate) {
            return bad("rate must be > 0");
        }
        if !positive(self.burst) {
            return bad("burst must be > 0");
        }
        if !positive(self.min_rate) || self.min_rate > self.rate {
            return bad("min_rate must be > 0 and <= rate");
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return bad("decrease must be in (0, 1)");
        }
        if self.max_concurrent < 0 || self.failure_threshold < 0 {
            return bad("max_concurrent and failure_threshold must be >= 0");
        }
        Ok(())
    }
}

/// A limiter's configuration and learned state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterState {
    /// Configuration.
    pub config: LimiterConfig,
    /// Current rate (units/s), between min_rate and the ceiling.
    pub current_rate: f64,
    /// Units available.
    pub tokens: f64,
    /// When `tokens` was last brought up to date.
    pub refilled_at: Millis,
    /// Paused for everyone until then (a 429's Retry-After).
    pub paused_until: Millis,
    /// Circuit open until then.
    pub circuit_open_until: Millis,
    /// Consecutive transient failures.
    pub failure_streak: i64,
    /// Concurrency slots held now.
    pub in_flight: i64,
    /// 429s seen.
    pub throttles: i64,
    /// Times the circuit opened.
    pub circuit_opens: i64,
    /// Openings since the circuit last closed (0 = closed; > 0 and past
    /// `circuit_open_until` = half-open, waiting for a probe).
    pub open_streak: i64,
    /// The caller whose call is the half-open probe (0 = none).
    pub probe_holder: i64,
    /// Until when that probe holds its turn (a probe whose worker died frees it then).
    pub probe_until: Millis,
}

/// Units of an earlier chunk that expired unused in a worker's pool, given back with its
/// next lease ([`LimiterState::give_back`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Unused {
    /// How many.
    pub units: f64,
    /// When their chunk was leased.
    pub leased_at: Millis,
}

/// Answer of an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Granted,
    /// Go ahead after the given milliseconds: the next tokens are reserved for this caller,
    /// so the configured rate is met exactly however the acquirers' polls are timed.
    Reserved {
        /// Milliseconds until the reserved tokens exist.
        ms: Millis,
    },
    /// Ask again after the given milliseconds.
    Wait {
        /// Milliseconds to wait.
        ms: Millis,
        /// Why.
        reason: WaitReason,
    },
}

/// Why an acquire must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Out of tokens.
    Rate,
    /// Every concurrency slot is taken.
    Concurrency,
    /// Paused after a 429.
    Paused,
    /// Circuit open after repeated failures.
    CircuitOpen,
    /// Circuit half-open: another caller's probe call is testing the resource.
    Probing,
}

/// How a guarded call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterFeedback {
    /// The resource answered well.
    Success,
    /// The resource said 429: pause everyone until `until` and slow down.
    Throttled {
        /// Retry-After as an absolute time.
        until: Millis,
    },
    /// A transient failure (5xx, timeout).
    Failure,
    /// Neither (a permanent error about the input, or the call never happened).
    Neutral,
}

/// How long to wait between concurrency checks when every slot is taken.
const CONCURRENCY_RECHECK_MS: Millis = 20;
/// How long to wait between checks while another caller's probe is out.
const PROBE_RECHECK_MS: Millis = 250;
/// How long a probe holds its turn when the caller gives no time ([`LimiterState::try_take`]).
const DEFAULT_PROBE_HOLD_MS: Millis = 30_000;

impl LimiterState {
    /// A fresh state for a new limiter: full bucket, full rate.
    pub fn fresh(config: LimiterConfig, now: Millis) -> Self {
        Self {
            current_rate: config.rate,
            tokens: config.burst,
            refilled_at: now,
            paused_until: 0,
            circuit_open_until: 0,
            failure_streak: 0,
            in_flight: 0,
            throttles: 0,
            circuit_opens: 0,
            open_streak: 0,
            probe_holder: 0,
            probe_until: 0,
            config,
        }
    }

    /// Whether the circuit is open or half-open (tripped and not closed by a success since).
    pub fn circuit_tripped(&self) -> bool {
        self.open_streak > 0
    }

    /// Whether a claim for a stage behind this limiter is pointless right now.
    pub fn blocked_until(&self, now: Millis) -> Option<Millis> {
        let until = self.paused_until.max(self.circuit_open_until);
        (until > now).then_some(until)
    }

    /// Takes `cost` units if possible, as an anonymous caller (see [`Self::take`]).
    pub fn try_take(&mut self, cost: f64, now: Millis) -> Permit {
        self.take(cost, 0, now + DEFAULT_PROBE_HOLD_MS, now)
    }

    /// Takes `cost` units for `holder` if possible (`in_flight` already counted by the
    /// store). In a half-open circuit the first caller becomes the probe, holding its turn
    /// until `hold_until`; the others wait for its outcome.
    pub fn take(&mut self, cost: f64, holder: i64, hold_until: Millis, now: Millis) -> Permit {
        if now < self.paused_until {
            return Permit::Wait {
                ms: self.paused_until - now,
                reason: WaitReason::Paused,
            };
        }
        if now < self.circuit_open_until {
            return Permit::Wait {
                ms: self.circuit_open_until - now,
                reason: WaitReason::CircuitOpen,
            };
        }
        if self.circuit_tripped() {
            let probe_out = self.probe_holder != 0 && now < self.probe_until;
            if probe_out && self.probe_holder != holder {
                return Permit::Wait {
                    ms: (self.probe_until - now).min(PROBE_RECHECK_MS),
                    reason: WaitReason::Probing,
                };
            }
            self.probe_holder = holder;
            self.probe_until = hold_until;
        }
        if self.config.max_concurrent > 0 && self.in_flight >= self.config.max_concurrent {
            return Permit::Wait {
                ms: CONCURRENCY_RECHECK_MS,
                reason: WaitReason::Concurrency,
            };
        }
        self.refill(now);
        // A call costing more than the burst could never run; it waits for a full bucket.
        let cost = cost.min(self.config.burst);
        if self.tokens + 1e-9 >= cost {
            self.tokens = (self.tokens - cost).max(0.0);
            return Permit::Granted;
        }
        let ms_until =
            |tokens: f64| ((tokens / self.current_rate) * 1000.0).ceil().max(1.0) as Millis;
        if self.tokens >= 0.0 {
            // Nobody holds a reservation: this caller takes the next tokens (the bucket goes
            // negative), and the others wait until it is back at zero.
            let ms = ms_until(cost - self.tokens);
            self.tokens -= cost;
            return Permit::Reserved { ms };
        }
        Permit::Wait {
            ms: ms_until(-self.tokens),
            reason: WaitReason::Rate,
        }
    }

    /// Takes back units taken earlier and never used (a worker's leased units that
    /// expired in its pool): the bucket gets them again, never above its burst, so the
    /// rate lost to them is regained and the burst still bounds any window. Units leased
    /// before a 429 or a circuit opening are not taken back: the resource refused calls
    /// since, and the pause reset the bucket.
    pub fn give_back(&mut self, unused: Unused, now: Millis) {
        let blocked_since = self.paused_until.max(self.circuit_open_until) > unused.leased_at;
        if unused.units <= 0.0 || blocked_since {
            return;
        }
        self.refill(now);
        self.tokens = (self.tokens + unused.units).min(self.config.burst);
    }

    /// A worker's lease of a chunk ([`Store::limiter_lease`](crate::store::Store::limiter_lease)):
    /// counts `successes` reported since its last chunk, takes back `unused` units of that
    /// chunk, then takes `cost` units when the limiter allows chunks (no concurrency cap,
    /// circuit not half-open). The permit is `None` when the caller needs per-call
    /// permits; the flag says whether the state changed (and must be saved).
    pub fn lease(
        &mut self,
        cost: f64,
        successes: u32,
        unused: Unused,
        now: Millis,
    ) -> (Option<Permit>, bool) {
        let before = self.clone();
        for _ in 0..successes {
            self.apply(LimiterFeedback::Success, 0, now);
        }
        self.give_back(unused, now);
        let half_open = self.circuit_tripped() && self.blocked_until(now).is_none();
        let permit = (cost > 0.0 && self.config.max_concurrent == 0 && !half_open)
            .then(|| self.take(cost, 0, now, now));
        (permit, *self != before)
    }

    /// A per-call permit ([`Store::limiter_acquire`](crate::store::Store::limiter_acquire)):
    /// [`take`](Self::take), and whether `holder` now holds a concurrency slot the store
    /// must record.
    pub fn acquire(
        &mut self,
        cost: f64,
        holder: i64,
        hold_until: Millis,
        now: Millis,
    ) -> (Permit, bool) {
        let permit = self.take(cost, holder, hold_until, now);
        let holds_slot = !matches!(permit, Permit::Wait { .. }) && self.config.max_concurrent > 0;
        (permit, holds_slot)
    }

    /// The end of `holder`'s call ([`Store::limiter_release`](crate::store::Store::limiter_release)):
    /// [`apply`](Self::apply); whether the state changed (and must be saved).
    pub fn release(&mut self, feedback: LimiterFeedback, holder: i64, now: Millis) -> bool {
        let before = self.clone();
        self.apply(feedback, holder, now);
        *self != before
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = (now - self.refilled_at).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.current_rate).min(self.config.burst);
        self.refilled_at = now.max(self.refilled_at);
    }

    /// Learns from the outcome of `holder`'s call.
    pub fn apply(&mut self, feedback: LimiterFeedback, holder: i64, now: Millis) {
        let c = self.config.clone();
        let was_probe = self.probe_holder != 0 && self.probe_holder == holder;
        if was_probe {
            self.probe_holder = 0;
            self.probe_until = 0;
        }
        match feedback {
            LimiterFeedback::Success => {
                self.failure_streak = 0;
                self.current_rate = (self.current_rate + c.increase).min(c.rate);
                // The resource works: close the circuit, whoever's call showed it.
                if self.circuit_tripped() {
                    self.open_streak = 0;
                    self.circuit_open_until = self.circuit_open_until.min(now);
                }
            }
            LimiterFeedback::Throttled { until } => {
                self.refill(now);
                self.paused_until = self.paused_until.max(until);
                self.current_rate = (self.current_rate * c.decrease).max(c.min_rate);
                self.tokens = 0.0;
                self.refilled_at = self.paused_until.max(now);
                self.throttles += 1;
            }
            LimiterFeedback::Failure if self.circuit_tripped() => {
                // Only the probe's failure counts; calls that started before the circuit
                // opened are stragglers telling what is already known.
                if was_probe {
                    self.open(now);
                }
            }
            LimiterFeedback::Failure => {
                self.failure_streak += 1;
                if c.failure_threshold > 0 && self.failure_streak >= c.failure_threshold {
                    self.open(now);
                }
            }
            LimiterFeedback::Neutral => {}
        }
    }

    /// Opens (or reopens) the circuit for the next cool-down.
    fn open(&mut self, now: Millis) {
        self.open_streak += 1;
        let cooldown = self.config.cooldown_for(self.open_streak);
        self.circuit_open_until = now + cooldown.as_millis() as Millis;
        self.circuit_opens += 1;
        self.failure_streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rate: f64, burst: f64) -> LimiterState {
        LimiterState::fresh(LimiterConfig::new("api", rate).burst(burst), 0)
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let mut s = state(10.0, 1.0);
        assert_eq!(s.try_take(1.0, 0), Permit::Granted);
        assert_eq!(s.try_take(1.0, 0), Permit::Reserved { ms: 100 });
        assert_eq!(
            s.try_take(1.0, 0),
            Permit::Wait {
                ms: 100,
                reason: WaitReason::Rate
            }
        );
        assert_eq!(s.try_take(1.0, 100), Permit::Reserved { ms: 100 });
        let mut s = state(10.0, 1.0);
        let takes = (0..=1000)
            .step_by(10)
            .filter(|t| !matches!(s.try_take(1.0, *t), Permit::Wait { .. }));
        assert_eq!(takes.count(), 11, "one at once, then 10/s over one second");
    }

    #[test]
    fn throttle_pauses_and_halves_then_success_recovers() {
        let mut s = state(10.0, 1.0);
        s.apply(LimiterFeedback::Throttled { until: 5_000 }, 0, 1_000);
        assert_eq!(s.current_rate, 5.0);
        assert!(matches!(
            s.try_take(1.0, 4_999),
            Permit::Wait {
                reason: WaitReason::Paused,
                ..
            }
        ));
        assert_eq!(s.blocked_until(4_999), Some(5_000));
        assert_eq!(
            s.try_take(1.0, 5_000),
            Permit::Reserved { ms: 200 },
            "half the rate after a 429"
        );
        assert!(matches!(
            s.try_take(1.0, 5_100),
            Permit::Wait {
                reason: WaitReason::Rate,
                ..
            }
        ));
        for _ in 0..100 {
            s.apply(LimiterFeedback::Success, 0, 6_000);
        }
        assert_eq!(s.current_rate, 10.0, "back to the ceiling, not above");
    }

    #[test]
    fn repeated_failures_open_the_circuit() {
        let mut s = LimiterState::fresh(
            LimiterConfig::new("api", 10.0).circuit(3, Duration::from_secs(2)),
            0,
        );
        s.apply(LimiterFeedback::Failure, 1, 10);
        s.apply(LimiterFeedback::Failure, 2, 20);
        assert_eq!(s.blocked_until(20), None);
        s.apply(LimiterFeedback::Failure, 3, 30);
        assert_eq!(s.blocked_until(30), Some(2_030));
        assert!(matches!(
            s.try_take(1.0, 100),
            Permit::Wait {
                reason: WaitReason::CircuitOpen,
                ..
            }
        ));
        assert_eq!(s.take(1.0, 7, 9_000, 2_030), Permit::Granted);
        assert_eq!(s.circuit_opens, 1);
    }

    fn tripped() -> LimiterState {
        let mut s = LimiterState::fresh(
            LimiterConfig::new("api", 1000.0)
                .circuit(1, Duration::from_secs(2))
                .max_cooldown(Duration::from_secs(10)),
            0,
        );
        s.apply(LimiterFeedback::Failure, 1, 0);
        assert_eq!(s.circuit_open_until, 2_000);
        s
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes() {
        let mut s = tripped();
        assert_eq!(s.take(1.0, 10, 20_000, 2_000), Permit::Granted, "the probe");
        for other in [11, 12] {
            assert!(matches!(
                s.take(1.0, other, 20_000, 2_100),
                Permit::Wait {
                    reason: WaitReason::Probing,
                    ms: 1..=250
                }
            ));
        }
        // A straggler's failure (a call from before the circuit opened) changes nothing.
        s.apply(LimiterFeedback::Failure, 99, 2_200);
        assert_eq!(s.circuit_open_until, 2_000);
        s.apply(LimiterFeedback::Success, 10, 2_300);
        assert!(!s.circuit_tripped());
        assert_eq!(s.take(1.0, 11, 20_000, 2_300), Permit::Granted);
        assert_eq!(s.take(1.0, 12, 20_000, 2_300), Permit::Granted);
    }

    #[test]
    fn failed_probes_reopen_for_longer_up_to_the_cap() {
        let mut s = tripped();
        let mut now = 2_000;
        let mut open_for = Vec::new();
        for probe in 10..16 {
            assert_eq!(s.take(1.0, probe, now + 30_000, now), Permit::Granted);
            s.apply(LimiterFeedback::Failure, probe, now);
            open_for.push(s.circuit_open_until - now);
            now = s.circuit_open_until;
        }
        assert_eq!(open_for, [4_000, 8_000, 10_000, 10_000, 10_000, 10_000]);
        assert_eq!(s.circuit_opens, 7);
    }

    #[test]
    fn a_probe_that_ends_without_verdict_or_dies_frees_the_turn() {
        let mut s = tripped();
        assert_eq!(s.take(1.0, 10, 5_000, 2_000), Permit::Granted);
        s.apply(LimiterFeedback::Neutral, 10, 2_500);
        assert_eq!(s.take(1.0, 11, 5_000, 2_600), Permit::Granted, "next probe");
        // Holder 11's worker dies: its turn ends at its hold time.
        assert!(matches!(
            s.take(1.0, 12, 9_000, 4_999),
            Permit::Wait {
                reason: WaitReason::Probing,
                ..
            }
        ));
        assert_eq!(s.take(1.0, 12, 9_000, 5_000), Permit::Granted);
    }

    #[test]
    fn concurrency_cap_is_respected() {
        let mut s = LimiterState::fresh(LimiterConfig::new("api", 1000.0).max_concurrent(2), 0);
        s.in_flight = 2;
        assert!(matches!(
            s.try_take(1.0, 0),
            Permit::Wait {
                reason: WaitReason::Concurrency,
                ..
            }
        ));
        s.in_flight = 1;
        assert_eq!(s.try_take(1.0, 0), Permit::Granted);
    }

    #[test]
    fn units_given_back_return_to_the_bucket_up_to_the_burst() {
        let mut s = state(10.0, 4.0);
        for _ in 0..4 {
            assert_eq!(s.try_take(1.0, 0), Permit::Granted);
        }
        assert!(
            matches!(s.try_take(1.0, 0), Permit::Reserved { .. }),
            "in debt"
        );
        let unused = |units, leased_at| Unused { units, leased_at };
        s.give_back(unused(2.0, 0), 0);
        assert_eq!(
            s.tokens, 1.0,
            "the debt of one is paid and one unit is back"
        );
        assert_eq!(s.try_take(1.0, 0), Permit::Granted);
        s.give_back(unused(10.0, 500), 1_000);
        assert_eq!(s.tokens, 4.0, "never above the burst");
        s.give_back(unused(-3.0, 500), 1_000);
        assert_eq!(s.tokens, 4.0, "nothing to give back changes nothing");
        s.apply(LimiterFeedback::Throttled { until: 3_000 }, 0, 2_000);
        s.give_back(unused(2.0, 1_900), 3_500);
        assert_eq!(
            s.tokens, 0.0,
            "units leased before a 429 are not given back after it"
        );
        s.give_back(unused(2.0, 3_100), 3_200);
        assert_eq!(
            s.tokens, 3.0,
            "200 ms at the halved rate (one unit) and the two given back"
        );
    }

    #[test]
    fn default_burst_is_a_quarter_second_and_at_least_one_unit() {
        assert_eq!(LimiterConfig::new("api", 40.0).burst, 10.0);
        assert_eq!(LimiterConfig::new("api", 2.0).burst, 1.0);
    }

    #[test]
    fn validation_names_the_field() {
        let err = LimiterConfig::new("api", 0.0).validate().unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");
    }
}
