//! Where a backend runs its hot-path writes another way than the shared sqlx flow
//! (`shared.rs`). Each method returns None to let the shared flow run; SQLite sends these
//! writes (limiter writes included, so that no second connection competes with the
//! writer for the file's lock) to its writer thread (`sqlite/writer.rs`), PostgreSQL uses
//! the shared flow.

use async_trait::async_trait;

use crate::clock::Millis;
use crate::error::StoreResult;
use crate::limiter::{LimiterFeedback, LimiterState, Permit, Unused};
use crate::store::{ClaimParams, ClaimedItem, Outcome};

/// Hot-path writes a backend may take over; see the module doc.
#[async_trait]
pub(crate) trait HotPath {
    /// `Store::item_claim`.
    async fn hot_claim(&self, _p: &ClaimParams) -> Option<StoreResult<Vec<ClaimedItem>>> {
        None
    }
    /// `Store::item_record`.
    async fn hot_record(
        &self,
        _outcomes: &[Outcome],
        _now: Millis,
    ) -> Option<StoreResult<Vec<bool>>> {
        None
    }
    /// `Store::item_record_and_claim`.
    async fn hot_record_and_claim(
        &self,
        _outcomes: &[Outcome],
        _now: Millis,
        _claim: &ClaimParams,
    ) -> Option<StoreResult<(Vec<bool>, Vec<ClaimedItem>)>> {
        None
    }
    /// `Store::item_heartbeat`.
    async fn hot_heartbeat(
        &self,
        _ids: &[i64],
        _token: i64,
        _expires: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        None
    }
    /// `Store::item_start`.
    async fn hot_start(
        &self,
        _ids: &[i64],
        _ahead_token: i64,
        _token: i64,
        _expires: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        None
    }
    /// `Store::item_mark_external_many`.
    async fn hot_mark_many(
        &self,
        _marks: &[(i64, i64)],
        _now: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        None
    }
    /// `Store::item_release`.
    async fn hot_release(
        &self,
        _ids: &[i64],
        _token: i64,
        _now: Millis,
    ) -> Option<StoreResult<u64>> {
        None
    }
    /// `Store::limiter_lease`.
    async fn hot_limiter_lease(
        &self,
        _name: &str,
        _cost: f64,
        _successes: u32,
        _unused: Unused,
        _now: Millis,
    ) -> Option<StoreResult<(Option<Permit>, LimiterState)>> {
        None
    }
    /// `Store::limiter_acquire`.
    async fn hot_limiter_acquire(
        &self,
        _name: &str,
        _cost: f64,
        _holder: i64,
        _hold_until: Millis,
        _now: Millis,
    ) -> Option<StoreResult<Permit>> {
        None
    }
    /// `Store::limiter_release`.
    async fn hot_limiter_release(
        &self,
        _name: &str,
        _holder: i64,
        _feedback: LimiterFeedback,
        _now: Millis,
    ) -> Option<StoreResult<()>> {
        None
    }
}

impl HotPath for crate::store::postgres::PgStore {}
