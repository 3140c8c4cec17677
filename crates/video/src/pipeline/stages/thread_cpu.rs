//! CPU time of the calling thread, read from `/proc/thread-self/schedstat`.
//!
//! The pipeline reports how much CPU the enhancement itself used, so that what the
//! pipeline costs around it (decoding pipes, scoring, bookkeeping) can be told apart.
//! The kernel brings this figure up to date only at scheduler ticks and context
//! switches: read it around long stretches (a segment), not around one short call.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// An open handle on this thread's scheduler statistics. Must be read on the thread
/// that opened it.
pub(crate) struct ThreadCpu(Option<File>);

impl ThreadCpu {
    /// Opens the calling thread's statistics (reads give 0 where /proc is missing).
    pub(crate) fn open() -> Self {
        Self(File::open("/proc/thread-self/schedstat").ok())
    }

    /// Nanoseconds this thread has run on a CPU so far.
    pub(crate) fn ns(&self) -> u64 {
        let Some(file) = &self.0 else { return 0 };
        let mut buf = [0u8; 96];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
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
