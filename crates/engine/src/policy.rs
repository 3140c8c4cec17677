//! Per-stage policy: retries, backoff, outcome-unknown handling, batching, limiter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::error::StoreError;

/// What happens to an item whose attempt died after it marked the start of an outside call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    /// Retry with the same idempotency key (a repeat costs at most one call).
    Retry,
    /// Park the item as `unknown` for a person or a reconcile handler.
    Park,
}

impl OnUnknown {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Park => "park",
        }
    }

    /// Parses a stored name; anything unknown reads as `Retry`.
    pub fn parse(s: &str) -> Self {
        if s == "park" { Self::Park } else { Self::Retry }
    }
}

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the second attempt (doubles each attempt).
    pub base: Duration,
    /// Largest delay.
    pub cap: Duration,
    /// Fraction of the delay that is randomised (0 = none, 1 = full jitter).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Delay in milliseconds after failed attempt number `attempt` (1-based).
    pub fn delay_ms(&self, attempt: i64) -> Millis {
        let exp = attempt.clamp(1, 30) - 1;
        let raw = (self.base.as_millis() as f64) * 2f64.powi(exp as i32);
        let capped = raw.min(self.cap.as_millis() as f64);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let delay = capped * (1.0 - jitter * fastrand::f64());
        delay.round() as Millis
    }
}

/// Which limiter guards a stage and what one handler call costs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterUse {
    /// Limiter name.
    pub name: String,
    /// Cost units per item in the call (a batch of 32 items costs 32 x this).
    pub cost_per_item: f64,
}

/// Everything the engine needs to know about a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePolicy {
    /// Stage name.
    pub name: String,
    /// Attempts before an item goes dead.
    pub max_attempts: i64,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Outcome-unknown policy.
    pub on_unknown: OnUnknown,
    /// Items per handler call (1 = not a batch stage).
    pub batch_size: usize,
    /// Lease length; the worker extends it by heartbeat while the handler runs.
    pub lease: Duration,
    /// Limiter guarding the stage.
    pub limiter: Option<LimiterUse>,
}

impl StagePolicy {
    /// A stage with default policy: 5 attempts, 0.5 s..60 s backoff, retry on unknown,
    /// batch size 1, 30 s lease, no limiter.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_attempts: 5,
            backoff: Backoff::default(),
            on_unknown: OnUnknown::Retry,
            batch_size: 1,
            lease: Duration::from_secs(30),
            limiter: None,
        }
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, n: i64) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the outcome-unknown policy.
    pub fn on_unknown(mut self, policy: OnUnknown) -> Self {
        self.on_unknown = policy;
        self
    }

    /// Sets items per handler call.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Guards the stage with limiter `name`, each item costing `cost_per_item` units.
    pub fn limiter(mut self, name: impl Into<String>, cost_per_item: f64) -> Self {
        self.limiter = Some(LimiterUse {
            name: name.into(),
            cost_per_item,
        });
        self
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::Config(format!("stage {:?}: {m}", self.name)));
        if self.name.is_empty() {
            return bad("name must not be empty".into());
        }
        if self.max_attempts < 1 {
            return bad(format!(
                "max_attempts must be >= 1, got {}",
                self.max_attempts
            ));
        }
        if self.batch_size < 1 {
            return bad("batch_size must be >= 1".into());
        }
        if self.lease < Duration::from_millis(100) {
            return bad(format!("lease must be >= 100ms, got {:?}", self.lease));
        }
        if self.backoff.cap < self.backoff.base {
            return bad("backoff.cap must be >= backoff.base".into());
        }
        if let Some(l) = &self.limiter
            && !(l.cost_per_item.is_finite() && l.cost_per_item >= 0.0)
        {
            return bad("limiter cost_per_item must be a finite number >= 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            jitter: 0.0,
        };
        assert_eq!(b.delay_ms(1), 100);
        assert_eq!(b.delay_ms(2), 200);
        assert_eq!(b.delay_ms(4), 800);
        assert_eq!(b.delay_ms(5), 1000);
        assert_eq!(b.delay_ms(50), 1000);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(10),
            jitter: 0.5,
        };
        for _ in 0..1000 {
            let d = b.delay_ms(1);
            assert!((500..=1000).contains(&d), "{d}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let err = StagePolicy::new("frames")
            .max_attempts(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }
}
