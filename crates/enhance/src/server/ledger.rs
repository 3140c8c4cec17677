//! Chaos tests: per idempotency key, how many times the server enhanced and how many 200s
//! it answered, so "a frame paid for twice" is counted by the server, not assumed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::faults::AnswerFault;

/// Counts of one idempotency key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// Requests with this key admitted past the rate limit and injected 503s/429s: the
    /// calls a server without an idempotency cache would bill.
    pub admitted: u64,
    /// Real enhancements performed for requests with this key.
    pub enhanced: u64,
    /// Requests with this key answered 200 (enhanced or replayed from the cache).
    pub ok: u64,
}

/// The JSON of `GET /stats/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLedgerSnapshot {
    /// Counts per idempotency key; requests without a key are not counted.
    pub keys: BTreeMap<String, KeyCount>,
    /// Answers held past the client's timeout (injected).
    pub hung: u64,
    /// 200s answered with a garbage body (injected).
    pub garbled: u64,
}

/// The live per-key counts (only when the server runs with a key ledger).
#[derive(Debug, Default)]
pub(crate) struct KeyLedger {
    counts: Mutex<KeyLedgerSnapshot>,
}

impl KeyLedger {
    /// Counts one admitted request for `key`.
    pub(crate) fn admitted(&self, key: &str) {
        self.update(key, |c| c.admitted += 1);
    }

    /// Counts one real enhancement for `key`.
    pub(crate) fn enhanced(&self, key: &str) {
        self.update(key, |c| c.enhanced += 1);
    }

    /// Counts one 200 answer for `key`.
    pub(crate) fn answered_ok(&self, key: &str) {
        self.update(key, |c| c.ok += 1);
    }

    /// Counts one injected fault on an answer.
    pub(crate) fn injected(&self, fault: AnswerFault) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match fault {
            AnswerFault::Hang => counts.hung += 1,
            AnswerFault::Garbage => counts.garbled += 1,
            AnswerFault::None => {}
        }
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut KeyCount)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(counts.keys.entry(key.to_string()).or_default());
    }

    /// A copy of the counts.
    pub(crate) fn snapshot(&self) -> KeyLedgerSnapshot {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
