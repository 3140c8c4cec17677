//! CPU time of the calling thread.
//!
//! The pipeline reports how much CPU the enhancement itself used, so that what the
//! pipeline costs around it (decoding pipes, scoring, bookkeeping) can be told apart.
//! On Linux it is the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), exact around a
//! single call; elsewhere 0.

/// This thread's CPU clock. Must be read on the thread that made it.
pub(crate) struct ThreadCpu;

impl ThreadCpu {
    /// The calling thread's clock.
    pub(crate) fn open() -> Self {
        Self
    }

    /// Nanoseconds this thread has run on a CPU so far.
    #[cfg(target_os = "linux")]
    pub(crate) fn ns(&self) -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
    }

    /// Nanoseconds this thread has run on a CPU so far (unknown here: 0).
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn ns(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_advances_the_thread_clock() {
        let cpu = ThreadCpu::open();
        let before = cpu.ns();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu.ns() > before, "the clock moved");
    }
}
