//! A bounded map of recent idempotency keys to their results.
//!
//! Each key holds a once-cell: concurrent requests with the same key and the same
//! request fingerprint wait for one enhancement instead of doing it twice. A failed
//! attempt leaves the cell empty, so the next request with that key tries again. Eviction
//! is oldest-inserted first (FIFO), bounded by entry count and result bytes; retries
//! arrive soon after the original, so recency of insertion is what matters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::OnceCell;

/// The result slot shared by requests with one key and fingerprint.
pub(crate) type Slot = Arc<OnceCell<Bytes>>;

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    id: u64,
    slot: Slot,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next_id: u64,
}

/// Recent idempotency keys and their results.
#[derive(Debug)]
pub(crate) struct IdempotencyCache {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl IdempotencyCache {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity,
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// The slot for `key`; a new empty one if the key is unknown or was last used with
    /// a different request (the new request replaces it: the key now names this work).
    /// Returns the entry id for [`IdempotencyCache::filled`]. `None` when disabled.
    pub(crate) fn slot(&self, key: &str, fingerprint: u64) -> Option<(Slot, u64)> {
        if self.capacity == 0 {
            return None;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if let Some(entry) = inner.map.get(key) {
            if entry.fingerprint == fingerprint {
                return Some((entry.slot.clone(), entry.id));
            }
            tracing::warn!(
                key,
                "Idempotency-Key reused with a different request; enhancing the new one"
            );
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Slot::default();
        let old = inner.map.insert(
            key.to_string(),
            Entry {
                fingerprint,
                id,
                slot: slot.clone(),
                bytes: 0,
            },
        );
        if let Some(old) = old {
            inner.bytes -= old.bytes;
        }
        inner.order.push_back((key.to_string(), id));
        self.evict(inner);
        Some((slot, id))
    }

    /// Records the size of the result now held by entry `id` of `key`, then evicts to
    /// stay within the byte budget.
    pub(crate) fn filled(&self, key: &str, id: u64, bytes: usize) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if let Some(entry) = inner
            .map
            .get_mut(key)
            .filter(|e| e.id == id && e.bytes == 0)
        {
            entry.bytes = bytes;
            inner.bytes += bytes;
        }
        self.evict(inner);
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.map.len() > self.capacity || inner.bytes > self.max_bytes {
            let Some((key, id)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&key).is_some_and(|e| e.id == id) {
                let gone = inner.map.remove(&key).map_or(0, |e| e.bytes);
                inner.bytes -= gone;
            }
        }
        // Replaced keys leave stale order entries; drop them once they pile up.
        if inner.order.len() > 2 * self.capacity + 16 {
            let Inner { map, order, .. } = inner;
            order.retain(|(k, id)| map.get(k).is_some_and(|e| e.id == *id));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }
}

/// A fast non-cryptographic 64-bit fingerprint of a request's parts, to tell a retry
/// of the same request from a different request reusing a key. Four lanes take
/// interleaved words: their multiplications do not wait on each other, so a 1080p
/// frame (6 MB) hashes several times faster than through one chain.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(K).rotate_left(29);
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut lanes: [u64; 4] = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    for part in parts {
        lanes[0] = mix(lanes[0], part.len() as u64);
        let blocks = part.chunks_exact(32);
        let rest = blocks.remainder();
        for block in blocks {
            for (lane, c) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = mix(*lane, word(c));
            }
        }
        for (lane, c) in lanes.iter_mut().zip(rest.chunks(8)) {
            *lane = mix(*lane, word(c));
        }
    }
    let h = lanes.iter().fold(0, |h, &lane| mix(h, lane));
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_fingerprint_shares_slot_and_capacity_bounds() {
        let cache = IdempotencyCache::new(2, 1000);
        let (a, id) = cache.slot("a", 1).unwrap();
        a.set(Bytes::from_static(b"x")).unwrap();
        cache.filled("a", id, 1);
        assert!(cache.slot("a", 1).unwrap().0.initialized());
        assert!(!cache.slot("a", 2).unwrap().0.initialized());
        cache.slot("b", 1);
        cache.slot("c", 1);
        assert_eq!(cache.len(), 2);
        assert!(!cache.slot("a", 2).unwrap().0.initialized());
    }

    #[test]
    fn byte_budget_evicts_oldest() {
        let cache = IdempotencyCache::new(10, 100);
        for key in ["a", "b", "c"] {
            let (_, id) = cache.slot(key, 1).unwrap();
            cache.filled(key, id, 40);
        }
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn fingerprint_differs_on_content_and_split() {
        assert_ne!(fingerprint(&[b"abc"]), fingerprint(&[b"abd"]));
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"0123456789"]), fingerprint(&[b"0123456789"]));
    }

    #[test]
    fn fingerprint_sees_every_byte_of_a_long_body() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let original = fingerprint(&[b"image/png", &body]);
        for at in 0..body.len() {
            let mut changed = body.clone();
            changed[at] ^= 0x10;
            assert_ne!(
                fingerprint(&[b"image/png", &changed]),
                original,
                "byte {at}"
            );
        }
    }
}
