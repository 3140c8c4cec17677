//! A tiny in-process token bucket for the server's rate limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refills `rate` tokens per second up to `capacity`; each request takes one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket. `rate` must be > 0; `capacity` 0 means `ceil(rate)`, at least 1.
    pub(crate) fn new(rate: f64, capacity: u32, now: Instant) -> Self {
        let capacity = if capacity == 0 {
            rate.ceil().max(1.0)
        } else {
            capacity as f64
        };
        Self {
            rate,
            capacity,
            state: Mutex::new((capacity, now)),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_empty_then_refills() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(2.0, 0, t0);
        assert!(bucket.try_acquire(t0).is_ok());
        assert!(bucket.try_acquire(t0).is_ok());
        let wait = bucket.try_acquire(t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(bucket.try_acquire(t0 + Duration::from_millis(500)).is_ok());
    }
}
