//! Deterministic fault injection for demos and tests: 503s at a given rate, periodic
//! bursts of 429, answers held past a client's timeout and 200s with a garbage body, each
//! a fixed sequence given the configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::config::Burst429;

/// Decides, request by request, whether to inject a failure.
#[derive(Debug)]
pub(crate) struct Faults {
    failure_rate: f64,
    seed: u64,
    failures_seen: AtomicU64,
    burst: Option<Burst429>,
    burst_seen: AtomicU64,
    hang: RateDraw,
    garbage: RateDraw,
}

/// What happens to the answer of a request that was enhanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerFault {
    /// Answer normally.
    None,
    /// Hold the answer for the configured hang first.
    Hang,
    /// Answer 200 with a body that is not an image.
    Garbage,
}

/// A reproducible yes/no sequence with a given rate: draw n is yes when a hash of
/// (seed, n) falls below the rate.
#[derive(Debug)]
struct RateDraw {
    rate: f64,
    seed: u64,
    seen: AtomicU64,
}

impl RateDraw {
    fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            seen: AtomicU64::new(0),
        }
    }

    fn draw(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        unit(self.seed, n) < self.rate
    }
}

impl Faults {
    pub(crate) fn new(failure_rate: f64, seed: u64, burst: Option<Burst429>) -> Self {
        Self {
            failure_rate,
            seed,
            failures_seen: AtomicU64::new(0),
            burst,
            burst_seen: AtomicU64::new(0),
            hang: RateDraw::new(0.0, 0),
            garbage: RateDraw::new(0.0, 0),
        }
    }

    /// Also holds a fraction `hang_rate` of answers and garbles a fraction
    /// `garbage_rate` (sequences independent of the 503s').
    pub(crate) fn with_answer_faults(mut self, hang_rate: f64, garbage_rate: f64) -> Self {
        self.hang = RateDraw::new(hang_rate, self.seed ^ 0x6861_6e67);
        self.garbage = RateDraw::new(garbage_rate, self.seed ^ 0x6761_7262);
        self
    }

    /// What to do with the answer of a request that was enhanced.
    pub(crate) fn answer_fault(&self) -> AnswerFault {
        if self.hang.draw() {
            AnswerFault::Hang
        } else if self.garbage.draw() {
            AnswerFault::Garbage
        } else {
            AnswerFault::None
        }
    }

    /// `Some(retry_after)` if this request falls in a 429 burst.
    pub(crate) fn burst_429(&self) -> Option<Duration> {
        let b = self.burst?;
        let n = self.burst_seen.fetch_add(1, Ordering::Relaxed);
        (n % b.every >= b.every - b.length).then_some(b.retry_after)
    }

    /// Whether this request gets an injected 503: the n-th admitted request fails when
    /// a hash of (seed, n) falls below the rate, so the pattern is reproducible.
    pub(crate) fn fail_now(&self) -> bool {
        if self.failure_rate <= 0.0 {
            return false;
        }
        let n = self.failures_seen.fetch_add(1, Ordering::Relaxed);
        unit(self.seed, n) < self.failure_rate
    }
}

/// A number in 0.0..1.0 from (seed, n), evenly spread.
fn unit(seed: u64, n: u64) -> f64 {
    (splitmix64(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64's output function: a cheap, well-mixed hash of a counter.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_is_roughly_honoured_and_reproducible() {
        let run = || {
            let f = Faults::new(0.25, 7, None);
            (0..4000).map(|_| f.fail_now()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let fails = a.iter().filter(|x| **x).count();
        assert!((800..1200).contains(&fails), "{fails}");
    }

    #[test]
    fn answer_faults_follow_their_rates() {
        let f = Faults::new(0.0, 3, None).with_answer_faults(0.1, 0.05);
        let draws: Vec<AnswerFault> = (0..10_000).map(|_| f.answer_fault()).collect();
        let hangs = draws.iter().filter(|d| **d == AnswerFault::Hang).count();
        let garbage = draws.iter().filter(|d| **d == AnswerFault::Garbage).count();
        assert!((800..1200).contains(&hangs), "{hangs}");
        // 5% of the 90% not held.
        assert!((350..550).contains(&garbage), "{garbage}");
        let none = Faults::new(0.5, 3, None);
        assert!((0..1000).all(|_| none.answer_fault() == AnswerFault::None));
    }

    #[test]
    fn bursts_are_the_last_requests_of_each_period() {
        let b = Burst429 {
            every: 5,
            length: 2,
            retry_after: Duration::from_secs(1),
        };
        let f = Faults::new(0.0, 0, Some(b));
        let hits: Vec<bool> = (0..10).map(|_| f.burst_429().is_some()).collect();
        assert_eq!(
            hits,
            [
                false, false, false, true, true, false, false, false, true, true
            ]
        );
    }
}
