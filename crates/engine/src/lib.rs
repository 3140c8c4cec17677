//! The durable work-item engine of idempipe.
//!
//! Every unit of work is a row with its status, attempts and error history, in SQLite or
//! PostgreSQL. Workers claim due items under a lease, run the stage's handler, and record
//! the outcome fenced by the lease token; maintenance rescues expired leases and finishes
//! runs; limiters shared through the database pace calls to outside APIs.
//!
//! # Layout
//! - [`store`]: the [`Store`] trait, one module per backend, SQL in `queries.sql` files.
//! - [`worker`]: claiming, heartbeats, handler calls, graceful shutdown.
//! - [`maintenance`]: rescue of expired leases, finishing runs, pruning, leadership.
//! - [`handler`]: what stage code implements ([`Handler`], [`BatchHandler`]) and receives ([`Job`]).
//! - [`policy`]: per-stage retries, backoff, outcome-unknown policy, batching, limiter.
//! - [`limiter`]: the shared rate/concurrency budget and its adaptation rules.
//! - [`model`]: runs, items, attempts; [`clock`]: injectable time; [`DatabaseClock`]:
//!   the database's time, which every process's leases follow.

pub mod clock;
mod db_clock;
pub mod error;
pub mod handler;
pub mod limiter;
pub mod maintenance;
pub mod model;
pub mod policy;
pub mod store;
pub mod worker;

pub use clock::{Clock, ManualClock, Millis, SharedClock, SystemClock, format_utc};
pub use db_clock::DatabaseClock;
pub use error::{StoreError, StoreResult};
pub use handler::{BatchHandler, Handler, HandlerError, ItemResult, Job};
pub use limiter::{LimiterConfig, LimiterFeedback, LimiterState, Permit, Unused};
pub use maintenance::{Maintenance, MaintenanceConfig};
pub use model::{Attempt, Dep, Item, ItemStatus, NewItem, Run, RunActivity, RunStatus, StageCount};
pub use policy::{Backoff, OnUnknown, StagePolicy};
pub use store::{OpenMode, SharedStore, Store, connect, connect_with, schema_version};
pub use worker::{Worker, WorkerConfig, WorkerStats};
