//! Counters of the enhancement server, readable in-process and via `GET /stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters; share as `Arc<ServerStats>` (see `ServerState::stats`).
#[derive(Debug, Default)]
pub struct ServerStats {
    enhance_calls: AtomicU64,
    idempotent_replays: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A copy of the counters at one moment; the JSON of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Real enhancements performed (replays from the idempotency cache excluded).
    pub enhance_calls: u64,
    /// Requests answered from the idempotency cache without enhancing again.
    pub idempotent_replays: u64,
    /// `POST /v1/enhance` requests answered, total.
    pub requests: u64,
    /// `POST /v1/enhance` requests answered, by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
}

impl StatsSnapshot {
    /// Requests answered with `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

impl ServerStats {
    /// Counts one real enhancement.
    pub(crate) fn enhanced(&self) {
        self.enhance_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answer from the idempotency cache.
    pub(crate) fn replayed(&self) {
        self.idempotent_replays.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub(crate) fn answered(&self, status: u16) {
        let mut map = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(status).or_default() += 1;
    }

    /// Real enhancements performed so far.
    pub fn enhance_calls(&self) -> u64 {
        self.enhance_calls.load(Ordering::Relaxed)
    }

    /// A consistent-enough copy of all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let by_status = self
            .by_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        StatsSnapshot {
            enhance_calls: self.enhance_calls(),
            idempotent_replays: self.idempotent_replays.load(Ordering::Relaxed),
            requests: by_status.values().sum(),
            by_status,
        }
    }
}
