//! Frame-sized buffers kept for reuse.
//!
//! A fresh 6 MB buffer (a 1080p RGB frame) costs the kernel a page fault and a zeroed
//! page per 4 KiB (or per huge page) on first touch: measured with perf on the
//! enhancement server at 1080p, `clear_page_erms` took a fifth of its CPU, as much as
//! two thirds of the algorithm itself. Buffers given back here are handed out again,
//! their pages already mapped.

use std::sync::Mutex;

/// The frames of this process's enhancement work (decoded requests and answers,
/// enhanced frames): enough for the frames a server or a pipeline has in flight at once.
pub static FRAMES: BufferPool = BufferPool::new(8);

/// A few buffers of any size, handed out and given back.
#[derive(Debug)]
pub struct BufferPool {
    kept: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` buffers (more given back are freed).
    pub const fn new(keep: usize) -> Self {
        Self {
            kept: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer, with the capacity of one given back if there is one.
    pub fn take(&self) -> Vec<u8> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Gives `buf` back for a later [`take`](Self::take) (freed if the pool is full).
    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < self.keep && buf.capacity() > 0 {
            kept.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_buffers_come_back_empty_up_to_the_limit() {
        let pool = BufferPool::new(1);
        assert_eq!(pool.take().capacity(), 0);
        pool.give(vec![7u8; 1000]);
        pool.give(vec![7u8; 10]);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), 1000, "the first given back was kept");
        assert_eq!(pool.take().capacity(), 0, "the second was freed");
    }
}
