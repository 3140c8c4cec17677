//! Limiters: a budget for an outside resource shared by every worker through the database.
//!
//! A token bucket (units per second, with a burst) plus an optional cap on concurrent
//! calls. It adapts to the resource (additive increase, multiplicative decrease): a 429
//! pauses it for everyone until the Retry-After time and lowers its rate; each success
//! raises the rate back toward the configured ceiling. Repeated transient failures open a
//! circuit for a cool-down, so items stay pending instead of burning their attempts.
//!
//! The arithmetic lives here, in pure functions tested with explicit times; the store
//! reads the row, applies them and writes it back in one transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::error::StoreError;

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
    /// How long the circuit stays open.
    pub cooldown: Duration,
}

impl LimiterConfig {
    /// A limiter of `rate` units/s with a one-second burst, no concurrency cap, halving on
    /// 429, regaining 5% of the ceiling per success, and a 10 s circuit after 10
    /// consecutive transient failures.
    pub fn new(name: impl Into<String>, rate: f64) -> Self {
        Self {
            name: name.into(),
            rate,
            burst: rate.max(1.0),
            max_concurrent: 0,
            min_rate: (rate / 20.0).max(0.1),
            increase: (rate / 20.0).max(0.01),
            decrease: 0.5,
            failure_threshold: 10,
            cooldown: Duration::from_secs(10),
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

    /// Sets the circuit breaker.
    pub fn circuit(mut self, failure_threshold: i64, cooldown: Duration) -> Self {
        self.failure_threshold = failure_threshold;
        self.cooldown = cooldown;
        self
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
            config,
        }
    }

    /// Whether a claim for a stage behind this limiter is pointless right now.
    pub fn blocked_until(&self, now: Millis) -> Option<Millis> {
        let until = self.paused_until.max(self.circuit_open_until);
        (until > now).then_some(until)
    }

    /// Takes `cost` units if possible (`in_flight` already counted by the store).
    pub fn try_take(&mut self, cost: f64, now: Millis) -> Permit {
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

    fn refill(&mut self, now: Millis) {
        let elapsed = (now - self.refilled_at).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.current_rate).min(self.config.burst);
        self.refilled_at = now.max(self.refilled_at);
    }

    /// Learns from a call's outcome.
    pub fn apply(&mut self, feedback: LimiterFeedback, now: Millis) {
        let c = self.config.clone();
        match feedback {
            LimiterFeedback::Success => {
                self.failure_streak = 0;
                self.current_rate = (self.current_rate + c.increase).min(c.rate);
            }
            LimiterFeedback::Throttled { until } => {
                self.refill(now);
                self.paused_until = self.paused_until.max(until);
                self.current_rate = (self.current_rate * c.decrease).max(c.min_rate);
                self.tokens = 0.0;
                self.refilled_at = self.paused_until.max(now);
                self.throttles += 1;
            }
            LimiterFeedback::Failure => {
                self.failure_streak += 1;
                if c.failure_threshold > 0 && self.failure_streak >= c.failure_threshold {
                    self.circuit_open_until = now + c.cooldown.as_millis() as Millis;
                    self.circuit_opens += 1;
                    self.failure_streak = 0;
                }
            }
            LimiterFeedback::Neutral => {}
        }
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
        s.apply(LimiterFeedback::Throttled { until: 5_000 }, 1_000);
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
            s.apply(LimiterFeedback::Success, 6_000);
        }
        assert_eq!(s.current_rate, 10.0, "back to the ceiling, not above");
    }

    #[test]
    fn repeated_failures_open_the_circuit() {
        let mut s = LimiterState::fresh(
            LimiterConfig::new("api", 10.0).circuit(3, Duration::from_secs(2)),
            0,
        );
        s.apply(LimiterFeedback::Failure, 10);
        s.apply(LimiterFeedback::Failure, 20);
        assert_eq!(s.blocked_until(20), None);
        s.apply(LimiterFeedback::Failure, 30);
        assert_eq!(s.blocked_until(30), Some(2_030));
        assert!(matches!(
            s.try_take(1.0, 100),
            Permit::Wait {
                reason: WaitReason::CircuitOpen,
                ..
            }
        ));
        assert_eq!(s.try_take(1.0, 2_030), Permit::Granted);
        assert_eq!(s.circuit_opens, 1);
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
    fn validation_names_the_field() {
        let err = LimiterConfig::new("api", 0.0).validate().unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");
    }
}
